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

One Warp kernel, a thread per pixel trying the env's views in turn: no (N, H, W) temporaries per view, one launch
per call whatever the number of views.
"""

from __future__ import annotations

import torch

from worldfm_env._device import init_warp, warp_device

__all__ = ["ANCHOR_COLOUR_VALUES", "resample_anchor_colours"]

wp = init_warp()

ANCHOR_COLOUR_VALUES = ("splat", "bank")
"""The valid values of ``anchor_colour``: ``"splat"`` (each covered pixel shows its winning point's colour, as
published) and ``"bank"`` (colours resampled bilinearly from the finest captured view, see the module)."""


@wp.kernel
def _resample_kernel(
    depth: wp.array3d(dtype=wp.float32),
    todo: wp.array3d(dtype=wp.uint8),
    c2w: wp.array(dtype=wp.mat44),
    K: wp.array(dtype=wp.mat33),
    views: wp.array2d(dtype=wp.int32),
    bank_images: wp.array4d(dtype=wp.uint8),
    bank_depth: wp.array3d(dtype=wp.float32),
    bank_K: wp.array(dtype=wp.mat33),
    bank_w2c: wp.array(dtype=wp.mat44),
    tolerance: float,
    rgb: wp.array4d(dtype=wp.uint8),
    found: wp.array3d(dtype=wp.uint8),
):
    """Pixel (y, x) of env n: lift it with the anchor depth, try each of the env's views, keep the finest agreeing
    one's bilinear colour (see the module)."""
    n, y, x = wp.tid()
    found[n, y, x] = wp.uint8(0)
    if todo[n, y, x] == wp.uint8(0):
        return
    d = depth[n, y, x]
    Ka = K[n]
    cam = wp.vec3((float(x) + 0.5 - Ka[0, 2]) / Ka[0, 0] * d, (float(y) + 0.5 - Ka[1, 2]) / Ka[1, 1] * d, d)
    world = wp.transform_point(c2w[n], cam)
    Hb = bank_depth.shape[1]
    Wb = bank_depth.shape[2]
    best = float(1.0e30)
    r = float(0.0)
    g = float(0.0)
    bl = float(0.0)
    for slot in range(views.shape[1]):
        b = views[n, slot]
        if b < 0:
            continue
        p = wp.transform_point(bank_w2c[b], world)
        z = p[2]
        if z <= 1.0e-6:
            continue
        Kb = bank_K[b]
        u = Kb[0, 0] * p[0] / z + Kb[0, 2]
        v = Kb[1, 1] * p[1] / z + Kb[1, 2]
        if u < 0.0 or v < 0.0 or u >= float(Wb) or v >= float(Hb):
            continue
        fineness = z / Kb[0, 0]  # scene units per captured pixel at this point: smaller is finer
        if fineness >= best:
            continue
        # Bilinear footprint: the 2x2 pixel centres around (u, v), clamped at the image border (edge replicate).
        x0f = wp.floor(u - 0.5)
        y0f = wp.floor(v - 0.5)
        fx = u - 0.5 - x0f
        fy = v - 0.5 - y0f
        x0 = int(x0f)
        y0 = int(y0f)
        inv = float(0.0)
        cr = float(0.0)
        cg = float(0.0)
        cb = float(0.0)
        valid = True
        for dy in range(2):
            for dx in range(2):
                xi = wp.clamp(x0 + dx, 0, Wb - 1)
                yi = wp.clamp(y0 + dy, 0, Hb - 1)
                ref = bank_depth[b, yi, xi]
                if ref <= 0.0:
                    valid = False
                wx = 1.0 - fx
                if dx == 1:
                    wx = fx
                wy = 1.0 - fy
                if dy == 1:
                    wy = fy
                w = wx * wy
                inv += w / wp.max(ref, 1.0e-6)
                cr += w * float(bank_images[b, yi, xi, 0])
                cg += w * float(bank_images[b, yi, xi, 1])
                cb += w * float(bank_images[b, yi, xi, 2])
        # Inverse depth is affine in the pixel coordinates over a plane, so its bilinear value is the surface's own
        # wherever the four samples lie on one (slanted) surface; across an occlusion edge it lands between the two
        # and misses the point's depth unless the far side's weight is too small to tint the colour.
        if valid and wp.abs(inv * z - 1.0) < tolerance:
            best = fineness
            r = cr
            g = cg
            bl = cb
    if best < 1.0e30:
        rgb[n, y, x, 0] = wp.uint8(wp.clamp(wp.rint(r), 0.0, 255.0))
        rgb[n, y, x, 1] = wp.uint8(wp.clamp(wp.rint(g), 0.0, 255.0))
        rgb[n, y, x, 2] = wp.uint8(wp.clamp(wp.rint(bl), 0.0, 255.0))
        found[n, y, x] = wp.uint8(1)


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
    sidx = scene_index.long()
    if views is None:
        start = banks.scene_bank_start.long()[sidx]
        slots = torch.arange(int(banks.max_bank), device=device)
        views = torch.where(
            slots[None, :] < banks.scene_bank_count.long()[sidx][:, None], start[:, None] + slots[None, :], -1
        )
    found = torch.zeros(N, H, W, dtype=torch.uint8, device=device)
    if views.shape[1] == 0 or todo.numel() == 0:  # shapes only: no host sync
        return found.bool()
    colours = rgb if rgb.is_contiguous() else rgb.contiguous()
    wp.launch(
        _resample_kernel,
        dim=(N, H, W),
        inputs=[
            wp.from_torch(depth.float().contiguous()),
            wp.from_torch(todo.to(torch.uint8).contiguous()),
            wp.from_torch(c2w.float().contiguous(), dtype=wp.mat44),
            wp.from_torch(K.float().expand(N, 3, 3).contiguous(), dtype=wp.mat33),
            wp.from_torch(views.to(torch.int32).contiguous()),
            wp.from_torch(banks.bank_images.contiguous()),
            wp.from_torch(banks.bank_depth.float().contiguous()),
            wp.from_torch(banks.bank_K.float().contiguous(), dtype=wp.mat33),
            wp.from_torch(banks.bank_w2c.float().contiguous(), dtype=wp.mat44),
            float(tolerance),
            wp.from_torch(colours),
            wp.from_torch(found),
        ],
        device=warp_device(device),
    )
    if colours is not rgb:
        rgb.copy_(colours)
    return found.bool()
