"""Where a frame's error lives: an error budget of the rollout-fidelity frames by kind of pixel.

    python benchmarks/error_budget.py --splat-radius auto --anchor-colour bank --weights <checkpoint or name>
    python benchmarks/error_budget.py --quick        # 2 scenes, short rollouts (a smoke run)

Frames: the rollouts of ``benchmarks/rollout_fidelity.py`` (same options, same seeds, so the same poses), one
capture (``--capture``, default ``full``). Every frame is rendered by the oracle (the truth, with depth), by the
anchor at the chosen splat size (``--splat-radius``) and, for the bound below, by the one-pixel anchor (splat radius
0) with the same colours (``--anchor-colour``).

Pixel classes, from the anchor's depth ``a`` against the true depth ``t`` at that pixel:

* ``uncaptured``: no point landed;
* ``right surface``: ``|a - t| <= 0.05 t`` (the anchor shows the surface the camera sees; what is left is colour);
* ``wrong, nearer``: ``a < 0.95 t`` (a nearer surface covers it: mostly a footprint splat reaching past its
  silhouette);
* ``wrong, farther``: ``a > 1.05 t`` (a farther surface shows through a gap in the true one).

``wrong surface`` is the two together; ``right surface, edge`` / ``right surface, flat`` split the right surface
by the truth (below).

Methods: ``nearest_fill`` (of that anchor) and, with ``--weights``, the frame model (``renderer="worldfm"``, the env's
default sampler and dtype). Per method and class: the share of the pixels, the share of the squared error, the
pooled PSNR over the class's pixels, and the mean and 5th-percentile frame PSNR if that class's pixels were exact
(the truth's colour) and the others as rendered: an upper bound of what fixing that kind of error alone can give.
The right surface is split into ``edge`` pixels (a luminance step above 20 to a 4-neighbour in the truth) and
the rest.

Bound: ``nearest_fill, one-pixel composite`` takes, where the footprint splat is ``wrong, nearer`` and the one-pixel
splat holds a point on the right surface, the one-pixel splat's pixel, then fills as before: what a renderer that
knew which footprint pixels overrun a silhouette could give (it uses the true depth, so it is not a method).

Learned choice (``--learned-choice STEPS``): a :class:`~worldfm_env.render.silhouette.SilhouetteResolver` trained for
that many steps on the same rollouts recorded in the procedural *train* scenes (seed ``--seed`` + 7), then used on
the judged frames: ``nearest_fill, learned composite`` takes the pixels it picks from the one-pixel splat (no true
depth involved); ``learned_choice.csv`` has its precision and recall against the truth's choice, and
``--save-resolver PATH`` writes the trained network (the package's, behind ``silhouettes="learned"``, was written
so).

Writes ``error_budget.csv`` and ``error_budget.png`` (stacked error shares per method) to
``benchmarks/results/error-budget/`` and prints a markdown table and the wall time.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import rollout_fidelity as rf  # noqa: E402
from worldfm_env.render.anchor_config import splat_radius_arg  # noqa: E402
from worldfm_env.render.fill import nearest_fill  # noqa: E402
from worldfm_env.render.resample import ANCHOR_COLOUR_VALUES  # noqa: E402
from worldfm_env.render.silhouette import (  # noqa: E402
    composite,
    save_resolver,
    silhouette_features,
    silhouette_labels,
    train_resolver,
)

__all__ = ["CLASSES", "SURFACE_TOLERANCE", "budget_rows", "classify", "learned_choice", "main", "parse_args"]

RESULTS = ROOT / "benchmarks" / "results" / "error-budget"
SURFACE_TOLERANCE = 0.05
"""An anchor depth within this fraction of the true depth is on the right surface."""
EDGE_STEP = 20.0
"""A truth pixel is an edge when its luminance (0-255) differs by more than this from a 4-neighbour."""
CLASSES = (
    "uncaptured",
    "right surface",
    "right surface, edge",
    "right surface, flat",
    "wrong surface",
    "wrong, nearer",
    "wrong, farther",
)
"""The pixel classes of the budget's rows, in order (the module docstring defines them)."""


def classify(mask: torch.Tensor, depth: torch.Tensor, true_depth: torch.Tensor) -> dict[str, torch.Tensor]:
    """The anchor's pixel classes (see the module docstring) from its mask and depth and the true depth, each (..., H,
    W) bool; ``right surface`` needs a true depth, pixels without one (none in the procedural scenes) are in no
    class. The two ``wrong`` classes and ``right surface`` and ``uncaptured`` do not overlap."""
    if mask.shape != depth.shape or depth.shape != true_depth.shape:
        raise ValueError(
            f"mask, depth and true_depth must have one shape, got {tuple(mask.shape)}, {tuple(depth.shape)}, "
            f"{tuple(true_depth.shape)}"
        )
    mask = mask.bool()
    seen = mask & (true_depth > 0)
    a, t = depth.float(), true_depth.float()
    return {
        "uncaptured": ~mask,
        "right surface": seen & ((a - t).abs() <= SURFACE_TOLERANCE * t),
        "wrong, nearer": seen & (a < (1 - SURFACE_TOLERANCE) * t),
        "wrong, farther": seen & (a > (1 + SURFACE_TOLERANCE) * t),
    }


def _edges(truth: torch.Tensor) -> torch.Tensor:
    """(F, H, W) bool: a luminance step above EDGE_STEP to a right or lower neighbour (either pixel of the pair)."""
    y = (truth.float() * torch.tensor(rf.LUMA)).sum(-1)
    edge = torch.zeros_like(y, dtype=torch.bool)
    dx = (y[:, :, 1:] - y[:, :, :-1]).abs() > EDGE_STEP
    dy = (y[:, 1:, :] - y[:, :-1, :]).abs() > EDGE_STEP
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return edge


def _frame_psnr(se: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR (dB, capped at 100) from per-pixel squared errors summed over channels (F, H, W)."""
    mse = se.double().mean(dim=(1, 2)) / 3
    return (10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).clamp(max=100.0)


def budget_rows(method: str, img: torch.Tensor, truth: torch.Tensor, classes: dict[str, torch.Tensor]) -> list[dict]:
    """The rows of one method: frames (F, H, W, 3) against the truth over each class (F, H, W) bool."""
    se = ((img.float() - truth.float()) ** 2).sum(-1)
    total = float(se.double().sum())
    whole = _frame_psnr(se)
    rows = [
        dict(
            method=method,
            pixels="all",
            pixel_share=1.0,
            error_share=1.0,
            pooled_psnr=float(10 * np.log10(255.0**2 / max(total / (se.numel() * 3), 1e-10))),
            psnr=float(whole.mean()),
            psnr_p5=float(np.percentile(whole.numpy(), 5)),
            psnr_if_exact=float("nan"),
            psnr_p5_if_exact=float("nan"),
        )
    ]
    for name, m in classes.items():
        count = int(m.sum())
        err = float((se * m).double().sum())
        fixed = _frame_psnr(se * ~m)
        rows.append(
            dict(
                method=method,
                pixels=name,
                pixel_share=count / m.numel(),
                error_share=err / total if total > 0 else float("nan"),
                pooled_psnr=float(10 * np.log10(255.0**2 / max(err / (3 * count), 1e-10))) if count else float("nan"),
                psnr=float("nan"),
                psnr_p5=float("nan"),
                psnr_if_exact=float(fixed.mean()),
                psnr_p5_if_exact=float(np.percentile(fixed.numpy(), 5)),
            )
        )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Left: each method's squared error split by pixel class (stacked); right: frame PSNR mean and p5 of every
    method, the bound included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = list(dict.fromkeys(r["method"] for r in rows))
    split = [m for m in everything if any(r["method"] == m and r["pixels"] != "all" for r in rows)]
    parts = ("uncaptured", "right surface, flat", "right surface, edge", "wrong, nearer", "wrong, farther")
    fig, (left, right) = plt.subplots(1, 2, figsize=(4.0 + 1.5 * (len(split) + len(everything)), 3.8))
    bottom = np.zeros(len(split))
    for part in parts:
        share = np.array(
            [next((r["error_share"] for r in rows if r["method"] == m and r["pixels"] == part), 0.0) for m in split]
        )
        left.bar(range(len(split)), share, bottom=bottom, label=part)
        bottom += share
    left.set_xticks(range(len(split)), split, rotation=20, ha="right", fontsize=7)
    left.set_ylabel("share of the squared error")
    left.legend(fontsize=6, loc="lower left")
    whole = [next(r for r in rows if r["method"] == m and r["pixels"] == "all") for m in everything]
    x = np.arange(len(everything))
    right.bar(x - 0.2, [r["psnr"] for r in whole], width=0.4, label="mean")
    right.bar(x + 0.2, [r["psnr_p5"] for r in whole], width=0.4, label="p5")
    right.set_ylim(min(r["psnr_p5"] for r in whole) - 2, max(r["psnr"] for r in whole) + 1)
    right.set_xticks(x, everything, rotation=20, ha="right", fontsize=7)
    right.set_ylabel("frame PSNR (dB)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(rows: list[dict]) -> str:
    """The budget as a markdown table."""
    lines = [
        "| method | pixels | share of pixels | share of error | pooled PSNR | frame PSNR mean / p5 "
        "| if exact: mean / p5 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        frame = f"{r['psnr']:.2f} / {r['psnr_p5']:.2f}" if np.isfinite(r["psnr"]) else ""
        exact = f"{r['psnr_if_exact']:.2f} / {r['psnr_p5_if_exact']:.2f}" if np.isfinite(r["psnr_if_exact"]) else ""
        lines.append(
            f"| {r['method']} | {r['pixels']} | {100 * r['pixel_share']:.1f} % | {100 * r['error_share']:.1f} % | "
            f"{r['pooled_psnr']:.2f} | {frame} | {exact} |"
        )
    return "\n".join(lines)


def _both_splats(rf_args: argparse.Namespace, capture: str, states: dict, radius) -> tuple[dict, dict]:
    """The anchor renders of the recorded states with footprint (``radius``) and one-pixel splats."""
    rf_args.splat_radius = radius
    footprint = rf._render(rf_args, capture, states, "anchor")
    rf_args.splat_radius = 0
    one_pixel = rf._render(rf_args, capture, states, "anchor")
    rf_args.splat_radius = radius
    return footprint, one_pixel


def _features(footprint: dict, one_pixel: dict) -> tuple[torch.Tensor, torch.Tensor]:
    flat = [r[k].flatten(0, 1) for r in (footprint, one_pixel) for k in ("anchor", "anchor_depth", "mask")]
    return silhouette_features(*flat)


def learned_choice(
    args: argparse.Namespace, rf_args: argparse.Namespace, footprint: dict, one_pixel: dict, truth_depth
):
    """Train a resolver on rollouts in the train scenes, pick the judged frames' pixels; returns (rgb, stats)."""
    start = time.perf_counter()
    train_args = argparse.Namespace(**vars(rf_args))
    train_args.scene_split, train_args.seed = "train", args.seed + 7
    states, _ = rf.record_rollouts(train_args, args.capture)
    truth = rf._render(train_args, args.capture, states, "oracle")
    train_footprint, train_one = _both_splats(train_args, args.capture, states, args.splat_radius)
    features, candidates = _features(train_footprint, train_one)
    labels = silhouette_labels(
        train_one["anchor_depth"].flatten(0, 1), train_one["mask"].flatten(0, 1), truth["depth"].flatten(0, 1)
    )
    resolver, losses = train_resolver(features, candidates, labels, steps=args.learned_choice, seed=args.seed)
    train_frames = int(features.shape[0])
    features, candidates = _features(footprint, one_pixel)
    take = resolver.take(features, candidates)
    right = candidates & silhouette_labels(
        one_pixel["anchor_depth"].flatten(0, 1), one_pixel["mask"].flatten(0, 1), truth_depth
    )
    rgb, _ = composite(
        footprint["anchor"].flatten(0, 1),
        footprint["anchor_depth"].flatten(0, 1),
        one_pixel["anchor"].flatten(0, 1),
        one_pixel["anchor_depth"].flatten(0, 1),
        take,
    )
    k = max(1, len(losses) // 10)
    if args.save_resolver:
        save_resolver(
            resolver,
            args.save_resolver,
            dict(
                steps=args.learned_choice,
                train_scenes=f"procedural:train:{args.scenes}",
                rollout_seed=args.seed + 7,
                seed=args.seed,
                splat_radius=str(args.splat_radius),
                anchor_colour=args.anchor_colour,
                capture=args.capture,
            ),
        )
    stats = dict(
        steps=args.learned_choice,
        train_frames=train_frames,
        first_loss=sum(losses[:k]) / k,
        last_loss=sum(losses[-k:]) / k,
        candidate_share=float(candidates.float().mean()),
        taken_share=float(take.float().mean()),
        precision=float((take & right).sum() / take.sum().clamp_min(1)),
        recall=float((take & right).sum() / right.sum().clamp_min(1)),
        seconds=time.perf_counter() - start,
    )
    return rgb, stats


def run(args: argparse.Namespace, verbose: bool = True) -> list[dict]:
    """Rollouts, renders and the budget rows; writes the CSV and the plot."""
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rf_args = rf.parse_args(
        [
            "--scenes", str(args.scenes), "--episodes", str(args.episodes), "--frames", str(args.frames),
            "--splat-radius", str(args.splat_radius), "--anchor-colour", args.anchor_colour,
            "--seed", str(args.seed), "--device", args.device,
        ]
    )  # fmt: skip
    states, _ = rf.record_rollouts(rf_args, args.capture)
    oracle = rf._render(rf_args, args.capture, states, "oracle")
    anchor, one_pixel = _both_splats(rf_args, args.capture, states, args.splat_radius)
    truth, true_depth = oracle["rgb"].flatten(0, 1), oracle["depth"].flatten(0, 1)
    mask, depth = anchor["mask"].flatten(0, 1).bool(), anchor["anchor_depth"].flatten(0, 1)
    rgb = anchor["anchor"].flatten(0, 1)
    base = classify(mask, depth, true_depth)
    edge = _edges(truth)
    parts = {
        **base,
        "right surface, edge": base["right surface"] & edge,
        "right surface, flat": base["right surface"] & ~edge,
        "wrong surface": base["wrong, nearer"] | base["wrong, farther"],
    }
    classes = {name: parts[name] for name in CLASSES}
    rows = budget_rows("nearest_fill", nearest_fill(rgb, mask), truth, classes)
    one = classify(one_pixel["mask"].flatten(0, 1), one_pixel["anchor_depth"].flatten(0, 1), true_depth)
    swap = base["wrong, nearer"] & one["right surface"]
    bound = torch.where(swap[..., None], one_pixel["anchor"].flatten(0, 1), rgb)
    rows += budget_rows("nearest_fill, one-pixel composite", nearest_fill(bound, mask), truth, classes)[:1]
    stats = None
    if args.learned_choice:
        learned, stats = learned_choice(args, rf_args, anchor, one_pixel, true_depth)
        rows += budget_rows("nearest_fill, learned composite", nearest_fill(learned, mask), truth, classes)[:1]
    if args.weights is not None:
        model = rf._render(rf_args, args.capture, states, "worldfm", weights=args.weights)
        rows += budget_rows(Path(str(args.weights)).stem, model["rgb"].flatten(0, 1), truth, classes)
    nearer = base["wrong, nearer"]
    share = float(swap.sum() / nearer.sum().clamp_min(1))
    for r in rows:
        r.update(
            capture=args.capture,
            splat_radius=str(args.splat_radius),
            anchor_colour=args.anchor_colour,
            seed=args.seed,
            frames=int(mask.shape[0]),
        )
    with open(out / "error_budget.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "error_budget.png")
    if stats is not None:
        with open(out / "learned_choice.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(stats))
            writer.writeheader()
            writer.writerow(stats)
    if verbose:
        print(markdown_table(rows))
        print(
            f"\n{int(mask.shape[0])} frames, capture={args.capture}; of the 'wrong, nearer' pixels the one-pixel splat "
            f"holds the right surface at {100 * share:.1f} %; wall time {time.perf_counter() - start:.0f} s"
        )
        if stats is not None:
            print(
                f"learned choice: {stats['steps']} steps on {stats['train_frames']} train-scene frames "
                f"(loss {stats['first_loss']:.3f} -> {stats['last_loss']:.3f}), took "
                f"{100 * stats['taken_share']:.2f} % of the pixels ({100 * stats['candidate_share']:.1f} % "
                f"candidates), precision {stats['precision']:.2f}, recall {stats['recall']:.2f}, "
                f"{stats['seconds']:.0f} s"
            )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="error_budget", description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=8, help="held-out test scenes (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=2, help="rollouts per scene and policy (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=80, help="frames per rollout (default: %(default)s)")
    parser.add_argument("--capture", choices=list(rf.CAPTURES), default="full", help="capture (default: %(default)s)")
    parser.add_argument(
        "--splat-radius", type=splat_radius_arg, default="auto", help="anchor splats (default: %(default)s)"
    )
    parser.add_argument(
        "--anchor-colour", choices=list(ANCHOR_COLOUR_VALUES), default="bank", help="(default: %(default)s)"
    )
    parser.add_argument("--weights", default=None, help="a frame model to budget as well (path or shipped name)")
    parser.add_argument(
        "--learned-choice",
        type=int,
        default=0,
        help="train a silhouette resolver for this many steps on train-scene rollouts and add its composite "
        "(default: %(default)s, off)",
    )
    parser.add_argument(
        "--save-resolver", default=None, help="with --learned-choice: write the trained resolver to this file"
    )
    parser.add_argument("--seed", type=int, default=0, help="rollout seed (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="device (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 scenes, 1 rollout each, 16 frames")
    parser.add_argument("--out", default=str(RESULTS), help="output folder (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    rf.settle_rollout_size(parser, args)
    if args.save_resolver and not args.learned_choice:
        parser.error("--save-resolver needs --learned-choice STEPS (the resolver it trains)")
    if args.learned_choice < 0:
        parser.error(f"--learned-choice must be 0 (off) or a positive number of steps, got {args.learned_choice}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark from the command line; returns the CSV rows."""
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
