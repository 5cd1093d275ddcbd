"""Hole filling of anchor renders, two classical ways (batched, on the tensors' device).

* :func:`nearest_fill`: every uncovered pixel takes the value of its nearest covered pixel (exact
  Euclidean distance): two Warp kernels (a per-column scan for the nearest covered row above and below
  every pixel, then per row the lower envelope of the columns' distance parabolas), then a torch gather.
  Sharp, but large holes become streaks.
* :func:`pull_push_fill`: a coverage-weighted image pyramid (pull: 2x2 averages of the covered values;
  push: each level's holes take the bilinearly upsampled coarser level). Smooth in the holes; the base
  that ``target="anchor_residual"`` frame models add their output to (:mod:`worldfm_env.model.targets`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldfm_env._device import init_warp, warp_device

__all__ = ["nearest_fill", "pull_push_fill"]

wp = init_warp()


@wp.kernel
def _column_scan_kernel(
    mask: wp.array3d(dtype=wp.uint8),
    big: int,
    src_row: wp.array3d(dtype=wp.int32),
    dy: wp.array3d(dtype=wp.int32),
):
    """For pixel (y, x) of image n: the nearest covered row in column x (the upper one on ties) and its distance.

    A column without any covered pixel gets rows ``-big`` / ``H + big``: farther than any real distance.
    """
    n, x = wp.tid()
    H = mask.shape[1]
    last = -big
    for y in range(H):
        if mask[n, y, x] != wp.uint8(0):
            last = y
        src_row[n, y, x] = last
        dy[n, y, x] = y - last
    nxt = H + big
    for k in range(H):
        y = H - 1 - k
        if mask[n, y, x] != wp.uint8(0):
            nxt = y
        if nxt - y < dy[n, y, x]:
            src_row[n, y, x] = nxt
            dy[n, y, x] = nxt - y


@wp.kernel
def _row_envelope_kernel(
    dy: wp.array3d(dtype=wp.int32),
    col_row: wp.array3d(dtype=wp.int32),
    hull: wp.array3d(dtype=wp.int32),
    bound: wp.array3d(dtype=wp.float64),
    out_row: wp.array3d(dtype=wp.int32),
    out_col: wp.array3d(dtype=wp.int32),
):
    """For row y of image n: every pixel's column x' minimising (x - x')^2 + dy(y, x')^2.

    The lower envelope of the parabolas ``dy(x')^2 + (x - x')^2`` (Felzenszwalb and Huttenlocher's 1-D distance
    transform): O(W) per row. ``hull`` (W) and ``bound`` (W + 1) are this row's scratch space.
    """
    n, y = wp.tid()
    W = dy.shape[2]
    k = int(0)
    hull[n, y, 0] = 0
    bound[n, y, 0] = wp.float64(-1.0e300)
    bound[n, y, 1] = wp.float64(1.0e300)
    for q in range(1, W):
        fq = wp.float64(dy[n, y, q]) * wp.float64(dy[n, y, q]) + wp.float64(q * q)
        v = hull[n, y, k]
        fv = wp.float64(dy[n, y, v]) * wp.float64(dy[n, y, v]) + wp.float64(v * v)
        s = (fq - fv) / wp.float64(2 * (q - v))
        while k > 0 and s <= bound[n, y, k]:  # the last hull parabola is nowhere lowest any more: drop it
            k -= 1
            v = hull[n, y, k]
            fv = wp.float64(dy[n, y, v]) * wp.float64(dy[n, y, v]) + wp.float64(v * v)
            s = (fq - fv) / wp.float64(2 * (q - v))
        if s <= bound[n, y, k]:  # k == 0 and the new parabola is lower everywhere: it replaces the first
            hull[n, y, 0] = q
        else:
            k += 1
            hull[n, y, k] = q
            bound[n, y, k] = s
            bound[n, y, k + 1] = wp.float64(1.0e300)
    k = int(0)
    for x in range(W):
        while bound[n, y, k + 1] < wp.float64(x):
            k += 1
        c = hull[n, y, k]
        out_col[n, y, x] = c
        out_row[n, y, x] = col_row[n, y, c]


def nearest_fill(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill every uncovered pixel with the value of its nearest covered pixel (exact Euclidean distance).

    Args:
        rgb: images (..., H, W, C), any dtype, on the CPU or a CUDA device.
        mask: (..., H, W) bool, True where the pixel is covered (kept as it is).

    Returns a new tensor like ``rgb``: covered pixels unchanged, each hole pixel the value of a covered pixel at
    the smallest Euclidean distance (on ties, one of the equidistant pixels). Images without any covered pixel are
    returned unchanged. Cost: O(H W) per image (exact Euclidean distance transform, separable).
    """
    if tuple(mask.shape) != tuple(rgb.shape[:-1]) or rgb.ndim < 3:
        raise ValueError(f"need rgb (..., H, W, C) and mask (..., H, W), got {tuple(rgb.shape)}, {tuple(mask.shape)}")
    H, W, C = rgb.shape[-3:]
    x = rgb.reshape(-1, H, W, C)
    n = x.shape[0]
    device = x.device
    m = mask.reshape(-1, H, W).to(device=device, dtype=torch.bool)
    if n == 0:
        return rgb.clone()
    # Sentinel distance of columns without covered pixels: its square exceeds any real H^2 + W^2. Squares and
    # parabola intersections are computed in float64 (exact for any realistic image size).
    big = H + W
    col_row = torch.empty(n, H, W, dtype=torch.int32, device=device)
    dy = torch.empty_like(col_row)
    src_row, src_col, hull = torch.empty_like(col_row), torch.empty_like(col_row), torch.empty_like(col_row)
    bound = torch.empty(n, H, W + 1, dtype=torch.float64, device=device)
    wp_device = warp_device(device)
    stream = wp.stream_from_torch(torch.cuda.current_stream(device)) if device.type == "cuda" else None
    mask_u8 = m.contiguous().view(torch.uint8)
    wp.launch(
        _column_scan_kernel,
        dim=(n, W),
        inputs=[wp.from_torch(mask_u8), big, wp.from_torch(col_row), wp.from_torch(dy)],
        device=wp_device,
        stream=stream,
    )
    wp.launch(
        _row_envelope_kernel,
        dim=(n, H),
        inputs=[
            wp.from_torch(dy),
            wp.from_torch(col_row),
            wp.from_torch(hull),
            wp.from_torch(bound),
            wp.from_torch(src_row),
            wp.from_torch(src_col),
        ],
        device=wp_device,
        stream=stream,
    )
    b = torch.arange(n, device=device).view(n, 1, 1)
    filled = x[b, src_row.long().clamp_(0, H - 1), src_col.long()]
    keep = m | ~m.flatten(1).any(dim=1).view(n, 1, 1)  # empty images stay as they are
    return torch.where(keep[..., None], x, filled).reshape(rgb.shape)


def pull_push_fill(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill every uncovered pixel from a coverage-weighted pyramid of the covered ones (pull-push).

    Args:
        images: (..., H, W, C), any dtype (integer images are rounded back to their dtype).
        mask: (..., H, W) bool, True where the pixel is covered (kept exactly).

    Pull: level l+1 holds area averages of level l's covered values and coverage on ceil(h/2) x ceil(w/2)
    cells (exact 2x2 blocks for even sizes), down to 1x1. Push, from the coarsest level up: a level's value is
    its covered average blended with the bilinearly upsampled coarser value by the level's coverage (at full
    resolution, covered pixels keep their value and holes take the upsampled one). Large holes get a smooth
    interpolation of their surroundings instead of streaks. Images without any covered pixel are returned
    unchanged.
    """
    if tuple(mask.shape) != tuple(images.shape[:-1]) or images.ndim < 3:
        raise ValueError(
            f"need images (..., H, W, C) and mask (..., H, W), got {tuple(images.shape)}, {tuple(mask.shape)}"
        )
    H, W, C = images.shape[-3:]
    x = images.reshape(-1, H, W, C)
    m = mask.reshape(-1, H, W).to(device=x.device, dtype=torch.bool)
    value = x.permute(0, 3, 1, 2).float()
    weight = m[:, None].float()
    sums, weights = [value * weight], [weight]
    while sums[-1].shape[-2] > 1 or sums[-1].shape[-1] > 1:
        # Area averages onto ceil(h/2) x ceil(w/2) cells spread evenly over the level (the same geometry the
        # bilinear push uses), so odd sizes are not pulled towards one side.
        size = ((sums[-1].shape[-2] + 1) // 2, (sums[-1].shape[-1] + 1) // 2)
        sums.append(F.adaptive_avg_pool2d(sums[-1], size))
        weights.append(F.adaptive_avg_pool2d(weights[-1], size))
    filled = sums[-1] / weights[-1].clamp_min(1e-12)
    for level in range(len(sums) - 2, -1, -1):
        s, w = sums[level], weights[level]
        up = F.interpolate(filled, size=s.shape[-2:], mode="bilinear", align_corners=False)
        # Coverage of a level-l cell: 1 when at least a quarter of its pixels are covered (full resolution: 0/1).
        alpha = w if level == 0 else (4.0 * w).clamp(max=1.0)
        filled = alpha * (s / w.clamp_min(1e-12)) + (1.0 - alpha) * up
    out = filled.permute(0, 2, 3, 1)
    if not out.dtype == x.dtype:
        if not x.dtype.is_floating_point:
            info = torch.iinfo(x.dtype)
            out = out.round().clamp(info.min, info.max)
        out = out.to(x.dtype)
    out = torch.where(m[..., None], x, out)  # covered pixels exactly as given
    keep = ~m.flatten(1).any(dim=1).view(-1, 1, 1, 1)  # empty images stay as they are
    return torch.where(keep, x, out).reshape(images.shape)
