"""The world model as a policy evaluator: do policies score alike in the generated world and in the true one?

    python benchmarks/policy_eval.py --snapshots benchmarks/results/transfer/checkpoints --weights my-model.safetensors
    python benchmarks/policy_eval.py --snapshots runs/a.pt runs/b.pt runs/c.pt --model-renderer anchor

Method. A set of PointNav policies of different quality (``agents/ppo_torch.py`` checkpoints, e.g. the snapshots
``benchmarks/transfer.py --snapshots K`` writes to ``<out>/checkpoints/ppo_<world>_step<env steps>.pt`` along each
training) is evaluated on the same held-out episodes (``agents/evaluate.py``: episode i is the first episode of env
seed ``eval_seed + i`` on ``--scenes``; the most likely action at every step, or with ``--eval-actions sample``
actions drawn from the policy by a generator seeded by ``--eval-seed``) in two worlds: the *truth* world (the
``oracle`` renderer, ray casting the true mesh) and the *model* world (``--model-renderer``: the frame model,
``worldfm``, with ``--weights``; or the raw ``anchor``, to see what the frame model adds as an evaluator). Both worlds
use the same ``--capture`` (it places the episodes' starts near a capture camera; the oracle renders the true mesh
whatever it is); the model world grows its memory (``--memory grow``, the default with worldfm) as it renders. If the
model world is a good evaluator, the policies' success (and SPL, soft SPL) in it follows their success in the truth
world: reported per snapshot, and across snapshots as the Pearson correlation and the Spearman rank correlation
(Pearson of the average ranks, ties sharing their mean rank) of each metric between the two worlds. A correlation is
undefined (NaN, said in the output) when a metric is the same for every snapshot in either world; it needs at least
two snapshots, and it is only as sharp as the policies are different (their spread against the standard errors).

The comparison point: the published best figure for a video world model used as a policy evaluator is a correlation
of 0.78 between the success rates it predicts and the real ones (the figure cited in the WorldFM issue).

Writes ``policy_eval.csv`` (one row per snapshot and world, with the snapshot's env steps), ``policy_eval_summary.csv``
(the correlations of each metric) and ``policy_eval.png`` (success in the model world against the truth world per
snapshot, with the y = x line and the correlations in the title) to ``benchmarks/results/policy-eval/``, records the
machine and device, and prints a markdown table and the correlations.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: make `agents` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import evaluate as evaluate_script  # noqa: E402
from benchmarks.throughput import machine_name  # noqa: E402
from benchmarks.transfer import EVAL_ACTIONS, METRICS, summarise, write_csv  # noqa: E402
from worldfm_env.memory import MEMORY_MODES  # noqa: E402
from worldfm_env.scenes.capture import parse_capture  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "policy-eval"
TRUTH_RENDERER = "oracle"
MODEL_RENDERERS = ("worldfm", "anchor")
PUBLISHED_CORRELATION = 0.78
"""The published best correlation of a video world model's policy evaluation with the real one (the comparison
point of the WorldFM issue)."""


def add_held_out_arguments(parser: argparse.ArgumentParser, episodes: int, episodes_help: str) -> None:
    """The held-out episode set that :func:`evaluate_snapshot` plays: ``--episodes`` (default ``episodes``),
    ``--num-envs``, ``--eval-seed``, ``--scenes`` and ``--max-episode-steps``."""
    parser.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    parser.add_argument("--num-envs", type=int, default=16, help="envs stepped together (not the episode set)")
    parser.add_argument("--eval-seed", type=int, default=0, help="env seed of held-out episode 0")
    parser.add_argument("--scenes", default="procedural:test", help="held-out scene spec")
    parser.add_argument("--max-episode-steps", type=int, default=500, help="steps after which an episode is truncated")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--snapshots",
        nargs="+",
        required=True,
        help="agents/ppo_torch.py checkpoints: files, or folders whose *.pt are taken (resume states aside, and a "
        "final checkpoint X.pt aside where its snapshot X_step<its steps>.pt is there too); sorted by env steps",
    )
    add_held_out_arguments(parser, 50, "held-out episodes per snapshot and world")
    parser.add_argument(
        "--model-renderer",
        default="worldfm",
        choices=MODEL_RENDERERS,
        help="renderer of the model world: worldfm (the frame model) or anchor (the raw point splat)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="frame-model checkpoint of the worldfm model world (default: the model shipped for the policies' "
        "resolution)",
    )
    parser.add_argument(
        "--capture",
        default="panorama",
        help="capture of both worlds (the env's capture): full, panorama or walk:K; it places the episodes' starts "
        "near a capture camera, in the truth world too",
    )
    parser.add_argument(
        "--memory",
        default=None,
        choices=MEMORY_MODES,
        help="memory of the model world (the env's memory; the truth world's stays static): grow (the default with "
        "worldfm) or static (the default, and the only choice, with anchor)",
    )
    parser.add_argument(
        "--eval-actions",
        default="argmax",
        choices=EVAL_ACTIONS,
        help="how the policies act in both worlds: argmax (their most likely action) or sample (drawn from the "
        "policy with a generator seeded by --eval-seed, as benchmarks/transfer.py's learning curves do)",
    )
    parser.add_argument(
        "--splat-radius",
        default=None,
        help="anchor splat half-size of the model world (an int in [0, 8] or auto; default: as each policy was "
        "trained). Policies trained in the oracle world, which has no anchor, record 0: give the splats the frame "
        "model was trained on (auto for the *-auto-* models)",
    )
    parser.add_argument(
        "--compile-model",
        action="store_true",
        help="wrap the worldfm model world's frame model in torch.compile (faster steps after a one-off compile)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args(argv)
    if args.memory is None:
        args.memory = "grow" if args.model_renderer == "worldfm" else "static"
    return args


def _check_arguments(args: argparse.Namespace) -> None:
    """Fail before any evaluation on arguments that cannot work (each message names the argument)."""
    for name in ("episodes", "num_envs"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    try:
        parse_capture(args.capture)
    except ValueError as err:
        raise ValueError(f"--capture: {err}") from None
    if args.splat_radius is not None:
        from worldfm_env.render.anchor_config import parse_splat_radius

        try:
            parse_splat_radius(args.splat_radius)
        except ValueError as err:
            raise ValueError(f"--splat-radius: {err}") from None
    if args.model_renderer != "worldfm":
        if args.compile_model:
            raise ValueError(
                f"--compile-model compiles the worldfm model world's frame model; --model-renderer is "
                f"{args.model_renderer!r}"
            )
        if args.weights:
            raise ValueError(f"--weights is the worldfm model world's; --model-renderer is {args.model_renderer!r}")
        if args.memory == "grow":
            raise ValueError(
                f"--memory grow needs --model-renderer worldfm (the {args.model_renderer} renderer generates no pixels "
                "to grow); use --memory static"
            )
    if args.weights:
        from worldfm_env.model.weights import resolve_weights

        try:
            resolve_weights(args.weights)
        except ValueError as err:
            raise ValueError(f"--weights: {err}") from None


def _checkpoint_files(paths: list[str]) -> list[Path]:
    """The checkpoint files named by ``--snapshots``: files as given, the ``*.pt`` of folders (see its help)."""
    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.pt") if not p.name.endswith(".resume.pt"))
            if not found:
                raise ValueError(f"--snapshots {text!r} is a folder without *.pt checkpoints")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"--snapshots {text!r} does not exist (give checkpoint files or folders of them)")
    return list(dict.fromkeys(files))


def find_snapshots(paths: list[str]) -> list[dict]:
    """The policies of ``--snapshots``, sorted by env steps: dicts of ``path`` and ``step`` (the checkpoint's
    ``global_step``). Every file must be a PointNav checkpoint of ``agents/ppo_torch.py``; at least two are needed."""
    snapshots = []
    for path in _checkpoint_files(paths):
        try:
            saved = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as err:  # a file torch cannot read: say which
            raise ValueError(f"--snapshots: {path} is not a readable agents/ppo_torch.py checkpoint ({err})") from None
        missing = [k for k in ("state_dict", "args", "global_step") if not isinstance(saved, dict) or k not in saved]
        if missing:
            raise ValueError(f"--snapshots: {path} is not an agents/ppo_torch.py checkpoint (it lacks {missing})")
        task = saved["args"].get("task", "pointnav")
        if task != "pointnav":
            raise ValueError(f"--snapshots: {path} was trained with task={task!r}; policy evaluation needs pointnav")
        snapshots.append({"path": path, "step": int(saved["global_step"])})
    # A final checkpoint X.pt and its last snapshot X_step<steps>.pt of the same folder hold the same policy.
    named = {s["path"] for s in snapshots}
    snapshots = [
        s for s in snapshots if s["path"].with_name(f"{s['path'].stem}_step{s['step']}{s['path'].suffix}") not in named
    ]
    snapshots.sort(key=lambda s: (s["step"], str(s["path"])))
    if len(snapshots) < 2:
        raise ValueError(
            f"--snapshots gives {len(snapshots)} checkpoint ({[str(s['path']) for s in snapshots]}); a correlation "
            "across snapshots needs at least 2"
        )
    return snapshots


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks of ``values`` in ascending order, tied values sharing the mean of their positions
    (``[0.5, 0.2, 0.5]`` -> ``[2.5, 1.0, 2.5]``)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation of paired values; NaN when there are fewer than two pairs, a value is NaN, or either
    side is constant (the correlation is then undefined)."""
    if len(x) != len(y):
        raise ValueError(f"pearson needs paired values: x has {len(x)}, y has {len(y)}")
    if len(x) < 2 or any(math.isnan(v) for v in (*x, *y)) or is_constant(x) or is_constant(y):
        return math.nan
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation: the Pearson correlation of the average ranks (ties averaged); NaN as for
    :func:`pearson`."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values: x has {len(x)}, y has {len(y)}")
    if any(math.isnan(v) for v in (*x, *y)):
        return math.nan
    return pearson(average_ranks(x), average_ranks(y))


def is_constant(values: list[float]) -> bool:
    """Whether every value is the same (a correlation with them is undefined)."""
    return len(set(values)) <= 1


def correlations(rows: list[dict]) -> list[dict]:
    """One row per metric: its Pearson and Spearman correlation across snapshots between the truth and the model
    world, the snapshot count, and a note where a world's values are constant (the correlations are then NaN)."""
    truth = [r for r in rows if r["world"] == "truth"]
    model = [r for r in rows if r["world"] == "model"]
    summary = []
    for metric in METRICS:
        x, y = [r[metric] for r in truth], [r[metric] for r in model]
        constant = [world for world, values in (("truth", x), ("model", y)) if is_constant(values)]
        where = f"{' and '.join(constant)} world{'s' if len(constant) > 1 else ''}"
        note = f"{metric} is constant in the {where}: no correlation" if constant else ""
        summary.append(
            {
                "metric": metric,
                "pearson": round(pearson(x, y), 4),
                "spearman": round(spearman(x, y), 4),
                "snapshots": len(x),
                "truth_min": min(x),
                "truth_max": max(x),
                "model_min": min(y),
                "model_max": max(y),
                "note": note,
            }
        )
    return summary


def evaluate_snapshot(path: Path, renderer: str, memory: str, args: argparse.Namespace) -> dict:
    """Evaluate one snapshot on the held-out episodes with ``renderer``; its metrics (mean, standard error),
    mean steps and collisions, and the evaluation's wall seconds."""
    eval_args = evaluate_script.Args(
        agent=f"ppo:{path}",
        episodes=args.episodes,
        seed=args.eval_seed,
        num_envs=args.num_envs,
        scenes=args.scenes,
        renderer=renderer,
        device=args.device,
        max_episode_steps=args.max_episode_steps,
        output_dir=None,
        weights=args.weights if renderer == "worldfm" else None,
        compile_model=args.compile_model and renderer == "worldfm",
        splat_radius=None if renderer == TRUTH_RENDERER else args.splat_radius,
        deterministic=args.eval_actions == "argmax",
        capture=args.capture,
        memory=memory,
    )
    start = time.perf_counter()
    result = evaluate_script.evaluate(eval_args)
    wall = time.perf_counter() - start
    return {
        **summarise(result),
        "mean_steps": round(result.summary["steps"], 1),
        "collisions": round(result.summary["collisions"], 2),
        "eval_wall_s": round(wall, 1),
    }


def _format(value: float) -> str:
    """A correlation for the console: three decimals, or nan."""
    return "nan" if math.isnan(value) else f"{value:.3f}"


def plot(rows: list[dict], summary: list[dict], path: Path, title: str) -> None:
    """Success in the model world against the truth world, one point per snapshot (± s.e., labelled with its env
    steps), the y = x line, and the success correlations in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = [r for r in rows if r["world"] == "truth"]
    model = [r for r in rows if r["world"] == "model"]
    fig, ax = plt.subplots(figsize=(5.6, 5.6))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="y = x")
    ax.errorbar(
        [r["success"] for r in truth],
        [r["success"] for r in model],
        xerr=[r["success_se"] for r in truth],
        yerr=[r["success_se"] for r in model],
        fmt="o",
        capsize=3,
        label="snapshot (± s.e.; labelled with its env steps)",
    )
    for t, m in zip(truth, model, strict=True):
        ax.annotate(
            f"{t['step']:,}", (t["success"], m["success"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    success = next(s for s in summary if s["metric"] == "success")
    ax.set_title(
        textwrap.fill(
            f"Success: Pearson {_format(success['pearson'])}, Spearman {_format(success['spearman'])} "
            f"(published best for a video world model: {PUBLISHED_CORRELATION})",
            70,
        ),
        fontsize=9,
    )
    ax.set_xlabel(f"success in the truth world ({TRUTH_RENDERER})")
    ax.set_ylabel(f"success in the model world ({model[0]['renderer']})")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.text(0.5, 0.01, textwrap.fill(title, 110), ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Evaluate every snapshot in both worlds, write the CSVs and the plot, print the table and the correlations;
    return (per snapshot and world rows, correlation rows)."""
    args = parse_args(argv)
    _check_arguments(args)
    snapshots = find_snapshots(args.snapshots)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    machine = machine_name(device)
    worlds = (("truth", TRUTH_RENDERER, "static"), ("model", args.model_renderer, args.memory))
    settings = dict(
        eval_actions=args.eval_actions,
        splat_radius=args.splat_radius if args.splat_radius is not None else "as trained",
        capture=args.capture,
        # The checkpoint's file name, not its path (results carry no machine paths); "" for the shipped default.
        weights=Path(args.weights).name if (args.weights and args.model_renderer == "worldfm") else "",
        eval_seed=args.eval_seed,
        scenes=args.scenes,
        max_episode_steps=args.max_episode_steps,
        num_envs=args.num_envs,
        device=device,
        machine=machine,
    )
    start = time.perf_counter()
    rows = []
    for snapshot in snapshots:
        for world, renderer, memory in worlds:
            metrics = evaluate_snapshot(snapshot["path"], renderer, memory, args)
            rows.append(
                {
                    "snapshot": str(snapshot["path"]),
                    "step": snapshot["step"],
                    "world": world,
                    "renderer": renderer,
                    "memory": memory,
                    **metrics,
                    **settings,
                }
            )
            print(
                f"{snapshot['path'].name} ({snapshot['step']:,} env steps), {world} world ({renderer}): "
                f"success={metrics['success']:.3f} spl={metrics['spl']:.3f} soft_spl={metrics['soft_spl']:.3f} "
                f"({metrics['eval_wall_s']:.0f} s)",
                flush=True,
            )
    model_settings = {"model_renderer": args.model_renderer, "memory": args.memory, "episodes": args.episodes}
    summary = [{**s, **model_settings, **settings} for s in correlations(rows)]
    total = time.perf_counter() - start

    write_csv(out / "policy_eval.csv", rows)
    write_csv(out / "policy_eval_summary.csv", summary)
    model_world = args.model_renderer + (f", memory {args.memory}" if args.memory != "static" else "")
    budget = (
        f"{len(snapshots)} snapshots x {args.episodes} held-out episodes ({args.scenes}, seed {args.eval_seed}, "
        f"capture {args.capture}, {args.eval_actions} actions); truth world {TRUTH_RENDERER}, model world "
        f"{model_world}; {machine} ({device}); "
        f"{total / 60:.1f} min"
    )
    plot(rows, summary, out / "policy_eval.png", budget)

    print()
    worlds_header = " | ".join(f"{name} truth | {name} model" for name in ("success", "SPL", "SoftSPL"))
    print(f"| env steps | snapshot | {worlds_header} |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for truth, model in zip(rows[0::2], rows[1::2], strict=True):
        cells = [f"{truth[m]:.3f} | {model[m]:.3f}" for m in METRICS]
        print(f"| {truth['step']:,} | {Path(truth['snapshot']).name} | {' | '.join(cells)} |")
    print()
    print(f"Correlation across {len(snapshots)} snapshots, truth world vs model world:")
    for s in summary:
        line = f"  {s['metric']}: Pearson {_format(s['pearson'])}, Spearman {_format(s['spearman'])}"
        print(line + (f" ({s['note']})" if s["note"] else ""))
    print(
        f"Comparison point: {PUBLISHED_CORRELATION}, the published best correlation of a video world model used as a "
        "policy evaluator."
    )
    print(f"Budget: {budget}.")
    print(f"wrote {out / 'policy_eval.csv'}, {out / 'policy_eval_summary.csv'} and {out / 'policy_eval.png'}")
    return rows, summary


if __name__ == "__main__":
    main()
