"""PLY point clouds: a numpy-only reader and writer, and the importer that splats a bank from free positions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.scenes.navigation import _erode, navigation_grid_from_points
from worldfm_env.scenes.scene import ReferenceBank, Scene
from worldfm_env.scenes.sources._io import _DEFAULT_CAMERA_HEIGHT, ArrayLike, PathLike, _to_numpy, naming_source

__all__ = ["load_ply_scene", "read_ply", "save_ply"]

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def _parse_ply_header(data: bytes, path: Path) -> tuple[str, list[dict], int]:
    """(format, elements [{name, count, props [(name, type) | (name, 'list', ctype, itype)]}], body offset)."""
    if not data.startswith(b"ply"):
        raise ValueError(f"PLY file {str(path)!r}: missing 'ply' magic line; not a PLY file")
    end = data.find(b"end_header")
    if end < 0:
        raise ValueError(f"PLY file {str(path)!r}: no 'end_header' line; the header is truncated")
    nl = data.find(b"\n", end)
    body = len(data) if nl < 0 else nl + 1
    lines = data[:end].decode("ascii", errors="replace").splitlines()[1:]
    fmt, elements = None, []
    for raw in lines:
        tok = raw.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            if len(tok) < 2 or tok[1] not in _PLY_FORMATS:
                raise ValueError(
                    f"PLY file {str(path)!r}: format {' '.join(tok[1:])!r} unsupported; expected ascii, "
                    "binary_little_endian or binary_big_endian"
                )
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise ValueError(f"PLY file {str(path)!r}: bad element line {raw!r}; expected 'element NAME COUNT'")
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property":
            if not elements:
                raise ValueError(f"PLY file {str(path)!r}: property {raw!r} before any element")
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise ValueError(f"PLY file {str(path)!r}: bad list property {raw!r}")
                elements[-1]["props"].append((tok[4], "list", tok[2], tok[3]))
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1]["props"].append((tok[2], tok[1]))
            else:
                raise ValueError(
                    f"PLY file {str(path)!r}: bad property line {raw!r}; types are {sorted(set(_PLY_TYPES))}"
                )
    if fmt is None:
        raise ValueError(f"PLY file {str(path)!r}: no 'format' line (expected ascii or binary_little_endian)")
    return fmt, elements, body


def read_ply(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read the vertices of a PLY point cloud with numpy only (faces and other elements are ignored).

    Supports ``ascii``, ``binary_little_endian`` (and ``binary_big_endian``) files whose ``vertex``
    element has scalar ``x``, ``y``, ``z`` and optional ``red``, ``green``, ``blue`` (uchar, or float
    in [0, 1]); vertices without colour are grey (128). Non-finite vertices are dropped.

    Args:
        path: the ``.ply`` file.

    Returns:
        (xyz (P, 3) float32, rgb (P, 3) uint8).

    Raises:
        ValueError: not a PLY, unsupported layout, missing x/y/z, truncated data.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"PLY file {str(path)!r} does not exist")
    data = path.read_bytes()
    fmt, elements, offset = _parse_ply_header(data, path)
    vertex_i = next((i for i, e in enumerate(elements) if e["name"] == "vertex"), None)
    if vertex_i is None:
        raise ValueError(f"PLY file {str(path)!r}: no 'vertex' element; expected 'element vertex N' with x, y, z")
    vertex = elements[vertex_i]
    names = [p[0] for p in vertex["props"]]
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise ValueError(f"PLY file {str(path)!r}: vertex has no {axis!r} property (needs x, y, z; has {names})")
    if any(len(p) != 2 for p in vertex["props"]):
        raise ValueError(f"PLY file {str(path)!r}: list properties on 'vertex' are not supported (only scalars)")
    n = vertex["count"]

    if fmt == "ascii":
        text = data[offset:].decode("ascii", errors="replace").splitlines()
        text = [t for t in text if t.strip()]
        # In ASCII every element instance is one line, so earlier elements are skipped by count.
        start = sum(e["count"] for e in elements[:vertex_i])
        rows = text[start : start + n]
        if len(rows) != n:
            raise ValueError(f"PLY file {str(path)!r}: expected {n} vertex lines, found {len(rows)}; file truncated")
        try:
            table = np.asarray(" ".join(rows).split(), dtype=np.float64)
        except ValueError as err:
            raise ValueError(f"PLY file {str(path)!r}: vertex lines must be numbers: {err}") from err
        if table.size != n * len(names):
            raise ValueError(
                f"PLY file {str(path)!r}: vertex lines hold {table.size} numbers, expected {n} x {len(names)}"
            )
        table = table.reshape(n, len(names))
        cols = {name: table[:, i] for i, name in enumerate(names)}
        types = dict(vertex["props"])
    else:
        order = _PLY_FORMATS[fmt]
        for e in elements[:vertex_i]:
            if any(len(p) != 2 for p in e["props"]):
                raise ValueError(
                    f"PLY file {str(path)!r}: element {e['name']!r} with list properties precedes 'vertex'; "
                    "put the vertex element first"
                )
            offset += e["count"] * np.dtype([(p[0], order + _PLY_TYPES[p[1]]) for p in e["props"]]).itemsize
        dtype = np.dtype([(p[0], order + _PLY_TYPES[p[1]]) for p in vertex["props"]])
        if len(data) < offset + n * dtype.itemsize:
            raise ValueError(
                f"PLY file {str(path)!r}: {n} vertices need {n * dtype.itemsize} bytes, file has "
                f"{max(0, len(data) - offset)}; file truncated"
            )
        arr = np.frombuffer(data, dtype=dtype, count=n, offset=offset)
        cols = {name: arr[name] for name in names}
        types = dict(vertex["props"])

    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float32)
    if all(c in cols for c in ("red", "green", "blue")):
        rgb = np.stack([cols["red"], cols["green"], cols["blue"]], axis=1).astype(np.float64)
        if _PLY_TYPES[types["red"]].startswith("f"):
            rgb = rgb * 255.0  # float colours are in [0, 1]
        rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    else:
        rgb = np.full((n, 3), 128, dtype=np.uint8)
    keep = np.isfinite(xyz).all(axis=1)
    return np.ascontiguousarray(xyz[keep]), np.ascontiguousarray(rgb[keep])


def save_ply(path: PathLike, xyz: ArrayLike, rgb: ArrayLike | None = None, fmt: str = "binary_little_endian") -> Path:
    """Write a point cloud as PLY (float x, y, z + uchar red, green, blue).

    Args:
        path: output file.
        xyz: (P, 3) positions.
        rgb: (P, 3) uint8 colours; grey when None.
        fmt: ``"binary_little_endian"`` (default) or ``"ascii"``.

    Returns:
        The written path.
    """
    if fmt not in ("binary_little_endian", "ascii"):
        raise ValueError(f"fmt must be 'binary_little_endian' or 'ascii', got {fmt!r}")
    xyz_np = _to_numpy(xyz).astype(np.float32).reshape(-1, 3)
    n = xyz_np.shape[0]
    rgb_np = np.full((n, 3), 128, np.uint8) if rgb is None else _to_numpy(rgb).astype(np.uint8).reshape(-1, 3)
    if rgb_np.shape[0] != n:
        raise ValueError(f"rgb must be ({n}, 3) to match xyz, got {tuple(rgb_np.shape)}")
    header = (
        f"ply\nformat {fmt} 1.0\ncomment written by worldfm_env\nelement vertex {n}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "ascii":
        # repr-precision floats so an ASCII round trip is exact in float32.
        lines = [
            f"{x!r} {y!r} {z!r} {r} {g} {b}"
            for (x, y, z), (r, g, b) in zip(xyz_np.tolist(), rgb_np.tolist(), strict=True)
        ]
        path.write_bytes(header + ("\n".join(lines) + "\n").encode("ascii"))
    else:
        verts = np.empty(
            n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
        )
        verts["x"], verts["y"], verts["z"] = xyz_np[:, 0], xyz_np[:, 1], xyz_np[:, 2]
        verts["red"], verts["green"], verts["blue"] = rgb_np[:, 0], rgb_np[:, 1], rgb_np[:, 2]
        path.write_bytes(header + verts.tobytes())
    return path


def _spread_positions(xz: torch.Tensor, k: int) -> torch.Tensor:
    """Up to ``k`` of the (M, 2) positions, spread out by farthest-point sampling (deterministic)."""
    centre = xz.mean(0)
    chosen = [int((xz - centre).norm(dim=1).argmin())]  # start near the middle of the free space
    dist = (xz - xz[chosen[0]]).norm(dim=1)
    for _ in range(min(k, xz.shape[0]) - 1):
        nxt = int(dist.argmax())
        if float(dist[nxt]) <= 0:
            break
        chosen.append(nxt)
        dist = torch.minimum(dist, (xz - xz[nxt]).norm(dim=1))
    return xz[chosen]


def load_ply_scene(
    path: PathLike,
    device: torch.device | str = "cpu",
    bank_resolution: tuple[int, int] = (64, 64),
    bank_hfov_deg: float = 90.0,
    bank_yaws: int = 8,
    bank_positions: int = 8,
    bank_clearance: float = 0.5,
    splat_radius: int = 1,
    camera_height: float = _DEFAULT_CAMERA_HEIGHT,
    floor_y: float | None = None,
    cell_size: float = 0.1,
    agent_radius: float = 0.18,
    agent_height: float = 1.5,
    name: str | None = None,
) -> Scene:
    """Import a PLY point cloud (gravity +y); the bank is splatted from spread-out free positions.

    The navigation grid comes from :func:`navigation_grid_from_points`. Up to ``bank_positions``
    capture positions are picked by farthest-point sampling among the free cells that keep
    ``bank_clearance`` from any blocked cell (all free cells when none does); each gets
    ``bank_yaws`` evenly spaced yaws at pitch 0, at ``camera_height`` above the floor, rendered with
    :func:`worldfm_env.render.splat.splat_points`.

    Args:
        path: the ``.ply`` file (see :func:`read_ply` for the supported layouts).
        device: torch device of the returned scene.
        bank_resolution: (height, width) of the bank views.
        bank_hfov_deg: horizontal field of view of the bank views in degrees.
        bank_yaws: yaws per capture position.
        bank_positions: maximum number of capture positions.
        bank_clearance: preferred distance of capture positions from obstacles and unobserved space.
        splat_radius: splat half-size in pixels for the bank renders (1 closes holes of sparse clouds).
        camera_height: camera height above the floor.
        floor_y: floor y; estimated from the points when None.
        cell_size, agent_radius, agent_height: navigation grid parameters.
        name: scene name (default: the file stem).

    Returns:
        The imported :class:`Scene`.

    Raises:
        ValueError: malformed PLY, empty cloud, no free space, bad parameters.
    """
    path = Path(path)
    xyz_np, rgb_np = read_ply(path)
    if xyz_np.shape[0] == 0:
        raise ValueError(f"PLY file {str(path)!r}: no finite vertices; the point cloud would be empty")
    if camera_height <= 0:
        raise ValueError(f"camera_height must be positive (scene units above the floor), got {camera_height}")
    if bank_yaws < 1 or bank_positions < 1:
        raise ValueError(f"bank_yaws and bank_positions must be >= 1, got {bank_yaws} and {bank_positions}")
    bh, bw = int(bank_resolution[0]), int(bank_resolution[1])
    if bh <= 0 or bw <= 0:
        raise ValueError(f"bank_resolution must be (height, width) with positive entries, got {bank_resolution}")
    dev = torch.device(device)
    xyz = torch.from_numpy(xyz_np).to(dev)
    rgb = torch.from_numpy(rgb_np).to(dev)
    with naming_source(f"PLY file {str(path)!r}"):
        grid = navigation_grid_from_points(
            xyz,
            cell_size=cell_size,
            floor_y=floor_y,
            camera_height=camera_height,
            agent_height=agent_height,
            agent_radius=agent_radius,
        )

    from worldfm_env.render.splat import splat_points  # imported late: it initialises warp

    # Prefer capture spots with clearance: a camera pressed against a wall sees only a few sparse points.
    roomy = _erode(grid.free, bank_clearance, grid.cell_size)
    rows, cols = torch.nonzero(roomy if bool(roomy.any()) else grid.free, as_tuple=True)
    cx, cz = grid.cell_center(rows, cols)
    spots = _spread_positions(torch.stack([cx, cz], dim=1), bank_positions)  # (S, 2)
    cam_y = grid.floor_y - camera_height
    S = spots.shape[0]
    pos = torch.stack([spots[:, 0], torch.full((S,), cam_y, device=dev), spots[:, 1]], dim=1)  # (S, 3)
    yaw = torch.arange(bank_yaws, dtype=torch.float32, device=dev) * (2.0 * math.pi / bank_yaws)
    pos = pos.repeat_interleave(bank_yaws, dim=0)  # (S * Y, 3): position-major order
    yaw = yaw.repeat(S)
    c2w = pose_from_yaw_pitch(pos, yaw, torch.zeros_like(yaw))  # (B, 4, 4)
    K = intrinsics_from_fov(bw, bh, bank_hfov_deg, device=dev)
    render = splat_points(xyz, rgb, c2w, K, bh, bw, radius=splat_radius)
    bank = ReferenceBank(render.rgb, render.depth, K.expand(c2w.shape[0], 3, 3).contiguous(), c2w)
    info = {"source": "ply", "file": path.name, "bank_positions": int(S), "bank_yaws": int(bank_yaws)}
    return Scene(
        name=name or path.stem,
        points_xyz=xyz.contiguous(),
        points_rgb=rgb.contiguous(),
        bank=bank,
        navigation_grid=grid,
        camera_height=float(camera_height),
        info=info,
    )
