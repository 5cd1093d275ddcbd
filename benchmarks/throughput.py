"""Environment throughput: env-steps/s against num_envs, per renderer and device, and the native
vector env against ``gymnasium.vector.SyncVectorEnv`` over single envs, measured in one run.

    python benchmarks/throughput.py                      # the full grid on every device present
    python benchmarks/throughput.py --num-envs 16 64 --renderers anchor --steps 20
    python benchmarks/throughput.py --renderers anchor --splat-radius auto --out runs/throughput-auto
    python benchmarks/throughput.py --renderers worldfm --weights worldfm-srgbd-auto-64x64 --splat-radius auto \
        --depth-bounds none navigation --num-envs 16 --sync-num-envs   # the cost of the layout depth bound

Writes ``benchmarks/results/throughput.csv`` and ``throughput.png`` and prints a table. Timing:
random actions (never STOP, so episodes end by truncation at 500 steps), a few warm-up steps,
then the median of ``--repeats`` timed blocks of ``--steps`` steps; CUDA is synchronised before
each clock read. Resets caused by autoreset are part of the measured steps.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import worldfm_env  # noqa: F401  (registers the ids)
from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.render.anchor_config import splat_radius_arg
from worldfm_env.renderers.pipeline import DEPTH_BOUNDS

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_rate(block, steps: int, repeats: int, num_envs: int) -> float:
    """Median env-steps/s of ``repeats`` timed calls of ``block(steps)`` after a 3-step warm-up."""
    block(3)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(steps)
        rates.append(steps * num_envs / (time.perf_counter() - start))
    return statistics.median(rates)


def time_native(num_envs: int, steps: int, repeats: int, **env_kwargs) -> float:
    """Median env-steps/s of the native vector env built with ``env_kwargs``."""
    env = WorldFMVectorEnv(num_envs=num_envs, **env_kwargs)
    gen = torch.Generator(device=env.device).manual_seed(0)
    env.reset(seed=0)

    def block(n):
        for _ in range(n):
            env.step(torch.randint(1, 6, (num_envs,), generator=gen, device=env.device))
        _sync(env.device)

    rate = _median_rate(block, steps, repeats, num_envs)
    env.close()
    return rate


def time_sync(num_envs: int, steps: int, repeats: int, **env_kwargs) -> float:
    """Median env-steps/s of a SyncVectorEnv over ``num_envs`` single envs made with ``env_kwargs`` (numpy at
    every boundary)."""
    env = gym.vector.SyncVectorEnv([lambda: gym.make("WorldFM/PointNav-v0", **env_kwargs) for _ in range(num_envs)])
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def block(n):
        for _ in range(n):
            env.step(rng.integers(1, 6, size=num_envs))

    rate = _median_rate(block, steps, repeats, num_envs)
    env.close()
    return rate


def machine_name(device: str) -> str:
    """A short description of the machine behind ``device``."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> None:
    """Run the grid, write CSV + plot, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument(
        "--sync-num-envs", type=int, nargs="*", default=[1, 4, 16, 64], help="none given: no SyncVectorEnv rows"
    )
    parser.add_argument("--renderers", nargs="+", default=["anchor", "oracle"])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu and cuda when present")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenes", default="procedural:train")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--weights", default=None, help="checkpoint for renderer worldfm (default: random 's')")
    parser.add_argument(
        "--splat-radius", type=splat_radius_arg, default=0, help="the env's splat_radius: an int in [0, 8] or auto"
    )
    parser.add_argument(
        "--depth-bounds",
        nargs="+",
        default=["none"],
        choices=DEPTH_BOUNDS,
        help="the worldfm renderer's depth_bound settings, each timed in the same run (other renderers: none)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if "worldfm" in args.renderers and args.weights is None:
        # Compute only: an untrained model of the shipped size.
        import tempfile

        from worldfm_env.model import build_model, save_checkpoint

        args.weights = str(Path(tempfile.mkdtemp()) / "random-s.safetensors")
        save_checkpoint(build_model("s", input_size=args.resolution), args.weights)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []

    def record(kind: str, device: str, renderer: str, n: int, rate: float, depth_bound: str = "none") -> None:
        rows.append(
            dict(
                kind=kind,
                device=device,
                machine=machine_name(device),
                renderer=renderer,
                depth_bound=depth_bound,
                num_envs=n,
                resolution=args.resolution,
                splat_radius=args.splat_radius,
                env_steps_per_s=round(rate, 1),
            )
        )
        label = renderer if depth_bound == "none" else f"{renderer}+{depth_bound}"
        print(f"{kind:6s} {device:5s} {label:18s} num_envs={n:5d}: {rate:12,.0f} env-steps/s", flush=True)

    common = dict(scenes=args.scenes, resolution=args.resolution, splat_radius=args.splat_radius)
    for device in devices:
        for renderer in args.renderers:
            for bound in args.depth_bounds if renderer == "worldfm" else ["none"]:
                extra = {"weights": args.weights, "depth_bound": bound} if renderer == "worldfm" else {}
                for n in args.num_envs:
                    rate = time_native(n, args.steps, args.repeats, renderer=renderer, device=device, **common, **extra)
                    record("native", device, renderer, n, rate, bound)
        for n in args.sync_num_envs:
            rate = time_sync(n, max(5, args.steps // 2), args.repeats, renderer="anchor", device=device, **common)
            record("sync", device, "anchor", n, rate)

    with open(out / "throughput.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = sorted({(r["kind"], r["device"], r["renderer"], r["depth_bound"]) for r in rows})
    for kind, device, renderer, bound in series:
        pts = [
            (r["num_envs"], r["env_steps_per_s"])
            for r in rows
            if (r["kind"], r["device"], r["renderer"], r["depth_bound"]) == (kind, device, renderer, bound)
        ]
        xs, ys = zip(*sorted(pts), strict=True)
        style = "-o" if kind == "native" else "--s"
        label = renderer if bound == "none" else f"{renderer}, depth_bound={bound}"
        ax.plot(xs, ys, style, label=f"{kind} {label} ({device})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("num_envs")
    ax.set_ylabel("env-steps / s")
    ax.set_title(f"worldfm-env throughput, {args.resolution}x{args.resolution}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=120)

    print()
    print(f"| kind | device | renderer | depth_bound | num_envs | env-steps/s |  ({args.resolution}x{args.resolution})")
    print("|---|---|---|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['machine']} | {r['renderer']} | {r['depth_bound']} | {r['num_envs']} "
            f"| {r['env_steps_per_s']:,.0f} |"
        )
    native64 = [r for r in rows if r["kind"] == "native" and r["renderer"] == "anchor" and r["num_envs"] == 64]
    sync64 = [r for r in rows if r["kind"] == "sync" and r["num_envs"] == 64]
    for nat in native64:
        for syn in sync64:
            if syn["device"] == nat["device"]:
                ratio = nat["env_steps_per_s"] / syn["env_steps_per_s"]
                print(f"native / SyncVectorEnv at 64 envs ({nat['device']}): {ratio:.1f}x")
    print(f"wrote {out / 'throughput.csv'} and {out / 'throughput.png'}")


if __name__ == "__main__":
    main()
