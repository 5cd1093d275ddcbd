"""DD-PPO on one machine: 2 ranks x 8 envs against 1 rank x 16 envs (the same total batch), in training throughput
and in learning curves.

    python benchmarks/ppo_distributed.py                       # defaults: anchor world, 64x64, CPU, seeds 1 and 2
    python benchmarks/ppo_distributed.py --total-timesteps 200000 --seeds 1 2 3 --device cuda

Both runs are ``agents/ppo_torch.py`` with the same arguments and seed; the 2-rank run is started with
``torchrun --standalone --nproc_per_node 2`` (gloo on the CPU, NCCL on CUDA) and each of its ranks steps
``--num-envs / 2`` envs over half the training scenes, so an update has the same ``num_envs * num_steps`` env steps
in both. On the CPU the single process keeps torch's default thread count and torchrun gives each rank one thread
(its default), so both use the machine's cores.

Throughput: ``--repeats`` short trainings (``--throughput-steps`` env steps each) per layout, alternating, reporting
the median env-steps/s of the training loop (env steps of all ranks over the run's wall time without start-up; the
``global_step`` and ``wall_s`` of its checkpoint). Learning: per seed, one training per layout of
``--total-timesteps``; the per-update training return and success (from rank 0's log, over all ranks' episodes),
and ``--snapshots`` evenly spaced policies and the final one evaluated on ``--eval-episodes`` held-out episodes
(``agents/evaluate.py``, argmax actions, one process, the same episodes for every policy).

Writes ``throughput.csv``, ``train_curve.csv``, ``eval_curve.csv``, ``ppo_distributed.png`` and the runs' logs
and checkpoints to ``benchmarks/results/ppo_distributed/`` and prints two markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: make `agents` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import evaluate as evaluate_script  # noqa: E402
from benchmarks.throughput import machine_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ppo_distributed"
LOG_LINE = re.compile(r"iter=(\d+)/(\d+) global_step=(\d+) .*? return=(\S+) success=(\S+)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--num-envs", type=int, default=16, help="envs of the 1-rank run (the 2-rank run: half each)")
    parser.add_argument("--num-steps", type=int, default=128, help="PPO rollout length per env")
    parser.add_argument("--total-timesteps", type=int, default=98_304, help="env steps of each learning run")
    parser.add_argument("--throughput-steps", type=int, default=8_192, help="env steps of each throughput run")
    parser.add_argument("--repeats", type=int, default=2, help="throughput runs per layout (median)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds of the learning runs")
    parser.add_argument("--snapshots", type=int, default=4, help="evenly spaced policies evaluated per learning run")
    parser.add_argument("--eval-episodes", type=int, default=50, help="held-out episodes per evaluated policy")
    parser.add_argument("--renderer", default="anchor", help="anchor, oracle or worldfm")
    parser.add_argument("--resolution", type=int, default=64, help="observation size (square)")
    parser.add_argument("--max-episode-steps", type=int, default=500, help="truncation, training and evaluation")
    parser.add_argument("--hidden-size", type=int, default=256, help="PPO network width (ppo_torch)")
    parser.add_argument("--update-epochs", type=int, default=4, help="PPO epochs per update (ppo_torch)")
    parser.add_argument("--train-scenes", default="procedural:train", help="training scene spec (split over ranks)")
    parser.add_argument("--eval-scenes", default="procedural:test", help="held-out scene spec")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the 2-rank run needs 2 GPUs on cuda)")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args(argv)
    if args.num_envs < 2 or args.num_envs % 2:
        parser.error(f"--num-envs must be even and >= 2 (the 2-rank run takes half each), got {args.num_envs}")
    for name in ("total_timesteps", "throughput_steps", "repeats", "eval_episodes"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.snapshots < 0:
        parser.error(f"--snapshots must be >= 0, got {args.snapshots}")
    return args


def layout_label(world: int, args: argparse.Namespace) -> str:
    """``1 rank x 16`` or ``2 ranks x 8``."""
    return f"1 rank x {args.num_envs}" if world == 1 else f"{world} ranks x {args.num_envs // world}"


def train(world: int, seed: int, total: int, save_every: int, args: argparse.Namespace, out: Path, tag: str) -> dict:
    """One ppo_torch run with ``world`` processes; returns its checkpoint, log lines' curve and training speed."""
    save_path = out / "checkpoints" / f"{tag}.pt"
    ppo = [
        *[
            "--total-timesteps",
            str(total),
            "--num-envs",
            str(args.num_envs // world),
            "--num-steps",
            str(args.num_steps),
        ],
        *["--seed", str(seed), "--device", args.device, "--renderer", args.renderer, "--scenes", args.train_scenes],
        *["--resolution", str(args.resolution), "--max-episode-steps", str(args.max_episode_steps)],
        *["--hidden-size", str(args.hidden_size), "--update-epochs", str(args.update_epochs)],
        *["--save-every", str(save_every), "--save-path", str(save_path), "--exp-name", tag],
    ]
    script = str(ROOT / "agents" / "ppo_torch.py")
    if world == 1:
        command = [sys.executable, script, *ppo]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)]
        command += [script, *ppo]
    for stale in save_path.parent.glob(f"{tag}*.pt"):
        stale.unlink()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log_path = out / "logs" / f"{tag}.log"
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"training {tag} failed (exit {result.returncode}); see {log_path}")
    saved = torch.load(save_path, weights_only=True, map_location="cpu")
    curve = [
        {"update": int(m[1]), "env_steps": int(m[3]), "return": float(m[4]), "success": float(m[5])}
        for m in LOG_LINE.finditer(result.stdout)
    ]
    snapshots = sorted(save_path.parent.glob(f"{tag}_step*.pt"), key=lambda p: int(p.stem.rsplit("step", 1)[1]))
    return {
        "checkpoint": save_path,
        "snapshots": snapshots,
        "env_steps": saved["global_step"],
        "wall_s": saved["wall_s"],
        "env_steps_per_s": saved["global_step"] / saved["wall_s"],
        "curve": curve,
    }


def evaluate_policy(checkpoint: Path, args: argparse.Namespace) -> dict:
    """Held-out success, SPL and soft SPL (means and standard errors) of a checkpoint, on one process."""
    result = evaluate_script.evaluate(
        evaluate_script.Args(
            agent=f"ppo:{checkpoint}",
            episodes=args.eval_episodes,
            num_envs=min(16, args.eval_episodes),
            scenes=args.eval_scenes,
            renderer=args.renderer,
            device=args.device,
            max_episode_steps=args.max_episode_steps,
            output_dir=None,
        )
    )
    metrics = {}
    for key in ("success", "spl", "soft_spl"):
        values = [e[key] for e in result.episodes]
        mean = sum(values) / len(values)
        metrics[key] = round(mean, 4)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if len(values) > 1 else 0.0
        metrics[f"{key}_se"] = round(spread / math.sqrt(len(values)), 4)
    return metrics


def write_csv(path: Path, rows: list[dict]) -> None:
    """Dict rows to ``path``; columns in first-seen order."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def plot(throughput: list[dict], train_rows: list[dict], eval_rows: list[dict], path: Path, title: str) -> None:
    """Three panels: median training env-steps/s per layout; training return against env steps (mean over seeds);
    held-out success and soft SPL of the snapshots against env steps (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = list(dict.fromkeys(r["layout"] for r in throughput))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rates = [statistics.median(r["env_steps_per_s"] for r in throughput if r["layout"] == k) for k in layouts]
    bars = axes[0].bar(layouts, rates, color=[f"C{i}" for i in range(len(layouts))])
    axes[0].bar_label(bars, fmt="%.0f")
    axes[0].set_ylabel("training env-steps / s (median)")
    axes[0].set_title("throughput")
    for i, layout in enumerate(layouts):
        rows = [r for r in train_rows if r["layout"] == layout]
        steps = sorted({r["env_steps"] for r in rows})
        mean = [statistics.mean(r["return"] for r in rows if r["env_steps"] == s) for s in steps]
        axes[1].plot(steps, mean, color=f"C{i}", label=layout)
        rows = [r for r in eval_rows if r["layout"] == layout]
        steps = sorted({r["env_steps"] for r in rows})
        for metric, style in (("success", "-o"), ("soft_spl", "--s")):
            mean = [statistics.mean(r[metric] for r in rows if r["env_steps"] == s) for s in steps]
            axes[2].plot(steps, mean, style, color=f"C{i}", label=f"{layout}: {metric}")
    axes[1].set_title("training return (per update, mean over seeds)")
    axes[2].set_title("held-out episodes (argmax, mean over seeds)")
    axes[2].set_ylim(0, 1)
    for ax in axes[1:]:
        ax.set_xlabel("env steps")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Run both comparisons, write the CSVs and the figure, print the tables; return the rows."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_name(args.device)
    start = time.perf_counter()

    throughput = []
    for repeat in range(args.repeats):
        order = (1, 2) if repeat % 2 == 0 else (2, 1)  # alternate, so drift in the machine's load hits both
        for world in order:
            run = train(world, 1, args.throughput_steps, 0, args, out, f"throughput_w{world}_r{repeat}")
            row = {"layout": layout_label(world, args), "world_size": world, "repeat": repeat}
            row.update(env_steps=run["env_steps"], wall_s=round(run["wall_s"], 2))
            row.update(env_steps_per_s=round(run["env_steps_per_s"], 1), device=args.device, machine=machine)
            throughput.append(row)
            print(
                f"throughput {row['layout']} (repeat {repeat}): {row['env_steps_per_s']:,.0f} env-steps/s", flush=True
            )

    train_rows, eval_rows = [], []
    batch = args.num_envs * args.num_steps
    budget = max(1, args.total_timesteps // batch) * batch
    save_every = max(1, -(-budget // args.snapshots)) if args.snapshots else 0
    for seed in args.seeds:
        for world in (1, 2):
            layout = layout_label(world, args)
            run = train(world, seed, args.total_timesteps, save_every, args, out, f"learn_w{world}_seed{seed}")
            train_rows += [{"layout": layout, "world_size": world, "seed": seed, **p} for p in run["curve"]]
            policies = [*run["snapshots"], run["checkpoint"]]
            for policy in policies:
                steps = torch.load(policy, weights_only=True, map_location="cpu")["global_step"]
                if policy != run["checkpoint"] and steps >= run["env_steps"]:
                    continue  # the snapshot of the last update: the final policy, evaluated once
                metrics = evaluate_policy(policy, args)
                eval_rows.append({"layout": layout, "world_size": world, "seed": seed, "env_steps": steps, **metrics})
            final = eval_rows[-1]
            print(
                f"learning {layout}, seed {seed}: {run['env_steps']:,} env steps in {run['wall_s']:.0f} s; held-out "
                f"success={final['success']:.3f} soft_spl={final['soft_spl']:.3f}",
                flush=True,
            )

    write_csv(out / "throughput.csv", throughput)
    write_csv(out / "train_curve.csv", train_rows)
    write_csv(out / "eval_curve.csv", eval_rows)
    minutes = (time.perf_counter() - start) / 60
    title = (
        f"DD-PPO, {args.renderer} world {args.resolution}x{args.resolution}, batch {args.num_envs} envs x "
        f"{args.num_steps} steps, {budget:,} env steps, seeds {' '.join(map(str, args.seeds))}; {machine} "
        f"({args.device}); {minutes:.1f} min"
    )
    plot(throughput, train_rows, eval_rows, out / "ppo_distributed.png", title)

    print()
    print("| layout | training env-steps/s (median) | runs |")
    print("|---|---:|---:|")
    for layout in dict.fromkeys(r["layout"] for r in throughput):
        rates = [r["env_steps_per_s"] for r in throughput if r["layout"] == layout]
        print(f"| {layout} | {statistics.median(rates):,.0f} | {len(rates)} |")
    print()
    print("| layout | seed | env steps | held-out success | SPL | soft SPL |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in eval_rows:
        if r["env_steps"] == max(e["env_steps"] for e in eval_rows if e["layout"] == r["layout"]):
            print(
                f"| {r['layout']} | {r['seed']} | {r['env_steps']:,} | {r['success']:.3f} ± {r['success_se']:.3f} "
                f"| {r['spl']:.3f} | {r['soft_spl']:.3f} ± {r['soft_spl_se']:.3f} |"
            )
    print(f"{title}")
    written = ("throughput.csv", "train_curve.csv", "eval_curve.csv", "ppo_distributed.png")
    print("wrote " + ", ".join(str(out / name) for name in written))
    return {"throughput": throughput, "train_curve": train_rows, "eval_curve": eval_rows}


if __name__ == "__main__":
    main()
