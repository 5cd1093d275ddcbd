"""Anchor colours resampled from the captured views (``anchor_colour="bank"``).

The splat gives every covered pixel the colour of one point: the point of the nearest surface whose sample lies
nearest the pixel centre. That is nearest-neighbour resampling of the captured images, seen from a new pose: a
surface seen nearer than it was captured comes out in blocks, a slanted stripe in steps, and overlapping footprint
splats shift edges by up to half a sample. Even where the splat finds the right surface, its colours are aliased.

:func:`resample_anchor_colours` keeps the splat's geometry and replaces the colour. Every covered pixel is lifted to
3-D with the anchor depth and projected into each captured view of its env's scene (the reference bank the points
were lifted from). A view is usable when the point lands inside it, in front of it, and the bilinear mix of the
inverse depths of the four captured pixels around the projection matches the point's within ``tolerance``
(relative). Inverse depth is affine in the pixel coordinates over a plane, so this holds on any smooth surface,
slanted floors included, while across an occlusion edge the mix falls between the two surfaces: the four are then
not samples of one surface and their colours are not mixed (unless the far side's weight is too small to matter).
Of the usable views the one that sampled the surface most finely (smallest depth over focal length) gives the
colour, bilinearly. Pixels no view can explain (a depth edge in every view) and pixels of grown (generated) points
keep the splat's colour.

Plain torch over (N, H, W) pixels, one view slot of all envs at a time: memory stays O(N H W) whatever the bank.
"""

from __future__ import annotations

import torch

from worldfm_env.geometry import project_points, unproject_depth

__all__ = ["ANCHOR_COLOUR_VALUES", "resample_anchor_colours"]

ANCHOR_COLOUR_VALUES = ("splat", "bank")
"""The valid values of ``anchor_colour``: ``"splat"`` (each covered pixel shows its winning point's colour, as
published) and ``"bank"`` (colours resampled bilinearly from the finest captured view, see the module)."""


def resample_anchor_colours(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    mask: torch.Tensor,
    scene_index: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    banks,
    tolerance: float = 0.02,
    keep: torch.Tensor | None = None,
    views: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace the colours of covered anchor pixels, in place, by bilinear samples of the finest captured view.

    Args:
        rgb: (N, H, W, 3) uint8 anchor colours, written in place.
        depth: (N, H, W) anchor depth (camera z), > 0 where ``mask``.
        mask: (N, H, W) bool, the pixels a point covers.
        scene_index: (N,) scene of each env (rows of the banks' per-scene tensors).
        c2w: (N, 4, 4) camera-to-world poses; K: (N, 3, 3) intrinsics of the anchor cameras.
        banks: the packed reference banks (a :class:`~worldfm_env.scenes.pool.ScenePool` has them):
            ``bank_images`` (B, Hb, Wb, 3) uint8, ``bank_depth`` (B, Hb, Wb), ``bank_K`` (B, 3, 3), ``bank_w2c``
            (B, 4, 4), ``scene_bank_start``, ``scene_bank_count`` (S,), ``max_bank``.
        tolerance: relative agreement asked between the point's depth and the bilinear mix of the inverse depths
            of the four captured pixels around its projection.
        keep: (N, H, W) bool, covered pixels whose colour stays (grown points), or None.
        views: (N, k) int64 bank rows to try per env (-1: none), e.g. the views the reference vote counted most
            hits in; None tries every view of the env's scene (cost grows with the bank).

    Returns the (N, H, W) bool mask of the pixels whose colour was replaced.
    """
    N, H, W = depth.shape
    device = depth.device
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be a number in (0, 1), got {tolerance!r}")
    todo = mask & (depth > 0)
    if keep is not None:
        todo = todo & ~keep
    world = unproject_depth(depth.float(), K.float(), c2w.float()).reshape(N, H * W, 3)

    Hb, Wb = banks.bank_depth.shape[1:]
    sidx = scene_index.long()
    if views is None:
        start = banks.scene_bank_start.long()[sidx]
        slots = torch.arange(int(banks.max_bank), device=device)
        views = torch.where(
            slots[None, :] < banks.scene_bank_count.long()[sidx][:, None], start[:, None] + slots[None, :], -1
        )
    best_fineness = torch.full((N, H * W), float("inf"), device=device)
    best_rgb = torch.zeros(N, H * W, 3, device=device)
    for slot in range(views.shape[1]):
        has = views[:, slot] >= 0  # (N,) envs with a view to try in this slot
        b = views[:, slot].clamp_min(0)  # (N,) a valid row everywhere; masked below
        uv, z = project_points(world, banks.bank_K[b].float(), banks.bank_w2c[b].float())  # (N, HW, 2), (N, HW)
        u, v = uv[..., 0], uv[..., 1]
        # Bilinear footprint: the 2x2 pixel centres around (u, v), clamped at the image border (edge replicate).
        x0f, y0f = torch.floor(u - 0.5), torch.floor(v - 0.5)
        fx, fy = (u - 0.5 - x0f), (v - 0.5 - y0f)
        inside = (z > 1e-6) & (u >= 0) & (v >= 0) & (u < Wb) & (v < Hb) & has[:, None]
        x0, y0 = x0f.long(), y0f.long()
        bb = b[:, None].expand(-1, H * W)
        inv_interp = torch.zeros(N, H * W, device=device)
        all_valid = inside
        colour = torch.zeros(N, H * W, 3, device=device)
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = (x0 + dx).clamp(0, Wb - 1), (y0 + dy).clamp(0, Hb - 1)
                ref = banks.bank_depth[bb, yi, xi]
                all_valid = all_valid & (ref > 0)
                weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
                inv_interp = inv_interp + weight / ref.clamp_min(1e-6)
                colour = colour + weight[..., None] * banks.bank_images[bb, yi, xi].float()
        # Inverse depth is affine in the pixel coordinates over a plane, so its bilinear value is the surface's own
        # wherever the four samples lie on one (slanted) surface; across an occlusion edge it lands between the two
        # and misses the point's depth unless the far side's weight is too small to tint the colour.
        agree = all_valid & ((inv_interp * z - 1.0).abs() < tolerance)
        fineness = (
            z / banks.bank_K[b, None, 0, 0].float()
        )  # scene units per captured pixel at this point: smaller is finer
        better = agree & (fineness < best_fineness)
        best_fineness = torch.where(better, fineness, best_fineness)
        best_rgb = torch.where(better[..., None], colour, best_rgb)
    found = todo.reshape(N, H * W) & torch.isfinite(best_fineness)
    found = found.reshape(N, H, W)
    new = best_rgb.round().clamp(0, 255).to(torch.uint8).reshape(N, H, W, 3)
    rgb.copy_(torch.where(found[..., None], new, rgb))
    return found
