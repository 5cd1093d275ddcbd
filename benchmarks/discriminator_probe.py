"""Discriminator probe: can a freshly trained patch discriminator tell a frame model's frames from the truth?

For each frame model (``--weights``: shipped names or checkpoint paths) the probe renders clips of held-out scenes
the way stage II trains (``procedural:test``, half of them sparse captures, a quarter of the targets at close range,
no anchor drop-out or cut holes) and generates every target with the model's distilled sampler (the steps its
header recommends). Then, for each discriminator design (``--designs``, :data:`DESIGNS`), it trains a
:class:`~worldfm_env.training.adversarial.PatchDiscriminator` from scratch on the first batches, true frames against
the model's, and scores it on the last ``--held-out`` batches, on the patches the anchor did not show (the patch
weights of focus 1): the hinge loss (2 is chance), the accuracy (true logit > 0, generated logit < 0; 0.5 is chance)
and the mean logit gap (true minus generated).

Two uses:

- Choosing the adversarial term's discriminator: a design that cannot separate the model's frames from the truth
  teaches the generator nothing.
- A learned realism measure of a frame model where it must invent: with one fixed design, the lower the accuracy
  it reaches, the nearer the model's frames are to the truth's detail. (It measures what a small critic can
  separate, not fidelity; read it beside ``rollout_fidelity.py``.)

Writes ``discriminator_probe.csv`` and ``discriminator_probe.png`` under ``--out`` and prints a table.

    python benchmarks/discriminator_probe.py                                # the shipped RGB-D model, every design
    python benchmarks/discriminator_probe.py --weights worldfm-srgbd-auto-64x64 runs/x/model.safetensors \\
        --designs edges
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worldfm_env.model import iddpm_linear_schedule, load_checkpoint  # noqa: E402
from worldfm_env.model.checkpoint import SAMPLER_STEPS_METADATA_KEY, read_metadata  # noqa: E402
from worldfm_env.model.samplers import distilled_trajectory  # noqa: E402
from worldfm_env.model.targets import from_target, residual_base  # noqa: E402
from worldfm_env.model.weights import resolve_weights  # noqa: E402
from worldfm_env.render.anchor_config import splat_radius_arg  # noqa: E402
from worldfm_env.scenes.catalog import resolve_scenes  # noqa: E402
from worldfm_env.training.adversarial import (  # noqa: E402
    PatchDiscriminator,
    discriminator_loss,
    patch_weights,
    r1_penalty,
)
from worldfm_env.training.data import ClipConfig, ClipGenerator  # noqa: E402
from worldfm_env.training.stages import TrainConfig, _anchor_depth, _cameras, condition_batch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "discriminator-probe"

DESIGNS: dict[str, dict] = {
    # the adversarial term's first design: spectral norm, every patch alike
    "sn": dict(spectral_norm=True, edges=False, focus=0.0, r1=0.0),
    # plus the frame's finite differences, the losses weighted towards uncovered patches (the second design)
    "edges": dict(spectral_norm=True, edges=True, focus=0.8, r1=0.0),
    # unnormalised convolutions held by the R1 penalty instead
    "plain-r1": dict(spectral_norm=False, edges=True, focus=0.8, r1=1.0),
    "plain-r1-0.01": dict(spectral_norm=False, edges=True, focus=0.8, r1=0.01),
}
"""Discriminator designs: the ``PatchDiscriminator`` options, the patch weights' focus while training, the R1
weight (``TrainConfig.adversarial_focus`` and ``disc_r1``)."""


def make_frames(weights: str, args: argparse.Namespace) -> list[tuple[torch.Tensor, ...]]:
    """``--batches`` batches of (true frame, anchor, coverage, generated frame): frames (N, 3, H, W) in [-1, 1],
    coverage (N, H, W) bool. The clips depend on ``--seed`` only, so every model sees the same ones."""
    device = torch.device(args.device)
    path = str(resolve_weights(weights))
    model = load_checkpoint(None, path, device=device).eval()
    steps = int(read_metadata(path).get(SAMPLER_STEPS_METADATA_KEY, "1"))
    size = (args.resolution, args.resolution)
    scenes = resolve_scenes(args.scenes, device, size, 90.0)
    clip_config = ClipConfig(resolution=size, splat_radius=args.splat_radius, sparse_fraction=0.5, close_fraction=0.25)
    clips = ClipGenerator(scenes, clip_config, device)
    # The anchors as the env renders them: no training drop-out or holes.
    cfg = TrainConfig(stage="stage2", anchor_start=0.0, anchor_full=0.0, anchor_drop=0.0, anchor_hole_prob=0.0)
    abar = iddpm_linear_schedule().alphas_cumprod.to(device=device, dtype=torch.float32)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    batches = []
    for index in range(args.batches):
        batch = clips.batch(args.clips, seed=args.seed, start_index=index * args.clips)
        image, anchor, reference, covered = condition_batch(batch, cfg, 1.0, generator, return_mask=True)
        noise = torch.randn(image.shape, generator=generator, device=device)
        renoise = [torch.randn(image.shape, generator=generator, device=device) for _ in range(steps - 1)]
        depth = _anchor_depth(model, batch)
        with torch.no_grad():
            prepared = model.prepare_conditions(anchor, depth)
            estimates = distilled_trajectory(
                model,
                anchor,
                reference,
                noise,
                renoise,
                steps,
                abar,
                cameras=_cameras(model, batch),
                anchor_depth=depth,
                model_kwargs=prepared,
            )
        generated = from_target(estimates[-1], residual_base(model.config.target, anchor, covered), model.config.target)
        batches.append((image, anchor, covered, generated.clamp(-1.0, 1.0)))
    return batches


def probe(batches: list[tuple[torch.Tensor, ...]], design: dict, args: argparse.Namespace) -> dict:
    """Train one design on all batches but the last ``--held-out`` and score it on those (uncovered patches)."""
    torch.manual_seed(args.seed)
    train, held_out = batches[: -args.held_out], batches[-args.held_out :]
    disc = PatchDiscriminator(args.channels, spectral_norm=design["spectral_norm"], edges=design["edges"])
    disc = disc.to(args.device)
    optimizer = torch.optim.AdamW(disc.parameters(), lr=args.lr, betas=(0.5, 0.999))
    for step in range(args.steps):
        image, anchor, covered, generated = train[step % len(train)]
        real, fake = disc(image, anchor, covered), disc(generated, anchor, covered)
        loss = discriminator_loss(real, fake, patch_weights(covered, tuple(real.shape[-2:]), design["focus"]))
        if design["r1"]:
            loss = loss + 0.5 * design["r1"] * r1_penalty(disc, image, anchor, covered)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    hinge = accuracy = gap = weight_sum = 0.0
    with torch.no_grad():
        for image, anchor, covered, generated in held_out:
            real, fake = disc(image, anchor, covered), disc(generated, anchor, covered)
            weights = patch_weights(covered, tuple(real.shape[-2:]), 1.0)
            total = float(weights.sum())
            hinge += float(discriminator_loss(real, fake, weights)) * total
            right = ((real > 0).float() + (fake < 0).float()) * 0.5
            accuracy += float((right * weights).sum())
            gap += float(((real - fake) * weights).sum())
            weight_sum += total
    weight_sum = max(weight_sum, 1e-6)
    return {"hinge": hinge / weight_sum, "accuracy": accuracy / weight_sum, "logit_gap": gap / weight_sum}


def plot(rows: list[dict], path: Path) -> None:
    """Bars of held-out accuracy per design, one group per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["weights"] for r in rows))
    designs = list(dict.fromkeys(r["design"] for r in rows))
    width = 0.8 / max(1, len(designs))
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(models), 3.4))
    for j, design in enumerate(designs):
        values = [next((r["accuracy"] for r in rows if r["weights"] == m and r["design"] == design), 0) for m in models]
        ax.bar([i + j * width for i in range(len(models))], values, width, label=design)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], [Path(m).stem for m in models], fontsize=7)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("held-out accuracy, uncovered patches")
    ax.set_title("discriminator probe (0.5: cannot tell)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="discriminator_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", nargs="+", default=["worldfm-srgbd-auto-64x64"], help="frame models to probe")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), help=f"designs, of {list(DESIGNS)}")
    parser.add_argument("--scenes", default="procedural:test:8", help="scene spec of the clips (held-out split)")
    parser.add_argument("--splat-radius", type=splat_radius_arg, default="auto", help="anchor splats (default: auto)")
    parser.add_argument("--resolution", type=int, default=64, help="frame size (the models')")
    parser.add_argument("--batches", type=int, default=10, help="batches of clips, held-out ones included")
    parser.add_argument("--held-out", type=int, default=2, help="batches kept for scoring")
    parser.add_argument("--clips", type=int, default=4, help="clips per batch (12 targets each)")
    parser.add_argument("--steps", type=int, default=300, help="discriminator training steps per design")
    parser.add_argument("--channels", type=int, default=32, help="discriminator width")
    parser.add_argument("--lr", type=float, default=2e-4, help="discriminator learning rate (AdamW)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clips, the noise and the discriminator")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args(argv)
    unknown = [d for d in args.designs if d not in DESIGNS]
    if unknown:
        parser.error(f"--designs: {unknown} are not designs; choose from {list(DESIGNS)}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    for name in ("batches", "held_out", "clips", "steps", "channels", "resolution"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.held_out >= args.batches:
        parser.error(f"--held-out must be below --batches ({args.batches}), got {args.held_out}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the probe; returns the rows written to the CSV."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for weights in args.weights:
        start = time.perf_counter()
        batches = make_frames(weights, args)
        frames_s = time.perf_counter() - start
        uncovered = sum(float((~b[2]).float().mean()) for b in batches) / len(batches)
        for name in args.designs:
            start = time.perf_counter()
            scores = probe(batches, DESIGNS[name], args)
            rows.append(
                {
                    "weights": weights,
                    "design": name,
                    "steps": args.steps,
                    "frames": sum(b[0].shape[0] for b in batches),
                    "uncovered_fraction": round(uncovered, 4),
                    **{k: round(v, 4) for k, v in scores.items()},
                    "frames_s": round(frames_s, 1),
                    "train_s": round(time.perf_counter() - start, 1),
                }
            )
    with open(out / "discriminator_probe.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "discriminator_probe.png")
    print(f"{'model':<34} {'design':<14} {'hinge':>7} {'accuracy':>9} {'gap':>7}")
    for r in rows:
        name = Path(r["weights"]).stem
        print(f"{name:<34} {r['design']:<14} {r['hinge']:>7.3f} {r['accuracy']:>9.3f} {r['logit_gap']:>7.3f}")
    return rows


if __name__ == "__main__":
    main()
