"""The adversarial term of stage II: a conditional patch discriminator that keeps the frame model from painting
the mean.

A regression loss (MSE to the ground truth) is minimised by the mean of every frame the conditions allow: where the
anchor shows nothing, that mean is a blur. A discriminator that has to tell generated frames from true ones, given the
same anchor, scores a blur as fake, so the generator's adversarial loss pushes it towards frames with the truth's
amount of detail, while the regression keeps it on the anchor where the anchor is right.

:class:`PatchDiscriminator` sees the frame (RGB in [-1, 1]), the anchor render it was generated from and the anchor's
coverage, and returns one logit per patch (8 x 8 logits at 64 x 64, each seeing a 54-pixel square). The losses are
the hinge losses of :func:`discriminator_loss` and :func:`generator_loss`.

Options, compared by ``benchmarks/discriminator_probe.py``:

- ``spectral_norm=True`` (the default): every convolution is spectrally normalised, a Lipschitz bound that keeps the
  game stable on small batches. ``False`` leaves them plain, to be held by the R1 penalty (:func:`r1_penalty`, on
  real frames); at the probe's budgets that separated the frame model's frames from the truth less well.
- ``edges=True``: the discriminator also sees the frame's finite differences, so the detail a blur lacks is an input
  rather than something the first layer must learn to extract. It separates the shipped model's frames best (0.90
  held-out accuracy on uncovered patches against 0.80); the first design had ``edges=False`` and stayed near chance
  in a real run. Its risk, seen in the one fine-tune that used it: gradient energy is what it rewards, and grain is
  the cheapest way for a generator to have it (docs/benchmarks.md, the adversarial fine-tune).

:func:`patch_weights` turns the coverage into per-logit weights, so that both losses can concentrate on the patches
the anchor did not show, where the model must invent (``focus``); elsewhere the regression already pins the frame
to the anchor and real and generated patches differ by noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PatchDiscriminator",
    "discriminator_loss",
    "finite_differences",
    "generator_loss",
    "patch_weights",
    "r1_penalty",
]


def finite_differences(frame: torch.Tensor) -> torch.Tensor:
    """Forward differences of every channel along x and y, zero on the last column/row: (B, 2C, H, W)."""
    dx = F.pad(frame[..., :, 1:] - frame[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(frame[..., 1:, :] - frame[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([dx, dy], dim=1)


class PatchDiscriminator(nn.Module):
    """Conditional patch discriminator: ``D(frame, anchor, coverage) -> (B, 1, H/8, W/8)`` logits.

    Args:
        channels: width of the first layer (doubled twice); 32 gives about 0.32 M parameters.
        image_channels: channels of the frame and of the anchor (3: RGB).
        spectral_norm: spectrally normalise every convolution (the first design); False leaves them plain (train
            with :func:`r1_penalty`).
        edges: also feed the frame's x and y finite differences (2 * ``image_channels`` more input channels).
    """

    def __init__(
        self, channels: int = 32, image_channels: int = 3, spectral_norm: bool = True, edges: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        for name, value in (("spectral_norm", spectral_norm), ("edges", edges)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        c = channels
        self.edges = edges
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda layer: layer)
        inputs = 2 * image_channels + 1 + (2 * image_channels if edges else 0)
        self.layers = nn.ModuleList(
            [
                wrap(nn.Conv2d(inputs, c, 4, stride=2, padding=1)),
                wrap(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)),
                wrap(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)),
                wrap(nn.Conv2d(4 * c, 4 * c, 3, padding=1)),
            ]
        )
        self.out = wrap(nn.Conv2d(4 * c, 1, 3, padding=1))

    def forward(self, frame: torch.Tensor, anchor: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
        """frame, anchor (B, C, H, W) in [-1, 1]; covered (B, H, W) bool. Returns (B, 1, H/8, W/8) float32 logits."""
        if frame.shape != anchor.shape or tuple(covered.shape) != (frame.shape[0], *frame.shape[2:]):
            raise ValueError(
                f"need frame and anchor (B, C, H, W) of one shape and covered (B, H, W); got {tuple(frame.shape)}, "
                f"{tuple(anchor.shape)}, {tuple(covered.shape)}"
            )
        parts = [frame.float(), anchor.float(), covered[:, None].float() * 2.0 - 1.0]
        if self.edges:
            parts.append(finite_differences(frame.float()))
        h = torch.cat(parts, dim=1)
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
        return self.out(h)


def patch_weights(covered: torch.Tensor, size: tuple[int, int], focus: float) -> torch.Tensor:
    """Per-logit weights (B, 1, *size) from the anchor's coverage (B, H, W) bool: ``1 - focus + focus * u``, with
    ``u`` the uncovered share of the logit's cell. ``focus=0`` weighs every patch alike; 1 only the uncovered."""
    if not 0.0 <= focus <= 1.0:
        raise ValueError(f"focus must be in [0, 1], got {focus!r}")
    uncovered = F.adaptive_avg_pool2d((~covered)[:, None].float(), size)
    return (1.0 - focus) + focus * uncovered


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp_min(1e-6)


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Hinge loss of the discriminator: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``; with ``weights``
    (:func:`patch_weights`, the logits' shape) both means are weighted."""
    return _weighted_mean(F.relu(1.0 - real_logits), weights) + _weighted_mean(F.relu(1.0 + fake_logits), weights)


def generator_loss(fake_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hinge loss of the generator: ``-mean(D(fake))`` (weighted by ``weights``, if given)."""
    return -_weighted_mean(fake_logits, weights)


def r1_penalty(disc: nn.Module, real: torch.Tensor, anchor: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """R1 regulariser: the mean over the batch of ``|| d sum(D(real)) / d real ||^2`` (differentiable, so it can be
    added to the discriminator's loss; the usual weight is gamma / 2)."""
    real = real.detach().float().requires_grad_(True)
    logits = disc(real, anchor, covered)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
