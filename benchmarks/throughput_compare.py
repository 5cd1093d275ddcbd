"""Throughput of two source trees in one run: ``benchmarks/throughput.py`` of an earlier checkout ("before") and of
this one ("after"), alternated per renderer in A-B-B-A order so slow drifts of the machine cancel.

    git worktree add /tmp/before <commit>      # or: git archive <commit> | tar -x -C /tmp/before
    python benchmarks/throughput_compare.py --before /tmp/before --renderers anchor oracle worldfm --num-envs 1 64 256

Each tree runs in its own subprocess with its own package on ``PYTHONPATH``. Writes
``benchmarks/results/throughput-compare/throughput_compare.csv`` and ``.png`` and prints a table with the median of
the two runs per tree and the after/before ratio.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "throughput-compare"


def run_tree(tree: Path, renderer: str, args: argparse.Namespace) -> dict[int, float]:
    """env-steps/s by num_envs of ``tree``'s throughput script for one renderer (native env only)."""
    out = Path(tempfile.mkdtemp(prefix="throughput-"))
    command = [
        sys.executable,
        str(tree / "benchmarks" / "throughput.py"),
        "--renderers",
        renderer,
        "--num-envs",
        *map(str, args.num_envs),
        "--sync-num-envs",
        "1",
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        "--devices",
        args.device,
        "--scenes",
        args.scenes,
        "--resolution",
        str(args.resolution),
        "--out",
        str(out),
    ]
    if renderer == "worldfm":
        command += ["--weights", args.weights]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(command, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    with open(out / "throughput.csv") as f:
        return {
            int(r["num_envs"]): float(r["env_steps_per_s"])
            for r in csv.DictReader(f)
            if r["kind"] == "native" and r["renderer"] == renderer
        }


def main(argv: list[str] | None = None) -> None:
    """Run both trees per renderer (A-B-B-A, ``--rounds`` times), write CSV + plot, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a checkout of the earlier code (its repository root)")
    parser.add_argument("--after", default=str(HERE.parent), help="the code to compare (default: this checkout)")
    parser.add_argument("--renderers", nargs="+", default=["anchor", "oracle", "worldfm"])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks (median)")
    parser.add_argument("--rounds", type=int, default=1, help="A-B-B-A cycles per renderer (more: less drift)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scenes", default="procedural:train")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--weights", default="worldfm-srd-64x64", help="frame model of the worldfm rows")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    for name, tree in trees.items():
        if not (tree / "benchmarks" / "throughput.py").is_file():
            raise SystemExit(f"--{name} {tree}: no benchmarks/throughput.py there (give a repository root)")

    rows = []
    for renderer in args.renderers:
        runs: dict[str, list[dict[int, float]]] = {"before": [], "after": []}
        for name in ("before", "after", "after", "before") * args.rounds:
            runs[name].append(run_tree(trees[name], renderer, args))
            print(f"{renderer} {name}: {runs[name][-1]}", flush=True)
        for n in args.num_envs:
            before = statistics.median(r[n] for r in runs["before"])
            after = statistics.median(r[n] for r in runs["after"])
            rows.append(
                dict(
                    device=args.device,
                    renderer=renderer,
                    num_envs=n,
                    before_env_steps_per_s=round(before, 1),
                    after_env_steps_per_s=round(after, 1),
                    ratio=round(after / before, 3),
                    before_runs=" ".join(f"{r[n]:.1f}" for r in runs["before"]),
                    after_runs=" ".join(f"{r[n]:.1f}" for r in runs["after"]),
                )
            )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "throughput_compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for renderer in args.renderers:
        mine = [r for r in rows if r["renderer"] == renderer]
        xs = [r["num_envs"] for r in mine]
        (line,) = ax.plot(xs, [r["after_env_steps_per_s"] for r in mine], "-o", label=f"{renderer} after")
        ax.plot(
            xs, [r["before_env_steps_per_s"] for r in mine], "--s", color=line.get_color(), label=f"{renderer} before"
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("num_envs")
    ax.set_ylabel("env-steps / s")
    ax.set_title(f"throughput before / after ({args.device})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput_compare.png", dpi=120)

    print()
    print("| renderer | num_envs | before env-steps/s | after env-steps/s | after / before |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['renderer']} | {r['num_envs']} | {r['before_env_steps_per_s']:,.1f} | "
            f"{r['after_env_steps_per_s']:,.1f} | {r['ratio']:.2f} |"
        )
    print(f"wrote {out / 'throughput_compare.csv'} and {out / 'throughput_compare.png'}")


if __name__ == "__main__":
    main()
