"""What in the generated world costs an agent: one policy in the true world, the model world, and the model world with
its colour or its depth swapped for the truth's.

    python benchmarks/world_swap.py --checkpoint runs/ppo_oracle.pt --weights worldfm-srgbd-layout-64x64 \\
        --splat-radius auto --episodes 100 --eval-actions sample

A policy trained in the true world can score far lower in the frame model's world (the sparse-world transfer study's
oracle-trained policy: 0.69 success in the truth, 0.34 in the world of ``worldfm-srgbd-layout-64x64``). A policy that
sees rgb and depth (``include_depth``) reads two generated things: the frame's colour, and its depth (the anchor's
where a point landed, the model's elsewhere). This benchmark evaluates one ``agents/ppo_torch.py`` checkpoint
(``agents/evaluate.py``, the same held-out episodes in every world) in four worlds:

* ``truth``: the ``oracle`` renderer (the true mesh, ray cast);
* ``model``: the ``worldfm`` renderer with ``--weights`` (and ``--memory``, ``grow`` by default);
* ``model rgb + true depth``: the model world, its depth observation replaced by the ray-cast truth's;
* ``true rgb + model depth``: the model world, its colour replaced by the truth's.

and, asked for by ``--worlds``, five that split the depth's share and two that take it from the navigation layout:

* ``model rgb + true depth at captured points``: the true depth only where a point of the scene's capture landed
  (the anchor's own depth there, see-through points included);
* ``model rgb + true depth where generated``: the true depth only in the pixels the model made, now (the anchor's
  holes) or earlier (points of the growing memory);
* ``model rgb + true depth in the holes`` and ``... at grown points``: the last split in two, the frame model's depth
  of this step and the depth it generated at earlier steps (the growing memory's points);
* ``model, the layout's depth in the holes``: no truth taken, the holes' depth replaced by the navigation layout's
  (needs a frame model that reads the layout, e.g. ``worldfm-srgbd-layout-64x64``);
* ``model, depth capped at the layout``: the model world with the env's ``depth_bound="navigation"`` (generated depth
  no farther than the first obstacle of the navigation layout along the ray).

In a swapped world the frame model still renders every step (its frames condition the next through the growing
memory), and what the memory lifts is the swapped frame: the world the policy sees is consistent with itself. Where a
swap brings most of the lost success back, that half of the observation is what the generated world gets wrong for
the agent. Writes ``world_swap.csv`` (one row per world: success, SPL, soft SPL with standard errors, mean steps,
collisions, wall time) and ``world_swap.png`` (success and SPL per world) to ``benchmarks/results/world-swap/``,
records the machine, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import evaluate as evaluate_script  # noqa: E402
from benchmarks.policy_eval import add_held_out_arguments, evaluate_snapshot  # noqa: E402
from benchmarks.throughput import machine_name  # noqa: E402
from benchmarks.transfer import EVAL_ACTIONS  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402
from worldfm_env.memory import MEMORY_MODES  # noqa: E402
from worldfm_env.renderers.base import RenderOutput, RenderRequest  # noqa: E402
from worldfm_env.renderers.oracle import OracleRenderer  # noqa: E402

__all__ = [
    "DEFAULT_WORLDS",
    "SWAPS",
    "WORLDS",
    "SwappedBackend",
    "evaluate_world",
    "main",
    "parse_args",
    "swapped_env_class",
]

RESULTS = ROOT / "benchmarks" / "results" / "world-swap"
SWAPS = ("depth", "rgb", "depth-captured", "depth-generated", "depth-holes", "depth-grown", "layout-holes")
"""What a swapped model world takes from the truth: all its depth, its colour, or its depth in some pixels: where a
captured point of the scene landed, where the model generated (the next two together), in the anchor's holes (the
frame model's depth of this step), or where a point of the growing memory landed (depth generated at earlier steps);
``layout-holes`` takes no truth: the holes' depth is the navigation layout's (``RenderRequest.layout_depth``) where
the pixel's ray meets the layout, the model's elsewhere."""
WORLDS = {
    "truth": ("oracle", None, "none"),
    "model": ("worldfm", None, "none"),
    "model rgb + true depth": ("worldfm", "depth", "none"),
    "true rgb + model depth": ("worldfm", "rgb", "none"),
    "model rgb + true depth at captured points": ("worldfm", "depth-captured", "none"),
    "model rgb + true depth where generated": ("worldfm", "depth-generated", "none"),
    "model rgb + true depth in the holes": ("worldfm", "depth-holes", "none"),
    "model rgb + true depth at grown points": ("worldfm", "depth-grown", "none"),
    "model, depth capped at the layout": ("worldfm", None, "navigation"),
    "model, the layout's depth in the holes": ("worldfm", "layout-holes", "none"),
}
"""World name -> (renderer, swap, the env's ``depth_bound``)."""
DEFAULT_WORLDS = ("truth", "model", "model rgb + true depth", "true rgb + model depth")
"""The worlds evaluated unless ``--worlds`` says otherwise."""


class SwappedBackend:
    """A renderer backend whose frames take their colour (``swap="rgb"``) or their depth (``swap="depth"``) from the
    ray-cast truth, and the other half from ``inner`` (which still renders every call). Every other attribute is the
    inner backend's, so the observation pipeline treats it as the inner backend."""

    def __init__(self, inner, oracle: OracleRenderer, swap: str) -> None:
        if swap not in SWAPS:
            raise ValueError(f"swap={swap!r} is not valid; choose one of {list(SWAPS)}")
        self.inner, self.oracle, self.swap = inner, oracle, swap

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (e.g. while unpickling): no delegation loop
            raise AttributeError(name)
        return getattr(self.inner, name)

    def render(self, request: RenderRequest) -> RenderOutput:
        """The inner backend's frame with one half (or the depth of some pixels) replaced by the truth's at the same
        poses."""
        frame = self.inner.render(request)
        anchor = request.anchor
        if self.swap == "layout-holes":  # reads no truth: no ray cast
            if request.layout_depth is None:
                raise ValueError("swap='layout-holes' needs the navigation layout's depth: a frame model that reads it")
            layout = request.layout_depth
            return RenderOutput(frame.rgb, torch.where(~anchor.mask & (layout > 0), layout, frame.depth))
        truth = self.oracle.render(request)
        if self.swap == "rgb":
            return RenderOutput(truth.rgb, frame.depth)
        if self.swap == "depth":
            return RenderOutput(frame.rgb, truth.depth)
        grown = anchor.grown if anchor.grown is not None else torch.zeros_like(anchor.mask)
        take = {
            "depth-captured": anchor.mask & ~grown,
            "depth-generated": ~anchor.mask | grown,
            "depth-holes": ~anchor.mask,
            "depth-grown": grown,
        }[self.swap]
        return RenderOutput(frame.rgb, torch.where(take, truth.depth, frame.depth))


def swapped_env_class(swap: str | None, depth_bound: str | None = None, **env_options) -> type:
    """A :class:`WorldFMVectorEnv` subclass whose observation pipeline renders through a :class:`SwappedBackend`
    (``swap=None``: through its own backend), with the env's ``depth_bound`` set to ``depth_bound`` when given and
    ``env_options`` (e.g. ``memory_carve=True``) on top of the env's arguments."""
    if swap is not None and swap not in SWAPS:
        raise ValueError(f"swap={swap!r} is not valid; choose one of {list(SWAPS)} or None")

    class SwappedEnv(WorldFMVectorEnv):
        def __init__(self, *args, **kwargs) -> None:
            if depth_bound is not None:
                kwargs["depth_bound"] = depth_bound
            kwargs.update(env_options)
            super().__init__(*args, **kwargs)
            if swap is not None:
                pipeline = self.pipeline
                oracle = OracleRenderer(pipeline.pool, self.num_envs, self.height, self.width)
                pipeline.backend = SwappedBackend(pipeline.backend, oracle, swap)

    SwappedEnv.__name__ = f"SwappedEnv_{swap}_{depth_bound}"
    return SwappedEnv


def evaluate_world(world: str, args: argparse.Namespace) -> dict:
    """Evaluate ``args.checkpoint`` in ``world`` (a key of :data:`WORLDS`); its summary row."""
    if world not in WORLDS:
        raise ValueError(f"world={world!r} is not valid; choose one of {list(WORLDS)}")
    renderer, swap, depth_bound = WORLDS[world]
    memory = args.memory if renderer == "worldfm" else "static"
    carve = args.memory_carve and renderer == "worldfm" and memory == "grow"
    options = {"memory_carve": True} if carve else {}
    patch = (
        contextlib.nullcontext()
        if swap is None and depth_bound == "none" and not options
        else _patched(evaluate_script, "WorldFMVectorEnv", swapped_env_class(swap, depth_bound, **options))
    )
    with patch:  # the same evaluation as the policy-evaluation benchmark's, in this world
        metrics = evaluate_snapshot(Path(args.checkpoint), renderer, memory, args)
    return {
        "world": world,
        "renderer": renderer,
        "swap": swap or "",
        "depth_bound": depth_bound,
        "memory_carve": carve,
        **metrics,
    }


@contextlib.contextmanager
def _patched(module, name: str, value):
    # agents/evaluate.py builds its env by this module-level name; the swap replaces it for one evaluation only.
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Success and SPL per world, with standard-error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7.5, 1.5 * len(rows) + 1.5), 4.6))
    x = range(len(rows))
    for k, (metric, colour) in enumerate((("success", "C0"), ("spl", "C1"))):
        ax.bar(
            [i + (k - 0.5) * 0.38 for i in x],
            [r[metric] for r in rows],
            0.38,
            yerr=[r[f"{metric}_se"] for r in rows],
            color=colour,
            label=metric,
        )
    ax.set_xticks(list(x), [r["world"] for r in rows], fontsize=7, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| world | success | SPL | soft SPL | mean steps | collisions |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['world']} | {r['success']:.3f} ± {r['success_se']:.3f} | {r['spl']:.3f} | {r['soft_spl']:.3f} | "
            f"{r['mean_steps']:.1f} | {r['collisions']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="world_swap", description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="an agents/ppo_torch.py checkpoint (.pt)")
    parser.add_argument("--weights", default=None, help="frame model of the model worlds (path or shipped name)")
    parser.add_argument(
        "--worlds", nargs="+", default=list(DEFAULT_WORLDS), choices=list(WORLDS), help="worlds to evaluate"
    )
    add_held_out_arguments(parser, 100, "held-out episodes per world")
    parser.add_argument(
        "--capture", default=None, help="capture of every world (full, panorama or walk:K; default: the policy's)"
    )
    parser.add_argument("--memory", default="grow", choices=MEMORY_MODES, help="memory of the model worlds")
    parser.add_argument(
        "--memory-carve", action="store_true", help="the env's memory_carve in the model worlds with a growing memory"
    )
    parser.add_argument("--eval-actions", default="sample", choices=EVAL_ACTIONS, help="argmax or sample")
    parser.add_argument(
        "--splat-radius", default=None, help="anchor splats of the model worlds (default: as the policy was trained)"
    )
    parser.add_argument("--compile-model", action="store_true", help="torch.compile the frame model")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args(argv)
    for name in ("episodes", "num_envs", "max_episode_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint} is not a file")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark from the command line; returns the CSV rows."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for world in args.worlds:
        row = evaluate_world(world, args)
        row.update(
            checkpoint=Path(args.checkpoint).name,
            weights=Path(str(args.weights)).stem if args.weights else "",
            episodes=args.episodes,
            eval_actions=args.eval_actions,
            eval_seed=args.eval_seed,
            capture=args.capture or "",
            memory=args.memory,
            device=device,
            machine=machine_name(device),
        )
        rows.append(row)
        print(f"{world}: success {row['success']:.3f}, {row['eval_wall_s']:.0f} s", flush=True)
    with open(out / "world_swap.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "world_swap.png", f"{Path(args.checkpoint).name}, {args.episodes} episodes, {args.eval_actions}")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
