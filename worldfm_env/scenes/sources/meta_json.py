"""Importer of the official InSpatio-WorldFM ``meta.json`` input (an image, intrinsics, a trajectory) plus depth.

Returns an immutable :class:`~worldfm_env.scenes.scene.Scene` on the requested device; every
malformed input raises :class:`ValueError` whose message names the offending field or file and says
what would be valid.

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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldfm_env.scenes.navigation import navigation_grid_from_points
from worldfm_env.scenes.pointcloud import points_from_views
from worldfm_env.scenes.scene import ReferenceBank, Scene
from worldfm_env.scenes.sources._io import ArrayLike, PathLike, _read_image, naming_source, read_depth

__all__ = ["load_meta_json_scene"]

META_REQUIRED_KEYS = ("image", "K", "c2w")
_RIGID_TOL = 1e-3  # tolerance on det(R) - 1 and on R^T R - I for a pose to count as rigid


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
    with naming_source(f"meta.json {str(meta_path)!r}"):
        K = _check_intrinsics(meta["K"], "K")
        trajectory = _check_poses(meta["c2w"], "c2w")  # (N, 4, 4)
        ref_pose = trajectory[0]
        if "image_c2w" in meta:
            image_pose = _check_poses(meta["image_c2w"], "image_c2w")
            if image_pose.shape[0] != 1:
                raise ValueError(
                    f"image_c2w must be one 4x4 matrix (the input image's pose), got {image_pose.shape[0]}"
                )
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
            f"meta.json {str(meta_path)!r}: depth size {depth_np.shape[0]}x{depth_np.shape[1]} (HxW) does not match "
            f"image size {H}x{W}; the depth map must have the image's resolution"
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
            raise ValueError(f"meta.json {str(meta_path)!r}: {err}") from err
        with naming_source(f"meta.json {str(meta_path)!r}"):
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
