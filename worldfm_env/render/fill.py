"""Hole filling of anchor renders: every uncovered pixel takes the value of its nearest covered pixel.

The classical baseline of the fidelity benchmark and the base that ``target="anchor_residual"`` frame
models add their output to (:mod:`worldfm_env.model.targets`). Pure torch, batched, on any device.
"""

from __future__ import annotations

import torch

__all__ = ["nearest_fill"]


def nearest_fill(rgb: torch.Tensor, mask: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Fill every uncovered pixel with the value of its nearest covered pixel (exact Euclidean distance).

    Args:
        rgb: images (..., H, W, C), any dtype.
        mask: (..., H, W) bool, True where the pixel is covered (kept as it is).
        max_elements: memory bound of one chunk of images (``images * H * W * W`` distance entries).

    Returns a new tensor like ``rgb``: covered pixels unchanged, each hole pixel the value of a covered pixel at
    the smallest Euclidean distance (ties go to the smallest column, then the smallest row). Images without any
    covered pixel are returned unchanged. Two separable passes: the nearest covered row in every column
    (cumulative max/min of row indices), then for every pixel the column minimising ``dx^2 + dy(column)^2``.
    """
    if tuple(mask.shape) != tuple(rgb.shape[:-1]) or rgb.ndim < 3:
        raise ValueError(f"need rgb (..., H, W, C) and mask (..., H, W), got {tuple(rgb.shape)}, {tuple(mask.shape)}")
    H, W, C = rgb.shape[-3:]
    x = rgb.reshape(-1, H, W, C)
    m = mask.reshape(-1, H, W).to(device=x.device, dtype=torch.bool)
    out = x.clone()
    device = x.device
    big = 4 * (H + W)  # farther than any real distance: its square exceeds H^2 + W^2
    row = torch.arange(H, device=device).view(1, H, 1)
    col = torch.arange(W, device=device)
    dx2 = (col[:, None] - col[None, :]).float().square()  # (x, x')
    chunk = max(1, max_elements // (H * W * W))
    for start in range(0, x.shape[0], chunk):
        mm = m[start : start + chunk]
        n = mm.shape[0]
        rows = row.expand(n, H, W)
        above = torch.where(mm, rows, torch.full_like(rows, -big)).cummax(dim=1).values  # last covered row <= y
        below = torch.where(mm, rows, torch.full_like(rows, H + big)).flip(1).cummin(dim=1).values.flip(1)
        up, down = rows - above, below - rows
        src_row = torch.where(up <= down, above, below)  # (n, H, W'): nearest covered row in column x'
        dy2 = torch.minimum(up, down).float().square()
        cost = dx2.view(1, 1, W, W) + dy2.view(n, H, 1, W)  # (n, H, x, x')
        src_col = cost.argmin(dim=-1)  # first minimum: the smallest column on ties
        src_row = src_row.gather(2, src_col)
        b = torch.arange(n, device=device).view(n, 1, 1)
        xc = x[start : start + n]
        filled = xc[b, src_row.clamp(0, H - 1), src_col]
        keep = mm | ~mm.flatten(1).any(dim=1).view(n, 1, 1)  # empty images stay as they are
        out[start : start + n] = torch.where(keep[..., None], xc, filled)
    return out.reshape(rgb.shape)
