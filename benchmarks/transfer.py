"""Transfer to the ground-truth world: PPO trained in the ``anchor`` world (and in the ``worldfm``
world when a frame-model checkpoint is given), against a reference PPO trained in the ``oracle``
world, every policy evaluated in the ``oracle`` world and in its own world.

    python benchmarks/transfer.py --total-timesteps 150000 --num-envs 16 --resolution 64 --episodes 50
    python benchmarks/transfer.py --worldfm-weights my-model.safetensors   # adds the worldfm world

Training is ``agents/ppo_torch.py`` (same arguments and seed in every world, training scenes);
evaluation is ``agents/evaluate.py`` (the same held-out episodes in every world: episode i is the
first episode of env seed ``eval_seed + i`` on the evaluation scenes, the procedural test split by
default). ``--eval-actions`` says how the policies act there: ``argmax`` (their most likely action,
the default), ``sample`` (drawn from the policy with a generator seeded by ``eval_seed``, as
habitat-baselines evaluates) or both, one row each. The gap columns are a metric minus that of the
oracle-trained policy evaluated in the oracle world with the same eval actions (the reference;
negative is worse). One training seed per world: the standard errors cover only the evaluation
episodes, not the training seed.

Writes ``transfer.csv`` (one row per train world x eval world, with the budget), ``transfer.png``
(grouped bars), ``transfer_episodes.csv`` (per episode), ``train_<world>.log`` and the policies
(``checkpoints/ppo_<world>.pt``) to ``benchmarks/results/transfer/`` and prints a markdown table.
With ``--snapshots K`` each training also saves K evenly spaced snapshots, evaluated in the oracle
world (with the first of ``--eval-actions``): learning curves in ``transfer_curve.csv`` and
``transfer_curve.png``. ``--worlds`` picks the
train worlds (the oracle reference always among them). ``--include-depth`` gives every policy the
renderer's depth as well: exact in the oracle world, the anchor's z-buffer (0 in its holes) in the
anchor world, and in the worldfm world too with an RGB frame model (an RGB-D one fills the holes with its own depth).
``--splat-radius`` sets the splats of the anchor and worldfm worlds (the
oracle world has no anchor). ``--capture`` (full, panorama or walk:K) sets how much of each procedural scene the
anchors' point cloud was captured from, in every world's training and evaluation: it also places the episodes'
starts near a capture camera, so the oracle world takes it too (it renders the true mesh whatever the capture).
``--memory grow`` gives the worldfm world a growing memory (its generated pixels lifted into each env's memory); the
anchor world (which generates nothing; the env refuses it) and the oracle world (the true mesh) stay static. Both
are ``transfer.csv`` columns (memory: the train world's) and are compared by ``--reuse`` and ``--reference-csv``;
so is ``--memory-carve`` (with ``--memory grow``: the worldfm world's memory writes no generated point in the space
the navigation grid lets the agent walk through).
``--reuse`` keeps a world's policy and snapshots already in the output
folder when they were trained with the same arguments, so another world can join an earlier run
without training its oracle reference again; where its checkpoint is gone, ``--reference-csv`` takes the
reference rows from that run's ``transfer.csv`` instead (the oracle world then stays out of ``--worlds``;
the settings the CSV records must equal this run's). ``--compile-model`` runs the frame model through
``torch.compile`` while training and evaluating in the worldfm world (faster steps after about 30 s of
compilation). ``--resume`` continues a world's interrupted training from its resume state
(``checkpoints/ppo_<world>.resume.pt``, written after every PPO update) and keeps that run's snapshots and log
(its wall time is then the sum of the segments' training time), and keeps worlds already finished with the same
arguments, as ``--reuse`` does.

Under ``torchrun --nproc_per_node W`` each training is DD-PPO (``agents/ppo_torch.py`` under torchrun:
``--num-envs`` per rank, so an update takes W times the env steps; the ``world_size`` column records W) and each
evaluation shards the held-out episodes over the ranks (``agents/evaluate.py``); rank 0 prints and writes the files,
which must lie on a filesystem every rank sees (one machine). For the same policy the per-episode rows are those a
single process writes (with argmax actions; sampled actions draw from one generator per rank).

    torchrun --standalone --nproc_per_node 2 benchmarks/transfer.py --device cpu --num-envs 8
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: make `agents` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import evaluate as evaluate_script  # noqa: E402
from agents import ppo_torch  # noqa: E402
from agents._dist import (  # noqa: E402
    barrier,
    broadcast_object,
    dist_info,
    init_distributed,
    shutdown_distributed,
)
from benchmarks.throughput import machine_name  # noqa: E402
from worldfm_env.memory import MEMORY_MODES  # noqa: E402
from worldfm_env.render.anchor_config import splat_radius_arg  # noqa: E402
from worldfm_env.scenes.capture import parse_capture  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "transfer"
REFERENCE_WORLD = "oracle"
METRICS = ("success", "spl", "soft_spl")
EVAL_ACTIONS = ("argmax", "sample")
"""How a policy acts in evaluation: its most likely action, or one drawn from it."""


class _Tee:
    """A text stream writing to the console and to a log file."""

    def __init__(self, console, log) -> None:
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.console.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--total-timesteps", type=int, default=150_000, help="PPO env steps per train world")
    parser.add_argument("--num-envs", type=int, default=16, help="envs stepped together (training and evaluation)")
    ppo = ppo_torch.Args  # the policy's defaults are ppo_torch's
    parser.add_argument("--num-steps", type=int, default=ppo.num_steps, help="PPO rollout length per env")
    parser.add_argument("--update-epochs", type=int, default=ppo.update_epochs, help="PPO epochs per update")
    parser.add_argument(
        "--recurrent",
        default=ppo.recurrent,
        action=argparse.BooleanOptionalAction,
        help="GRU policy; --no-recurrent for the feed-forward one",
    )
    parser.add_argument(
        "--actions", default=ppo.actions, choices=sorted(ppo_torch.ACTION_SETS), help="policy action set (ppo_torch)"
    )
    parser.add_argument(
        "--goal-encoding",
        default=ppo.goal_encoding,
        choices=sorted(ppo_torch.GOAL_ENCODINGS),
        help="how the policies see pointgoal (ppo_torch): log+near, with a finer distance near the goal, or log "
        "(the default of the runs before log+near)",
    )
    parser.add_argument(
        "--precision", default=ppo.precision, choices=ppo_torch.PRECISIONS, help="PPO encoder compute type (ppo_torch)"
    )
    parser.add_argument("--resolution", type=int, default=64, help="observation size (square)")
    parser.add_argument("--max-episode-steps", type=int, default=500, help="truncation, training and evaluation")
    parser.add_argument(
        "--allow-sliding",
        action="store_true",
        help="blocked moves slide along obstacles, in training and evaluation (the env's allow_sliding)",
    )
    parser.add_argument(
        "--include-depth",
        action="store_true",
        help="policies also observe the renderer's depth (exact in the oracle world, the anchor's elsewhere)",
    )
    parser.add_argument(
        "--splat-radius",
        type=splat_radius_arg,
        default=0,
        help="anchor splat half-size of the anchor and worldfm worlds, in training and evaluation: an int in "
        "[0, 8] or auto (the env's splat_radius)",
    )
    parser.add_argument(
        "--capture",
        default="full",
        help="how much of each procedural scene the anchor's point cloud was captured from, in every world's "
        "training and evaluation (the env's capture): full, panorama or walk:K; it also places the episodes' starts "
        "near a capture camera, so every world (the oracle too) uses the same",
    )
    parser.add_argument(
        "--memory",
        default="static",
        choices=MEMORY_MODES,
        help="the worldfm world's memory (the env's memory): grow lifts its generated pixels into a growing per-env "
        "memory; the anchor world generates nothing to grow and the oracle renders the true mesh, so both stay static",
    )
    parser.add_argument(
        "--memory-carve",
        action="store_true",
        help="with --memory grow: the worldfm world's growing memory writes no generated point in the space the "
        "navigation grid lets the agent walk through (the env's memory_carve)",
    )
    parser.add_argument("--episodes", type=int, default=50, help="held-out evaluation episodes per (policy, world)")
    parser.add_argument(
        "--eval-actions",
        nargs="+",
        choices=EVAL_ACTIONS,
        default=["argmax"],
        help="how policies act in evaluation: argmax (most likely action) and/or sample (drawn from the policy, "
        "seeded by --eval-seed); one row per choice, learning curves with the first",
    )
    parser.add_argument("--train-scenes", default="procedural:train", help="training scene spec")
    parser.add_argument("--eval-scenes", default="procedural:test", help="held-out scene spec")
    parser.add_argument(
        "--worldfm-weights",
        default=None,
        help="frame-model checkpoint path or shipped model name (the env's weights=): adds the worldfm world",
    )
    parser.add_argument(
        "--compile-model",
        action="store_true",
        help="torch.compile the frame model while training and evaluating in the worldfm world (about 30 s "
        "of start-up; +25 %% env-steps/s measured at 16 envs on a 2-core CPU)",
    )
    parser.add_argument(
        "--worlds",
        nargs="+",
        choices=(REFERENCE_WORLD, "anchor", "worldfm"),
        default=None,
        help="train worlds (default: oracle, anchor, and worldfm when --worldfm-weights is given); oracle is "
        "the reference and must be among them unless --reference-csv is given",
    )
    parser.add_argument(
        "--reference-csv",
        default=None,
        help="take the oracle reference's rows from an earlier run's transfer.csv (same seed, budget and "
        "held-out episodes) instead of training it; the oracle world then is not in --worlds",
    )
    parser.add_argument(
        "--snapshots",
        type=int,
        default=0,
        help="learning curves: also evaluate this many evenly spaced snapshots of each policy in the oracle world",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a world's policy (and snapshots) already in --out/checkpoints instead of training it again, "
        "when it was trained with the same arguments (e.g. the oracle reference when adding another world); "
        "the worldfm world's frame model is compared by its path only",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a world's interrupted training from checkpoints/ppo_<world>.resume.pt (same arguments) "
        "instead of starting it again, keeping its snapshots; worlds already finished are kept as with --reuse",
    )
    parser.add_argument("--seed", type=int, default=1, help="PPO seed (the same in every world)")
    parser.add_argument("--eval-seed", type=int, default=0, help="env seed of held-out episode 0")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args(argv)
    args.eval_actions = list(dict.fromkeys(args.eval_actions))  # each choice once, in the order given
    return args


def train_worlds(args: argparse.Namespace) -> list[str]:
    """The worlds policies are trained in, the oracle reference first: ``--worlds``, by default oracle,
    anchor, and worldfm when weights are given."""
    if args.worlds:
        return sorted(set(args.worlds), key=(REFERENCE_WORLD, "anchor", "worldfm").index)
    reference = [] if args.reference_csv else [REFERENCE_WORLD]
    return reference + ["anchor"] + (["worldfm"] if args.worldfm_weights else [])


def _check_arguments(args: argparse.Namespace) -> None:
    """Fail before any training on arguments that cannot work (each message names the argument)."""
    if args.worldfm_weights:
        from worldfm_env.model.weights import resolve_weights

        try:  # a checkpoint path or a shipped model's name, as the env's weights=
            resolve_weights(args.worldfm_weights)
        except ValueError as err:
            raise ValueError(f"--worldfm-weights {args.worldfm_weights!r} does not exist: {err}") from None
    worlds = train_worlds(args)
    if args.reference_csv:
        if REFERENCE_WORLD in worlds:
            raise ValueError(
                f"--worlds includes {REFERENCE_WORLD!r} and --reference-csv is given: train the reference or take "
                "it from the CSV, not both"
            )
        reference_rows(args)  # fails now, before any training, on a CSV that cannot stand for this run
    elif REFERENCE_WORLD not in worlds:
        raise ValueError(
            f"--worlds {' '.join(args.worlds)} must include {REFERENCE_WORLD!r}, the reference (or give "
            "--reference-csv)"
        )
    if "worldfm" in worlds and not args.worldfm_weights:
        raise ValueError("--worlds worldfm needs --worldfm-weights (a frame-model checkpoint)")
    try:
        parse_capture(args.capture)
    except ValueError as err:
        raise ValueError(f"--capture: {err}") from None
    if args.memory != "static" and "worldfm" not in worlds:
        raise ValueError(
            f"--memory {args.memory} applies to the worldfm world only (the anchor world generates nothing to grow, "
            "the oracle renders the true mesh); add the worldfm world (--worldfm-weights) or use --memory static"
        )
    if args.memory_carve and args.memory != "grow":
        raise ValueError(
            f"--memory-carve applies to a growing memory only; --memory is {args.memory!r}: add --memory grow"
        )
    if args.snapshots < 0:
        raise ValueError(f"--snapshots must be >= 0 (0: no learning curves), got {args.snapshots}")


CSV_COLUMNS_ADDED_LATER = {
    "goal_encoding": "log",
    "world_size": 1,
    "capture": "full",
    "memory": "static",
    "memory_carve": False,
}
"""``transfer.csv`` columns newer than some results, with the value the runs before them had."""


def _csv_value(text: str) -> object:
    """A ``transfer.csv`` cell as the value the run wrote: bool, int, float or str."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def world_memory(args: argparse.Namespace, world: str) -> str:
    """The env memory of ``world``: ``--memory`` in the worldfm world, static elsewhere (the anchor world generates
    no pixels to grow and the env refuses it a growing memory; the oracle world renders the true mesh, which a
    memory grown from ground truth would not change)."""
    return args.memory if world == "worldfm" else "static"


def world_memory_carve(args: argparse.Namespace, world: str) -> bool:
    """Whether ``world``'s growing memory is carved (the env's memory_carve): ``--memory-carve`` in the worldfm
    world, off elsewhere (their memory is static, see :func:`world_memory`)."""
    return bool(args.memory_carve) and world == "worldfm"


def run_settings(args: argparse.Namespace, world: str) -> dict:
    """The ``transfer.csv`` columns that record how the policy trained in ``world`` learned and was evaluated."""
    return dict(
        policy="gru" if args.recurrent else "feed-forward",
        actions=args.actions,
        goal_encoding=args.goal_encoding,
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        resolution=args.resolution,
        max_episode_steps=args.max_episode_steps,
        allow_sliding=args.allow_sliding,
        include_depth=args.include_depth,
        splat_radius=0 if world == REFERENCE_WORLD else args.splat_radius,  # the oracle world has no anchor
        capture=args.capture,  # every world's (it places the episodes' starts)
        memory=world_memory(args, world),
        memory_carve=world_memory_carve(args, world),
        train_scenes=args.train_scenes,
        eval_scenes=args.eval_scenes,
        seed=args.seed,
        eval_seed=args.eval_seed,
        world_size=dist_info().world_size,  # training processes (torchrun); num_envs is per process
    )


def reference_rows(args: argparse.Namespace) -> list[dict]:
    """The oracle reference's rows (oracle-trained, oracle world), one per ``--eval-actions`` choice, from the
    ``transfer.csv`` of ``--reference-csv``; fails naming the setting where that run differs from this one."""
    path = Path(args.reference_csv)
    if not path.exists():
        raise ValueError(f"--reference-csv {str(path)!r} does not exist")
    with open(path, newline="") as f:
        found = [
            {**CSV_COLUMNS_ADDED_LATER, **{k: _csv_value(v) for k, v in row.items()}}
            for row in csv.DictReader(f)
            if row.get("train_world") == row.get("eval_world") == REFERENCE_WORLD
        ]
    # What the reference learned and how it was judged must be this run's.
    wanted = {
        **run_settings(args, REFERENCE_WORLD),
        "train_env_steps": trained_env_steps(args),
        "episodes": args.episodes,
    }
    rows = []
    for mode in args.eval_actions:
        row = next((r for r in found if r["eval_actions"] == mode), None)
        if row is None:
            raise ValueError(
                f"--reference-csv {str(path)!r} has no oracle-trained row evaluated in the oracle world with "
                f"{mode} actions (--eval-actions)"
            )
        differ = [f"{k} ({row.get(k)!r}, not {wanted[k]!r})" for k in wanted if row.get(k) != wanted[k]]
        if differ:
            raise ValueError(f"--reference-csv {str(path)!r} was run with other " + ", ".join(differ))
        rows.append(row)
    return rows


def snapshot_interval(args: argparse.Namespace) -> int:
    """Env steps between the policy snapshots of the learning curves (0 without ``--snapshots``)."""
    if args.snapshots <= 0:
        return 0
    return max(1, -(-trained_env_steps(args) // args.snapshots))


def trained_env_steps(args: argparse.Namespace) -> int:
    """Env steps ppo_torch takes for the budget: max(1, total // batch) whole rollouts of num_envs x num_steps
    (times the world size under torchrun; a preempted DD-PPO run takes fewer)."""
    batch = args.num_envs * args.num_steps * dist_info().world_size
    return max(1, args.total_timesteps // batch) * batch


LATER_OPTIONS = (
    "allow_sliding",
    "capture",
    "compile_model",
    "goal_encoding",
    "include_depth",
    "memory",
    "memory_carve",
    "preempt_fraction",
    "resume",
    "save_every",
    "splat_radius",
)
"""ppo_torch arguments whose default is what checkpoints saved before the option did (others, such as
precision or recurrent, changed behaviour when they arrived: a checkpoint without them is not reused)."""

UNCOMPARED_OPTIONS = ("compile_model", "preempt_fraction", "resume", "save_path")
"""ppo_torch arguments that change how fast a run goes, where it saves or whether it continued after a stop, not
what it learns: not compared on reuse."""


def reusable(checkpoint: Path, argv: list[str]) -> tuple[dict | None, str]:
    """(the saved policy, "") when the checkpoint can stand for a ppo_torch run with ``argv``, else (None, why):
    it must exist, be a finished run's, and have been trained with the same arguments (the save path and
    ``torch.compile`` aside; the frame model is compared by its path only)."""
    if not checkpoint.exists():
        return None, f"no {checkpoint}"
    saved = torch.load(checkpoint, weights_only=True, map_location="cpu")
    wanted = asdict(ppo_torch.parse_args(ppo_torch.Args, argv))
    had = dict(saved.get("args", {}))
    for key in LATER_OPTIONS:
        had.setdefault(key, getattr(ppo_torch.Args, key))
    missing = sorted(k for k in wanted if k not in had)
    if missing or "wall_s" not in saved:
        return None, f"it predates the arguments {missing or ['wall_s']}"
    differ = sorted(k for k in wanted if k not in UNCOMPARED_OPTIONS and had[k] != wanted[k])
    if differ:
        return None, "trained with other " + ", ".join(f"{k} ({had[k]!r}, not {wanted[k]!r})" for k in differ)
    return saved, ""


def train_policy(world: str, args: argparse.Namespace, out: Path) -> dict:
    """Train PPO in ``world`` (or, with ``--reuse``, take the policy already trained there with the same
    arguments); return the checkpoint path, env steps, wall time and snapshots."""
    checkpoint = out / "checkpoints" / f"ppo_{world}.pt"
    argv = [
        "--exp-name", f"transfer_{world}",
        "--seed", str(args.seed),
        "--device", args.device,
        "--scenes", args.train_scenes,
        "--renderer", world,
        "--resolution", str(args.resolution),
        "--max-episode-steps", str(args.max_episode_steps),
        "--total-timesteps", str(args.total_timesteps),
        "--num-envs", str(args.num_envs),
        "--num-steps", str(args.num_steps),
        "--update-epochs", str(args.update_epochs),
        "--recurrent" if args.recurrent else "--no-recurrent",
        "--actions", args.actions,
        "--goal-encoding", args.goal_encoding,
        "--precision", args.precision,
        "--allow-sliding" if args.allow_sliding else "--no-allow-sliding",
        "--include-depth" if args.include_depth else "--no-include-depth",
        "--splat-radius", str(args.splat_radius if world != REFERENCE_WORLD else 0),  # the oracle has no anchor
        "--capture", args.capture,
        "--memory", world_memory(args, world),
        "--memory-carve" if world_memory_carve(args, world) else "--no-memory-carve",
        "--save-every", str(snapshot_interval(args)),
        "--save-path", os.path.relpath(checkpoint),  # relative: the checkpoint and log store it
    ]  # fmt: skip
    if world == "worldfm":
        argv += ["--weights", args.worldfm_weights]
        argv += ["--compile-model"] if args.compile_model else []
    argv += ["--resume"] if args.resume else []
    # A finished world is kept under --resume too: only the interrupted one goes on.
    info = dist_info()
    resuming = args.resume and ppo_torch.resume_path(checkpoint).exists()
    saved, why_not = reusable(checkpoint, argv) if args.reuse or args.resume else (None, "--reuse not given")
    # Under torchrun rank 0's reading of the files decides for every rank (they train together or not at all).
    saved, why_not, resuming = broadcast_object((saved, why_not, resuming), info)
    if saved is not None:
        wall = saved["wall_s"]
        print(f"reusing {checkpoint} (trained in {world} with the same arguments)", flush=True)
    else:
        if args.reuse or args.resume:
            print(f"training in {world}: cannot reuse its policy: {why_not}", flush=True)
        if not resuming and info.is_main:
            for stale in checkpoint.parent.glob(f"{checkpoint.stem}_step*{checkpoint.suffix}"):
                stale.unlink()  # snapshots of an earlier run would join this run's curve
        barrier(info)
        log_path = out / f"train_{world}.log" if info.is_main else Path(os.devnull)
        with open(log_path, "a" if resuming else "w") as log:
            console, sys.stdout = sys.stdout, _Tee(sys.stdout, log)
            try:
                start = time.perf_counter()
                ppo_torch.main(argv)
                wall = time.perf_counter() - start
            finally:
                sys.stdout = console
        if resuming:  # the segments' training time, which the checkpoint adds up
            wall = torch.load(checkpoint, weights_only=True, map_location="cpu")["wall_s"]
    env_steps = trained_env_steps(args)
    snapshots = []
    for path in checkpoint.parent.glob(f"{checkpoint.stem}_step*{checkpoint.suffix}"):
        snapshot = torch.load(path, weights_only=True, map_location="cpu")
        snapshots.append({"env_steps": snapshot["global_step"], "wall_s": snapshot["wall_s"], "checkpoint": path})
    snapshots.sort(key=lambda snapshot: snapshot["env_steps"])
    return {
        "checkpoint": checkpoint,
        "env_steps": env_steps,
        "wall_s": wall,
        "snapshots": snapshots,
        "reused": saved is not None,
        "resumed": saved is None and resuming,
    }


def evaluate_policy(
    checkpoint: Path, world: str, args: argparse.Namespace, eval_actions: str = "argmax"
) -> tuple[evaluate_script.EvalResult, float]:
    """Evaluate a PPO checkpoint on the held-out episodes in ``world``, taking the most likely action
    (``eval_actions="argmax"``) or sampling (``"sample"``, seeded by ``--eval-seed``); (result, wall seconds)."""
    if eval_actions not in EVAL_ACTIONS:
        raise ValueError(f"eval_actions={eval_actions!r} is not valid; use one of {list(EVAL_ACTIONS)}")
    eval_args = evaluate_script.Args(
        agent=f"ppo:{checkpoint}",
        episodes=args.episodes,
        seed=args.eval_seed,
        num_envs=args.num_envs,
        scenes=args.eval_scenes,
        renderer=world,
        resolution=args.resolution,
        device=args.device,
        max_episode_steps=args.max_episode_steps,
        allow_sliding=args.allow_sliding,
        splat_radius=str(args.splat_radius),
        deterministic=eval_actions == "argmax",
        output_dir=None,
        weights=args.worldfm_weights if world == "worldfm" else None,
        compile_model=args.compile_model and world == "worldfm",
        capture=args.capture,
        memory=world_memory(args, world),
        memory_carve=world_memory_carve(args, world),
    )
    start = time.perf_counter()
    result = evaluate_script.evaluate(eval_args)
    return result, time.perf_counter() - start


def summarise(result: evaluate_script.EvalResult) -> dict:
    """Mean and standard error of each metric over an evaluation's episodes, and the episode count."""
    metrics = {}
    for metric in METRICS:
        metrics[metric] = round(result.summary[metric], 4)
        metrics[f"{metric}_se"] = round(standard_error([e[metric] for e in result.episodes]), 4)
    metrics["episodes"] = len(result.episodes)
    return metrics


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    """Learning curves: one panel per metric against env steps, one line per train world (± s.e. band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.8), sharey=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, world in enumerate(dict.fromkeys(r["train_world"] for r in curve)):
            rows = [r for r in curve if r["train_world"] == world]
            xs = [r["env_steps"] for r in rows]
            ys = [r[metric] for r in rows]
            low = [r[metric] - r[f"{metric}_se"] for r in rows]
            high = [r[metric] + r[f"{metric}_se"] for r in rows]
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=f"trained in {world}")
            ax.fill_between(xs, low, high, color=f"C{i}", alpha=0.2)
        ax.set_title(f"{metric} (oracle world)")
        ax.set_xlabel("training env steps")
        ax.set_ylim(0, 1.0)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("mean over held-out episodes")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(textwrap.fill(title, 150), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write dict rows to ``path``; the columns are every key in first-seen order."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def standard_error(values: list[float]) -> float:
    """Standard error of the mean (population std / sqrt(n)); 0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / n / n)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Grouped bars: one panel per metric, one group per train world, one bar per (eval world, eval actions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(dict.fromkeys(r["train_world"] for r in rows))
    modes = list(dict.fromkeys(r["eval_actions"] for r in rows))
    places = {"oracle world": lambda r: r["eval_world"] == REFERENCE_WORLD}
    places["own (training) world"] = lambda r: r["eval_world"] == r["train_world"] != REFERENCE_WORLD
    series = [(place, mode) for mode in modes for place in places]
    width = 0.8 / len(series)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4.2), sharey=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        for s, (place, mode) in enumerate(series):
            xs, ys, errs = [], [], []
            for g, world in enumerate(worlds):
                for r in rows:
                    if r["train_world"] == world and r["eval_actions"] == mode and places[place](r):
                        xs.append(g + (s - (len(series) - 1) / 2) * width)
                        ys.append(r[metric])
                        errs.append(r[f"{metric}_se"])
            label = f"evaluated in {place}" + (f", {mode} actions" if len(modes) > 1 else "")
            hatch = "//" if modes.index(mode) else None
            bars = ax.bar(xs, ys, width, yerr=errs, capsize=3, label=label, color=f"C{s % 2}", hatch=hatch)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        for m, mode in enumerate(modes):  # the reference of each eval-actions choice
            reference = next(
                r[metric]
                for r in rows
                if r["train_world"] == r["eval_world"] == REFERENCE_WORLD and r["eval_actions"] == mode
            )
            ax.axhline(reference, color="gray", linestyle=("--", ":")[m % 2], linewidth=1)
        ax.set_xticks(range(len(worlds)), [f"trained in\n{w}" for w in worlds])
        ax.set_title(metric)
        ax.set_ylim(0, 1.05)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("mean over held-out episodes (± s.e.)")
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: bars reach the top
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(series), 4), frameon=False)
    fig.suptitle(textwrap.fill(title, 150), fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    """Train in every world, evaluate, write CSVs + plot, print the table; return the summary rows."""
    args = parse_args(argv)
    info = init_distributed(args.device)  # under torchrun: DD-PPO training, sharded evaluation
    if not info.is_main:  # rank 0 prints; the others run the same steps quietly
        with open(os.devnull, "w") as quiet:
            console, sys.stdout = sys.stdout, quiet
            try:
                return _main(args, info)
            finally:
                sys.stdout = console
    return _main(args, info)


def _main(args: argparse.Namespace, info) -> list[dict]:
    """:func:`main` after parsing: on every rank under torchrun, files written by rank 0."""
    _check_arguments(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    machine = machine_name(device)
    start = time.perf_counter()

    results, episode_rows = [], []  # results: (train world, eval world, metrics, budget)
    curve = []  # learning curves: oracle-world metrics of each world's snapshots and final policy
    reused = []  # worlds whose policy an earlier run trained (--reuse): this run's wall time lacks their training
    resumed = []  # worlds whose training an earlier run began (--resume): this run's wall time lacks that part
    if args.reference_csv:  # the reference as an earlier run evaluated it
        reused.append(REFERENCE_WORLD)
        metric_keys = [*(k for m in METRICS for k in (m, f"{m}_se")), "episodes"]
        not_budget = {*metric_keys, *(f"gap_{m}" for m in METRICS), "train_world", "eval_world", "eval_actions"}
        for row in reference_rows(args):
            metrics = {k: row[k] for k in metric_keys}
            budget = {k: v for k, v in row.items() if k not in not_budget}
            results.append((REFERENCE_WORLD, REFERENCE_WORLD, row["eval_actions"], metrics, budget))
        print(f"reference: the oracle-trained policy's rows of {args.reference_csv}", flush=True)
    for train_world in train_worlds(args):
        trained = train_policy(train_world, args, out)
        if trained["reused"]:
            reused.append(train_world)
        if trained["resumed"]:
            resumed.append(train_world)
        print(
            f"trained in {train_world}: {trained['env_steps']} env steps in {trained['wall_s']:.0f} s "
            f"({trained['env_steps'] / trained['wall_s']:,.0f} env-steps/s)",
            flush=True,
        )
        evaluations = [(w, mode) for w in dict.fromkeys([REFERENCE_WORLD, train_world]) for mode in args.eval_actions]
        for eval_world, eval_actions in evaluations:
            result, eval_wall = evaluate_policy(trained["checkpoint"], eval_world, args, eval_actions)
            episodes, summary = result.episodes, result.summary
            metrics = summarise(result)
            budget = dict(
                mean_steps=round(summary["steps"], 1),
                distance_to_goal=round(summary["distance_to_goal"], 3),
                collisions=round(summary["collisions"], 2),
                train_env_steps=trained["env_steps"],
                train_wall_s=round(trained["wall_s"], 1),
                train_env_steps_per_s=round(trained["env_steps"] / trained["wall_s"], 1),
                eval_wall_s=round(eval_wall, 1),
                **run_settings(args, train_world),
                device=device,
                machine=machine,
            )
            results.append((train_world, eval_world, eval_actions, metrics, budget))
            episode_rows += [
                {"train_world": train_world, "eval_world": eval_world, "eval_actions": eval_actions, **e}
                for e in episodes
            ]
            print(
                f"  evaluated in {eval_world} ({eval_actions} actions): success={metrics['success']:.3f} "
                f"spl={metrics['spl']:.3f} soft_spl={metrics['soft_spl']:.3f} "
                f"({len(episodes)} episodes, {eval_wall:.0f} s)",
                flush=True,
            )
            if eval_world == REFERENCE_WORLD and eval_actions == args.eval_actions[0]:
                final = {"env_steps": trained["env_steps"], "wall_s": trained["wall_s"], "eval_actions": eval_actions}
                curve.append({"train_world": train_world, **final, **metrics})
        for snapshot in trained["snapshots"]:  # learning curve: earlier policies, in the oracle world
            if snapshot["env_steps"] >= trained["env_steps"]:
                continue  # the final policy, evaluated above
            result, _ = evaluate_policy(snapshot["checkpoint"], REFERENCE_WORLD, args, args.eval_actions[0])
            metrics = summarise(result)
            steps, wall = snapshot["env_steps"], snapshot["wall_s"]
            point = {"train_world": train_world, "env_steps": steps, "wall_s": wall}
            curve.append({**point, "eval_actions": args.eval_actions[0], **metrics})
            print(
                f"  snapshot at {steps:,} env steps ({wall:.0f} s), oracle world: success={metrics['success']:.3f} "
                f"spl={metrics['spl']:.3f} soft_spl={metrics['soft_spl']:.3f}",
                flush=True,
            )

    # The reference of each eval-actions choice: the oracle-trained policy in the oracle world, acting alike.
    reference = {a: m for t, e, a, m, _ in results if t == e == REFERENCE_WORLD}
    rows = [
        {
            "train_world": train_world,
            "eval_world": eval_world,
            "eval_actions": eval_actions,
            **metrics,
            **{f"gap_{m}": round(metrics[m] - reference[eval_actions][m], 4) for m in METRICS},
            **budget,
        }
        for train_world, eval_world, eval_actions, metrics, budget in results
    ]
    total_wall = time.perf_counter() - start

    if not info.is_main:  # the same rows on every rank; rank 0 writes them
        return rows
    write_csv(out / "transfer.csv", rows)
    write_csv(out / "transfer_episodes.csv", episode_rows)

    which = f"{' and '.join(reused)} {'policy' if len(reused) == 1 else 'policies'}"
    reuse_note = f" (the {which} trained by an earlier run, not timed here)" if reused else ""
    if resumed:
        reuse_note += f" (the {' and '.join(resumed)} training resumed: its earlier segments are not in this total)"
    budget = (
        f"PPO ({rows[0]['policy']}, {args.actions} actions{', rgb+depth' if args.include_depth else ''}"
        f"{f', splat_radius {args.splat_radius}' if args.splat_radius else ''}"
        f"{f', capture {args.capture}' if args.capture != 'full' else ''}"
        f"{f', worldfm memory {args.memory}' if args.memory != 'static' else ''}"
        f"{' (carved)' if args.memory_carve else ''}) "
        f"{rows[0]['train_env_steps']:,} env steps per world, "
        f"num_envs={args.num_envs}, "
        f"{args.resolution}x{args.resolution}, seed {args.seed}; {args.episodes} held-out episodes "
        f"({args.eval_scenes}, {' and '.join(args.eval_actions)} actions); {machine} ({device}); "
        f"{total_wall / 60:.1f} min"
        f"{reuse_note}"
    )
    plot(rows, out / "transfer.png", f"PointNav transfer: {budget}")

    print()
    print("| train world | eval world | actions | success | SPL | SoftSPL | episodes | Δ success | Δ SPL | Δ SoftSPL |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['train_world']} | {r['eval_world']} | {r['eval_actions']} "
            f"| {r['success']:.3f} ± {r['success_se']:.3f} "
            f"| {r['spl']:.3f} ± {r['spl_se']:.3f} | {r['soft_spl']:.3f} ± {r['soft_spl_se']:.3f} "
            f"| {r['episodes']} | {r['gap_success']:+.3f} | {r['gap_spl']:+.3f} | {r['gap_soft_spl']:+.3f} |"
        )
    print()
    print("Δ = minus the oracle-trained policy in the oracle world (same actions); ± = standard error over episodes.")
    print(f"Budget: {budget}.")
    for world in train_worlds(args):
        r = next(r for r in rows if r["train_world"] == world)
        print(f"  train {world}: {r['train_wall_s']:.0f} s, {r['train_env_steps_per_s']:,.0f} env-steps/s")
    print(f"wrote {out / 'transfer.csv'}, {out / 'transfer_episodes.csv'} and {out / 'transfer.png'}")
    if args.snapshots:
        curve.sort(key=lambda r: (train_worlds(args).index(r["train_world"]), r["env_steps"]))
        for r in curve:
            r.update(wall_s=round(r["wall_s"], 1), device=device, machine=machine)
        write_csv(out / "transfer_curve.csv", curve)
        where = f"in the oracle world ({args.eval_actions[0]} actions)"
        plot_curve(curve, out / "transfer_curve.png", f"Learning curves, evaluated {where}: {budget}")
        print()
        print("| train world | env steps | wall s | success (oracle world) | SPL | SoftSPL |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in curve:
            print(
                f"| {r['train_world']} | {r['env_steps']:,} | {r['wall_s']:.0f} | "
                f"{r['success']:.3f} ± {r['success_se']:.3f} | {r['spl']:.3f} | {r['soft_spl']:.3f} |"
            )
        print(f"wrote {out / 'transfer_curve.csv'} and {out / 'transfer_curve.png'}")
    return rows


if __name__ == "__main__":
    main()
    shutdown_distributed()  # under torchrun: leave the process group (after a failure torchrun stops the ranks)
