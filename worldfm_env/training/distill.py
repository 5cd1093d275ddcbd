"""Stage III: few-step distillation of the stage II frame model with distribution matching (DMD).

The student is a copy of the teacher run through the published distilled sampler (1 step at
t=999, or 2 steps 999 -> 200, its output read in the v form ``x0 = sqrt(abar) z - sqrt(1 - abar)
out``), so a student checkpoint drops straight into ``renderer="worldfm"``. Each iteration:

1. fake score: one eps-MSE step of a second copy of the teacher on the student's (detached)
   samples, so it tracks the student's output distribution;
2. student: the DMD gradient ``x0_fake - x0_real`` (fake vs frozen teacher denoising the
   re-noised student sample, normalised per sample) as a regression target, plus a regression
   of the student's output onto teacher samples for the same noise (teacher DDIM, computed once
   for a fixed pool of noise/condition pairs at start).

Conditions come from the same multi-view clips as stage II.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from worldfm_env._device import resolve_device
from worldfm_env.model import iddpm_linear_schedule, load_checkpoint, sample_ddim, save_checkpoint
from worldfm_env.model.samplers import DISTILLED_TIMESTEPS
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.training.data import ClipConfig, ClipGenerator
from worldfm_env.training.stages import TrainConfig, condition_batch

__all__ = ["DistillConfig", "distill", "student_sample"]


@dataclass
class DistillConfig:
    """One distillation run."""

    teacher: str = "runs/s2/model.safetensors"
    """Stage II checkpoint (eps prediction); frozen."""
    sampler_steps: int = 2
    """Student sampler: 1 (t=999) or 2 (999 -> 200), the published schedules."""
    resolution: int = 64
    """Square image size (must match the teacher)."""
    scenes: str = "procedural:train:16"
    """Training scenes."""
    clips_per_step: int = 2
    """Clips per step (12 targets each)."""
    steps: int = 1000
    """Student updates."""
    lr: float = 1e-5
    """Student learning rate."""
    fake_lr: float = 1e-5
    """Fake-score learning rate."""
    dmd_weight: float = 1.0
    """Weight of the distribution-matching term."""
    regression_weight: float = 0.25
    """Weight of the regression onto teacher samples."""
    dmd_start: int = 100
    """Student steps trained by the regression alone before the distribution-matching term is switched on."""
    regression_pairs: int = 32
    """Teacher (noise, conditions) -> image pairs made at start."""
    teacher_steps: int = 25
    """DDIM steps of the teacher for the regression pairs."""
    teacher_clip_x0: float | None = 1.0
    """Clamp the teacher's x0 to [-c, c] while sampling (pixel images live in [-1, 1]); None for latents."""
    seed: int = 0
    """Seed of clips, noise and the pair pool."""
    device: str = "auto"
    """auto, cpu or cuda."""
    out: str = "runs/s3"
    """Output folder: model.safetensors (the student), log.jsonl."""
    save_every: int = 250
    """Checkpoint interval."""

    def __post_init__(self) -> None:
        if self.sampler_steps not in DISTILLED_TIMESTEPS:
            raise ValueError(f"sampler_steps must be one of {sorted(DISTILLED_TIMESTEPS)}, got {self.sampler_steps!r}")
        for name in ("lr", "fake_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("dmd_weight", "regression_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("steps", "clips_per_step", "regression_pairs", "teacher_steps", "save_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")


def student_sample(student, anchor, reference, noise, renoise, steps: int, abar: torch.Tensor) -> torch.Tensor:
    """The published distilled sampler with gradients: x0 (B, C, H, W) from noise and re-noise tensors."""
    timesteps = DISTILLED_TIMESTEPS[steps]
    C = anchor.shape[1]
    z = noise
    x0 = None
    for k, t in enumerate(timesteps):
        a, s = abar[t].sqrt(), (1.0 - abar[t]).sqrt()
        if k > 0:
            z = a * x0 + s * renoise[k - 1]
        tt = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        out = student(z, tt, anchor, reference)[:, :C]
        x0 = a * z - s * out
    return x0


def distill(cfg: DistillConfig) -> dict:
    """Run stage III; returns a summary. Writes ``out/model.safetensors`` (the student) and ``out/log.jsonl``."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_checkpoint(None, cfg.teacher, device=device).eval().requires_grad_(False)
    if teacher.config.prediction != "eps":
        raise ValueError(
            f"teacher={cfg.teacher!r} predicts {teacher.config.prediction!r}; the teacher must be eps (stage II)"
        )
    # The student is read in the published v form. It starts from the teacher's weights (an eps model, so
    # its first outputs are far off); the regression onto teacher samples alone drives it for dmd_start steps.
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    student.config = dataclasses.replace(teacher.config, prediction="v")
    fake = copy.deepcopy(teacher).train().requires_grad_(True)
    opt_student = torch.optim.AdamW(student.parameters(), lr=cfg.lr)
    opt_fake = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr)
    abar = iddpm_linear_schedule().alphas_cumprod.to(device=device, dtype=torch.float32)
    scenes = resolve_scenes(cfg.scenes, device, (cfg.resolution, cfg.resolution), 90.0)
    clips = ClipGenerator(scenes, ClipConfig(resolution=(cfg.resolution, cfg.resolution)), device)
    cond_cfg = TrainConfig(stage="stage2", anchor_start=0.0, anchor_full=0.0, anchor_drop=0.0, anchor_hole_prob=0.0)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    C = teacher.config.in_channels

    # Fixed pool of teacher pairs for the regression term.
    pool_batch = clips.batch(max(1, -(-cfg.regression_pairs // clips.config.targets)), seed=cfg.seed + 12345)
    _, pool_anchor, pool_ref = condition_batch(pool_batch, cond_cfg, 1.0, gen)
    pool_anchor, pool_ref = pool_anchor[: cfg.regression_pairs], pool_ref[: cfg.regression_pairs]
    n_pool = pool_anchor.shape[0]
    pool_noise = torch.randn(pool_anchor.shape, generator=gen, device=device)
    pool_renoise = [torch.randn(pool_anchor.shape, generator=gen, device=device) for _ in range(cfg.sampler_steps - 1)]
    with torch.no_grad():
        pool_target = sample_ddim(
            teacher,
            pool_anchor,
            pool_ref,
            num_steps=cfg.teacher_steps,
            prediction="eps",
            noise=pool_noise,
            clip_x0=cfg.teacher_clip_x0,
        ).float()

    log = (out / "log.jsonl").open("a")
    started = time.perf_counter()
    from tqdm.auto import tqdm

    last = {}
    for step in tqdm(range(cfg.steps), desc="stage3", leave=False):
        batch = clips.batch(cfg.clips_per_step, seed=cfg.seed, start_index=step * cfg.clips_per_step)
        _, anchor, reference = condition_batch(batch, cond_cfg, 1.0, gen)
        B = anchor.shape[0]
        noise = torch.randn(anchor.shape, generator=gen, device=device)
        renoise = [torch.randn(anchor.shape, generator=gen, device=device) for _ in range(cfg.sampler_steps - 1)]
        x = student_sample(student, anchor, reference, noise, renoise, cfg.sampler_steps, abar)  # (B, C, H, W)

        # 1) fake score follows the student's distribution (eps-MSE on detached samples).
        t = torch.randint(20, 980, (B,), generator=gen, device=device)
        a = abar[t].sqrt()[:, None, None, None]
        s = (1.0 - abar[t]).sqrt()[:, None, None, None]
        eps = torch.randn(x.shape, generator=gen, device=device)
        x_t = a * x.detach() + s * eps
        fake_loss = F.mse_loss(fake(x_t, t, anchor, reference)[:, :C], eps)
        opt_fake.zero_grad(set_to_none=True)
        fake_loss.backward()
        opt_fake.step()

        # 2) student: distribution matching + regression onto teacher samples.
        with torch.no_grad():
            x0_real = (x_t - s * teacher(x_t, t, anchor, reference)[:, :C]) / a
            x0_fake = (x_t - s * fake(x_t, t, anchor, reference)[:, :C]) / a
            weight = 1.0 / (x.detach() - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)
            target = (x.detach() - (x0_fake - x0_real) * weight).detach()
        dmd_loss = 0.5 * F.mse_loss(x, target)
        idx = torch.randint(0, n_pool, (min(B, n_pool),), generator=gen, device=device)
        x_pool = student_sample(
            student,
            pool_anchor[idx],
            pool_ref[idx],
            pool_noise[idx],
            [r[idx] for r in pool_renoise],
            cfg.sampler_steps,
            abar,
        )
        reg_loss = F.mse_loss(x_pool, pool_target[idx])
        dmd_weight = cfg.dmd_weight if step >= cfg.dmd_start else 0.0
        loss = dmd_weight * dmd_loss + (cfg.regression_weight if step >= cfg.dmd_start else 1.0) * reg_loss
        opt_student.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt_student.step()
        last = {"step": step + 1, "dmd": dmd_loss.item(), "regression": reg_loss.item(), "fake": fake_loss.item()}
        log.write(json.dumps(last) + "\n")
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(student.eval(), out / "model.safetensors")
            student.train()
    log.close()
    return {
        **last,
        "sampler_steps": cfg.sampler_steps,
        "wall_s": round(time.perf_counter() - started, 1),
        "device": str(device),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m worldfm_env.training.distill --teacher runs/s2/model.safetensors [--key value ...]``."""
    parser = argparse.ArgumentParser(description="Stage III: DMD distillation into the 1- or 2-step sampler.")
    parser.add_argument("--config", default=None, help="JSON file with DistillConfig fields")
    for f in dataclasses.fields(DistillConfig):
        kind = {int: int, float: float}.get(type(f.default), str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)
    args = parser.parse_args(argv)
    values = json.loads(Path(args.config).read_text()) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    valid = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown distillation options {unknown}; valid: {sorted(valid)}")
    print(json.dumps(distill(DistillConfig(**values))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
