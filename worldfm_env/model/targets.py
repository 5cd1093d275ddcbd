"""What a frame model diffuses: the frame itself (``target="image"``, published) or its residual over the anchor.

``target="anchor_residual"`` models learn ``x0 - base`` where ``base`` is the anchor render with its holes
filled smoothly from a coverage-weighted pyramid (:func:`worldfm_env.render.fill.pull_push_fill`). Where the
anchor covers the view the residual is small (splat cracks, level-of-detail blur), so the network spends its
capacity on the holes and on cleaning the splat instead of re-synthesising what the anchor already shows; the
smooth fill keeps the residual in the holes smooth too (a nearest-pixel fill leaves streaks that a patch-8
pixel model cannot cancel: measured, a fine-tune on that base did not improve on it in 1,250 steps). The DiT, its
tri-condition input and the samplers are unchanged: samplers return the residual, and :func:`from_target`
adds the base back before decoding.
"""

from __future__ import annotations

import torch

from worldfm_env.model.dit import TARGETS
from worldfm_env.render.fill import pull_push_fill

__all__ = ["TARGETS", "anchor_base", "from_target", "to_target"]


def anchor_base(anchor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The base of ``anchor_residual`` models: the anchor with its holes pull-push filled, in model space.

    Args:
        anchor: (N, C, H, W) anchor images in model space (pixel models: [-1, 1]), any float dtype.
        mask: (N, H, W) bool, True where the anchor is covered (holes cut into the anchor count as uncovered).

    Returns (N, C, H, W) float32: covered pixels unchanged, holes smoothly interpolated; an anchor
    with no covered pixel gives zeros (mid grey), so that its residual is the frame itself.
    """
    if anchor.ndim != 4 or tuple(mask.shape) != (anchor.shape[0], *anchor.shape[2:]):
        raise ValueError(f"need anchor (N, C, H, W) and mask (N, H, W), got {tuple(anchor.shape)}, {tuple(mask.shape)}")
    mask = mask.to(device=anchor.device, dtype=torch.bool)
    filled = pull_push_fill(anchor.float().permute(0, 2, 3, 1), mask).permute(0, 3, 1, 2)
    empty = ~mask.flatten(1).any(dim=1)
    return torch.where(empty[:, None, None, None], torch.zeros_like(filled), filled).contiguous()


def to_target(x0: torch.Tensor, base: torch.Tensor | None, target: str) -> torch.Tensor:
    """Frames (model space) -> what a model with this ``target`` diffuses (``base`` is unused for ``"image"``)."""
    if target == "image":
        return x0
    if target == "anchor_residual":
        if base is None:
            raise ValueError("target='anchor_residual' needs the anchor base (anchor_base(anchor, mask)), got None")
        return x0 - base.to(x0.dtype)
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def from_target(sample: torch.Tensor, base: torch.Tensor | None, target: str) -> torch.Tensor:
    """Inverse of :func:`to_target`: a sampler's output -> frames in model space (float32 for residuals)."""
    if target == "image":
        return sample
    if target == "anchor_residual":
        if base is None:
            raise ValueError("target='anchor_residual' needs the anchor base (anchor_base(anchor, mask)), got None")
        return sample.float() + base.float()
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
