"""Scene sources: one module per input kind, and :func:`load_scene`, which dispatches a file or folder to its importer.

* :mod:`~worldfm_env.scenes.sources.meta_json`: the official WorldFM ``meta.json`` input plus depth;
* :mod:`~worldfm_env.scenes.sources.panorama`: equirectangular RGB-D panoramas;
* :mod:`~worldfm_env.scenes.sources.ply`: PLY point clouds;
* :mod:`~worldfm_env.scenes.sources.procedural`: the seeded procedural generator (imported on use:
  it loads the ray caster);
* :mod:`~worldfm_env.scenes.sources._io`: file readers they share.

Saved ``.wfscene`` files are read by :func:`worldfm_env.scenes.scene_file.load_scene_file`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from worldfm_env.scenes.scene import Scene
from worldfm_env.scenes.scene_file import load_scene_file
from worldfm_env.scenes.sources._io import PathLike, read_depth
from worldfm_env.scenes.sources.meta_json import load_meta_json_scene
from worldfm_env.scenes.sources.panorama import load_panorama_scene, panorama_directions
from worldfm_env.scenes.sources.ply import load_ply_scene, read_ply, save_ply

__all__ = [
    "load_meta_json_scene",
    "load_panorama_scene",
    "load_ply_scene",
    "load_scene",
    "panorama_directions",
    "read_depth",
    "read_ply",
    "save_ply",
]

SUPPORTED_KINDS = (
    "*.wfscene (saved scene), *.json (WorldFM meta.json), a directory containing meta.json, *.ply (point cloud); "
    "panoramas: load_panorama_scene(image, depth); procedural scenes: 'procedural:...' specs elsewhere"
)


def load_scene(spec: PathLike, device: torch.device | str = "cpu", **kwargs) -> Scene:
    """Load a scene from a file or folder, dispatching on its kind.

    Args:
        spec: ``*.wfscene`` (:func:`~worldfm_env.scenes.scene_file.load_scene_file`), ``*.json``
            (:func:`load_meta_json_scene`), a folder holding ``meta.json``, or ``*.ply``
            (:func:`load_ply_scene`).
        device: torch device of the returned scene.
        **kwargs: forwarded to the importer (none for ``.wfscene``).

    Returns:
        The :class:`Scene`.

    Raises:
        ValueError: missing path or unsupported kind (the message lists the supported kinds).
    """
    path = Path(spec)
    if path.is_dir():
        if (path / "meta.json").is_file():
            return load_meta_json_scene(path / "meta.json", device=device, **kwargs)
        raise ValueError(f"scene spec {str(spec)!r} is a directory without meta.json; supported: {SUPPORTED_KINDS}")
    suffix = path.suffix.lower()
    if suffix == ".wfscene":
        if kwargs:
            raise ValueError(f"a .wfscene file takes no importer options, got {sorted(kwargs)}")
        return load_scene_file(path, device=device)
    if suffix == ".json":
        return load_meta_json_scene(path, device=device, **kwargs)
    if suffix == ".ply":
        return load_ply_scene(path, device=device, **kwargs)
    kind = suffix or "(no extension)"
    raise ValueError(f"scene spec {str(spec)!r}: unknown kind {kind!r}; supported: {SUPPORTED_KINDS}")
