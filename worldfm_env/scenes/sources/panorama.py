"""Importer of equirectangular RGB-D panoramas (WorldFM's spherical convention), with pinhole bank crops.

WorldFM's spherical convention (``modules/pano_postprocess.py::compute_ply_arrays`` of the WorldFM
pipeline, imported by ``run_pipeline.py`` of inspatio/worldfm as ``modules.pano_postprocess``):
pixel (row, col) of an H x W panorama has longitude theta = col / W * 2 pi - pi and polar angle
phi = row / H * pi (pixel *indices*, no half-pixel offset), and its point in OpenCV coordinates is
    X = r sin(phi) cos(theta),  Y = -r cos(phi),  Z = -r sin(phi) sin(theta)
with r the panorama depth = range along the ray (MoGe's ``points.norm(-1)``, merged by
``merge_panorama_depth`` in ``run_pipeline.py::step2_moge_pipeline``), not z-depth.
So row 0 looks up (-y), the middle row is the horizon, column 0 looks along -x, column W/4 along
+z (our yaw 0), the centre column along +x and column 3W/4 along -z: left to right in the image is
turning right, as seen from inside the sphere.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.scenes.navigation import navigation_grid_from_points
from worldfm_env.scenes.scene import ReferenceBank, Scene
from worldfm_env.scenes.sources._io import ArrayLike, PathLike, _read_image, naming_source, read_depth

__all__ = ["load_panorama_scene", "panorama_directions"]


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
    source = repr(str(image)) if isinstance(image, (str, os.PathLike)) else "(an array)"
    with naming_source(f"panorama {source}"):
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
