"""Point clouds from RGB-D views: the explicit 3-D anchor of a scene."""

from __future__ import annotations

import torch

from worldfm_env.geometry import unproject_depth

__all__ = ["points_from_views", "voxel_downsample"]


def points_from_views(
    images: torch.Tensor,
    depth: torch.Tensor,
    K: torch.Tensor,
    c2w: torch.Tensor,
    voxel_size: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One world point per pixel with positive finite depth, over all views.

    Args:
        images: (B, H, W, 3) uint8.
        depth: (B, H, W) float z-depth; pixels with depth <= 0 or non-finite are skipped.
        K: (B, 3, 3) intrinsics. c2w: (B, 4, 4) poses.
        voxel_size: if given, keep one point per cubic voxel of this edge (see :func:`voxel_downsample`).

    Returns:
        (xyz (P, 3) float32, rgb (P, 3) uint8).
    """
    if images.shape[:3] != depth.shape:
        raise ValueError(f"images {tuple(images.shape)} and depth {tuple(depth.shape)} must have the same (B, H, W)")
    world = unproject_depth(depth.float(), K.float(), c2w.float())  # (B, H, W, 3)
    valid = torch.isfinite(depth) & (depth > 0)
    xyz = world[valid]
    rgb = images[valid]
    if voxel_size is not None and xyz.shape[0] > 0:
        xyz, rgb = voxel_downsample(xyz, rgb, voxel_size)
    return xyz.contiguous(), rgb.contiguous()


def voxel_downsample(xyz: torch.Tensor, rgb: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first point (in input order) of every occupied voxel of edge ``voxel_size``.

    Keeping an input point (not the voxel mean) preserves exact colours and positions, so a view's
    own pixels still land on their pixel centres when that view's points come first.
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
    return xyz[keep], rgb[keep]
