"""The scene file format (``.wfscene``, one safetensors file per scene): :func:`save_scene`, :func:`load_scene_file`.

Tensors are stored by name plus a JSON header (``"scene"`` metadata holding the format name and
version, the scene's name, camera height, navigation grid geometry and info), so a scene reloads
with a memory map in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import torch

from worldfm_env.scenes.scene import NavigationGrid, ReferenceBank, Scene, TriangleMesh

__all__ = ["SCENE_FORMAT_VERSION", "save_scene", "load_scene_file"]

SCENE_FORMAT_VERSION = 1


def save_scene(scene: Scene, path: str | Path) -> Path:
    """Write ``scene`` to one safetensors file (conventionally ``*.wfscene``); returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        "points_xyz": scene.points_xyz,
        "points_rgb": scene.points_rgb,
        "bank.images": scene.bank.images,
        "bank.depth": scene.bank.depth,
        "bank.K": scene.bank.K,
        "bank.c2w": scene.bank.c2w,
        "navigation_grid.free": scene.navigation_grid.free.to(torch.uint8),
    }
    if scene.navigation_grid.occupied is not None:
        tensors["navigation_grid.occupied"] = scene.navigation_grid.occupied.to(torch.uint8)
    if scene.navigation_grid.occupied_height is not None:
        tensors["navigation_grid.occupied_height"] = scene.navigation_grid.occupied_height.float()
    if scene.points_normal is not None:
        tensors["points_normal"] = scene.points_normal.float()
    if scene.points_spacing is not None:
        tensors["points_spacing"] = scene.points_spacing.float()
    if scene.mesh is not None:
        for f in fields(scene.mesh):
            tensors[f"mesh.{f.name}"] = getattr(scene.mesh, f.name)
    header = {
        "format": "worldfm-scene",
        "version": SCENE_FORMAT_VERSION,
        "name": scene.name,
        "camera_height": scene.camera_height,
        "navigation_grid": {
            "origin": list(scene.navigation_grid.origin),
            "cell_size": scene.navigation_grid.cell_size,
            "floor_y": scene.navigation_grid.floor_y,
            "agent_radius": scene.navigation_grid.agent_radius,
            "ceiling_y": scene.navigation_grid.ceiling_y,
        },
        "info": scene.info,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
        str(path),
        metadata={"scene": json.dumps(header)},
    )
    return path


def load_scene_file(path: str | Path, device: torch.device | str = "cpu") -> Scene:
    """Load a scene written by :func:`save_scene` onto ``device``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"scene file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if "scene" not in meta:
                raise ValueError(f"{str(path)!r} is not a worldfm scene file (no 'scene' header)")
            try:
                header = json.loads(meta["scene"])
            except ValueError as err:
                raise ValueError(f"{str(path)!r}: the 'scene' header is not valid JSON: {err}") from err
            if not isinstance(header, dict) or (
                header.get("format") != "worldfm-scene" or header.get("version") != SCENE_FORMAT_VERSION
            ):
                found = (header.get("format"), header.get("version")) if isinstance(header, dict) else header
                raise ValueError(
                    f"{str(path)!r}: unsupported scene format {found!r}; expected 'worldfm-scene' version "
                    f"{SCENE_FORMAT_VERSION}"
                )
            t = {k: f.get_tensor(k) for k in f.keys()}
    except ValueError:
        raise
    except Exception as err:  # SafetensorError / OSError: empty, truncated or not a safetensors file
        raise ValueError(
            f"scene file {str(path)!r} ({path.stat().st_size} bytes) cannot be read: it is truncated, partly "
            f"written or not a .wfscene file ({type(err).__name__}: {err})"
        ) from err
    try:
        return _scene_from(header, t).to(device)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"scene file {str(path)!r} is incomplete or inconsistent: {type(err).__name__}: {err}"
        ) from err


def _scene_from(header: dict, t: dict) -> Scene:
    """The :class:`Scene` of a scene file's header and tensors."""
    nav = header["navigation_grid"]
    mesh = None
    if "mesh.vertices" in t:
        mesh = TriangleMesh(t["mesh.vertices"], t["mesh.faces"], t["mesh.face_material"], t["mesh.materials"])
    return Scene(
        name=header["name"],
        points_xyz=t["points_xyz"],
        points_rgb=t["points_rgb"],
        bank=ReferenceBank(t["bank.images"], t["bank.depth"], t["bank.K"], t["bank.c2w"]),
        navigation_grid=NavigationGrid(
            t["navigation_grid.free"].bool(),
            tuple(nav["origin"]),
            float(nav["cell_size"]),
            float(nav["floor_y"]),
            float(nav.get("agent_radius", 0.18)),  # files written before the field: every source's default
            # Files written before the field have none: the layout falls back to the grid's obstacle cores.
            occupied=t["navigation_grid.occupied"].bool() if "navigation_grid.occupied" in t else None,
            ceiling_y=None if nav.get("ceiling_y") is None else float(nav["ceiling_y"]),  # older files: none
            occupied_height=t.get("navigation_grid.occupied_height"),  # older files: floor-to-ceiling obstacles
        ),
        camera_height=float(header["camera_height"]),
        mesh=mesh,
        info=header.get("info", {}),
        points_normal=t.get("points_normal"),
        points_spacing=t.get("points_spacing"),
    )
