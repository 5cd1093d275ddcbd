"""Training stages I and II of the frame model on procedural multi-view clips (torchrun/DDP ready).

* Stage I (``stage1``): an image diffusion prior: the DiT learns to denoise target views with both
  conditions blank (black panels), eps-MSE.
* Stage II (``stage2``): the frame model: eps-MSE on the tri-condition input [noisy | anchor |
  reference], with timesteps biased to high noise, the reference injected from the start and the
  anchor brought in progressively (dropped entirely early in training, then kept with a linearly
  rising probability), and random anchor masking (rectangular holes, whole-anchor dropout), as the
  WorldFM paper describes. It usually starts from a stage I checkpoint (``init``).

Both stages train eps-prediction by default (the paper's objective); ``prediction="v"`` trains v-MSE instead,
which a model trained from scratch on a small budget needs to predict x0 well at high noise (see
``TrainConfig.prediction``).

Stage III (few-step distillation) is :mod:`worldfm_env.training.distill`.

Run on one process (``worldfm-env train stage2 --steps 2000``) or many (``torchrun --nproc_per_node
N -m worldfm_env.training.stages --stage stage2``): each rank draws its own clips from one
deterministic stream, gradients are averaged by DistributedDataParallel (gloo on CPU, NCCL on
CUDA), rank 0 writes checkpoints and sample grids. Training resumes from ``out/state.pt``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from worldfm_env._config import add_dataclass_arguments, strict_kwargs
from worldfm_env._device import resolve_device
from worldfm_env.model import build_model, iddpm_linear_schedule, load_checkpoint, save_checkpoint
from worldfm_env.model.checkpoint import (
    ANCHOR_COLOUR_METADATA_KEY,
    LAYOUT_OBSTACLES_METADATA_KEY,
    SAMPLER_STEPS_METADATA_KEY,
    SILHOUETTES_METADATA_KEY,
    SPLAT_RADIUS_METADATA_KEY,
    read_metadata,
    trained_layout_obstacles,
)
from worldfm_env.model.dit import PanelCameras, WorldFMDiT
from worldfm_env.model.frame_model import FrameModel, images_to_model
from worldfm_env.model.samplers import distilled_trajectory, split_depth
from worldfm_env.model.targets import from_target, residual_base, to_target
from worldfm_env.render.anchor_config import splat_radius_arg
from worldfm_env.render.fill import nearest_fill
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.training.adversarial import (
    PatchDiscriminator,
    discriminator_loss,
    finite_differences,
    generator_loss,
    patch_weights,
    r1_penalty,
)
from worldfm_env.training.data import ClipConfig, ClipGenerator

__all__ = [
    "DEPTH_PARAMETERS",
    "EXTENSION_FIELDS",
    "LR_SCHEDULES",
    "TRAIN_ONLY",
    "TrainConfig",
    "autocast_context",
    "condition_batch",
    "extend_model",
    "learning_rate",
    "log_depth_error",
    "main",
    "resolve_precision",
    "sample_timesteps",
    "train",
]

STAGES = ("stage1", "stage2")
PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULES = ("constant", "cosine")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for a training precision (see ``TrainConfig.precision``) on ``device``."""
    from worldfm_env.model.frame_model import auto_model_dtype

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; choose one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if auto_model_dtype(device) == torch.bfloat16 else "fp32"
    return precision


def autocast_context(precision: str, device: torch.device):
    """The autocast context of a training precision (resolve ``"auto"`` once with :func:`resolve_precision`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")


@dataclass
class TrainConfig:
    """One training run. Unknown keys in a JSON config are a ``ValueError``."""

    stage: str = "stage2"
    """``stage1`` (image prior) or ``stage2`` (frame model)."""
    model: str = "s"
    """Model config name (``worldfm_env.model.MODEL_CONFIGS``); ignored when ``init`` is given (the init
    checkpoint's header says what it is)."""
    model_overrides: dict = field(default_factory=dict)
    """Without ``init``: overrides for ``build_model`` (e.g. depth, hidden_size). With ``init``: extensions
    added to the init's model, which only add parameters that start as no-ops (:data:`EXTENSION_FIELDS`,
    e.g. ``{"refiner_channels": 32}``)."""
    init: str | None = None
    """Checkpoint to start from (e.g. the stage I result); None starts from scratch."""
    resolution: int = 64
    """Square image size."""
    scenes: str = "procedural:train:16"
    """Training scenes (train split only)."""
    splat_radius: int | str = 0
    """Anchor splat half-size of the training clips (``ClipConfig.splat_radius``, the env's ``splat_radius``): train
    on the anchors the env will render (stage II; stage I sees no anchors). ``--splat-radius auto`` on the command
    line. The stage II checkpoint's header records it; pass the same ``splat_radius`` to the env (it warns
    otherwise)."""
    anchor_colour: str = "splat"
    """Colour of the training clips' covered anchor pixels (``ClipConfig.anchor_colour``, the env's
    ``anchor_colour``): ``"splat"`` (as published) or ``"bank"``; train on the anchors the env will render."""
    silhouettes: str = "splat"
    """The training clips' ``silhouettes`` (``ClipConfig.silhouettes``, the env's): ``"splat"`` or ``"learned"``
    (the shipped resolver's choice between footprint and one-pixel splats); train on the anchors the env will
    render."""
    layout_obstacles: str | None = None
    """What the navigation layout a layout model (``refiner_layout``) reads is cast against
    (``ClipConfig.layout_obstacles``): the obstacles' own ``"footprints"`` or the grid's obstacle ``"cores"`` (the
    layout models trained before the footprints were recorded). None: the init's (a fine-tune keeps the layout its
    model learned), else ``"footprints"``. The checkpoint's header records it; the env gives the model that layout."""
    capture_resolution: int | None = None
    """Side of the clips' reference views, which build their point clouds (``ClipConfig.capture_resolution``; the
    env's ``scene_options={"resolution": (side, side)}``); None: ``resolution``."""
    clips_per_step: int = 4
    """Clips per rank and step; each gives ``views - references`` target samples."""
    steps: int = 1000
    """Optimiser steps."""
    lr: float = 3e-4
    """AdamW learning rate (after a linear warm-up of ``warmup`` steps)."""
    warmup: int = 100
    """Warm-up steps."""
    lr_schedule: str = "constant"
    """Learning rate after the warm-up: ``"constant"`` (``lr`` to the end) or ``"cosine"`` (``lr`` until
    ``decay_start``, then a half cosine down to 0 at ``steps``). The rate is a function of the step alone, so a run
    resumed from ``state.pt`` continues exactly, and a constant run can be resumed with a decay over its last part."""
    decay_start: int = 0
    """Step at which the cosine decay begins (``lr_schedule="cosine"``); the decay never starts before the warm-up
    ends."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    high_noise_bias: float = 1.0
    """t = 999 * u ** (1 / (1 + bias)) with u ~ U(0, 1): 0 is uniform, larger favours high noise."""
    timesteps: list[int] | None = None
    """Train only at these timesteps, drawn uniformly per sample (e.g. ``[999, 200]``, the published 2-step
    sampler's: a model that will only be sampled there spends all its training on them); None draws from the
    biased distribution above (``high_noise_bias``)."""
    sampler_unroll: int = 0
    """0: the usual denoising loss at one drawn timestep. 1 or 2: run the published 1- or 2-step distilled sampler
    from noise with gradients and regress every step's x0 estimate onto the ground truth (the mean of the per-step
    MSEs). The model is then trained for exactly the sampler it will be read with; in particular the 2-step
    sampler's input at t = 200 holds the model's own first estimate plus fresh noise, not a noised clean frame,
    and the loss teaches it to ignore that noise. Needs ``prediction="v"``; exclusive with ``timesteps``."""
    anchor_start: float = 0.2
    """Stage II: fraction of the run before which the anchor is always dropped (reference first)."""
    anchor_full: float = 0.5
    """Stage II: fraction of the run after which the anchor is kept with probability 1 - anchor_drop."""
    anchor_drop: float = 0.1
    """Stage II: probability of dropping the whole anchor once it is in (robustness to empty anchors)."""
    anchor_hole_prob: float = 0.3
    """Stage II: probability of cutting a random rectangular hole into the anchor."""
    seed: int = 0
    """Seed of the clip stream, the noise and the initialisation."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda``; under torchrun each rank uses its local GPU."""
    out: str = "runs/train"
    """Output folder: ``model.safetensors``, ``state.pt``, ``samples/``, ``log.jsonl``."""
    save_every: int = 250
    """Checkpoint interval (steps)."""
    sample_every: int = 250
    """Sample-grid interval (steps); 0 disables."""
    sample_steps: int = 20
    """DDIM steps for the sample grids."""
    fixed_batch: bool = False
    """Train on the same clips every step (overfitting checks and debugging)."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA and on CPUs with AMX or AVX512-BF16, else fp32), ``bf16`` or ``fp32``.
    Weights and optimiser state stay fp32 either way."""
    prediction: str = "eps"
    """What the network predicts: ``eps`` (eps-MSE, as the paper trains stage II from its eps-prediction prior) or
    ``v`` (v-MSE, ``v = sqrt(abar) eps - sqrt(1 - abar) x0``). An eps network cannot express x0 at t=999, where
    ``x0 = (z - s eps) / a`` divides by a = 0.006; a v network predicts x0 there directly (``x0 = a z - s v``), which
    is what the published distilled samplers read, so a v teacher is already a usable 1-/2-step model."""
    target: str | None = None
    """What the model diffuses (``DiTConfig.target``): ``image`` (published) or ``anchor_residual`` (the frame minus
    the hole-filled anchor, :mod:`worldfm_env.model.targets`). None keeps the ``init`` checkpoint's (``image``
    from scratch); a value different from the init's switches it (a fine-tune; the network is the same)."""
    ema: float = 0.999
    """Decay of the exponential moving average of the weights written to ``model.safetensors`` (0 writes the
    raw weights)."""
    sparse_fraction: float = 0.0
    """Share of clips that are sparse captures (``ClipConfig.sparse_fraction``): all references at the walk's first
    position, targets walking away from it, so the anchor leaves much of each target for the model to generate."""
    close_fraction: float = 0.0
    """Share of targets moved to close range, 0.2-0.6 m in front of a surface (``ClipConfig.close_fraction``)."""
    depth_weight: float = 0.0
    """Weight of the depth loss of an RGB-D model (``depth_head``; with ``init``, ``model_overrides:
    {"depth_head": true}`` adds the head): the mean absolute error of the predicted log depth against the ray-cast
    truth's, over the target pixels with a true depth. With ``sampler_unroll`` it is taken at the sampler's last
    step, else at the drawn timestep."""
    adversarial_weight: float = 0.0
    """Weight of the generator's adversarial (hinge) loss against a conditional patch discriminator
    (:mod:`worldfm_env.training.adversarial`), on the frame the sampler returns: it scores blur as fake, which a
    regression alone rewards. Needs ``sampler_unroll`` (the term judges samples)."""
    adversarial_start: int = 0
    """Steps at the start of the run during which the discriminator trains alone (the generator's adversarial term
    is off), so it has learned something before it steers the generator."""
    disc_lr: float = 2e-4
    """Learning rate of the discriminator (AdamW, betas (0.5, 0.999), no warm-up)."""
    disc_channels: int = 32
    """Width of the discriminator's first layer."""
    disc_spectral_norm: bool = True
    """Spectrally normalise the discriminator's convolutions (the first design). False leaves them plain: give
    ``disc_r1`` a weight then, the usual stabiliser of an unnormalised discriminator."""
    disc_edges: bool = False
    """The discriminator also sees the frame's x and y finite differences (the detail a blur lacks)."""
    disc_r1: float = 0.0
    """Weight of the R1 penalty (:func:`~worldfm_env.training.adversarial.r1_penalty`, the squared gradient of the
    discriminator at real frames) in the discriminator's loss; 0 disables it."""
    adversarial_focus: float = 0.0
    """How much both adversarial losses concentrate on the patches the anchor did not show (0: every patch alike,
    1: only uncovered pixels count; :func:`~worldfm_env.training.adversarial.patch_weights`)."""
    detail_weight: float = 0.0
    """Weight of the local detail loss (:func:`detail_loss`) on the frame the sampler returns: in the patches the
    anchor does not cover, the log gradient energy of the frame against the truth's. It pays for the truth's amount
    of detail where the truth has detail and for flatness where it is flat, and, unlike the MSE, not for where in
    the patch an edge falls, so an edge the model is unsure of no longer costs less blurred. Needs
    ``sampler_unroll``."""
    fill_margin_weight: float = 0.0
    """Weight of the fill margin term (:func:`fill_margin_loss`) on the frame the sampler returns: per frame, how far
    its log MSE against the truth lies above that of the nearest-pixel fill of the anchor as the model sees it (0
    where the frame is the better one). The regression pays for the mean error over frames; this pays, frame by
    frame, for doing worse than a classical fill of the same anchor, near-exact anchors included. Needs
    ``sampler_unroll``."""
    depth_covered_weight: float = 1.0
    """Weight of the depth loss on pixels the anchor (as the model sees it) covers, relative to 1 on the others. The
    env's depth observation takes the anchor's depth where a point landed and the model's only elsewhere, so 0 spends
    the depth loss where the model's depth is used; 1 is the plain mean over every pixel with a true depth."""
    train_only: str = "all"
    """Which parameters the optimiser updates: ``all``, or ``depth`` (only the RGB-D model's depth head and depth
    decoder, :data:`DEPTH_PARAMETERS`; they read the network's features without feeding back into them, so the colour
    output stays exactly the init's and each step back-propagates through the depth branch alone). ``depth`` needs
    ``init`` and ``depth_weight`` > 0."""
    uncaptured_regression_weight: float = 1.0
    """Weight of the regression loss on pixels the anchor (as the model sees it) does not cover, relative to 1 on
    covered pixels. Below 1 the pull towards the mean, a blur where the model must invent, is weakened there and
    the adversarial term has more say; 1 is the plain MSE."""

    def __post_init__(self) -> None:
        # Raises on a bad splat_radius, anchor_colour, silhouettes, sparse_fraction or close_fraction, naming it.
        ClipConfig(
            splat_radius=self.splat_radius,
            anchor_colour=self.anchor_colour,
            silhouettes=self.silhouettes,
            sparse_fraction=self.sparse_fraction,
            close_fraction=self.close_fraction,
            capture_resolution=self._capture_hw(),
            layout_obstacles=self.layout_obstacles or "footprints",
        )
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r} is not valid; choose one of {list(STAGES)}")
        for name in ("clips_per_step", "steps", "resolution"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not 0.0 <= self.anchor_start <= self.anchor_full <= 1.0:
            raise ValueError(f"need 0 <= anchor_start <= anchor_full <= 1, got {self.anchor_start}, {self.anchor_full}")
        for name in ("anchor_drop", "anchor_hole_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction={self.prediction!r} is not valid; choose 'eps' or 'v'")
        from worldfm_env.model.dit import TARGETS

        if self.target is not None and self.target not in TARGETS:
            raise ValueError(f"target={self.target!r} is not valid; choose one of {list(TARGETS)} or None")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not valid; choose one of {list(PRECISIONS)}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (0 disables the average), got {self.ema!r}")
        if self.train_only not in TRAIN_ONLY:
            raise ValueError(f"train_only={self.train_only!r} is not valid; choose one of {list(TRAIN_ONLY)}")
        if self.train_only == "depth" and (not self.init or not self.depth_weight):
            raise ValueError(
                "train_only='depth' trains the depth branch of a trained RGB-D model alone: it needs init (that "
                f"model) and depth_weight > 0; got init={self.init!r}, depth_weight={self.depth_weight!r}"
            )
        if self.train_only == "depth" and (self.adversarial_weight or self.detail_weight or self.fill_margin_weight):
            raise ValueError(
                "train_only='depth' leaves the frame as the init renders it, so the frame terms cannot train anything: "
                f"set adversarial_weight, detail_weight and fill_margin_weight to 0 (got {self.adversarial_weight!r}, "
                f"{self.detail_weight!r}, {self.fill_margin_weight!r})"
            )
        names = (
            "depth_weight",
            "adversarial_weight",
            "disc_r1",
            "uncaptured_regression_weight",
            "detail_weight",
            "fill_margin_weight",
        )
        for name in (*names, "depth_covered_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0 (0 disables the term), got {value!r}")
        for name in ("adversarial_weight", "detail_weight", "fill_margin_weight"):
            if getattr(self, name) and not self.sampler_unroll:
                raise ValueError(f"{name} > 0 needs sampler_unroll 1 or 2 (the term judges the sampler's frames)")
        if not isinstance(self.adversarial_start, int) or self.adversarial_start < 0:
            raise ValueError(f"adversarial_start must be an int >= 0, got {self.adversarial_start!r}")
        if not isinstance(self.disc_channels, int) or isinstance(self.disc_channels, bool) or self.disc_channels <= 0:
            raise ValueError(f"disc_channels must be a positive int, got {self.disc_channels!r}")
        for name in ("disc_spectral_norm", "disc_edges"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        focus = self.adversarial_focus
        if isinstance(focus, bool) or not isinstance(focus, (int, float)) or not 0.0 <= focus <= 1.0:
            raise ValueError(f"adversarial_focus must be a number in [0, 1], got {focus!r}")
        if not self.disc_lr > 0:
            raise ValueError(f"disc_lr must be positive, got {self.disc_lr!r}")
        if self.high_noise_bias < 0:
            raise ValueError(f"high_noise_bias must be >= 0, got {self.high_noise_bias}")
        if self.timesteps is not None:
            ts = self.timesteps
            if not (
                isinstance(ts, (list, tuple))
                and ts
                and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 999 for t in ts)
            ):
                raise ValueError(f"timesteps must be None or a non-empty list of ints in [0, 999], got {ts!r}")
            self.timesteps = [int(t) for t in ts]
        unroll = self.sampler_unroll
        if not isinstance(unroll, int) or isinstance(unroll, bool) or unroll not in (0, 1, 2):
            raise ValueError(f"sampler_unroll must be 0 (off), 1 or 2 (sampler steps), got {self.sampler_unroll!r}")
        if self.sampler_unroll and self.prediction != "v":
            raise ValueError("sampler_unroll needs prediction='v' (the form the distilled samplers read)")
        if self.sampler_unroll and self.timesteps is not None:
            raise ValueError("sampler_unroll runs the sampler's own timesteps; leave timesteps=None")
        for name in ("save_every", "sample_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.sample_every, int) or self.sample_every < 0:
            raise ValueError(f"sample_every must be an int >= 0 (0 disables), got {self.sample_every!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        start = self.decay_start
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < self.steps:
            raise ValueError(f"decay_start must be an int in [0, steps={self.steps}), got {start!r}")
        from worldfm_env.model import MODEL_CONFIGS

        if self.init is None and self.model not in MODEL_CONFIGS:
            raise ValueError(f"model={self.model!r} is not a model config; choose one of {sorted(MODEL_CONFIGS)}")

    def _capture_hw(self) -> tuple[int, int] | None:
        """``capture_resolution`` as ClipConfig's (height, width) (None stays None; other values are checked there)."""
        side = self.capture_resolution
        return None if side is None else (side, side)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict; unknown keys raise ``ValueError`` naming them."""
        return cls(**strict_kwargs(cls, values, "training option"))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): a linear warm-up to ``cfg.lr`` over ``cfg.warmup``
    steps, then ``cfg.lr`` (``lr_schedule="constant"``) or, from ``max(decay_start, warmup)`` on, a half cosine that
    reaches 0 at ``cfg.steps`` (``"cosine"``). A function of the step alone, so resumed runs follow it exactly."""
    rate = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
    start = max(cfg.decay_start, cfg.warmup)
    if cfg.lr_schedule == "cosine" and step >= start:
        rate *= 0.5 * (1.0 + math.cos(math.pi * (step - start) / max(1, cfg.steps - start)))
    return rate


def sample_timesteps(n: int, bias: float, generator: torch.Generator, device) -> torch.Tensor:
    """Timesteps (n,) in [0, 999], biased towards high noise by ``bias`` (see TrainConfig)."""
    u = torch.rand(n, generator=generator, device=device)
    return (999.0 * u.pow(1.0 / (1.0 + bias))).round().long().clamp(0, 999)


def condition_batch(batch, cfg: TrainConfig, progress: float, generator: torch.Generator, return_mask: bool = False):
    """Model inputs of a clip batch: (target x0, anchor, reference), each (N, 3, H, W) in [-1, 1].

    Stage I blanks both conditions; stage II applies the anchor schedule and masking. With ``return_mask`` a fourth
    item is the (N, H, W) bool coverage of the anchor as the model sees it (dropped anchors and cut holes uncovered).
    """
    target = images_to_model(batch.target_rgb.flatten(0, 1))
    anchor = images_to_model(batch.anchor_rgb.flatten(0, 1))
    reference = images_to_model(batch.reference_rgb.flatten(0, 1))
    N, _, H, W = target.shape
    device = target.device
    blank = torch.full_like(anchor, -1.0)  # an empty anchor is black, as rendered
    if cfg.stage == "stage1":
        empty = torch.zeros(N, H, W, dtype=torch.bool, device=device)
        return (target, blank, blank.clone(), empty) if return_mask else (target, blank, blank.clone())
    if progress < cfg.anchor_start:
        keep = torch.zeros(N, dtype=torch.bool, device=device)
    else:
        ramp = (
            1.0
            if cfg.anchor_full <= cfg.anchor_start
            else min(1.0, (progress - cfg.anchor_start) / (cfg.anchor_full - cfg.anchor_start))
        )
        keep = torch.rand(N, generator=generator, device=device) < ramp * (1.0 - cfg.anchor_drop)
    # Random rectangular holes (each side 1/4 to 1/2 of the image) in a fraction of the anchors.
    hole = torch.rand(N, generator=generator, device=device) < cfg.anchor_hole_prob
    size = (torch.rand(N, 2, generator=generator, device=device) * 0.25 + 0.25) * torch.tensor([H, W], device=device)
    corner = torch.rand(N, 2, generator=generator, device=device) * (torch.tensor([H, W], device=device) - size)
    ys = torch.arange(H, device=device)[None, :, None]
    xs = torch.arange(W, device=device)[None, None, :]
    inside = (
        (ys >= corner[:, 0, None, None])
        & (ys < (corner[:, 0] + size[:, 0])[:, None, None])
        & (xs >= corner[:, 1, None, None])
        & (xs < (corner[:, 1] + size[:, 1])[:, None, None])
    )  # (N, H, W)
    masked = torch.where((inside & hole[:, None, None])[:, None], blank, anchor)
    anchor = torch.where(keep[:, None, None, None], masked, blank)
    if not return_mask:
        return target, anchor, reference
    mask = batch.anchor_mask.flatten(0, 1).to(device) & keep[:, None, None] & ~(inside & hole[:, None, None])
    return target, anchor, reference, mask


def log_depth_error(
    relative_log_depth: torch.Tensor | None,
    target_depth: torch.Tensor,
    log_depth_mean: torch.Tensor,
    covered: torch.Tensor | None = None,
    covered_weight: float = 1.0,
) -> torch.Tensor:
    """The depth loss of an RGB-D model: mean ``|predicted - true|`` log depth over the pixels with a true depth.

    ``relative_log_depth`` (N, 1, H, W): the model's depth channel (log depth relative to the anchor's mean log depth
    ``log_depth_mean`` (N,)); ``target_depth`` (N, H, W): the ray-cast truth (pixels that are not finite and
    positive are left out). With ``covered`` (N, H, W) bool, those pixels weigh ``covered_weight`` and the others 1
    (``TrainConfig.depth_covered_weight``): a weighted mean; 0 when no pixel has weight.
    """
    if relative_log_depth is None:
        raise ValueError("the model returned no depth channel; depth_weight needs a model with depth_head=True")
    target = target_depth.float()
    valid = (torch.isfinite(target) & (target > 0)).float()
    if covered is not None and covered_weight != 1.0:
        valid = valid * torch.where(covered, float(covered_weight), 1.0)
    true_relative = target.clamp_min(1e-6).log() - log_depth_mean.float()[:, None, None]
    error = (relative_log_depth[:, 0].float() - torch.where(valid > 0, true_relative, torch.zeros_like(target))).abs()
    return (error * valid).sum() / valid.sum().clamp_min(1e-6)


def open_log(out: Path, start_step: int, rank: int):
    """Rank 0's ``out/log.jsonl`` opened for appending (None on other ranks).

    Entries past ``start_step`` (written after the checkpoint a run resumes from) are dropped first.
    """
    if rank != 0:
        return None
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    if log_path.is_file():
        kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= start_step]
        log_path.write_text("".join(line + "\n" for line in kept))
    return log_path.open("a")


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # bind before NCCL picks a GPU
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    if world > 1:
        return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _cameras(model, batch, rows: int | None = None) -> PanelCameras | None:
    """The batch's panel cameras (the first ``rows`` targets) when ``model`` is camera-conditioned, else None."""
    if model.config.camera_encoding == "none":
        return None
    cameras = batch.panel_cameras()
    if rows is None:
        return cameras
    return PanelCameras(cameras.c2w[:rows], cameras.K[:rows], cameras.image_hw)


def _anchor_depth(model, batch, rows: int | None = None) -> torch.Tensor | None:
    """The batch's anchor depth (B*T, H, W) (the first ``rows`` targets) when ``model`` reads it, else None."""
    if not model.config.refiner_depth:
        return None
    depth = batch.anchor_depth.flatten(0, 1)
    return depth if rows is None else depth[:rows]


def _layout_depth(model, batch, rows: int | None = None) -> torch.Tensor | None:
    """The batch's navigation-layout depth (B*T, H, W) (the first ``rows`` targets) when ``model`` reads it, else
    None."""
    if not model.config.refiner_layout:
        return None
    depth = batch.target_layout.flatten(0, 1)
    return depth if rows is None else depth[:rows]


def _sample_grid(model, batch, cfg: TrainConfig, path: Path) -> None:
    """PNG rows of anchor | reference | generated | ground truth for the first 4 targets of clip 0, generated by
    the frame-model object the env renders with: DDIM with ``sample_steps`` (training checkpoints are teachers), or
    the distilled sampler a ``sampler_unroll`` run trains."""
    import imageio.v2 as imageio

    n = min(4, batch.target_rgb.shape[1])
    anchor, mask, reference = batch.anchor_rgb[0, :n], batch.anchor_mask[0, :n], batch.reference_rgb[0, :n]
    if cfg.stage == "stage1":
        anchor, mask, reference = torch.zeros_like(anchor), torch.zeros_like(mask), torch.zeros_like(reference)
    frame_model = FrameModel(model, name=f"{cfg.stage} model")
    cond = frame_model.conditions(
        anchor,
        mask,
        reference,
        anchor_depth=_anchor_depth(model, batch, n),
        cameras=_cameras(model, batch, n),
        layout_depth=_layout_depth(model, batch, n),
    )
    generators = [torch.Generator(device=anchor.device).manual_seed(cfg.seed + i) for i in range(n)]
    if cfg.sampler_unroll:  # a model trained through the distilled sampler is read with it
        frames = frame_model.generate(cond, generators=generators, sampler="distilled", steps=cfg.sampler_unroll)
    else:
        frames = frame_model.generate(cond, generators=generators, sampler="ddim", steps=cfg.sample_steps)
    rows = torch.cat(
        [batch.anchor_rgb[0, :n], batch.reference_rgb[0, :n], frames, batch.target_rgb[0, :n]], dim=2
    )  # (n, H, 4W, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, rows.reshape(-1, *rows.shape[2:]).cpu().numpy())


#: ``TrainConfig.train_only`` choices.
TRAIN_ONLY = ("all", "depth")
#: Name prefixes of the parameters ``train_only="depth"`` updates: the RGB-D refiner's depth head and depth decoder.
DEPTH_PARAMETERS = ("refiner.depth_out.", "refiner.depth_decoder.")

#: The config fields a fine-tune may add to its init checkpoint's model (``TrainConfig.model_overrides`` with
#: ``init``): each only adds parameters, initialised so that the extended model computes what the init did.
EXTENSION_FIELDS = ("refiner_channels", "refiner_depth", "depth_head", "depth_decoder", "refiner_layout")


def extend_model(model: WorldFMDiT, overrides: dict) -> WorldFMDiT:
    """A copy of ``model`` with config ``overrides`` that only add parameters (e.g. ``refiner_channels``).

    Every parameter of ``model`` is copied into the new model; the new model's other parameters keep their
    initialisation (extensions start as no-ops). Keys outside :data:`EXTENSION_FIELDS`, and overrides that would
    change or drop an existing parameter, raise ``ValueError`` naming them.
    """
    others = sorted(set(overrides) - set(EXTENSION_FIELDS))
    if others:
        raise ValueError(
            f"model_overrides {others} cannot be added to an init checkpoint's model: a fine-tune may only add "
            f"the extensions {list(EXTENSION_FIELDS)} (they start as no-ops); change the architecture by training "
            "without init"
        )
    new = WorldFMDiT(dataclasses.replace(model.config, **overrides)).to(device=model.device, dtype=model.dtype)
    old_state, new_state = model.state_dict(), new.state_dict()
    dropped = sorted(set(old_state) - set(new_state))
    reshaped = sorted(k for k in old_state if k in new_state and old_state[k].shape != new_state[k].shape)
    if dropped or reshaped:
        raise ValueError(
            f"model_overrides {overrides} must only add parameters to the init checkpoint's model; "
            f"they drop {dropped} and reshape {reshaped}"
        )
    new.load_state_dict(old_state, strict=False)
    return new.train(model.training)


def regression_loss(
    prediction: torch.Tensor, target: torch.Tensor, covered: torch.Tensor, uncaptured_weight: float = 1.0
) -> torch.Tensor:
    """MSE of (N, C, H, W) ``prediction`` against ``target``, pixels that ``covered`` (N, H, W) does not mark weighted
    by ``uncaptured_weight`` (``TrainConfig.uncaptured_regression_weight``; 1 is the plain MSE)."""
    if uncaptured_weight == 1.0:
        return F.mse_loss(prediction, target)
    weight = torch.where(covered, 1.0, float(uncaptured_weight)).to(prediction.dtype)[:, None]
    return ((prediction - target).pow(2) * weight).mean()


def detail_loss(
    frame: torch.Tensor, truth: torch.Tensor, covered: torch.Tensor, patch: int = 8, floor: float = 1e-3
) -> torch.Tensor:
    """Local detail loss: ``|log(E(frame) + floor) - log(E(truth) + floor)|`` per ``patch`` x ``patch`` cell, with
    ``E`` the cell's mean squared finite difference (x and y, summed over channels; frames (N, C, H, W) in [-1, 1]),
    averaged over cells weighted by their uncovered share (``covered`` (N, H, W) bool; 0 when every pixel is
    covered). ``floor`` (1e-3: neighbours about 4 levels of 255 apart in one channel) keeps near-flat cells from
    dominating the log."""
    if frame.shape != truth.shape or tuple(covered.shape) != (frame.shape[0], *frame.shape[2:]):
        raise ValueError(
            f"need frame and truth (N, C, H, W) of one shape and covered (N, H, W); got {tuple(frame.shape)}, "
            f"{tuple(truth.shape)}, {tuple(covered.shape)}"
        )

    def energy(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(finite_differences(x.float()).square().sum(1, keepdim=True), patch)

    error = (torch.log(energy(frame) + floor) - torch.log(energy(truth) + floor)).abs()
    weight = F.avg_pool2d((~covered)[:, None].float(), patch)
    return (error * weight).sum() / weight.sum().clamp_min(1e-6)


def fill_margin_loss(
    frame: torch.Tensor, truth: torch.Tensor, anchor: torch.Tensor, covered: torch.Tensor, floor: float = 1e-6
) -> torch.Tensor:
    """Fill margin: per frame, ``max(0, log(MSE(frame) + floor) - log(MSE(fill) + floor))`` with ``fill`` the
    nearest-pixel fill of ``anchor`` over the pixels ``covered`` marks, averaged over the frames whose anchor covers
    any pixel (0 when none does). Frames (N, C, H, W) in [-1, 1], ``covered`` (N, H, W) bool. The log makes a frame
    that loses 1 dB to the fill cost the same whether the fill is at 20 or at 45 dB; ``floor`` (1e-6, about 66 dB)
    bounds the weight of exact anchors. The fill carries no gradient."""
    covered_shape = (frame.shape[0], *frame.shape[2:])
    if frame.shape != truth.shape or frame.shape != anchor.shape or tuple(covered.shape) != covered_shape:
        raise ValueError(
            f"need frame, truth and anchor (N, C, H, W) of one shape and covered (N, H, W); got {tuple(frame.shape)}, "
            f"{tuple(truth.shape)}, {tuple(anchor.shape)}, {tuple(covered.shape)}"
        )
    with torch.no_grad():
        fill = nearest_fill(anchor.float().permute(0, 2, 3, 1), covered).permute(0, 3, 1, 2)
        fill_error = (fill - truth.float()).square().mean((1, 2, 3))
    error = (frame.float() - truth.float()).square().mean((1, 2, 3))
    margin = (torch.log(error + floor) - torch.log(fill_error + floor)).clamp_min(0.0)
    counted = covered.flatten(1).any(1).to(margin.dtype)
    return (margin * counted).sum() / counted.sum().clamp_min(1.0)


def _patch_weights(cfg: TrainConfig, covered: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
    """The adversarial losses' per-patch weights (None: plain means, as before ``adversarial_focus``)."""
    return patch_weights(covered, tuple(logits.shape[-2:]), cfg.adversarial_focus) if cfg.adversarial_focus else None


def _average_gradients(module: torch.nn.Module, world: int) -> None:
    """All-reduce (mean) the gradients of ``module`` over the process group in one flat message (manual DDP; a
    no-op on one process). Stage III's student runs several forwards per update, which DDP does not allow without
    extra flags, and stage II's discriminator is differentiated twice by R1, so both average their gradients here.
    """
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if world <= 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one stage; returns a summary (final loss, steps, wall time)."""
    rank, world, local_rank = _distributed()
    device = (
        torch.device("cuda", local_rank) if (world > 1 and torch.cuda.is_available()) else resolve_device(cfg.device)
    )
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    if cfg.init:
        model = load_checkpoint(None, cfg.init, device=device)
        if cfg.model_overrides:
            model = extend_model(model, cfg.model_overrides)
    else:
        model = build_model(cfg.model, input_size=cfg.resolution, prediction=cfg.prediction, **cfg.model_overrides)
        model = model.to(device)
    if cfg.target is not None and cfg.target != model.config.target:
        model.config = dataclasses.replace(model.config, target=cfg.target)  # same network, new output meaning
    model.train().requires_grad_(True)
    # A fine-tune keeps the init's recommended sampler (the env's default for the result).
    init_meta = read_metadata(cfg.init) if cfg.init else {}
    carried = {k: v for k, v in init_meta.items() if k == SAMPLER_STEPS_METADATA_KEY}
    if cfg.stage == "stage2":  # the anchors it learns from: the env warns when it renders others
        carried[SPLAT_RADIUS_METADATA_KEY] = str(cfg.splat_radius)
        carried[ANCHOR_COLOUR_METADATA_KEY] = cfg.anchor_colour
        carried[SILHOUETTES_METADATA_KEY] = cfg.silhouettes
    # The layout a layout model learns from (any stage): the env gives it the same.
    layout_obstacles = (
        cfg.layout_obstacles or (trained_layout_obstacles(cfg.init) if cfg.init else None) or "footprints"
    )
    if model.config.refiner_layout:
        carried[LAYOUT_OBSTACLES_METADATA_KEY] = layout_obstacles
    if model.config.prediction != cfg.prediction:
        raise ValueError(
            f"init={cfg.init!r} predicts {model.config.prediction!r} but prediction={cfg.prediction!r}; "
            "set prediction to the init checkpoint's"
        )
    if model.config.in_channels != 3:
        raise ValueError(
            f"model {cfg.model!r} takes {model.config.in_channels} channels; training runs in pixel space (3)"
        )
    if cfg.depth_weight and not model.config.depth_head:
        raise ValueError(
            "depth_weight > 0 needs an RGB-D model (DiTConfig.depth_head): build one (model 'srgbd') or, with init, "
            'add the head with model_overrides {"depth_head": true}'
        )
    if cfg.train_only == "depth":  # depth_weight > 0 (checked above) makes sure the model has a depth head
        model.requires_grad_(False)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(DEPTH_PARAMETERS))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema > 0 else None
    disc = disc_optimizer = None
    if cfg.adversarial_weight:
        design = dict(spectral_norm=cfg.disc_spectral_norm, edges=cfg.disc_edges)
        disc = PatchDiscriminator(cfg.disc_channels, **design).to(device)
        disc_optimizer = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
    start_step = 0
    state_path = out / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state.get("ema", state["model"]))
        if disc is not None:
            if "disc" not in state:
                raise ValueError(
                    f"{state_path} was written without a discriminator but adversarial_weight={cfg.adversarial_weight}"
                    "; resume with the run's own options or use another out folder"
                )
            disc.load_state_dict(state["disc"])
            disc_optimizer.load_state_dict(state["disc_optimizer"])
        start_step = int(state["step"])
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    scenes = resolve_scenes(cfg.scenes, device, (cfg.resolution, cfg.resolution), 90.0)
    clip_config = ClipConfig(
        resolution=(cfg.resolution, cfg.resolution),
        splat_radius=cfg.splat_radius,
        anchor_colour=cfg.anchor_colour,
        silhouettes=cfg.silhouettes,
        sparse_fraction=cfg.sparse_fraction,
        close_fraction=cfg.close_fraction,
        capture_resolution=cfg._capture_hw(),
        layout_depth=model.config.refiner_layout,
        layout_obstacles=layout_obstacles,
    )
    clips = ClipGenerator(scenes, clip_config, device)
    schedule = iddpm_linear_schedule()
    abar = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
    given_timesteps = None if cfg.timesteps is None else torch.tensor(cfg.timesteps, device=device)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank + 1)
    mask_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank + 7919)
    log = open_log(out, start_step, rank)
    precision = resolve_precision(cfg.precision, device)  # probe the CPU/GPU once, not every step
    from tqdm.auto import tqdm

    bar = tqdm(range(start_step, cfg.steps), desc=cfg.stage, disable=rank != 0, leave=False)
    loss_value, started, batch = float("nan"), time.perf_counter(), None
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        # Noise and masks are drawn from (seed, rank, step): a resumed run continues exactly.
        noise_gen.manual_seed((cfg.seed * 1_000_003 + rank) * 10_000_019 + step)
        mask_gen.manual_seed((cfg.seed * 1_000_003 + rank) * 10_000_019 + step + 7_919)
        first_clip = (0 if cfg.fixed_batch else step * world + rank) * cfg.clips_per_step
        batch = clips.batch(cfg.clips_per_step, seed=cfg.seed, start_index=first_clip)
        image, anchor, reference, mask = condition_batch(batch, cfg, step / cfg.steps, mask_gen, return_mask=True)
        base = residual_base(model.config.target, anchor, mask)
        x0 = to_target(image, base, model.config.target)
        anchor_depth = _anchor_depth(model, batch)
        # What the refiner derives from the anchor, once for every forward of the step (and the depth's mean).
        prepared = model.prepare_conditions(anchor, anchor_depth, _layout_depth(model, batch))
        conditions = dict(cameras=_cameras(model, batch), anchor_depth=anchor_depth)
        terms, depth_channel, sample = {}, None, None
        if cfg.sampler_unroll:
            noise = torch.randn(x0.shape, generator=noise_gen, device=device)
            renoise = [torch.randn(x0.shape, generator=noise_gen, device=device) for _ in range(cfg.sampler_unroll - 1)]
            depths = []
            with autocast_context(precision, device):
                estimates = distilled_trajectory(
                    ddp,
                    anchor,
                    reference,
                    noise,
                    renoise,
                    cfg.sampler_unroll,
                    abar,
                    **conditions,
                    model_kwargs=prepared,
                    depths=depths,
                )
            weight = cfg.uncaptured_regression_weight
            loss = torch.stack([regression_loss(e, x0, mask, weight) for e in estimates]).mean()  # float32
            depth_channel, sample = depths[-1], estimates[-1]
        else:
            if cfg.timesteps is None:
                t = sample_timesteps(x0.shape[0], cfg.high_noise_bias, noise_gen, device)
            else:
                pick = torch.randint(len(given_timesteps), (x0.shape[0],), generator=noise_gen, device=device)
                t = given_timesteps[pick]
            eps = torch.randn(x0.shape, generator=noise_gen, device=device)
            a = abar[t].sqrt()[:, None, None, None]
            s = (1.0 - abar[t]).sqrt()[:, None, None, None]
            with autocast_context(precision, device):
                out_t = ddp(a * x0 + s * eps, t, anchor, reference, **conditions, **prepared)
            target = eps if cfg.prediction == "eps" else a * eps - s * x0
            # eps- or v-MSE (a learned-sigma half is ignored)
            loss = regression_loss(out_t[:, :3].float(), target, mask, cfg.uncaptured_regression_weight)
            depth_channel = split_depth(out_t, 3)
        terms["regression"] = loss.detach()
        if cfg.depth_weight:
            mean = prepared["refiner_inputs"]["log_depth_mean"]
            depth_term = log_depth_error(
                depth_channel, batch.target_depth.flatten(0, 1), mean, mask, cfg.depth_covered_weight
            )
            loss = loss + cfg.depth_weight * depth_term
            terms["depth"] = depth_term.detach()
        fake = None
        if disc is not None or cfg.detail_weight or cfg.fill_margin_weight:
            fake = from_target(sample, base, model.config.target)  # the frame the sampler gives, in [-1, 1]
        if cfg.detail_weight:
            detail = detail_loss(fake, image, mask)
            loss = loss + cfg.detail_weight * detail
            terms["detail"] = detail.detach()
        if cfg.fill_margin_weight:
            margin = fill_margin_loss(fake, image, anchor, mask)
            loss = loss + cfg.fill_margin_weight * margin
            terms["fill_margin"] = margin.detach()
        if disc is not None:
            if step >= cfg.adversarial_start:
                disc.requires_grad_(False)  # the generator's term does not train the discriminator
                fake_logits = disc(fake, anchor, mask)
                adversarial = generator_loss(fake_logits, _patch_weights(cfg, mask, fake_logits))
                disc.requires_grad_(True)
                loss = loss + cfg.adversarial_weight * adversarial
                terms["adversarial"] = adversarial.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if disc is not None:
            real_logits, fake_logits = disc(image, anchor, mask), disc(fake.detach(), anchor, mask)
            d_loss = discriminator_loss(real_logits, fake_logits, _patch_weights(cfg, mask, real_logits))
            terms["discriminator"] = d_loss.detach()
            terms["d_real"], terms["d_fake"] = real_logits.detach().mean(), fake_logits.detach().mean()
            if cfg.disc_r1:
                r1 = r1_penalty(disc, image, anchor, mask)
                d_loss = d_loss + 0.5 * cfg.disc_r1 * r1
                terms["r1"] = r1.detach()
            disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            _average_gradients(disc, world)  # the discriminator is not wrapped in DDP (R1 differentiates twice)
            disc_optimizer.step()
        if ema is not None:
            # Warm-up of the decay (short runs are not dominated by the initial weights).
            decay = min(cfg.ema, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1.0 - decay)
        # One host sync for the loss and its terms (each float() of a CUDA tensor would be one).
        values = torch.stack([loss.detach(), *terms.values()]).tolist()
        loss_value, terms = values[0], dict(zip(terms, values[1:], strict=True))
        if rank == 0:
            bar.set_postfix(loss=f"{loss_value:.4f}")
            entry = {"step": step + 1, "loss": loss_value}
            if len(terms) > 1:
                entry.update(terms)
            log.write(json.dumps(entry) + "\n")
            done = step + 1 == cfg.steps
            if (step + 1) % cfg.save_every == 0 or done:
                log.flush()
                save_checkpoint(ema if ema is not None else model, out / "model.safetensors", metadata=carried)
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}
                if ema is not None:
                    state["ema"] = ema.state_dict()
                if disc is not None:
                    state["disc"] = disc.state_dict()
                    state["disc_optimizer"] = disc_optimizer.state_dict()
                torch.save(state, state_path)
            if cfg.sample_every and ((step + 1) % cfg.sample_every == 0 or done):
                shown = ema if ema is not None else model
                shown.eval()
                with torch.no_grad(), autocast_context(precision, device):
                    _sample_grid(shown, batch, cfg, out / "samples" / f"step_{step + 1:06d}.png")
                model.train()
    if log is not None:
        log.close()
    summary = {
        "stage": cfg.stage,
        "steps": cfg.steps,
        "final_loss": loss_value,
        "ranks": world,
        "wall_s": round(time.perf_counter() - started, 1),
        "device": str(device),
    }
    if world > 1:
        dist.barrier()
    return summary


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m worldfm_env.training.stages --stage stage2 [--config C.json] [--key value ...]``.

    ``prog`` is the program name the usage line shows (``worldfm-env train ...`` when run from that command).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train the WorldFM frame model (stage I or II). Options given here override those of --config.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="JSON file with TrainConfig fields (model_overrides only here)")
    add_dataclass_arguments(
        parser,
        TrainConfig,
        skip=("model_overrides",),
        types={"splat_radius": splat_radius_arg},
        choices={"stage": STAGES, "train_only": TRAIN_ONLY, "lr_schedule": LR_SCHEDULES},
        defaults_none=True,  # None: not given, so a --config value stands
    )
    args = parser.parse_args(argv)
    values = json.loads(Path(args.config).read_text()) if args.config else {}
    for key, value in vars(args).items():
        if key not in ("config",) and value is not None:
            values[key] = value
    summary = train(TrainConfig.from_dict(values))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
