"""Noise schedule and samplers for the WorldFM frame model.

Published source read for this file (repository ``inspatio/worldfm``): ``modules/worldfm_infer.py`` (the distilled
1-/2-step samplers, which tensor is used and how it is cast), ``worldfm/diffusion/iddpm.py`` (``IDDPM("1000")``: the
linear schedule over 1000 steps, learned sigma) and ``worldfm/diffusion/model/nets/PixArtWorldFMMS.py``
(``forward_with_dpmsolver`` keeps the first half of the channels).

Parametrisations, with ``a_t = sqrt(abar_t)``, ``s_t = sqrt(1 - abar_t)`` and ``z_t = a_t x0 + s_t eps``:

* **v** (published distilled students): ``v = a_t eps - s_t x0``, so ``x0 = a_t z_t - s_t v`` and
  ``eps = s_t z_t + a_t v``. The published code names the network output ``eps`` but uses exactly
  ``x0 = a_t z - s_t out``, which is the v form; it must be kept for the published weights.
* **eps** (teachers, trained with eps-MSE): ``x0 = (z_t - s_t eps) / a_t`` and ``eps = (z_t - a_t x0) / s_t``.

With a learned variance the network returns 2C channels; the first C are the prediction and the rest are dropped
(the published ``forward_with_dpmsolver`` does ``chunk(2, dim=1)[0]``).

Timesteps index ``alphas_cumprod`` directly (0-based): the published code evaluates ``alphas_cumprod[999]`` and
``alphas_cumprod[200]``, which are ``4.0358e-5`` and ``0.656347``.

Randomness: every sampler takes either an optional list of ``torch.Generator``, one per batch row (one per env), or
``noise_seeds``, an (B,) int64 tensor of per-row seeds on the device (the two are mutually exclusive). With
generators, row i draws all of its noise from generator i, in a fixed order (initial noise, then one re-noise per
extra distilled step): B small ``randn`` launches per draw, and seeding them from device seeds needs a host sync.
With ``noise_seeds``, every draw is one batched counter-based hash on the device
(:func:`worldfm_env.rng.hash_normal`): the initial noise is stream 0 and the re-noise before distilled step k
(k = 1, 2, ...) is stream k; no host sync, no per-row launches. Either way, a fixed seed and fixed inputs give the
same frame whatever else is in the batch (the two modes draw different noise for the same seed). DDIM here is
deterministic (eta = 0): only its initial noise is random. With neither, the global RNG is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from worldfm_env.rng import hash_normal

__all__ = [
    "NoiseSchedule",
    "iddpm_linear_schedule",
    "make_generators",
    "split_prediction",
    "split_depth",
    "predict_x0",
    "v_to_x0",
    "v_to_eps",
    "eps_to_x0",
    "x0_to_eps",
    "sample_distilled",
    "distilled_trajectory",
    "sample_ddim",
    "ddim_timesteps",
    "DISTILLED_TIMESTEPS",
]

# Published distilled schedules: 1 step at t=999; 2 steps at t=999, then re-noise to mid_t=200.
DISTILLED_TIMESTEPS = {1: (999,), 2: (999, 200)}


@dataclass(frozen=True)
class NoiseSchedule:
    """Discrete diffusion schedule: ``betas`` and ``alphas_cumprod`` (abar), float64 CPU tensors of length T."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @property
    def num_timesteps(self) -> int:
        """Number of discrete timesteps T (valid t are 0..T-1)."""
        return int(self.betas.shape[0])

    def _index(self, t, batch: int) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"t must be a scalar or have {batch} entries, got {t.numel()}")
        if int(t.min()) < 0 or int(t.max()) >= self.num_timesteps:
            raise ValueError(f"t must be in [0, {self.num_timesteps - 1}], got {t.tolist()}")
        return t

    def coefficients(self, t, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(abar_t), sqrt(1 - abar_t))`` as float32 (B, 1, 1, 1) on ``device``.

        Computed like the published sampler: abar is cast to float32 first, then ``** 0.5`` in float32. A scalar
        ``t`` (the samplers' case) is filled on the device: no host-to-device copy, which would sync a CUDA stream.
        """
        idx = self._index(t, batch)
        if isinstance(t, (int, np.integer)):
            abar = self.alphas_cumprod[int(t)].to(torch.float32)
            a, s = float(abar**0.5), float((1 - abar) ** 0.5)  # float32 values, exact as Python floats
            shape = (batch, 1, 1, 1)
            return torch.full(shape, a, device=device), torch.full(shape, s, device=device)
        abar = self.alphas_cumprod.to(torch.float32)[idx].to(device)  # (B,)
        return (abar**0.5).view(-1, 1, 1, 1), ((1 - abar) ** 0.5).view(-1, 1, 1, 1)


def iddpm_linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """IDDPM "linear" schedule: betas = linspace(s*beta_start, s*beta_end, T) in float64 with s = 1000 / T,
    ``alphas_cumprod = cumprod(1 - betas)`` (numpy, float64, matching the published ``IDDPM("1000")``)."""
    if num_timesteps <= 0:
        raise ValueError(f"num_timesteps must be > 0, got {num_timesteps}")
    scale = 1000.0 / num_timesteps
    betas = np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)
    abar = np.cumprod(1.0 - betas, axis=0)
    return NoiseSchedule(torch.from_numpy(betas), torch.from_numpy(abar))


_DEFAULT_SCHEDULE: NoiseSchedule | None = None


def _default_schedule() -> NoiseSchedule:
    global _DEFAULT_SCHEDULE
    if _DEFAULT_SCHEDULE is None:
        _DEFAULT_SCHEDULE = iddpm_linear_schedule()
    return _DEFAULT_SCHEDULE


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per seed (per env), on ``device`` (noise is drawn on that device)."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _randn(
    shape: tuple[int, ...],
    generators: Sequence[torch.Generator] | None,
    device,
    dtype=torch.float32,
    noise_seeds: torch.Tensor | None = None,
    stream: int = 0,
):
    """(B, *shape) standard normal; row i from ``generators[i]``, or hashed from ``(noise_seeds[i], stream)`` on the
    device, else from the global RNG."""
    if noise_seeds is not None:
        return hash_normal(noise_seeds.to(device), shape[1:], stream=stream).to(dtype)
    if generators is None:
        return torch.randn((shape[0], *shape[1:]), device=device, dtype=dtype)
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generators]
    return torch.stack(rows).to(device)


def split_prediction(model_out: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the prediction channels: the first ``channels`` of a learned-sigma (2C) output, or the whole output; a
    trailing depth channel (C + 1 or 2C + 1 channels, ``DiTConfig.depth_head``) is dropped too."""
    n = model_out.shape[1]
    if n == channels:
        return model_out
    if n in (2 * channels, channels + 1, 2 * channels + 1):
        return model_out[:, :channels]
    raise ValueError(
        f"model output has {n} channels, expected {channels} or {2 * channels} (one more with a depth head)"
    )


def split_depth(model_out: torch.Tensor, channels: int) -> torch.Tensor | None:
    """The trailing depth channel (B, 1, H, W) of a depth-head model's output (C + 1 or 2C + 1 channels for C
    prediction channels, C > 1), else None."""
    n = model_out.shape[1]
    if channels > 1 and n in (channels + 1, 2 * channels + 1):
        return model_out[:, -1:]
    return None


def v_to_x0(v: torch.Tensor, z_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``x0 = a z_t - s v`` (float32)."""
    return a * z_t.float() - s * v.float()


def v_to_eps(v: torch.Tensor, z_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``eps = s z_t + a v`` (float32)."""
    return s * z_t.float() + a * v.float()


def eps_to_x0(eps: torch.Tensor, z_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``x0 = (z_t - s eps) / a`` (float32)."""
    return (z_t.float() - s * eps.float()) / a


def x0_to_eps(x0: torch.Tensor, z_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``eps = (z_t - a x0) / s`` (float32)."""
    return (z_t.float() - a * x0.float()) / s


def predict_x0(model_out: torch.Tensor, z_t: torch.Tensor, t, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """Published distilled form: ``x0 = sqrt(abar_t) * z_t - sqrt(1 - abar_t) * out`` in float32.

    ``out`` is the first C channels of the model output (the learned-sigma half is dropped); ``t`` is an int or (B,)
    and indexes ``alphas_cumprod`` directly.
    """
    schedule = schedule or _default_schedule()
    a, s = schedule.coefficients(t, z_t.shape[0], z_t.device)
    return v_to_x0(split_prediction(model_out, z_t.shape[1]), z_t, a, s)


def _check_conditions(anchor: torch.Tensor, reference: torch.Tensor, generators, noise_seeds=None) -> None:
    if anchor.ndim != 4:
        raise ValueError(f"anchor must be (B, C, H, W), got {tuple(anchor.shape)}")
    if reference.shape != anchor.shape:
        raise ValueError(f"reference must have the shape of anchor {tuple(anchor.shape)}, got {tuple(reference.shape)}")
    if generators is not None and len(generators) != anchor.shape[0]:
        raise ValueError(f"generators must have one generator per batch row ({anchor.shape[0]}), got {len(generators)}")
    if noise_seeds is not None:
        if generators is not None:
            raise ValueError("generators and noise_seeds are mutually exclusive: pass one of them (or neither)")
        if not isinstance(noise_seeds, torch.Tensor) or tuple(noise_seeds.shape) != (anchor.shape[0],):
            got = tuple(noise_seeds.shape) if isinstance(noise_seeds, torch.Tensor) else type(noise_seeds).__name__
            raise ValueError(f"noise_seeds must be a ({anchor.shape[0]},) integer tensor (one seed per row), got {got}")
        if noise_seeds.is_floating_point() or noise_seeds.is_complex() or noise_seeds.dtype == torch.bool:
            raise ValueError(f"noise_seeds must be an integer tensor, got dtype {noise_seeds.dtype}")


def _model_dtype(model) -> torch.dtype:
    # The published sampler feeds the network in its weight dtype; stubs without parameters run in float32.
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.dtype
    return torch.float32


def _prepare(model, anchor, reference, generators, noise, noise_seeds=None):
    """Shared set-up: (model dtype, batch, device, conditions in the model dtype, float32 initial noise)."""
    dtype = _model_dtype(model)
    B, device, shape = anchor.shape[0], anchor.device, tuple(anchor.shape)
    if noise is None:
        noise = _randn(shape, generators, device, noise_seeds=noise_seeds, stream=0)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    return dtype, B, device, anchor.to(dtype), reference.to(dtype), noise.to(device=device, dtype=torch.float32)


def _model_conditions(cameras, anchor_depth: torch.Tensor | None, model_kwargs: dict | None = None) -> dict:
    """Keyword conditions of the model calls: ``cameras`` always (None for models without a camera encoding), the
    anchor depth only when given, so models and callables that do not read it need not accept it, and the caller's
    per-frame ``model_kwargs`` (e.g. :meth:`~worldfm_env.model.dit.WorldFMDiT.prepare_conditions`)."""
    conditions = {"cameras": cameras} if anchor_depth is None else {"cameras": cameras, "anchor_depth": anchor_depth}
    return {**conditions, **(model_kwargs or {})}


def _distilled_loop(
    model, z, anchor, reference, timesteps, coefficients, draw_renoise, conditions, dtype=None, depths=None
):
    """The published distilled sampler, once for inference and training: the float32 x0 estimate of every step.

    Step k at ``timesteps[k]``: for k > 0 re-noise ``z = a_t x0 + s_t eps`` with ``eps = draw_renoise(k)``, then
    ``x0 = a_t z - s_t out(z, t)`` (:func:`v_to_x0`). ``coefficients(t)`` gives ``(a_t, s_t)``; ``dtype`` casts
    each re-noised ``z`` before the model call (None keeps float32 for autocast). Gradients are the caller's choice.
    ``depths``: a list that receives each step's depth channel (:func:`split_depth`, None for models without one).
    """
    B, C = z.shape[0], anchor.shape[1]
    x0, estimates = None, []
    for k, t in enumerate(timesteps):
        a, s = coefficients(t)
        if k > 0:
            z = a * x0 + s * draw_renoise(k).float()
            z = z if dtype is None else z.to(dtype)
        t_vec = torch.full((B,), t, dtype=torch.long, device=z.device)
        out = model(z, t_vec, anchor, reference, **conditions)
        x0 = v_to_x0(split_prediction(out, C), z, a, s)  # float32
        estimates.append(x0)
        if depths is not None:
            depths.append(split_depth(out, C))
    return estimates


@torch.no_grad()
def sample_distilled(
    model,
    anchor: torch.Tensor,
    reference: torch.Tensor,
    steps: int = 2,
    *,
    generators: Sequence[torch.Generator] | None = None,
    noise_seeds: torch.Tensor | None = None,
    timesteps: Sequence[int] | None = None,
    schedule: NoiseSchedule | None = None,
    cameras=None,
    anchor_depth: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    renoise: Sequence[torch.Tensor] | None = None,
    model_kwargs: dict | None = None,
    return_depth: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """Distilled few-step sampling in the published form; returns x0 latents (B, C, H, W) in the model dtype.

    Step 1: ``z ~ N(0, I)`` (in the model dtype), ``x0 = a_999 z - s_999 out(z, 999)``. Each further step at ``t``
    (2-step: ``t = 200``): ``z_t = (a_t x0 + s_t eps)`` cast to the model dtype with fresh ``eps``, then
    ``x0 = a_t z_t - s_t out(z_t, t)``. Intermediate x0 stays float32; the result is cast to the model dtype.

    Args:
        model: ``model(z_t, timesteps (B,) long, anchor, reference, cameras=...) -> (B, C or 2C, H, W)``.
        steps: 1 or 2 (published schedules ``(999,)`` and ``(999, 200)``); ignored when ``timesteps`` is given.
        generators: one ``torch.Generator`` per batch row; row i draws its initial noise then its re-noise from
            ``generators[i]``. ``None`` (and no ``noise_seeds``) uses the global RNG.
        noise_seeds: (B,) integer tensor, one seed per row, instead of ``generators``: the initial noise is
            ``hash_normal(noise_seeds, (C, H, W), stream=0)`` and the re-noise before step k is stream k, computed
            batched on the device (no host sync, no per-row launches).
        timesteps: explicit decreasing timesteps, e.g. ``(999, 200)``.
        anchor_depth: (B, H, W) anchor depth for models that read it (``DiTConfig.refiner_depth``); passed to the
            model only when given.
        noise, renoise: explicit initial noise (B, C, H, W) and per-extra-step re-noise tensors (for tests and
            reproducing external runs); they replace the generator or ``noise_seeds`` draws.
        model_kwargs: more keyword arguments of every model call, computed once per frame by the caller.
        return_depth: return ``(x0, depth)``: the last step's depth channel (B, 1, H, W) float32 of a depth-head
            model (:func:`split_depth`), None for other models.
    """
    _check_conditions(anchor, reference, generators, noise_seeds)
    if timesteps is None:
        if steps not in DISTILLED_TIMESTEPS:
            raise ValueError(f"steps must be one of {sorted(DISTILLED_TIMESTEPS)}, got {steps}")
        timesteps = DISTILLED_TIMESTEPS[steps]
    timesteps = [int(t) for t in timesteps]
    if not timesteps or any(b >= a for a, b in zip(timesteps[:-1], timesteps[1:], strict=True)):
        raise ValueError(f"timesteps must be non-empty and strictly decreasing, got {timesteps}")
    if renoise is not None and len(renoise) != len(timesteps) - 1:
        raise ValueError(f"renoise needs {len(timesteps) - 1} tensors, got {len(renoise)}")
    schedule = schedule or _default_schedule()
    shape = tuple(anchor.shape)
    dtype, B, device, anchor, reference, noise = _prepare(model, anchor, reference, generators, noise, noise_seeds)

    def draw_renoise(k: int) -> torch.Tensor:
        if renoise is not None:
            return renoise[k - 1].to(device)
        return _randn(shape, generators, device, noise_seeds=noise_seeds, stream=k)

    depths = [] if return_depth else None
    estimates = _distilled_loop(
        model,
        noise.to(dtype),
        anchor,
        reference,
        timesteps,
        lambda t: schedule.coefficients(t, B, device),
        draw_renoise,
        _model_conditions(cameras, anchor_depth, model_kwargs),
        dtype,
        depths,
    )
    if return_depth:
        return estimates[-1].to(dtype), None if depths[-1] is None else depths[-1].float()
    return estimates[-1].to(dtype)


def distilled_trajectory(
    model,
    anchor: torch.Tensor,
    reference: torch.Tensor,
    noise: torch.Tensor,
    renoise: Sequence[torch.Tensor],
    steps: int,
    alphas_cumprod: torch.Tensor,
    cameras=None,
    anchor_depth: torch.Tensor | None = None,
    model_kwargs: dict | None = None,
    depths: list | None = None,
) -> list[torch.Tensor]:
    """The published distilled sampler with gradients, for training: the x0 estimate (B, C, H, W) of every step.

    The same arithmetic as :func:`sample_distilled` (:func:`v_to_x0` in float32, re-noise
    ``z = a_t x0 + s_t eps``) with explicit ``noise`` and ``renoise`` (``steps - 1`` tensors), the model run in
    whatever precision the caller's autocast gives, and nothing detached: a loss on the last estimate trains every
    step through the ones before it. The estimates are float32. ``alphas_cumprod`` is the schedule's (1000,) tensor
    on the model's device. ``anchor_depth`` goes to the model only when given. ``depths``: a list that receives
    every step's depth channel (B, 1, H, W) of a depth-head model (None entries for other models), with gradients.
    """
    if steps not in DISTILLED_TIMESTEPS:
        raise ValueError(f"steps must be one of {sorted(DISTILLED_TIMESTEPS)}, got {steps}")
    if len(renoise) != steps - 1:
        raise ValueError(f"renoise needs {steps - 1} tensors for {steps} steps, got {len(renoise)}")
    return _distilled_loop(
        model,
        noise,
        anchor,
        reference,
        DISTILLED_TIMESTEPS[steps],
        lambda t: (alphas_cumprod[t].sqrt(), (1.0 - alphas_cumprod[t]).sqrt()),
        lambda k: renoise[k - 1],
        _model_conditions(cameras, anchor_depth, model_kwargs),
        depths=depths,
    )


def ddim_timesteps(num_steps: int, num_timesteps: int = 1000) -> list[int]:
    """Evenly spaced decreasing timesteps from T-1 to 0 (both included), ``num_steps`` of them."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
    if num_steps == 1:
        return [num_timesteps - 1]
    return [int(round(x)) for x in np.linspace(num_timesteps - 1, 0, num_steps)]


@torch.no_grad()
def sample_ddim(
    model,
    anchor: torch.Tensor,
    reference: torch.Tensor,
    num_steps: int = 50,
    *,
    prediction: str = "eps",
    generators: Sequence[torch.Generator] | None = None,
    noise_seeds: torch.Tensor | None = None,
    schedule: NoiseSchedule | None = None,
    cameras=None,
    anchor_depth: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    clip_x0: float | None = None,
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) for multi-step teachers; returns x0 latents (B, C, H, W) in the model dtype.

    At each timestep t (then the next smaller ``t'``): predict, convert to ``(x0, eps)`` -- for ``prediction="eps"``
    (the stage-II teacher, trained with eps-MSE) ``x0 = (z - s_t eps) / a_t``; for ``"v"`` ``x0 = a_t z - s_t v``,
    ``eps = s_t z + a_t v`` -- optionally clamp x0 to ``[-clip_x0, clip_x0]`` (eps recomputed from it), then
    ``z_{t'} = a_{t'} x0 + s_{t'} eps``. The last step returns its x0. Only the initial noise is random (eta = 0):
    drawn per row from ``generators``, or ``hash_normal(noise_seeds, (C, H, W), stream=0)`` on the device when
    ``noise_seeds`` ((B,) integer tensor, exclusive with ``generators``) is given -- the same initial noise as
    :func:`sample_distilled` draws for those seeds. ``noise`` gives it explicitly. ``cameras`` and ``anchor_depth``
    go to the model as in :func:`sample_distilled`, and so does ``model_kwargs``.
    """
    if prediction not in ("eps", "v"):
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
    _check_conditions(anchor, reference, generators, noise_seeds)
    schedule = schedule or _default_schedule()
    shape = tuple(anchor.shape)
    dtype, B, device, anchor, reference, noise = _prepare(model, anchor, reference, generators, noise, noise_seeds)
    conditions = _model_conditions(cameras, anchor_depth, model_kwargs)
    z = noise
    ts = ddim_timesteps(num_steps, schedule.num_timesteps)
    x0 = z
    for i, t in enumerate(ts):
        a, s = schedule.coefficients(t, B, device)
        t_vec = torch.full((B,), t, dtype=torch.long, device=device)
        out = split_prediction(model(z.to(dtype), t_vec, anchor, reference, **conditions), shape[1])
        if prediction == "eps":
            eps, x0 = out.float(), eps_to_x0(out, z, a, s)
        else:
            eps, x0 = v_to_eps(out, z, a, s), v_to_x0(out, z, a, s)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = x0_to_eps(x0, z, a, s)
        if i + 1 < len(ts):
            a_next, s_next = schedule.coefficients(ts[i + 1], B, device)
            z = a_next * x0 + s_next * eps
    return x0.to(dtype)
