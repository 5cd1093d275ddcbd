"""Stage III: few-step distillation of the stage II frame model with distribution matching (DMD).

The student is a copy of the teacher run through the published distilled sampler (1 step at
t=999, or 2 steps 999 -> 200, its output read in the v form ``x0 = sqrt(abar) z - sqrt(1 - abar)
out``), so a student checkpoint drops straight into ``renderer="worldfm"``. Each iteration:

1. fake score: one denoising step (eps- or v-MSE, the teacher's parametrisation) of a second copy of the
   teacher on the student's (detached) samples, so it tracks the student's output distribution;
2. student: the DMD gradient ``x0_fake - x0_real`` (fake vs frozen teacher denoising the
   re-noised student sample, normalised per sample) as a regression target, plus a regression
   of the student's output onto teacher samples for the same noise (teacher DDIM, computed once
   for a fixed pool of noise/condition pairs at start).

Conditions come from the same multi-view clips as stage II. Runs resume from ``out/state.pt``; under
torchrun each rank draws its own clips and holds its share of the teacher pairs, and the student's and fake
score's gradients are averaged over ranks (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from worldfm_env._config import add_dataclass_arguments, strict_kwargs
from worldfm_env._device import resolve_device
from worldfm_env.model import iddpm_linear_schedule, load_checkpoint, sample_ddim, save_checkpoint
from worldfm_env.model.checkpoint import (
    ANCHOR_COLOUR_METADATA_KEY,
    SAMPLER_STEPS_METADATA_KEY,
    SILHOUETTES_METADATA_KEY,
    SPLAT_RADIUS_METADATA_KEY,
    trained_anchor_colour,
    trained_silhouettes,
    trained_splat_radius,
)
from worldfm_env.model.dit import PanelCameras
from worldfm_env.model.samplers import DISTILLED_TIMESTEPS, distilled_trajectory, eps_to_x0, v_to_x0
from worldfm_env.model.targets import clip_scale
from worldfm_env.render.anchor_config import splat_radius_arg
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.training.data import ClipConfig, ClipGenerator
from worldfm_env.training.stages import (
    PRECISIONS,
    TrainConfig,
    _average_gradients,
    _distributed,
    autocast_context,
    condition_batch,
    open_log,
    resolve_precision,
)

__all__ = ["DistillConfig", "distill", "student_sample"]


@dataclass
class DistillConfig:
    """One distillation run."""

    teacher: str = "runs/s2/model.safetensors"
    """Stage II checkpoint (eps or v prediction); frozen. A v teacher is itself a 1-/2-step model in the published
    form, so the student starts where the teacher is; an eps teacher's start is far off (regression first)."""
    sampler_steps: int = 2
    """Student sampler: 1 (t=999) or 2 (999 -> 200), the published schedules."""
    resolution: int = 64
    """Square image size (must match the teacher)."""
    scenes: str = "procedural:train:16"
    """Training scenes."""
    splat_radius: int | str | None = None
    """Anchor splat half-size of the training clips (``ClipConfig.splat_radius``, the env's ``splat_radius``): train
    on the anchors the env will render. None: the teacher's (its header's ``worldfm_env.splat_radius``, else 0).
    The student's header records it and the env warns when it renders others."""
    anchor_colour: str | None = None
    """Colour of the training clips' covered anchor pixels (``ClipConfig.anchor_colour``, the env's
    ``anchor_colour``): ``"splat"`` or ``"bank"``. None: the teacher's (its header's, else ``"splat"``). The student's
    header records it and the env warns when it renders the other."""
    silhouettes: str | None = None
    """The training clips' ``silhouettes`` (``ClipConfig.silhouettes``, the env's): ``"splat"`` or ``"learned"``.
    None: the teacher's (its header's, else ``"splat"``). The student's header records it."""
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
    dmd_t_min: int = 20
    """Smallest timestep at which the student's samples are re-noised for the distribution-matching term."""
    dmd_t_max: int = 980
    """Largest such timestep (exclusive). A narrower range keeps the term where the teacher's score is good."""
    dmd_start: int = 100
    """Student steps trained by the regression alone before the distribution-matching term is switched on."""
    regression_pairs: int = 256
    """Teacher (noise, conditions) -> image pairs made at start (split over ranks under torchrun)."""
    teacher_steps: int = 25
    """DDIM steps of the teacher for the regression pairs."""
    teacher_clip_x0: float | None = 1.0
    """Clamp the teacher's x0 to [-c, c] while sampling (pixel images live in [-1, 1]); None for latents. A teacher
    with ``target="anchor_residual"`` diffuses frame-minus-base residuals, which span twice the image range: it is
    clamped to [-2c, 2c]. Students keep the teacher's target (they learn the same residual)."""
    seed: int = 0
    """Seed of clips, noise and the pair pool."""
    device: str = "auto"
    """auto, cpu or cuda."""
    out: str = "runs/s3"
    """Output folder: model.safetensors (the student), state.pt (for resuming), log.jsonl."""
    save_every: int = 250
    """Checkpoint interval."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA and AMX / AVX512-BF16 CPUs, else fp32), ``bf16`` or ``fp32``; weights stay
    fp32."""

    def __post_init__(self) -> None:
        if self.splat_radius is not None:
            ClipConfig(splat_radius=self.splat_radius)  # raises on a bad splat_radius, naming it
        if self.anchor_colour is not None:
            ClipConfig(anchor_colour=self.anchor_colour)  # raises on a bad anchor_colour, naming it
        if self.silhouettes is not None:
            ClipConfig(silhouettes=self.silhouettes)  # raises on a bad silhouettes, naming it
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not valid; choose one of {list(PRECISIONS)}")
        if self.sampler_steps not in DISTILLED_TIMESTEPS:
            raise ValueError(f"sampler_steps must be one of {sorted(DISTILLED_TIMESTEPS)}, got {self.sampler_steps!r}")
        for name in ("lr", "fake_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("dmd_weight", "regression_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (isinstance(self.dmd_t_min, int) and isinstance(self.dmd_t_max, int)) or not (
            0 <= self.dmd_t_min < self.dmd_t_max <= 1000
        ):
            raise ValueError(f"need ints 0 <= dmd_t_min < dmd_t_max <= 1000, got {self.dmd_t_min}, {self.dmd_t_max}")
        for name in ("steps", "clips_per_step", "regression_pairs", "teacher_steps", "save_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, values: dict) -> DistillConfig:
        """Build from a dict (a JSON config merged with the command line); unknown keys raise ``ValueError``
        naming them, with the closest valid keys."""
        return cls(**strict_kwargs(cls, values, "distillation option"))


def student_sample(
    student,
    anchor,
    reference,
    noise,
    renoise,
    steps: int,
    abar: torch.Tensor,
    cameras: PanelCameras | None = None,
    anchor_depth: torch.Tensor | None = None,
) -> torch.Tensor:
    """The published distilled sampler with gradients: x0 (B, C, H, W) from noise and re-noise tensors.

    ``anchor_depth`` (B, H, W) goes to students that read it (``refiner_depth``); None otherwise. The last step of
    :func:`~worldfm_env.model.samplers.distilled_trajectory`."""
    return distilled_trajectory(
        student, anchor, reference, noise, renoise, steps, abar, cameras=cameras, anchor_depth=anchor_depth
    )[-1]


def _teacher_pool(cfg: DistillConfig, teacher, clips, cond_cfg, device, rank: int, world: int, precision: str):
    """This rank's share of the fixed teacher pairs: conditions, noises and the teacher's DDIM images.

    Pair ``i`` belongs to rank ``i % world``; the clips, noises and teacher samples are a deterministic function
    of ``cfg.seed``, so a resumed run rebuilds the same pool.
    """
    targets = clips.config.targets
    n_clips = -(-cfg.regression_pairs // targets)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    anchors, refs, c2ws, Ks, depths = [], [], [], [], []
    for first in range(0, n_clips, 8):  # clips in chunks of 8 (memory)
        batch = clips.batch(min(8, n_clips - first), seed=cfg.seed + 12345, start_index=first)
        _, a, r = condition_batch(batch, cond_cfg, 1.0, gen)
        anchors.append(a)
        refs.append(r)
        cameras = batch.panel_cameras()
        c2ws.append(cameras.c2w)
        Ks.append(cameras.K)
        depths.append(batch.anchor_depth.flatten(0, 1))
    anchor = torch.cat(anchors)[: cfg.regression_pairs]
    depth = torch.cat(depths)[: cfg.regression_pairs]
    reference = torch.cat(refs)[: cfg.regression_pairs]
    c2w, K = torch.cat(c2ws)[: cfg.regression_pairs], torch.cat(Ks)[: cfg.regression_pairs]
    hw = tuple(anchor.shape[-2:])
    noise = torch.randn(anchor.shape, generator=gen, device=device)
    renoise = [torch.randn(anchor.shape, generator=gen, device=device) for _ in range(cfg.sampler_steps - 1)]
    mine = torch.arange(rank, anchor.shape[0], world, device=device)
    anchor, reference, noise, c2w, K = anchor[mine], reference[mine], noise[mine], c2w[mine], K[mine]
    depth = depth[mine]
    with_cameras = teacher.config.camera_encoding != "none"
    with_depth = teacher.config.refiner_depth
    renoise = [r[mine] for r in renoise]
    images = []
    clip = None if cfg.teacher_clip_x0 is None else cfg.teacher_clip_x0 * clip_scale(teacher.config.target)
    with torch.no_grad(), autocast_context(precision, device):
        for first in range(0, anchor.shape[0], 64):
            sl = slice(first, first + 64)
            images.append(
                sample_ddim(
                    teacher,
                    anchor[sl],
                    reference[sl],
                    num_steps=cfg.teacher_steps,
                    prediction=teacher.config.prediction,
                    noise=noise[sl],
                    clip_x0=clip,
                    cameras=PanelCameras(c2w[sl], K[sl], hw) if with_cameras else None,
                    anchor_depth=depth[sl] if with_depth else None,
                ).float()
            )
    return anchor, reference, noise, renoise, torch.cat(images), (c2w, K, depth)


def distill(cfg: DistillConfig) -> dict:
    """Run (or resume) stage III; returns a summary.

    Writes ``out/model.safetensors`` (the student), ``out/state.pt`` (student, fake score, optimisers, step:
    a rerun with the same ``out`` resumes from it) and ``out/log.jsonl``. Under torchrun each rank draws its own
    clips and its share of the teacher pairs, and gradients are averaged over ranks; rank 0 writes the files.
    """
    rank, world, local_rank = _distributed()
    device = (
        torch.device("cuda", local_rank) if (world > 1 and torch.cuda.is_available()) else resolve_device(cfg.device)
    )
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    teacher = load_checkpoint(None, cfg.teacher, device=device).eval().requires_grad_(False)
    if teacher.config.prediction not in ("eps", "v"):
        raise ValueError(f"teacher={cfg.teacher!r} predicts {teacher.config.prediction!r}; need 'eps' or 'v'")
    # The student is read in the published v form. It starts from the teacher's weights; from an eps teacher its
    # first outputs are far off and the regression onto teacher samples alone drives it for dmd_start steps.
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    student.config = dataclasses.replace(teacher.config, prediction="v")
    fake = copy.deepcopy(teacher).train().requires_grad_(True)
    opt_student = torch.optim.AdamW(student.parameters(), lr=cfg.lr)
    opt_fake = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr)
    start_step = 0
    state_path = out / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        student.load_state_dict(state["student"])
        fake.load_state_dict(state["fake"])
        opt_student.load_state_dict(state["opt_student"])
        opt_fake.load_state_dict(state["opt_fake"])
        start_step = int(state["step"])
    abar = iddpm_linear_schedule().alphas_cumprod.to(device=device, dtype=torch.float32)
    scenes = resolve_scenes(cfg.scenes, device, (cfg.resolution, cfg.resolution), 90.0)
    teacher_radius = trained_splat_radius(cfg.teacher)
    splat_radius = cfg.splat_radius if cfg.splat_radius is not None else 0 if teacher_radius is None else teacher_radius
    anchor_colour = cfg.anchor_colour or trained_anchor_colour(cfg.teacher) or "splat"
    silhouettes = cfg.silhouettes or trained_silhouettes(cfg.teacher) or "splat"
    clip_config = ClipConfig(
        resolution=(cfg.resolution, cfg.resolution),
        splat_radius=splat_radius,
        anchor_colour=anchor_colour,
        silhouettes=silhouettes,
    )
    clips = ClipGenerator(scenes, clip_config, device)
    cond_cfg = TrainConfig(stage="stage2", anchor_start=0.0, anchor_full=0.0, anchor_drop=0.0, anchor_hole_prob=0.0)
    C = teacher.config.in_channels
    to_x0 = eps_to_x0 if teacher.config.prediction == "eps" else v_to_x0
    with_cameras = teacher.config.camera_encoding != "none"
    with_depth = teacher.config.refiner_depth  # the anchor's depth goes to teacher, student and fake score
    precision = resolve_precision(cfg.precision, device)  # probe the CPU/GPU once, not every step
    pool_anchor, pool_ref, pool_noise, pool_renoise, pool_target, (pool_c2w, pool_K, pool_depth) = _teacher_pool(
        cfg, teacher, clips, cond_cfg, device, rank, world, precision
    )
    n_pool = pool_anchor.shape[0]

    log = open_log(out, start_step, rank)
    started = time.perf_counter()
    from tqdm.auto import tqdm

    gen = torch.Generator(device=device)
    last = {}
    for step in tqdm(range(start_step, cfg.steps), desc="stage3", leave=False, disable=rank != 0):
        # Every draw of a step comes from (seed, rank, step): a resumed run continues exactly.
        gen.manual_seed((cfg.seed * 1_000_003 + rank) * 10_000_019 + step + 1)
        first_clip = (step * world + rank) * cfg.clips_per_step
        batch = clips.batch(cfg.clips_per_step, seed=cfg.seed, start_index=first_clip)
        _, anchor, reference = condition_batch(batch, cond_cfg, 1.0, gen)
        B = anchor.shape[0]
        noise = torch.randn(anchor.shape, generator=gen, device=device)
        renoise = [torch.randn(anchor.shape, generator=gen, device=device) for _ in range(cfg.sampler_steps - 1)]
        idx = torch.randint(0, n_pool, (min(B, n_pool),), generator=gen, device=device)
        cameras = both_cameras = None
        if with_cameras:
            cameras = batch.panel_cameras()
            both_cameras = PanelCameras(
                torch.cat([cameras.c2w, pool_c2w[idx]]), torch.cat([cameras.K, pool_K[idx]]), cameras.image_hw
            )
        depth = both_depth = None
        if with_depth:
            depth = batch.anchor_depth.flatten(0, 1)
            both_depth = torch.cat([depth, pool_depth[idx]])
        # One student pass over the fresh conditions and the regression pairs together.
        with autocast_context(precision, device):
            both = student_sample(
                student,
                torch.cat([anchor, pool_anchor[idx]]),
                torch.cat([reference, pool_ref[idx]]),
                torch.cat([noise, pool_noise[idx]]),
                [torch.cat([r, pr[idx]]) for r, pr in zip(renoise, pool_renoise, strict=True)],
                cfg.sampler_steps,
                abar,
                both_cameras,
                both_depth,
            ).float()
        x, x_pool = both[:B], both[B:]

        # 1) fake score follows the student's distribution (denoising loss on detached samples).
        t = torch.randint(cfg.dmd_t_min, cfg.dmd_t_max, (B,), generator=gen, device=device)
        a = abar[t].sqrt()[:, None, None, None]
        s = (1.0 - abar[t]).sqrt()[:, None, None, None]
        eps = torch.randn(x.shape, generator=gen, device=device)
        x_t = a * x.detach() + s * eps
        with autocast_context(precision, device):
            fake_out = fake(x_t, t, anchor, reference, cameras=cameras, anchor_depth=depth)[:, :C]
        fake_target = eps if teacher.config.prediction == "eps" else a * eps - s * x.detach()
        fake_loss = F.mse_loss(fake_out.float(), fake_target)
        opt_fake.zero_grad(set_to_none=True)
        fake_loss.backward()
        _average_gradients(fake, world)
        opt_fake.step()

        # 2) student: distribution matching + regression onto teacher samples.
        with torch.no_grad(), autocast_context(precision, device):
            conditions = {"cameras": cameras, "anchor_depth": depth}
            x0_real = to_x0(teacher(x_t, t, anchor, reference, **conditions)[:, :C].float(), x_t, a, s)
            x0_fake = to_x0(fake(x_t, t, anchor, reference, **conditions)[:, :C].float(), x_t, a, s)
        weight = 1.0 / (x.detach() - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)
        target = (x.detach() - (x0_fake - x0_real) * weight).detach()
        dmd_loss = 0.5 * F.mse_loss(x, target)
        reg_loss = F.mse_loss(x_pool, pool_target[idx])
        dmd_weight = cfg.dmd_weight if step >= cfg.dmd_start else 0.0
        loss = dmd_weight * dmd_loss + (cfg.regression_weight if step >= cfg.dmd_start else 1.0) * reg_loss
        opt_student.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(student, world)
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt_student.step()
        last = {"step": step + 1, "dmd": dmd_loss.item(), "regression": reg_loss.item(), "fake": fake_loss.item()}
        if rank == 0:
            log.write(json.dumps(last) + "\n")
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                log.flush()
                # The header names the sampler the student was distilled for: the env uses it by default.
                # The header also names the anchors it learned from: the env warns when it renders others.
                metadata = {
                    SAMPLER_STEPS_METADATA_KEY: str(cfg.sampler_steps),
                    SPLAT_RADIUS_METADATA_KEY: str(splat_radius),
                    ANCHOR_COLOUR_METADATA_KEY: anchor_colour,
                    SILHOUETTES_METADATA_KEY: silhouettes,
                }
                save_checkpoint(student, out / "model.safetensors", metadata=metadata)
                torch.save(
                    {
                        "student": student.state_dict(),
                        "fake": fake.state_dict(),
                        "opt_student": opt_student.state_dict(),
                        "opt_fake": opt_fake.state_dict(),
                        "step": step + 1,
                    },
                    state_path,
                )
    if log is not None:
        log.close()
    if world > 1:
        dist.barrier()
    return {
        **last,
        "sampler_steps": cfg.sampler_steps,
        "ranks": world,
        "wall_s": round(time.perf_counter() - started, 1),
        "device": str(device),
    }


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m worldfm_env.training.distill --teacher runs/s2/model.safetensors [--key value ...]``.

    ``prog`` is the program name the usage line shows (``worldfm-env train ...`` when run from that command).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Stage III: DMD distillation into the 1- or 2-step sampler. Options given here override those "
        "of --config.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="JSON file with DistillConfig fields")
    add_dataclass_arguments(
        parser,
        DistillConfig,
        types={"splat_radius": splat_radius_arg},
        defaults_none=True,  # None: not given, so a --config value stands
    )
    args = parser.parse_args(argv)
    values = json.loads(Path(args.config).read_text()) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    summary = distill(DistillConfig.from_dict(values))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
