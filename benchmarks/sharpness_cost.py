"""What sharpness costs where nothing was captured: a frame model's frames plus a layer of detail, scored.

    python benchmarks/sharpness_cost.py                      # worldfm-srgbd-layout-64x64, panorama capture, 64x64
    python benchmarks/sharpness_cost.py --weights <checkpoint or name> --silhouettes learned
    python benchmarks/sharpness_cost.py --quick              # 2 scenes, short rollouts (a smoke run)

The fidelity rule asks two things of the pixels a sparse capture never saw (``benchmarks/rollout_fidelity.py``):
a frame PSNR at least 3 dB above the nearest fill's there, and a sharpness ratio (gradient energy against the
truth's) of at least 0.7. A model trained to regress paints the mean of what could be there and scores near 0 on the
second. This benchmark asks what adding detail to such a model's frames does to the first, by construction rather
than by training: in the uncaptured pixels of every frame it adds ``s`` times a detail layer, for each gain ``s`` of
``--gains``, and scores the result as the rollout-fidelity benchmark does.

Layers (each (F, H, W, 3), added only where the anchor is empty):

* ``independent texture``: the truth's residual against the model's own frame, taken from *another* frame (a seeded
  derangement of the frames). It has the amount and the statistics of the detail the model leaves out, but not this
  frame's: the detail a sampler draws when it cannot know what the unseen surface looks like.
* ``fill detail``: the high-pass of the nearest fill (the fill minus its box blur, :func:`highpass`): detail copied
  from the captured pixels around the hole.
* ``grain``: seeded grey Gaussian noise, one value per pixel, scaled so that at gain 1 its gradient energy in the
  uncaptured pixels equals the truth's there (pooled over the frames): detail that is only high frequency.
* ``aligned truth detail``: the high-pass of the truth itself. It uses the truth, so it is a bound, not a method:
  what detail at the right place gives.

Rows: ``nearest_fill`` and the model as rendered (gain 0), then one row per layer and gain: mean and 5th-percentile
frame PSNR, mean uncaptured PSNR (frames with uncaptured pixels), and the pooled sharpness ratio
(:func:`benchmarks.rollout_fidelity.gradient_energy`). Frames: the rollout-fidelity rollouts of one capture
(``--capture``, default ``panorama``; same options and seeds, so the same poses). Writes ``sharpness_cost.csv`` and
``sharpness_cost.png`` (uncaptured PSNR against sharpness, with the rule's two thresholds) to
``benchmarks/results/sharpness-cost/`` and prints a markdown table and the wall time.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import rollout_fidelity as rf  # noqa: E402
from benchmarks.fidelity import psnr  # noqa: E402
from worldfm_env.render.anchor_config import splat_radius_arg  # noqa: E402
from worldfm_env.render.fill import nearest_fill  # noqa: E402
from worldfm_env.render.resample import ANCHOR_COLOUR_VALUES  # noqa: E402
from worldfm_env.render.silhouette import SILHOUETTE_VALUES  # noqa: E402

__all__ = ["LAYERS", "cost_rows", "derangement", "detail_layers", "grain", "highpass", "main", "parse_args", "score"]

RESULTS = ROOT / "benchmarks" / "results" / "sharpness-cost"
LAYERS = ("independent texture", "fill detail", "grain", "aligned truth detail")
"""The detail layers, in the order of the rows."""
DEFAULT_WEIGHTS = "worldfm-srgbd-layout-64x64"


def highpass(images: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Images (F, H, W, 3) minus their (2 radius + 1)^2 box blur (edges replicated): the detail a blur removes.

    Returns float32 (F, H, W, 3); a constant image gives zeros.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (F, H, W, 3), got {tuple(images.shape)}")
    if radius < 1:
        raise ValueError(f"radius must be a positive integer, got {radius}")
    x = images.float().permute(0, 3, 1, 2)
    size = 2 * radius + 1
    kernel = torch.full((3, 1, size, size), 1.0 / size**2, dtype=x.dtype)
    blurred = F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=3)
    return (x - blurred).permute(0, 2, 3, 1)


def derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(n)`` with no fixed point (every frame takes another frame's texture)."""
    if n < 2:
        raise ValueError(f"n must be at least 2 (a frame needs another frame), got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    source = torch.empty(n, dtype=torch.long)
    source[order] = order.roll(1)  # a single cycle through a random order: i never maps to itself
    return source


def grain(truth: torch.Tensor, uncaptured: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Grey per-pixel Gaussian noise (F, H, W, 3) whose gradient energy over the ``uncaptured`` (F, H, W) pixel pairs
    matches the truth's there in expectation (pooled over frames; zeros where the truth has none)."""
    e_true, pairs = rf.gradient_energy(truth.float(), uncaptured)
    mean_sq = float(e_true.sum()) / max(float(pairs.sum()), 1.0)
    # Luminance of grey noise is the noise itself, and a difference of two independent values has twice its variance.
    sigma = (mean_sq / 2.0) ** 0.5
    noise = torch.randn(truth.shape[:-1], generator=torch.Generator().manual_seed(seed + 1))
    return (sigma * noise)[..., None].expand(*truth.shape[:-1], 3).clone()


def detail_layers(
    model: torch.Tensor, truth: torch.Tensor, fill: torch.Tensor, uncaptured: torch.Tensor, seed: int = 0
) -> dict:
    """The :data:`LAYERS` for frames (F, H, W, 3) of the model, the truth and the nearest fill (float32 each) and
    their uncaptured pixels (F, H, W)."""
    if not (model.shape == truth.shape == fill.shape) or model.ndim != 4:
        raise ValueError(
            f"model, truth and fill must be one (F, H, W, 3) shape, got {tuple(model.shape)}, "
            f"{tuple(truth.shape)}, {tuple(fill.shape)}"
        )
    residual = truth.float() - model.float()
    return {
        "independent texture": residual[derangement(model.shape[0], seed)],
        "fill detail": highpass(fill),
        "grain": grain(truth, uncaptured, seed),
        "aligned truth detail": highpass(truth),
    }


def score(img: torch.Tensor, truth: torch.Tensor, uncaptured: torch.Tensor) -> dict:
    """PSNR mean / p5, mean uncaptured PSNR and pooled sharpness of frames (F, H, W, 3), rounded to 8 bits first."""
    img = img.float().clamp(0, 255).round()
    frame = psnr(img, truth)
    unc = psnr(img, truth, uncaptured)
    unc = unc[torch.isfinite(unc)]
    e_pred, _ = rf.gradient_energy(img, uncaptured)
    e_true, _ = rf.gradient_energy(truth, uncaptured)
    total = float(e_true.sum())
    return {
        "psnr": float(frame.double().mean()),
        "psnr_p5": float(torch.quantile(frame.double(), 0.05)),
        "psnr_uncaptured": float(unc.double().mean()) if unc.numel() else float("nan"),
        "sharpness": float(e_pred.sum()) / total if total > 0 else float("nan"),
    }


def cost_rows(
    model: torch.Tensor,
    truth: torch.Tensor,
    fill: torch.Tensor,
    uncaptured: torch.Tensor,
    gains: list[float],
    seed: int = 0,
) -> list[dict]:
    """The benchmark's rows for frames (F, H, W, 3) and their uncaptured pixels (F, H, W) bool."""
    if tuple(uncaptured.shape) != tuple(model.shape[:-1]):
        raise ValueError(f"uncaptured must be {tuple(model.shape[:-1])} (bool), got {tuple(uncaptured.shape)}")
    truth = truth.float()
    rows = [
        {"method": "nearest_fill", "layer": "", "gain": 0.0, **score(fill, truth, uncaptured)},
        {"method": "model", "layer": "", "gain": 0.0, **score(model, truth, uncaptured)},
    ]
    where = uncaptured[..., None].float()
    for layer, detail in detail_layers(model, truth, fill, uncaptured, seed).items():
        for s in gains:
            img = model.float() + s * detail * where
            rows.append({"method": "model", "layer": layer, "gain": float(s), **score(img, truth, uncaptured)})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Uncaptured PSNR against sharpness: the model, each layer's gains, the nearest fill and the rule's thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    model = next(r for r in rows if r["method"] == "model" and not r["layer"])
    fill = next(r for r in rows if r["method"] == "nearest_fill")
    for layer in LAYERS:
        pts = [model] + [r for r in rows if r["layer"] == layer]
        ax.plot([r["sharpness"] for r in pts], [r["psnr_uncaptured"] for r in pts], "o-", label=f"model + {layer}")
    ax.plot([fill["sharpness"]], [fill["psnr_uncaptured"]], "ks", label="nearest fill")
    ax.axhline(fill["psnr_uncaptured"] + 3.0, color="grey", ls="--", lw=1, label="rule: nearest fill + 3 dB")
    ax.axvline(0.7, color="grey", ls=":", lw=1, label="rule: sharpness 0.7")
    ax.set_xlabel("sharpness ratio (uncaptured pixels)")
    ax.set_ylabel("uncaptured PSNR (dB)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| frames | gain | PSNR mean / p5 | uncaptured PSNR | sharpness |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = r["method"] if not r["layer"] else f"model + {r['layer']}"
        lines.append(
            f"| {name} | {r['gain']:g} | {r['psnr']:.2f} / {r['psnr_p5']:.2f} | {r['psnr_uncaptured']:.2f} | "
            f"{r['sharpness']:.3f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, verbose: bool = True) -> list[dict]:
    """Rollouts, renders and rows; writes the CSV and the plot."""
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rf_args = rf.parse_args(
        [
            "--scenes", str(args.scenes), "--episodes", str(args.episodes), "--frames", str(args.frames),
            "--splat-radius", str(args.splat_radius), "--anchor-colour", args.anchor_colour,
            "--silhouettes", args.silhouettes, "--seed", str(args.seed), "--device", args.device,
        ]
    )  # fmt: skip
    states, _ = rf.record_rollouts(rf_args, args.capture)
    truth = rf._render(rf_args, args.capture, states, "oracle")["rgb"].flatten(0, 1).float()
    anchor = rf._render(rf_args, args.capture, states, "anchor")
    mask = anchor["mask"].flatten(0, 1).bool()
    fill = nearest_fill(anchor["anchor"].flatten(0, 1), mask).float()
    model = rf._render(rf_args, args.capture, states, "worldfm", weights=args.weights)["rgb"].flatten(0, 1).float()
    rows = cost_rows(model, truth, fill, ~mask, args.gains, seed=args.seed)
    for r in rows:
        r.update(
            weights=Path(str(args.weights)).stem,
            capture=args.capture,
            splat_radius=str(args.splat_radius),
            anchor_colour=args.anchor_colour,
            silhouettes=args.silhouettes,
            seed=args.seed,
            frames=int(mask.shape[0]),
            uncaptured_fraction=float((~mask).float().mean()),
        )
    with open(out / "sharpness_cost.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "sharpness_cost.png")
    if verbose:
        print(markdown_table(rows))
        print(
            f"\n{int(mask.shape[0])} frames, capture={args.capture}, {100 * rows[0]['uncaptured_fraction']:.1f} % of "
            f"pixels uncaptured; wall time {time.perf_counter() - start:.0f} s"
        )
    return rows


def _gain(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a gain must be a positive number, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="sharpness_cost", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--weights", default=DEFAULT_WEIGHTS, help="the frame model (path or shipped name; default: %(default)s)"
    )
    parser.add_argument(
        "--capture", choices=list(rf.CAPTURES), default="panorama", help="capture (default: %(default)s)"
    )
    parser.add_argument("--gains", type=_gain, nargs="+", default=[0.5, 0.84, 1.0], help="layer gains s")
    parser.add_argument("--scenes", type=int, default=8, help="held-out test scenes (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=2, help="rollouts per scene and policy (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=80, help="frames per rollout (default: %(default)s)")
    parser.add_argument(
        "--splat-radius", type=splat_radius_arg, default="auto", help="anchor splats (default: %(default)s)"
    )
    parser.add_argument(
        "--anchor-colour", choices=list(ANCHOR_COLOUR_VALUES), default="bank", help="(default: %(default)s)"
    )
    parser.add_argument(
        "--silhouettes", choices=list(SILHOUETTE_VALUES), default="splat", help="(default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="rollout and derangement seed (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="device (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 scenes, 1 rollout each, 16 frames")
    parser.add_argument("--out", default=str(RESULTS), help="output folder (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    rf.settle_rollout_size(parser, args)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark from the command line; returns the CSV rows."""
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
