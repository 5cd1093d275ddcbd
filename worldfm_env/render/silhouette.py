"""Which splat shows the true surface: a learned choice between footprint-sized and one-pixel splats.

A footprint-sized splat (``splat_radius="auto"``) closes the gaps of a sparsely sampled near surface, but its depth
test also lets a near surface's footprint reach past its silhouette and hide the farther surface beside it. The
one-pixel splat of the same points keeps that farther point, but it also keeps points seen through the gaps. Where the
one-pixel splat's point lies behind the footprint splat's, geometry alone does not tell the two cases apart
(``benchmarks/error_budget.py`` measures both the cost and a screen-space rule that fails); the colours and depths of
both splats around the pixel do, to a good part. :class:`SilhouetteResolver` is a small convolutional network that
reads them (:func:`silhouette_features`) and scores, for every *candidate* pixel (both splats cover it and the
one-pixel point is more than :data:`CANDIDATE_GAP` behind), whether the one-pixel point is the surface the camera
sees. :func:`composite` takes those pixels from the one-pixel splat. :func:`train_resolver` fits it to the truth's
depth (:func:`silhouette_labels`) on rollouts of scenes other than the ones it is judged on.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "CANDIDATE_GAP",
    "FEATURES",
    "RESOLVER_PATH",
    "SILHOUETTE_VALUES",
    "SilhouetteResolver",
    "composite",
    "load_resolver",
    "packaged_resolver",
    "save_resolver",
    "silhouette_features",
    "silhouette_labels",
    "train_resolver",
]

CANDIDATE_GAP = 0.05
"""A pixel is a candidate when the one-pixel point is more than this fraction farther than the footprint splat's."""
FEATURES = 11
"""Input channels of :class:`SilhouetteResolver` (see :func:`silhouette_features`)."""
SILHOUETTE_VALUES = ("splat", "learned")
"""Values of the anchor's ``silhouettes`` setting: the footprint splat as it is, or the learned choice applied."""
RESOLVER_PATH = Path(__file__).resolve().parent / "weights" / "silhouette-resolver.safetensors"
"""The resolver shipped in the package (trained by ``benchmarks/error_budget.py --save-resolver``)."""


def _check(name: str, value: torch.Tensor, shape: tuple, channels: int | None = None) -> None:
    want = shape if channels is None else (*shape, channels)
    if tuple(value.shape) != tuple(want):
        raise ValueError(
            f"{name} must have shape {tuple(want)} (the footprint splat's frames), got {tuple(value.shape)}"
        )


def silhouette_features(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    mask: torch.Tensor,
    one_rgb: torch.Tensor,
    one_depth: torch.Tensor,
    one_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The resolver's input and the candidate pixels of a batch of frames.

    Args:
        rgb, depth, mask: the footprint splat: colours (N, H, W, 3) uint8 or 0-255 floats, depth (N, H, W) and
            coverage (N, H, W) bool.
        one_rgb, one_depth, one_mask: the one-pixel splat of the same points at the same poses, same shapes.

    Returns ``(features, candidates)``: features (N, :data:`FEATURES`, H, W) float32: both colours in [-1, 1] (the
    one-pixel one 0 where it is empty), both log depths relative to the footprint splat's mean log depth, their
    difference where both cover the pixel, and both masks; candidates (N, H, W) bool.
    """
    shape = tuple(mask.shape)
    if len(shape) != 3:
        raise ValueError(f"mask must be (N, H, W), got {shape}")
    for name, value, channels in (
        ("rgb", rgb, 3),
        ("depth", depth, None),
        ("one_rgb", one_rgb, 3),
        ("one_depth", one_depth, None),
        ("one_mask", one_mask, None),
    ):
        _check(name, value, shape, channels)
    m, om = mask.bool(), one_mask.bool()
    d, od = depth.float().clamp_min(1e-3), one_depth.float().clamp_min(1e-3)
    log_d, log_od = d.log(), od.log()
    mean = (log_d * m).sum(dim=(1, 2), keepdim=True) / m.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    zero = torch.zeros_like(log_d)
    rel = torch.where(m, log_d - mean, zero)
    one_rel = torch.where(om, log_od - mean, zero)
    gap = torch.where(m & om, log_od - log_d, zero)
    colour = rgb.float() / 127.5 - 1.0
    one_colour = torch.where(om[..., None], one_rgb.float() / 127.5 - 1.0, torch.zeros_like(colour))
    planes = [colour.permute(0, 3, 1, 2), one_colour.permute(0, 3, 1, 2)]
    planes += [p[:, None] for p in (rel, one_rel, gap, m.float(), om.float())]
    candidates = m & om & (od > d * (1 + CANDIDATE_GAP))
    return torch.cat(planes, dim=1).contiguous(), candidates


def silhouette_labels(one_depth: torch.Tensor, one_mask: torch.Tensor, true_depth: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: the one-pixel point is on the surface the camera sees (within :data:`CANDIDATE_GAP` of the
    true depth), the target of :func:`train_resolver`."""
    t = true_depth.float()
    return one_mask.bool() & (t > 0) & ((one_depth.float() - t).abs() <= CANDIDATE_GAP * t)


class SilhouetteResolver(nn.Module):
    """A small dilated CNN (receptive field 17 x 17 pixels) scoring each pixel's one-pixel point as the visible surface.

    ``forward(features)`` gives logits (N, H, W); :meth:`take` the candidate pixels to take from the one-pixel splat
    (probability above ``threshold``).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        self.width = width
        self.net = nn.Sequential(
            nn.Conv2d(FEATURES, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, H, W) from features (N, :data:`FEATURES`, H, W)."""
        if features.ndim != 4 or features.shape[1] != FEATURES:
            raise ValueError(f"features must be (N, {FEATURES}, H, W), got {tuple(features.shape)}")
        return self.net(features)[:, 0]

    @torch.no_grad()
    def take(
        self, features: torch.Tensor, candidates: torch.Tensor, threshold: float = 0.5, chunk: int = 256
    ) -> torch.Tensor:
        """(N, H, W) bool: candidates whose one-pixel point the network scores above ``threshold`` (in (0, 1))."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        if features.ndim != 4:
            raise ValueError(f"features must be (N, {FEATURES}, H, W), got {tuple(features.shape)}")
        _check("candidates", candidates, (features.shape[0], *features.shape[2:]))
        param = next(self.parameters())
        parts = [self(features[s : s + chunk].to(param)).float() for s in range(0, features.shape[0], chunk)]
        logits = torch.cat(parts) if parts else torch.zeros(candidates.shape)
        return candidates & (torch.sigmoid(logits).to(candidates.device) > threshold)


def composite(
    rgb: torch.Tensor, depth: torch.Tensor, one_rgb: torch.Tensor, one_depth: torch.Tensor, take: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The footprint splat with the ``take`` pixels (N, H, W) bool from the one-pixel splat: (rgb, depth)."""
    shape = tuple(depth.shape)
    for name, value, channels in (("rgb", rgb, 3), ("one_rgb", one_rgb, 3), ("one_depth", one_depth, None)):
        _check(name, value, shape, channels)
    _check("take", take, shape)
    return torch.where(take[..., None], one_rgb, rgb), torch.where(take, one_depth, depth)


def train_resolver(
    features: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 600,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 32,
) -> tuple[SilhouetteResolver, list[float]]:
    """Fit a :class:`SilhouetteResolver` by binary cross-entropy over the candidate pixels of random frame batches.

    Args:
        features, candidates: from :func:`silhouette_features` (frames of the training scenes).
        labels: (N, H, W) bool from :func:`silhouette_labels`.
        steps, batch, lr, seed, width: AdamW steps, frames a step, learning rate, seed of the weights and batches,
            the network's width.

    Returns ``(resolver, losses)``: the network in eval mode and the loss of every step (a step whose frames hold
    no candidate pixel is skipped and logs none).
    """
    for name, value in (("steps", steps), ("batch", batch), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not bool(candidates.any()):
        raise ValueError("candidates has no pixel: no frame holds a one-pixel point behind the footprint splat")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        resolver = SilhouetteResolver(width)
    opt = torch.optim.AdamW(resolver.parameters(), lr=lr)
    target = labels.float()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, features.shape[0], (batch,), generator=generator)
        m = candidates[idx]
        if not bool(m.any()):
            continue
        loss = F.binary_cross_entropy_with_logits(resolver(features[idx])[m], target[idx][m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return resolver.eval(), losses


def save_resolver(resolver: SilhouetteResolver, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``resolver`` to a safetensors file: its weights, its width and ``metadata`` (JSON) in the header."""
    from safetensors.torch import save_file

    header = {"width": str(resolver.width), "metadata": json.dumps(metadata or {}, sort_keys=True)}
    state = {k: v.detach().float().cpu().contiguous() for k, v in resolver.state_dict().items()}
    save_file(state, str(path), metadata=header)


def load_resolver(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> SilhouetteResolver:
    """The resolver in ``path`` (default: the package's, :data:`RESOLVER_PATH`) on ``device``, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else RESOLVER_PATH
    if not path.is_file():
        raise FileNotFoundError(f"no silhouette resolver at {path} (write one with save_resolver)")
    with safe_open(str(path), framework="pt") as f:
        width = int((f.metadata() or {}).get("width", 32))
    resolver = SilhouetteResolver(width)
    resolver.load_state_dict(load_file(str(path)))
    return resolver.to(device).eval()


@functools.lru_cache(maxsize=8)
def _packaged(device: str) -> SilhouetteResolver:
    return load_resolver(RESOLVER_PATH, device)


def packaged_resolver(device: str | torch.device = "cpu") -> SilhouetteResolver:
    """The package's resolver on ``device``, loaded once per device and shared (eval mode, used without gradients:
    every pipeline, e.g. one per batch of training clips, reads the same weights)."""
    return _packaged(str(torch.device(device)))
