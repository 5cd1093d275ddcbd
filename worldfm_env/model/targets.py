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

__all__ = ["TARGETS", "anchor_base", "clip_scale", "from_target", "residual_base", "to_target"]


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


def residual_base(target: str, anchor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """The base a model with this ``target`` needs: :func:`anchor_base` for ``"anchor_residual"``, None for
    ``"image"`` (nothing is computed)."""
    return anchor_base(anchor, mask) if _is_residual(target) else None


def clip_scale(target: str) -> float:
    """Bound of what a pixel-space model with this ``target`` diffuses, in image ranges: 1 for frames in [-1, 1],
    2 for residuals of such frames (they lie in [-2, 2]). Multiply an image-space x0 clamp by it."""
    return 2.0 if _is_residual(target) else 1.0


def to_target(x0: torch.Tensor, base: torch.Tensor | None, target: str) -> torch.Tensor:
    """Frames (model space) -> what a model with this ``target`` diffuses (``base`` is unused for ``"image"``)."""
    return x0 - _needed(base).to(x0.dtype) if _is_residual(target) else x0


def from_target(sample: torch.Tensor, base: torch.Tensor | None, target: str) -> torch.Tensor:
    """Inverse of :func:`to_target`: a sampler's output -> frames in model space (float32 for residuals)."""
    return sample.float() + _needed(base).float() if _is_residual(target) else sample


def _is_residual(target: str) -> bool:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return target == "anchor_residual"


def _needed(base: torch.Tensor | None) -> torch.Tensor:
    if base is None:
        raise ValueError("target='anchor_residual' needs the anchor base (anchor_base(anchor, mask)), got None")
    return base
