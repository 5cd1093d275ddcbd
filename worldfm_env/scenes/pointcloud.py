"""Point clouds from RGB-D views: the explicit 3-D anchor of a scene."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldfm_env.geometry import unproject_depth

__all__ = ["points_from_views", "voxel_downsample", "normals_from_depth"]


def normals_from_depth(
    world: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, max_jump: float = 0.3
) -> torch.Tensor:
    """Unit surface normals (B, H, W, 3) of unprojected depth maps, facing their camera.

    One-sided differences of the world points towards the neighbour with the smaller relative depth
    jump (so silhouettes are not bridged); a pixel whose smoother neighbour still jumps by more than
    ``max_jump`` in relative depth, or is missing, gets a zero normal, which the splat reads as
    "unknown".

    Args:
        world: (B, H, W, 3) world points of every pixel. depth: (B, H, W) z-depth (<= 0: invalid).
        c2w: (B, 4, 4) camera poses (to orient the normals towards the camera).
    """
    valid = torch.isfinite(depth) & (depth > 0)
    d = torch.where(valid, depth, torch.zeros_like(depth))

    def tangent(
        step: torch.Tensor, d_next: torch.Tensor, d_prev: torch.Tensor, pad_fwd, pad_back, pad_fwd_d, pad_back_d
    ):
        # Relative depth jump to each neighbour (inf when either is invalid); take the smoother side.
        jump = torch.where(
            (d_next > 0) & (d_prev > 0),
            (d_next - d_prev).abs() / torch.minimum(d_next, d_prev).clamp_min(1e-12),
            torch.full_like(d_next, float("inf")),
        )
        fwd, back = F.pad(step, pad_fwd), F.pad(step, pad_back)
        j_fwd = F.pad(jump, pad_fwd_d, value=float("inf"))
        j_back = F.pad(jump, pad_back_d, value=float("inf"))
        use_fwd = j_fwd <= j_back
        best = torch.where(use_fwd, j_fwd, j_back)
        t = torch.where(use_fwd[..., None], fwd, back)
        return torch.where((best <= max_jump)[..., None], t, torch.zeros_like(t))

    du = tangent(
        world[:, :, 1:] - world[:, :, :-1], d[:, :, 1:], d[:, :, :-1], (0, 0, 0, 1), (0, 0, 1, 0), (0, 1), (1, 0)
    )
    dv = tangent(
        world[:, 1:] - world[:, :-1],
        d[:, 1:],
        d[:, :-1],
        (0, 0, 0, 0, 0, 1),
        (0, 0, 0, 0, 1, 0),
        (0, 0, 0, 1),
        (0, 0, 1, 0),
    )
    n = torch.cross(du, dv, dim=-1)
    length = n.norm(dim=-1, keepdim=True)
    n = torch.where(length > 1e-12, n / length.clamp_min(1e-12), torch.zeros_like(n))
    to_camera = c2w[:, None, None, :3, 3] - world
    flip = (n * to_camera).sum(-1, keepdim=True) < 0
    n = torch.where(flip, -n, n)
    return torch.where(valid[..., None], n, torch.zeros_like(n))


def points_from_views(
    images: torch.Tensor,
    depth: torch.Tensor,
    K: torch.Tensor,
    c2w: torch.Tensor,
    voxel_size: float | None = None,
    with_normals: bool = False,
    with_spacing: bool = False,
):
    """One world point per pixel with positive finite depth, over all views.

    Args:
        images: (B, H, W, 3) uint8.
        depth: (B, H, W) float z-depth; pixels with depth <= 0 or non-finite are skipped.
        K: (B, 3, 3) intrinsics. c2w: (B, 4, 4) poses.
        voxel_size: if given, keep one point per cubic voxel of this edge (see :func:`voxel_downsample`).
        with_normals: also return unit normals from the depth maps (zero where unknown).
        with_spacing: also return each point's sample spacing: the frontal size of its pixel at its depth,
            ``z / f`` (so it projects to one pixel in its own view), at least ``voxel_size`` after downsampling.

    Returns:
        (xyz (P, 3) float32, rgb (P, 3) uint8), then normals (P, 3) float32 if ``with_normals``, then
        spacing (P,) float32 if ``with_spacing``.
    """
    if images.shape[:3] != depth.shape:
        raise ValueError(f"images {tuple(images.shape)} and depth {tuple(depth.shape)} must have the same (B, H, W)")
    world = unproject_depth(depth.float(), K.float(), c2w.float())  # (B, H, W, 3)
    valid = torch.isfinite(depth) & (depth > 0)
    xyz = world[valid]
    rgb = images[valid]
    extras = []
    normals = normals_from_depth(world, depth.float(), c2w.float()) if with_normals else None
    if with_normals:
        extras.append(normals[valid])
    if with_spacing:
        focal = torch.sqrt(K[:, 0, 0] * K[:, 1, 1]).float()[:, None, None]  # (B, 1, 1)
        extras.append((depth.float() / focal)[valid])
    if voxel_size is not None and xyz.shape[0] > 0:
        xyz, rgb, *extras = voxel_downsample(xyz, rgb, voxel_size, *extras)
        if with_spacing:
            extras[-1] = extras[-1].clamp_min(voxel_size)
    return (xyz.contiguous(), rgb.contiguous(), *(e.contiguous() for e in extras))


def voxel_downsample(xyz: torch.Tensor, rgb: torch.Tensor, voxel_size: float, *extras: torch.Tensor):
    """Keep the first point (in input order) of every occupied voxel of edge ``voxel_size``.

    Keeping an input point (not the voxel mean) preserves exact colours and positions, so a view's
    own pixels still land on their pixel centres when that view's points come first. ``extras``
    (per-point tensors such as normals) are filtered the same way.

    Returns:
        (xyz, rgb, *extras) of the kept points.
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    cells = torch.floor((xyz - xyz.min(0).values) / voxel_size).long()
    dims = cells.max(0).values + 1
    key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    first = torch.ones_like(sorted_key, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    keep = torch.sort(order[first]).values  # back to input order
    return (xyz[keep], rgb[keep], *(e[keep] for e in extras))
