"""Sparse captures of a procedural scene: the memory a world starts from when it was not scanned densely.

A procedural scene is normally captured densely (``capture="full"``): bank views spread over every room, so the
anchor already shows nearly everything wherever the agent goes. :func:`capture_scene` replaces that memory (the
point cloud and the reference bank) with a sparse one and keeps everything else: the mesh (the oracle stays the full
ground truth), the navigation grid (collisions and geodesics use the true free space) and the camera height.

Modes (see :func:`parse_capture`):

* ``"panorama"``: the published pipeline's memory, one RGB-D panorama at one free point of the scene. The panorama
  is ray cast as a cube map (6 faces of 90 degrees, square, each ``cube_face_size(...)`` pixels wide: as many pixels
  in all as an equirectangular panorama ``PANORAMA_SCALE`` times the bank width wide and half that high), lifted to
  points with :func:`~worldfm_env.scenes.pointcloud.points_from_views` (normals, spacing and the generator's voxel
  downsampling). The bank is the published 42 views around that point, at the scene's bank resolution and field of
  view: :data:`PANORAMA_BANK_YAWS` = 14 headings, 360 / 14 degrees apart, times the pitches
  :data:`PANORAMA_BANK_PITCHES_DEG` = (0, +30, -30) degrees (pitch-major order). Every bank view shares the
  panorama's centre, so it sees nothing the panorama did not.
* ``"walk:K"``: K views along a walk from that same point, about :data:`WALK_STEP` metres apart, each at pitch 0
  facing the walking direction; the bank is those K views and the points are lifted from them the same way.

The capture point is the main navigation component's cell with the greatest clearance (the largest disc of free
cells around it, in whole cells), ties broken by a draw seeded by the scene seed; the camera is at the scene's
camera height above it. The walk is a seeded random walk on the main component. Everything is deterministic per
scene seed: the same seed gives the same points and bank, bit for bit.

``scene.info["capture"]`` of a captured scene holds ``mode``, ``position`` (the capture point, [x, y, z]),
``positions`` (the camera centres, [[x, y, z], ...]) and ``views`` (the number of bank views), plus
``cube_face_size`` for panoramas.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.render.raycast import MeshRaycaster
from worldfm_env.scenes.navigation import _erode, _largest_component
from worldfm_env.scenes.pointcloud import points_from_views
from worldfm_env.scenes.scene import ReferenceBank, Scene

__all__ = [
    "CAPTURE_FORMS",
    "WALK_MAX_VIEWS",
    "PANORAMA_SCALE",
    "PANORAMA_BANK_YAWS",
    "PANORAMA_BANK_PITCHES_DEG",
    "WALK_STEP",
    "parse_capture",
    "capture_point",
    "cube_face_size",
    "cube_map_poses",
    "walk_positions",
    "capture_scene",
]

#: The valid forms of ``capture``, for error messages.
CAPTURE_FORMS = "'full', 'panorama' or 'walk:K' with K an int in [1, 256]"
#: Most views of a ``"walk:K"`` capture.
WALK_MAX_VIEWS = 256
#: The panorama's equirectangular width is this many times the bank width (its height half that).
PANORAMA_SCALE = 8
#: Headings of the panorama capture's bank (360 / 14 degrees apart).
PANORAMA_BANK_YAWS = 14
#: Pitches of the panorama capture's bank, in degrees (positive looks up); 14 x 3 = 42 views.
PANORAMA_BANK_PITCHES_DEG = (0.0, 30.0, -30.0)
#: Metres between consecutive views of a walk.
WALK_STEP = 1.0
#: Voxel edge of the captured point clouds when the scene's generator config does not name one.
_DEFAULT_VOXEL = 0.03
#: Salt of the capture's seeded draws (kept apart from the generator's own use of the seed).
_SALT = 0xCA97


def parse_capture(value) -> tuple[str, int]:
    """Check a ``capture`` value; returns ``(mode, views)``: ``("full", 0)``, ``("panorama", 42)``, ``("walk", K)``.

    Raises:
        ValueError: naming ``capture`` and its valid forms.
    """
    if isinstance(value, str):
        if value == "full":
            return "full", 0
        if value == "panorama":
            return "panorama", PANORAMA_BANK_YAWS * len(PANORAMA_BANK_PITCHES_DEG)
        if value.startswith("walk:"):
            text = value[len("walk:") :]
            if text.isascii() and text.isdigit() and str(int(text)) == text and 1 <= int(text) <= WALK_MAX_VIEWS:
                return "walk", int(text)
    raise ValueError(f"capture must be {CAPTURE_FORMS}, got {value!r}")


def _seed_of(scene: Scene) -> int:
    seed = scene.info.get("seed", 0)
    return int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else 0


def _main_component(scene: Scene) -> np.ndarray:
    """(Gz, Gx) bool: the largest 4-connected free component of the scene's navigation grid."""
    main, _ = _largest_component(scene.navigation_grid.free.cpu().numpy())
    return main


def capture_point(scene: Scene) -> tuple[int, int]:
    """(row, col) of the capture point's navigation cell: a main-component cell with the greatest clearance.

    Clearance is the radius (a whole number of cells) of the largest disc of main-component cells around a cell
    centre; among the cells with the greatest one, a draw seeded by ``scene.info["seed"]`` picks one.
    """
    grid = scene.navigation_grid
    main = torch.from_numpy(_main_component(scene))
    lo, hi = 0, max(main.shape)  # erode(main, lo cells) is non-empty; find the largest such lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bool(_erode(main, mid * grid.cell_size, grid.cell_size).any()):
            lo = mid
        else:
            hi = mid - 1
    best = _erode(main, lo * grid.cell_size, grid.cell_size) if lo > 0 else main
    cells = torch.nonzero(best.flatten()).flatten().numpy()  # row-major order
    rng = np.random.default_rng([_seed_of(scene), _SALT, 0])
    flat = int(cells[int(rng.integers(cells.size))])
    return flat // main.shape[1], flat % main.shape[1]


def _cell_position(scene: Scene, row: float, col: float) -> np.ndarray:
    """World [x, y, z] (float64) of a camera above the centre of cell (row, col)."""
    grid = scene.navigation_grid
    x = grid.origin[0] + (col + 0.5) * grid.cell_size
    z = grid.origin[1] + (row + 0.5) * grid.cell_size
    return np.array([x, grid.floor_y - scene.camera_height, z], dtype=np.float64)


def cube_face_size(bank_width: int, scale: int = PANORAMA_SCALE) -> int:
    """Edge in pixels of each cube face: 6 faces hold as many pixels as a ``scale * bank_width`` x
    ``scale * bank_width / 2`` equirectangular panorama."""
    width = scale * bank_width
    return max(8, int(round(math.sqrt(width * (width / 2) / 6.0))))


def cube_map_poses(position: torch.Tensor) -> torch.Tensor:
    """(6, 4, 4) camera-to-world poses of a cube map at ``position`` (3,): yaw 0, 90, 180, 270 degrees, then up
    and down (90-degree square faces tile the sphere)."""
    half = math.pi / 2
    yaw = torch.tensor([0.0, half, math.pi, -half, 0.0, 0.0], dtype=torch.float32, device=position.device)
    pitch = torch.tensor([0.0, 0.0, 0.0, 0.0, half, -half], dtype=torch.float32, device=position.device)
    return pose_from_yaw_pitch(position.float().expand(6, 3), yaw, pitch)


def _segment_clear(main: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the straight segment between grid coordinates a and b (in cells, (row, col)) stays on ``main``,
    sampled at least every half cell."""
    n = max(2, int(math.ceil(np.abs(b - a).max() / 0.25)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = np.floor(a[None] + t * (b - a)[None] + 0.5).astype(np.int64)  # cell of each sample (a, b: cell centres)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < main.shape[0]) & (pts[:, 1] >= 0) & (pts[:, 1] < main.shape[1])
    return bool(inside.all()) and bool(main[pts[:, 0], pts[:, 1]].all())


def walk_positions(scene: Scene, count: int, step: float = WALK_STEP) -> tuple[np.ndarray, np.ndarray]:
    """A seeded walk of ``count`` cells on the main component from :func:`capture_point`.

    Each step turns from the current heading by the first of a seeded order of candidate turns (small turns
    first) whose end, ``step`` metres away, is a main-component cell in straight line of sight and not within
    ``step / 2`` of an earlier position (a walk avoids going back while it can); when no turn is left, the walk
    may revisit, then shortens its step; boxed in completely, it stays put and turns around.

    Returns:
        (cells (count, 2) int64 (row, col), yaw (count,) float64 radians: each view faces the walking direction,
        the next step's; the last view faces its own step's).
    """
    grid = scene.navigation_grid
    main = _main_component(scene)
    rng = np.random.default_rng([_seed_of(scene), _SALT, 1])
    cells = [np.array(capture_point(scene), dtype=np.float64)]
    heading = float(rng.uniform(-math.pi, math.pi))
    headings: list[float] = []
    for _ in range(count - 1):
        here = cells[-1]
        base = heading + float(rng.normal(0.0, math.radians(20.0)))
        turns = np.radians(np.array([0, 22.5, 45, 67.5, 90, 112.5, 135, 157.5, 180]))
        signs = np.where(rng.random(turns.size) < 0.5, -1.0, 1.0)
        candidates = base + turns * signs
        chosen = None
        for length, avoid in ((step, True), (step, False), (step / 2, False), (step / 4, False)):
            for h in candidates:
                # yaw h faces (-sin h, cos h) in (x, z): columns follow x, rows follow z.
                d = np.array([math.cos(h), -math.sin(h)]) * (length / grid.cell_size)
                end = np.floor(here + d + 0.5)
                if np.array_equal(end, here) or not _segment_clear(main, here, end):
                    continue
                if avoid and any(np.hypot(*(end - c)) * grid.cell_size < step / 2 for c in cells):
                    continue
                chosen = (end, h)
                break
            if chosen is not None:
                break
        if chosen is None:
            end, h = here.copy(), base + math.pi
        else:
            end, h = chosen
        delta = end - here
        h = math.atan2(-delta[1], delta[0]) if np.any(delta) else h
        headings.append(h)
        heading = h
        cells.append(end)
    yaw = np.array([*headings, headings[-1] if headings else heading], dtype=np.float64)
    yaw = np.remainder(yaw + math.pi, 2 * math.pi) - math.pi
    return np.stack(cells).astype(np.int64), yaw


def capture_scene(scene: Scene, mode: str, panorama_scale: int = PANORAMA_SCALE) -> Scene:
    """``scene`` with a sparse memory captured in ``mode`` (``"panorama"`` or ``"walk:K"``; see the module).

    The mesh, navigation grid, camera height, name and info are kept (``info["capture"]`` is added); the point
    cloud, its normals and spacing and the reference bank are replaced. ``"full"`` returns ``scene`` unchanged.

    Args:
        scene: a scene with a mesh (procedural scenes).
        mode: a ``capture`` value (:func:`parse_capture`).
        panorama_scale: the panorama's equirectangular width in bank widths (sets the cube face size).

    Raises:
        ValueError: a bad ``mode``, or a scene without a mesh (naming ``capture``).
    """
    kind, views = parse_capture(mode)
    if kind == "full":
        return scene
    if scene.mesh is None:
        raise ValueError(
            f"capture={mode!r} applies to procedural scenes (it ray casts the scene's mesh); scene {scene.name!r} "
            "has no mesh: use capture='full'"
        )
    dev = scene.device
    Hb, Wb = scene.bank.resolution
    K_bank = scene.bank.K[0].float()
    raycaster = MeshRaycaster([scene.mesh], dev)
    config = scene.info.get("config")
    voxel = config["voxel_size"] if isinstance(config, dict) and "voxel_size" in config else _DEFAULT_VOXEL

    def cast(c2w: torch.Tensor, K: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        return raycaster.render(torch.zeros(c2w.shape[0], dtype=torch.int32, device=dev), c2w, K, h, w)

    row, col = capture_point(scene)
    point = _cell_position(scene, row, col)
    extra: dict = {}
    if kind == "panorama":
        center = torch.tensor(point, dtype=torch.float32, device=dev)
        face = cube_face_size(Wb, panorama_scale)
        K_face = intrinsics_from_fov(face, face, 90.0, device=dev)
        c2w_faces = cube_map_poses(center)
        face_rgb, face_depth = cast(c2w_faces, K_face, face, face)
        lift = (face_rgb, face_depth, K_face.expand(6, 3, 3).contiguous(), c2w_faces)
        yaw = torch.arange(PANORAMA_BANK_YAWS, dtype=torch.float32) * (2 * math.pi / PANORAMA_BANK_YAWS)
        yaw = torch.remainder(yaw + math.pi, 2 * math.pi) - math.pi
        pitch = torch.tensor([math.radians(p) for p in PANORAMA_BANK_PITCHES_DEG], dtype=torch.float32)
        yaw_all = yaw.repeat(pitch.numel()).to(dev)  # pitch-major: all headings at pitch 0, then +30, then -30
        pitch_all = pitch.repeat_interleave(PANORAMA_BANK_YAWS).to(dev)
        c2w_bank = pose_from_yaw_pitch(center.expand(views, 3), yaw_all, pitch_all)
        positions = [point.tolist()]
        extra["cube_face_size"] = face
    else:
        cells, yaw = walk_positions(scene, views)
        pos = np.stack([_cell_position(scene, r, c) for r, c in cells])
        c2w_bank = pose_from_yaw_pitch(
            torch.from_numpy(pos).float().to(dev),
            torch.from_numpy(yaw).float().to(dev),
            torch.zeros(views, dtype=torch.float32, device=dev),
        )
        positions = pos.tolist()
        lift = None
    K_views = K_bank.expand(views, 3, 3).contiguous()
    images, depth = cast(c2w_bank, K_bank, Hb, Wb)
    bank = ReferenceBank(images, depth, K_views, c2w_bank)
    if lift is None:
        lift = (images, depth, K_views, c2w_bank)
    xyz, rgb, normal, spacing = points_from_views(*lift, voxel_size=voxel, with_normals=True, with_spacing=True)
    if xyz.shape[0] == 0:
        raise ValueError(
            f"capture={mode!r}: the capture of scene {scene.name!r} saw no surface (every ray missed the mesh)"
        )
    info = dict(scene.info)
    info["capture"] = {
        "mode": mode,
        "position": point.tolist(),
        "positions": positions,
        "views": int(views),
        **extra,
    }
    return replace(
        scene,
        points_xyz=xyz,
        points_rgb=rgb,
        points_normal=normal,
        points_spacing=spacing,
        bank=bank,
        info=info,
    )
