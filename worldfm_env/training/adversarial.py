"""The adversarial term of stage II: a conditional patch discriminator that keeps the frame model from painting
the mean.

A regression loss (MSE to the ground truth) is minimised by the mean of every frame the conditions allow: where the
anchor shows nothing, that mean is a blur. A discriminator that has to tell generated frames from true ones, given the
same anchor, scores a blur as fake, so the generator's adversarial loss pushes it towards frames with the truth's
amount of detail, while the regression keeps it on the anchor where the anchor is right.

:class:`PatchDiscriminator` sees the frame (RGB in [-1, 1]), the anchor render it was generated from and the anchor's
coverage, and returns one logit per patch (8 x 8 logits at 64 x 64, each seeing a 54-pixel square). Every
convolution is spectrally normalised (a Lipschitz bound that keeps the game stable on small batches). The losses are
the hinge losses of :func:`discriminator_loss` and :func:`generator_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchDiscriminator", "discriminator_loss", "generator_loss"]


class PatchDiscriminator(nn.Module):
    """Conditional patch discriminator: ``D(frame, anchor, coverage) -> (B, 1, H/8, W/8)`` logits.

    Args:
        channels: width of the first layer (doubled twice); 32 gives about 0.32 M parameters.
        image_channels: channels of the frame and of the anchor (3: RGB).
    """

    def __init__(self, channels: int = 32, image_channels: int = 3) -> None:
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        c = channels
        sn = nn.utils.parametrizations.spectral_norm
        self.layers = nn.ModuleList(
            [
                sn(nn.Conv2d(2 * image_channels + 1, c, 4, stride=2, padding=1)),
                sn(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)),
                sn(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)),
                sn(nn.Conv2d(4 * c, 4 * c, 3, padding=1)),
            ]
        )
        self.out = sn(nn.Conv2d(4 * c, 1, 3, padding=1))

    def forward(self, frame: torch.Tensor, anchor: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
        """frame, anchor (B, C, H, W) in [-1, 1]; covered (B, H, W) bool. Returns (B, 1, H/8, W/8) float32 logits."""
        if frame.shape != anchor.shape or tuple(covered.shape) != (frame.shape[0], *frame.shape[2:]):
            raise ValueError(
                f"need frame and anchor (B, C, H, W) of one shape and covered (B, H, W); got {tuple(frame.shape)}, "
                f"{tuple(anchor.shape)}, {tuple(covered.shape)}"
            )
        h = torch.cat([frame.float(), anchor.float(), covered[:, None].float() * 2.0 - 1.0], dim=1)
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
        return self.out(h)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the generator: ``-mean(D(fake))``."""
    return -fake_logits.mean()
