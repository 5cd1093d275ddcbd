"""Scene importers: WorldFM ``meta.json`` inputs, equirectangular RGB-D panoramas and PLY point clouds.

Every importer returns an immutable :class:`~worldfm_env.scenes.scene.Scene` on the requested device,
and every malformed input raises :class:`ValueError` whose message names the offending field or file
and says what would be valid.

Conventions (see :mod:`worldfm_env.geometry`): OpenCV cameras (x right, y down, z forward), pixel
centres at integer + 0.5, camera-to-world 4x4 poses, gravity along +y (the floor has the largest y).

The official InSpatio-WorldFM ``meta.json`` (repository ``inspatio/worldfm``: ``README.md`` "Input
Format", ``run_pipeline.py::_load_meta`` and ``demo/meta.json``) holds exactly four keys, all required
there:

* ``name``: scene identifier (the official pipeline uses it as the output folder name);
* ``image``: path of the input perspective image, relative to the folder of ``meta.json``;
* ``K``: 3x3 intrinsics in pixels of that image;
* ``c2w``: one 4x4 or a list of N 4x4 OpenCV camera-to-world matrices: the *target* trajectory.

The official format carries no depth (the pipeline estimates it) and no pose of the input image (the
demo's first target pose is, up to a small pitch, the input view). This importer therefore also reads
two optional extension keys: ``depth`` (path of the image's depth map, relative to ``meta.json``: a
float ``.npy`` in scene units or a 16-bit PNG in millimetres) and ``image_c2w`` (the 4x4 pose of the
input image; defaults to ``c2w[0]``). ``name`` is optional here (defaults to the folder name).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.scenes.pointcloud import points_from_views
from worldfm_env.scenes.scene import NavigationGrid, ReferenceBank, Scene, load_scene_file

__all__ = [
    "load_meta_json_scene",
    "load_panorama_scene",
    "load_ply_scene",
    "load_scene",
    "estimate_floor_y",
    "navigation_grid_from_points",
    "panorama_directions",
    "read_depth",
    "read_ply",
    "save_ply",
]

META_REQUIRED_KEYS = ("image", "K", "c2w")
_RIGID_TOL = 1e-3  # tolerance on det(R) - 1 and on R^T R - I for a pose to count as rigid
_DEFAULT_CAMERA_HEIGHT = 1.5  # scene units; only used for PLY scenes, which carry no camera

PathLike = str | Path
ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------------
# small readers and validators
# --------------------------------------------------------------------------------------------------


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _read_image(src: PathLike | ArrayLike, field: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a file path or an array (uint8, or float in [0, 1])."""
    if isinstance(src, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        path = Path(src)
        if not path.is_file():
            raise ValueError(f"{field}: image file {str(path)!r} does not exist (expected a PNG/JPEG RGB image)")
        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{field}: {str(path)!r} is not a readable image (expected PNG/JPEG RGB): {err}") from err
    arr = _to_numpy(src)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{field}: image array must be (H, W, 3) RGB, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        # Float images are taken as [0, 1] (the usual convention of torch pipelines).
        return np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"{field}: image array must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def read_depth(src: PathLike | ArrayLike, field: str = "depth") -> np.ndarray:
    """Read a depth map as (H, W) float32 in scene units; 0 marks invalid pixels.

    Args:
        src: a ``.npy`` file (float depth in scene units), a 16-bit single-channel PNG (millimetres,
            divided by 1000 here; 0 = invalid), or an (H, W) array/tensor.
        field: name used in error messages.

    Returns:
        (H, W) float32 depth with non-finite and negative values set to 0.

    Raises:
        ValueError: missing file, unsupported extension, 8-bit PNG, or not a 2-D map.
    """
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise ValueError(f"{field}: depth file {str(path)!r} does not exist (expected .npy or 16-bit .png)")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as err:
                raise ValueError(f"{field}: {str(path)!r} is not a readable .npy array: {err}") from err
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"{field}: {str(path)!r} must hold a numeric depth array, got dtype {arr.dtype}")
            arr = arr.astype(np.float32)
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                mode = im.mode
                raw = np.array(im)
            # 16-bit PNGs open as "I;16*" (or "I" in some Pillow versions); 8-bit ones cannot hold millimetres.
            if not (mode.startswith("I;16") or mode == "I") or raw.ndim != 2:
                raise ValueError(
                    f"{field}: depth PNG {str(path)!r} must be 16-bit single-channel millimetres, got mode {mode!r}"
                )
            arr = raw.astype(np.float32) / 1000.0
        else:
            raise ValueError(
                f"{field}: unsupported depth file {str(path)!r}; expected .npy (float, scene units) "
                "or .png (16-bit, millimetres)"
            )
    else:
        arr = _to_numpy(src).astype(np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{field}: depth must be a 2-D (H, W) map, got shape {tuple(arr.shape)}")
    return np.where(np.isfinite(arr) & (arr > 0), arr, 0.0).astype(np.float32)


def _check_intrinsics(K: object, field: str = "K") -> np.ndarray:
    try:
        arr = np.asarray(K, dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{field} must be a 3x3 numeric matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]: {err}") from err
    if arr.shape != (3, 3):
        raise ValueError(f"{field} must be 3x3 [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise ValueError(
            f"{field} must be finite with positive focal lengths fx = K[0][0], fy = K[1][1]; got {arr.tolist()}"
        )
    return arr


def _check_poses(c2w: object, field: str = "c2w") -> np.ndarray:
    """(N, 4, 4) float64 rigid poses from a 4x4 or an Nx4x4 nested list; ValueError naming the bad index."""
    try:
        arr = np.asarray(c2w, dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{field} must be one 4x4 matrix or a list of N 4x4 matrices (numeric): {err}") from err
    if arr.shape == (4, 4):
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (4, 4) or arr.shape[0] == 0:
        raise ValueError(f"{field} must be one 4x4 matrix or a non-empty list of N 4x4 matrices, got shape {arr.shape}")
    for i, T in enumerate(arr):
        where = f"{field}[{i}]"
        if not np.all(np.isfinite(T)):
            raise ValueError(f"{where} has non-finite entries; expected a rigid 4x4 camera-to-world matrix")
        R = T[:3, :3]
        det = float(np.linalg.det(R))
        if abs(det) < 1e-6 or abs(float(np.linalg.det(T))) < 1e-6:
            raise ValueError(
                f"{where} is not invertible (det = {float(np.linalg.det(T)):.3g}); expected a rigid 4x4 "
                "camera-to-world matrix [[R, t], [0, 0, 0, 1]] with R a rotation"
            )
        if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=_RIGID_TOL):
            raise ValueError(f"{where} last row must be [0, 0, 0, 1], got {T[3].tolist()}")
        orth = float(np.abs(R.T @ R - np.eye(3)).max())
        if abs(det - 1.0) > _RIGID_TOL or orth > _RIGID_TOL:
            raise ValueError(
                f"{where} is not rigid: det(R) = {det:.6g}, max|R^T R - I| = {orth:.3g}; expected a proper rotation "
                f"(det 1, orthonormal within {_RIGID_TOL}) plus a translation, without scale or shear"
            )
    return arr


# --------------------------------------------------------------------------------------------------
# navigation grid
# --------------------------------------------------------------------------------------------------


def estimate_floor_y(xyz: torch.Tensor, top_fraction: float = 0.3, bin_size: float = 0.02) -> float:
    """World y of the floor: the densest horizontal layer among the lowest points.

    Gravity is +y, so the floor holds the largest y. We histogram the y of the ``top_fraction`` of
    points with the largest y in bins of ``bin_size`` and return the mean y of the fullest bin: a
    floor is a large flat layer, so it concentrates many points in one bin, whereas walls and
    furniture spread over many bins.

    Args:
        xyz: (P, 3) points.
        top_fraction: fraction (0, 1] of points with the largest y that are considered.
        bin_size: histogram bin width in scene units.

    Returns:
        The estimated floor y.
    """
    y = xyz[:, 1].float()
    y = y[torch.isfinite(y)]
    if y.numel() == 0:
        raise ValueError("floor_y: cannot estimate the floor of an empty point cloud")
    if y.numel() > 2_000_000:
        # A strided subsample keeps the sort cheap for panoramas of tens of millions of pixels.
        y = y[:: math.ceil(y.numel() / 2_000_000)]
    k = max(1, int(math.ceil(top_fraction * y.numel())))
    top = torch.topk(y, k).values  # (k,) largest y
    lo, hi = float(top.min()), float(top.max())
    if hi - lo < bin_size:
        return float(top.mean())
    bins = int(math.ceil((hi - lo) / bin_size)) + 1
    idx = ((top - lo) / bin_size).long().clamp(0, bins - 1)
    counts = torch.bincount(idx, minlength=bins)
    best = int(counts.argmax())
    return float(top[idx == best].mean())


def _erode(free: torch.Tensor, radius: float, cell_size: float) -> torch.Tensor:
    """Cells (Gz, Gx) of ``free`` whose centre is farther than ``radius`` from every blocked cell's square.

    Outside the grid counts as blocked (padding value 1), so free space never touches the border.
    """
    r = int(math.ceil(radius / cell_size))
    if r <= 0:
        return free
    d = torch.arange(-r, r + 1, dtype=torch.float32, device=free.device)
    gap = (d.abs() - 0.5).clamp(min=0.0) * cell_size  # per-axis distance from a cell centre to a neighbour's square
    kernel = ((gap[:, None] ** 2 + gap[None, :] ** 2) < radius**2).float()  # (2r+1, 2r+1) disk
    blocked = F.pad((~free).float()[None, None], (r, r, r, r), value=1.0)
    return F.conv2d(blocked, kernel[None, None])[0, 0] < 0.5  # (Gz, Gx): no blocked cell under the disk


def navigation_grid_from_points(
    xyz: torch.Tensor,
    cell_size: float = 0.1,
    floor_y: float | None = None,
    camera_height: float | None = None,
    agent_height: float = 1.5,
    agent_radius: float = 0.18,
    step_height: float = 0.2,
    floor_band: float = 0.05,
    top_fraction: float = 0.3,
    unobserved_is_free: bool = False,
    include_xz: torch.Tensor | Sequence[Sequence[float]] | None = None,
) -> NavigationGrid:
    """Top-down free space of a point cloud from a height slice above the floor.

    A cell is *observed floor* when it holds a point within ``floor_band`` of ``floor_y``; it is
    *occupied* when it holds a point whose height above the floor is in
    ``(step_height, max(agent_height, camera_height)]`` (anything the body or the camera would hit;
    lower points are steps the agent walks over). Free = observed floor and not occupied (or simply
    not occupied when ``unobserved_is_free``), then eroded by ``agent_radius``: a cell stays free only
    if no blocked cell (occupied, unobserved, or outside the grid) lies within ``agent_radius`` of its
    centre. The grid covers the x-z bounding box of the points (plus ``include_xz``).

    Args:
        xyz: (P, 3) float world points (gravity +y).
        cell_size: edge of a square cell in scene units.
        floor_y: world y of the floor; estimated with :func:`estimate_floor_y` when None.
        camera_height: height of the agent's camera above the floor; raises the obstacle slice's top
            to it when larger than ``agent_height``.
        agent_height: height of the agent's body.
        agent_radius: radius of the agent's footprint; obstacles are dilated by it.
        step_height: points up to this height above the floor do not block.
        floor_band: half-thickness of the slab around ``floor_y`` that counts as floor.
        top_fraction: fraction of the lowest points (largest y) searched for the floor layer.
        unobserved_is_free: treat cells with no floor point as free (for single views whose floor
            near the camera is outside the image).
        include_xz: (M, 2) world (x, z) positions the grid must cover (e.g. camera centres).

    Returns:
        The :class:`NavigationGrid`.

    Raises:
        ValueError: bad parameters, an empty cloud, or no free cell left ("no free space").
    """
    if cell_size <= 0:
        raise ValueError(f"cell_size must be positive (scene units), got {cell_size}")
    if agent_radius < 0 or agent_height <= 0 or step_height < 0 or floor_band <= 0:
        raise ValueError(
            "navigation grid parameters must satisfy agent_radius >= 0, agent_height > 0, step_height >= 0, "
            f"floor_band > 0; got agent_radius={agent_radius}, agent_height={agent_height}, "
            f"step_height={step_height}, floor_band={floor_band}"
        )
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (P, 3) points, got shape {tuple(xyz.shape)}")
    pts = xyz.float()
    pts = pts[torch.isfinite(pts).all(dim=1)]
    if pts.shape[0] == 0:
        raise ValueError("xyz: the point cloud is empty (no finite points); cannot build a navigation grid")
    device = pts.device
    if floor_y is None:
        floor_y = estimate_floor_y(pts, top_fraction=top_fraction)
    floor_y = float(floor_y)

    # Grid extent: the x-z bounding box of the points, plus any position that must be inside it.
    xz = pts[:, [0, 2]]  # (P, 2)
    lo, hi = xz.min(0).values, xz.max(0).values
    if include_xz is not None:
        extra = torch.as_tensor(include_xz, dtype=torch.float32, device=device).reshape(-1, 2)
        if extra.shape[0] > 0:
            lo = torch.minimum(lo, extra.min(0).values)
            hi = torch.maximum(hi, extra.max(0).values)
    x0, z0 = float(lo[0]), float(lo[1])
    gx = int(math.floor((float(hi[0]) - x0) / cell_size)) + 1
    gz = int(math.floor((float(hi[1]) - z0) / cell_size)) + 1
    col = ((xz[:, 0] - x0) / cell_size).floor().long().clamp(0, gx - 1)
    row = ((xz[:, 1] - z0) / cell_size).floor().long().clamp(0, gz - 1)
    flat = row * gx + col  # (P,)

    height = floor_y - pts[:, 1]  # (P,) height above the floor (y points down)
    top = max(agent_height, camera_height or 0.0)
    is_floor = height.abs() <= floor_band
    is_obstacle = (height > step_height) & (height <= top)
    observed = torch.bincount(flat[is_floor], minlength=gz * gx).reshape(gz, gx) > 0
    occupied = torch.bincount(flat[is_obstacle], minlength=gz * gx).reshape(gz, gx) > 0
    free = ~occupied if unobserved_is_free else observed & ~occupied

    # Erode by the agent radius: a cell is blocked if the agent's disk (centred on the cell centre)
    # touches any blocked cell's square. Outside the grid counts as blocked (padding value 1).
    free = _erode(free, agent_radius, cell_size)
    if not bool(free.any()):
        raise ValueError(
            f"navigation grid: no free space: {int(observed.sum())} observed floor cells at floor_y={floor_y:.3f}, "
            f"{int(occupied.sum())} occupied cells, agent_radius={agent_radius}, cell_size={cell_size}. "
            "The point cloud needs a visible floor (a dense layer at the largest y) with room to stand; "
            "pass floor_y explicitly or a smaller agent_radius/cell_size"
        )
    return NavigationGrid(free=free, origin=(x0, z0), cell_size=float(cell_size), floor_y=floor_y)


# --------------------------------------------------------------------------------------------------
# meta.json (official WorldFM input)
# --------------------------------------------------------------------------------------------------


def _resize_view(
    image: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, resolution: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize (H, W, 3) uint8 + (H, W) depth to ``resolution`` = (h, w); K scaled to the new pixels."""
    h, w = int(resolution[0]), int(resolution[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"resolution must be (height, width) with positive entries, got {resolution}")
    H, W = depth.shape
    img = F.interpolate(
        image.permute(2, 0, 1)[None].float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False
    )[0].permute(1, 2, 0)
    img = img.round().clamp(0, 255).to(torch.uint8)
    # Nearest-exact keeps real depths (no blending across edges) and samples pixel centres symmetrically.
    dep = F.interpolate(depth[None, None], size=(h, w), mode="nearest-exact")[0, 0]
    # With pixel centres at integer + 0.5, a resize maps u -> u * w / W exactly, so fx and cx scale alike.
    scale = torch.tensor([w / W, h / H, 1.0], dtype=K.dtype, device=K.device)
    return img, dep, K * scale[:, None]


def load_meta_json_scene(
    meta_path: PathLike,
    depth: PathLike | ArrayLike | None = None,
    device: torch.device | str = "cpu",
    resolution: tuple[int, int] | None = None,
    voxel_size: float | None = None,
    camera_height: float | None = None,
    floor_y: float | None = None,
    cell_size: float = 0.1,
    agent_radius: float = 0.18,
    agent_height: float = 1.5,
    name: str | None = None,
) -> Scene:
    """Import an official WorldFM ``meta.json`` scene (an image + intrinsics + trajectory) with its depth.

    The input image's pose is ``meta["image_c2w"]`` when present, else the first trajectory pose
    ``c2w[0]``. The point cloud is one point per valid depth pixel of the image (no voxel
    downsampling unless ``voxel_size``); the reference bank is that single view (resized to
    ``resolution`` if given). The trajectory is kept in ``info["trajectory_c2w"]`` (N x 4 x 4 nested
    list), with ``info["trajectory_K"]`` (3 x 3, pixels of the image) and
    ``info["trajectory_image_size"]`` = [H, W].

    The navigation grid is a height slice (see :func:`navigation_grid_from_points`); a single view
    rarely sees the floor under its own camera, so when no observed-floor cell is free the grid
    falls back to "everything not occupied is free" (``info["navigation"]`` records which).

    Args:
        meta_path: ``meta.json`` or the folder holding it.
        depth: depth of the image (file path, (H, W) array or tensor); when None, ``meta["depth"]``
            (path relative to ``meta.json``) is used.
        device: torch device of the returned scene.
        resolution: (height, width) of the bank view; None keeps the image's size.
        voxel_size: optional voxel downsampling of the point cloud.
        camera_height: camera height above the floor; when given and ``floor_y`` is None the floor is
            placed ``camera_height`` below the image's camera, otherwise it is estimated from points.
        floor_y: world y of the floor (overrides the estimate).
        cell_size, agent_radius, agent_height: navigation grid parameters.
        name: scene name; defaults to ``meta["name"]``, then the folder name.

    Returns:
        The imported :class:`Scene`.

    Raises:
        ValueError: any malformed field or file (missing key, K not 3x3, c2w not 4x4/Nx4x4 or not
            rigid, missing image, depth/image size mismatch, no valid depth, ...).
    """
    meta_path = Path(meta_path)
    if meta_path.is_dir():
        meta_path = meta_path / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"meta.json file {str(meta_path)!r} does not exist (expected a WorldFM meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"meta.json {str(meta_path)!r} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"meta.json {str(meta_path)!r} must hold a JSON object with keys name, image, K, c2w")
    for key in META_REQUIRED_KEYS:
        if key not in meta:
            raise ValueError(
                f"meta.json {str(meta_path)!r}: missing required key {key!r} (WorldFM meta.json keys: name, image, "
                "K (3x3), c2w (4x4 or Nx4x4); optional extensions: depth, image_c2w)"
            )
    root = meta_path.parent
    K = _check_intrinsics(meta["K"], "K")
    trajectory = _check_poses(meta["c2w"], "c2w")  # (N, 4, 4)
    ref_pose = trajectory[0]
    if "image_c2w" in meta:
        image_pose = _check_poses(meta["image_c2w"], "image_c2w")
        if image_pose.shape[0] != 1:
            raise ValueError(f"image_c2w must be one 4x4 matrix (the input image's pose), got {image_pose.shape[0]}")
        ref_pose = image_pose[0]

    if not isinstance(meta["image"], str):
        raise ValueError(f"meta.json 'image' must be a path string relative to meta.json, got {meta['image']!r}")
    image = _read_image(root / meta["image"], "image")
    if depth is None:
        if "depth" not in meta:
            raise ValueError(
                f"meta.json {str(meta_path)!r}: no depth: pass depth=... (path or array) or add a 'depth' key "
                "(a .npy in scene units or a 16-bit PNG in millimetres, relative to meta.json)"
            )
        if not isinstance(meta["depth"], str):
            raise ValueError(f"meta.json 'depth' must be a path string relative to meta.json, got {meta['depth']!r}")
        depth = root / meta["depth"]
    depth_np = read_depth(depth, "depth")
    H, W = image.shape[:2]
    if depth_np.shape != (H, W):
        raise ValueError(
            f"depth size {depth_np.shape[0]}x{depth_np.shape[1]} (HxW) does not match image size {H}x{W}; "
            "the depth map must have the image's resolution"
        )

    img_t = torch.from_numpy(image)  # (H, W, 3) uint8
    dep_t = torch.from_numpy(depth_np)  # (H, W) float32
    K_t = torch.from_numpy(K).float()  # (3, 3)
    pose_t = torch.from_numpy(ref_pose).float()  # (4, 4)
    xyz, rgb, normals, spacing = points_from_views(
        img_t[None], dep_t[None], K_t[None], pose_t[None], voxel_size=voxel_size, with_normals=True, with_spacing=True
    )
    if xyz.shape[0] == 0:
        raise ValueError(
            f"depth has no valid pixels (all {H * W} are <= 0 or non-finite): the point cloud would be empty; "
            "depth must be positive z-depth in scene units"
        )

    # Floor: below the camera by camera_height when given, else the densest low layer of the points.
    cam_y = float(ref_pose[1, 3])
    if floor_y is None and camera_height is not None:
        floor_y = cam_y + float(camera_height)
    nav_kwargs = dict(
        cell_size=cell_size,
        floor_y=floor_y,
        camera_height=camera_height,
        agent_height=agent_height,
        agent_radius=agent_radius,
        include_xz=[[float(ref_pose[0, 3]), float(ref_pose[2, 3])]],
    )
    try:
        grid = navigation_grid_from_points(xyz, **nav_kwargs)
        navigation = "observed-floor"
    except ValueError as err:
        if "no free space" not in str(err):
            raise
        grid = navigation_grid_from_points(xyz, unobserved_is_free=True, **nav_kwargs)
        navigation = "unobserved-as-free"
    if camera_height is None:
        camera_height = grid.floor_y - cam_y
        if camera_height <= 0:
            raise ValueError(
                f"camera_height: the estimated floor (y={grid.floor_y:.3f}) is not below the image's camera "
                f"(y={cam_y:.3f}); pass camera_height or floor_y explicitly"
            )

    bank_img, bank_dep, bank_K = img_t, dep_t, K_t
    if resolution is not None:
        bank_img, bank_dep, bank_K = _resize_view(img_t, dep_t, K_t, resolution)
    bank = ReferenceBank(bank_img[None].contiguous(), bank_dep[None].contiguous(), bank_K[None], pose_t[None])
    scene_name = name or meta.get("name") or root.resolve().name or "meta"
    info = {
        "source": "meta.json",
        "file": meta_path.name,  # a file name only: scenes are shared across machines
        "image": Path(meta["image"]).name,
        "trajectory_c2w": trajectory.tolist(),
        "trajectory_K": K.tolist(),
        "trajectory_image_size": [int(H), int(W)],
        "reference_pose": "image_c2w" if "image_c2w" in meta else "c2w[0]",
        "navigation": navigation,
    }
    return Scene(
        name=str(scene_name),
        points_xyz=xyz,
        points_rgb=rgb,
        bank=bank,
        navigation_grid=grid,
        camera_height=float(camera_height),
        info=info,
        points_normal=normals,
        points_spacing=spacing,
    ).to(device)


# --------------------------------------------------------------------------------------------------
# equirectangular panorama
# --------------------------------------------------------------------------------------------------
#
# WorldFM's spherical convention (``modules/pano_postprocess.py::compute_ply_arrays`` of the WorldFM
# pipeline, imported by ``run_pipeline.py`` of inspatio/worldfm as ``modules.pano_postprocess``):
# pixel (row, col) of an H x W panorama has longitude theta = col / W * 2 pi - pi and polar angle
# phi = row / H * pi (pixel *indices*, no half-pixel offset), and its point in OpenCV coordinates is
#     X = r sin(phi) cos(theta),  Y = -r cos(phi),  Z = -r sin(phi) sin(theta)
# with r the panorama depth = range along the ray (MoGe's ``points.norm(-1)``, merged by
# ``merge_panorama_depth`` in ``run_pipeline.py::step2_moge_pipeline``), not z-depth.
# So row 0 looks up (-y), the middle row is the horizon, column 0 looks along -x, column W/4 along
# +z (our yaw 0), the centre column along +x and column 3W/4 along -z: left to right in the image is
# turning right, as seen from inside the sphere.


def panorama_directions(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Unit ray directions (H, W, 3) of every pixel of an equirectangular panorama (WorldFM convention)."""
    theta = torch.arange(width, dtype=torch.float32, device=device) / width * (2.0 * math.pi) - math.pi  # (W,)
    phi = torch.arange(height, dtype=torch.float32, device=device) / height * math.pi  # (H,)
    sp, cp = torch.sin(phi)[:, None], torch.cos(phi)[:, None]  # (H, 1)
    st, ct = torch.sin(theta)[None, :], torch.cos(theta)[None, :]  # (1, W)
    return torch.stack(torch.broadcast_tensors(sp * ct, -cp, -sp * st), dim=-1)  # (H, W, 3)


def _directions_to_panorama(d: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous (col, row) panorama coordinates (integer = pixel index) of unit directions (..., 3)."""
    theta = torch.atan2(-d[..., 2], d[..., 0])  # in (-pi, pi]
    phi = torch.acos((-d[..., 1]).clamp(-1.0, 1.0))  # in [0, pi]
    col = torch.remainder((theta + math.pi) / (2.0 * math.pi) * width, float(width))
    row = (phi / math.pi * height).clamp(0.0, height - 1.0)
    return col, row


def _sample_bilinear_wrap(img: torch.Tensor, col: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (N, C) of img (H, W, C) at continuous (col, row); wraps in x, clamps in y."""
    H, W = img.shape[:2]
    c0f, r0f = torch.floor(col), torch.floor(row)
    fx, fy = (col - c0f)[:, None], (row - r0f)[:, None]
    c0 = c0f.long() % W
    c1 = (c0 + 1) % W  # the seam: the last column blends with the first
    r0 = r0f.long().clamp(0, H - 1)
    r1 = (r0 + 1).clamp(0, H - 1)
    return (
        img[r0, c0] * (1 - fx) * (1 - fy)
        + img[r0, c1] * fx * (1 - fy)
        + img[r1, c0] * (1 - fx) * fy
        + img[r1, c1] * fx * fy
    )


def _render_panorama_crops(
    pano_rgb: torch.Tensor, pano_range: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole crops (B, h, w, 3) uint8 and z-depth (B, h, w) of a panorama seen from its centre."""
    Hp, Wp = pano_range.shape
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=K.device) + 0.5,
        torch.arange(width, dtype=torch.float32, device=K.device) + 0.5,
        indexing="ij",
    )
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], dim=-1)  # (h, w, 3), z=1
    ray_norm = ray.norm(dim=-1)  # (h, w): range / z along each pixel ray
    world = torch.einsum("bij,hwj->bhwi", c2w[:, :3, :3], ray / ray_norm[..., None])  # (B, h, w, 3) unit
    col, row = _directions_to_panorama(world.reshape(-1, 3), Hp, Wp)
    rgb = _sample_bilinear_wrap(pano_rgb.float(), col, row).round().clamp(0, 255).to(torch.uint8)
    # Nearest for depth: blending ranges across an occlusion edge would invent floating points.
    cn = torch.round(col).long() % Wp
    rn = torch.round(row).long().clamp(0, Hp - 1)
    rng = pano_range[rn, cn].reshape(-1, height, width)  # (B, h, w)
    B = c2w.shape[0]
    z = torch.where(rng > 0, rng / ray_norm, torch.zeros_like(rng))
    return rgb.reshape(B, height, width, 3), z


def load_panorama_scene(
    image: PathLike | ArrayLike,
    depth: PathLike | ArrayLike,
    device: torch.device | str = "cpu",
    bank_resolution: tuple[int, int] = (64, 64),
    bank_hfov_deg: float = 90.0,
    bank_yaws: int = 8,
    bank_pitches: Sequence[float] = (0.0, -45.0, 45.0),
    camera_height: float | None = None,
    cell_size: float = 0.1,
    agent_radius: float = 0.18,
    agent_height: float = 1.5,
    voxel_size: float | None = None,
    name: str | None = None,
) -> Scene:
    """Import an equirectangular RGB panorama (H x 2H) with its range panorama, camera at the origin.

    Points follow WorldFM's spherical convention (see :func:`panorama_directions`; the panorama depth
    is the range along each ray, as WorldFM's MoGe step produces). The camera sits at the origin
    with identity pose. The bank holds ``len(bank_pitches) * bank_yaws`` pinhole crops of the
    panorama from the origin (yaws evenly spaced from 0, pitches in degrees, positive = up), each at
    ``bank_resolution`` with ``intrinsics_from_fov(bank_hfov_deg)``: rgb bilinearly sampled, depth
    nearest-sampled and converted to each crop's z-depth.

    Args:
        image: panorama RGB (file path, or (H, 2H, 3) uint8 / float [0, 1] array or tensor).
        depth: range panorama of the same size (``.npy`` in scene units, 16-bit PNG in millimetres,
            or an array/tensor); 0 = invalid.
        device: torch device of the returned scene.
        bank_resolution: (height, width) of each bank crop.
        bank_hfov_deg: horizontal field of view of the crops in degrees.
        bank_yaws: number of yaws per pitch.
        bank_pitches: pitches of the crops in degrees (positive looks up).
        camera_height: camera height above the floor; None estimates the floor from the points
            (the camera is at y = 0, so it is the floor's y).
        cell_size, agent_radius, agent_height: navigation grid parameters.
        voxel_size: optional voxel downsampling of the point cloud.
        name: scene name (default: the image file stem, or "panorama").

    Returns:
        The imported :class:`Scene`.

    Raises:
        ValueError: not H x 2H, depth of another size, no valid depth, bad bank parameters.
    """
    rgb_np = _read_image(image, "image")
    H, W = rgb_np.shape[:2]
    if W != 2 * H:
        raise ValueError(f"image: an equirectangular panorama must be H x 2H pixels, got {H}x{W} (HxW)")
    rng_np = read_depth(depth, "depth")
    if rng_np.shape != (H, W):
        raise ValueError(
            f"depth size {rng_np.shape[0]}x{rng_np.shape[1]} (HxW) does not match panorama image size {H}x{W}"
        )
    if bank_yaws < 1 or len(bank_pitches) == 0:
        raise ValueError(f"bank_yaws must be >= 1 and bank_pitches non-empty, got {bank_yaws} and {list(bank_pitches)}")
    bh, bw = int(bank_resolution[0]), int(bank_resolution[1])
    if bh <= 0 or bw <= 0:
        raise ValueError(f"bank_resolution must be (height, width) with positive entries, got {bank_resolution}")
    for p in bank_pitches:
        if not -90.0 < float(p) < 90.0:
            raise ValueError(f"bank_pitches must be in (-90, 90) degrees, got {p}")

    dev = torch.device(device)
    pano = torch.from_numpy(rgb_np).to(dev)  # (H, W, 3) uint8
    rng = torch.from_numpy(rng_np).to(dev)  # (H, W) range
    valid = rng > 0
    if not bool(valid.any()):
        raise ValueError(
            f"depth has no valid pixels (all {H * W} are <= 0 or non-finite): the point cloud would be empty; "
            "depth must be the positive range along each ray in scene units"
        )
    dirs = panorama_directions(H, W, device=dev)  # (H, W, 3)
    xyz = (dirs * rng[..., None])[valid].contiguous()  # (P, 3)
    rgb = pano[valid].contiguous()  # (P, 3)
    if voxel_size is not None:
        from worldfm_env.scenes.pointcloud import voxel_downsample

        xyz, rgb = voxel_downsample(xyz, rgb, voxel_size)

    yaw = torch.arange(bank_yaws, dtype=torch.float32, device=dev) * (2.0 * math.pi / bank_yaws)
    pitch = torch.tensor([math.radians(float(p)) for p in bank_pitches], dtype=torch.float32, device=dev)
    yaw_g, pitch_g = torch.meshgrid(yaw, pitch, indexing="xy")  # (P_pitch, Y): pitch-major order
    yaw_g, pitch_g = yaw_g.reshape(-1), pitch_g.reshape(-1)
    c2w = pose_from_yaw_pitch(torch.zeros(yaw_g.shape[0], 3, device=dev), yaw_g, pitch_g)  # (B, 4, 4)
    K = intrinsics_from_fov(bw, bh, bank_hfov_deg, device=dev)
    bank_rgb, bank_depth = _render_panorama_crops(pano, rng, c2w, K, bh, bw)
    bank = ReferenceBank(bank_rgb, bank_depth, K.expand(c2w.shape[0], 3, 3).contiguous(), c2w)

    floor_y = float(camera_height) if camera_height is not None else None  # camera at y = 0, floor below (+y)
    grid = navigation_grid_from_points(
        xyz,
        cell_size=cell_size,
        floor_y=floor_y,
        camera_height=camera_height,
        agent_height=agent_height,
        agent_radius=agent_radius,
        include_xz=[[0.0, 0.0]],
    )
    if camera_height is None:
        camera_height = grid.floor_y
        if camera_height <= 0:
            raise ValueError(
                f"camera_height: the estimated floor (y={grid.floor_y:.3f}) is not below the panorama's centre "
                "(y=0); pass camera_height explicitly"
            )
    if name is None:
        name = Path(image).stem if isinstance(image, (str, Path)) else "panorama"
    info = {
        "source": "panorama",
        "image": Path(image).name if isinstance(image, (str, Path)) else None,
        "spherical_convention": "worldfm: theta=col/W*2pi-pi, phi=row/H*pi, "
        "xyz=r*(sin(phi)cos(theta), -cos(phi), -sin(phi)sin(theta)), r=range",
        "bank_yaws": int(bank_yaws),
        "bank_pitches_deg": [float(p) for p in bank_pitches],
    }
    return Scene(
        name=str(name),
        points_xyz=xyz,
        points_rgb=rgb,
        bank=bank,
        navigation_grid=grid,
        camera_height=float(camera_height),
        info=info,
    )


# --------------------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------------

SUPPORTED_KINDS = (
    "*.wfscene (saved scene), *.json (WorldFM meta.json), a directory containing meta.json, *.ply (point cloud); "
    "panoramas: load_panorama_scene(image, depth); procedural scenes: 'procedural:...' specs elsewhere"
)


def load_scene(spec: PathLike, device: torch.device | str = "cpu", **kwargs) -> Scene:
    """Load a scene from a file or folder, dispatching on its kind.

    Args:
        spec: ``*.wfscene`` (:func:`~worldfm_env.scenes.scene.load_scene_file`), ``*.json``
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
