"""How far the navigation layout's depth is from the true depth: obstacle cores against footprints, with and without
the ceiling and the obstacles' heights.

    python benchmarks/layout_accuracy.py                 # 8 held-out procedural scenes, 64 views each, 64x64
    python benchmarks/layout_accuracy.py --quick         # 1 scene, 8 views, 32x32 (a smoke run)

The layout (:class:`worldfm_env.render.layout.LayoutDepth`) stands a scene's navigation-grid obstacles up as columns
(floor to ceiling, or as high as the grid records); the env caps generated depth with it
(``depth_bound="navigation"``) and layout frame models read it. This benchmark casts it from cameras at the eye
height, standing on random free cells of held-out procedural scenes and looking in random directions (level, and
pitched down by ``--pitch-deg``), and compares it per pixel with the depth of the scene's mesh, for each layout of
:data:`LAYOUTS`: the ``obstacles`` kind (:data:`worldfm_env.scenes.navigation.LAYOUT_OBSTACLES_VALUES`:
``footprints``, the obstacles' own cells, which the grid records, or ``cores``, the grid's dilated obstacles eroded
back, which lose walls one cell thick) and whether upward rays stop at the ceiling plane, and whether obstacles stand
only as high as the grid records (furniture) or floor to ceiling (each kind's own layout: the footprints' has the
ceiling and the heights, the cores' neither; the footprints without them show what each adds).

Rows, per layout: pixels where both depths are defined, mean and median AbsRel (|layout - true| / true), the share
of pixels whose layout is more than 25 % beyond the truth (a wall the ray crossed, the ceiling, a lintel) and more
than 20 % nearer (a ray over furniture stood up to the ceiling, or under a table taken as a solid block), and the
share of the grids' footprint cells that the layout's obstacle cells miss. Writes ``layout_accuracy.csv`` and
``layout_accuracy.png`` (the distribution of layout / true depth) to ``benchmarks/results/layout-accuracy/`` and
prints a markdown table and the wall time.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch  # noqa: E402
from worldfm_env.render.raycast import MeshRaycaster  # noqa: E402
from worldfm_env.scenes.navigation import grid_layout_depth  # noqa: E402
from worldfm_env.scenes.sources.procedural import generate_procedural_scene, seeds_for_split  # noqa: E402

__all__ = ["COLUMNS", "LAYOUTS", "main", "parse_args", "ratios", "run", "summarise"]

RESULTS = ROOT / "benchmarks" / "results" / "layout-accuracy"
LAYOUTS = (
    ("footprints", True, True),
    ("footprints", True, False),
    ("footprints", False, False),
    ("cores", False, False),
)
"""The layouts compared, as (obstacles kind, ceiling, heights): each kind's own layout, and the footprints without the
heights and without the ceiling."""
COLUMNS = (
    "obstacles",
    "ceiling",
    "heights",
    "scenes",
    "views",
    "pixels",
    "absrel_mean",
    "absrel_median",
    "beyond_1.25",
    "nearer_0.8",
    "footprint_cells_missed",
)
"""The CSV's columns, in order. ``footprint_cells_missed`` is the share of the grids' recorded footprint cells that
the kind's obstacle cells lack, so it is the cores' loss measured against the footprints (empty in the footprints'
rows)."""


def ratios(args: argparse.Namespace) -> tuple[dict[tuple[str, bool, bool], torch.Tensor], dict[str, float]]:
    """Layout depth over true depth at every pixel where both are defined, for each layout of :data:`LAYOUTS`:
    (kind, ceiling, heights) -> (P,); and the share of the scenes' footprint cells that each kind's obstacle cells miss:
    kind -> share."""
    gen = torch.Generator().manual_seed(args.seed)
    side = args.resolution
    K = intrinsics_from_fov(side, side, 90.0)
    K_inv = torch.linalg.inv(K)
    out: dict[tuple[str, bool, bool], list[torch.Tensor]] = {layout: [] for layout in LAYOUTS}
    missed = dict.fromkeys((kind for kind, _, _ in LAYOUTS), 0)
    footprint_cells = 0
    for seed in seeds_for_split("test", args.scenes):
        scene = generate_procedural_scene(int(seed))
        grid = scene.navigation_grid
        footprint_cells += int(grid.occupied.sum())
        rows, cols = torch.nonzero(grid.free, as_tuple=True)
        pick = torch.randint(len(rows), (args.views,), generator=gen)
        x, z = grid.cell_center(rows[pick], cols[pick])
        N = args.views
        pos = torch.stack([x, torch.full((N,), grid.floor_y - scene.camera_height), z], 1)
        yaw = torch.rand(N, generator=gen) * 2 * math.pi - math.pi
        pitch = torch.where(torch.arange(N) % 2 == 0, 0.0, -math.radians(args.pitch_deg))
        c2w = pose_from_yaw_pitch(pos, yaw, pitch)
        _, true = MeshRaycaster([scene.mesh], "cpu").render(torch.zeros(N, dtype=torch.int32), c2w, K, side, side)
        true = true.reshape(N, side, side)
        counted = set()
        for kind, ceiling, heights in LAYOUTS:
            layout = grid_layout_depth([grid], "cpu", N, side, side, kind, ceiling, heights)
            if kind not in counted:
                cells = layout.obstacles[0, : grid.shape[0], : grid.shape[1]].bool()
                missed[kind] += int((grid.occupied & ~cells).sum())
                counted.add(kind)
            depth = layout.render(torch.zeros(N, dtype=torch.long), c2w, K_inv)
            both = (true > 0) & (depth > 0)
            out[kind, ceiling, heights].append(depth[both] / true[both])
    return {layout: torch.cat(v) for layout, v in out.items()}, {k: v / footprint_cells for k, v in missed.items()}


def summarise(
    by_layout: dict[tuple[str, bool, bool], torch.Tensor], missed: dict[str, float], args: argparse.Namespace
) -> list[dict]:
    """One CSV row per layout (:data:`COLUMNS`)."""
    rows = []
    for (kind, ceiling, heights), ratio in by_layout.items():
        rel = (ratio - 1).abs()
        rows.append(
            {
                "obstacles": kind,
                "ceiling": ceiling,
                "heights": heights,
                "scenes": args.scenes,
                "views": args.scenes * args.views,
                "pixels": int(ratio.numel()),
                "absrel_mean": round(float(rel.mean()), 4),
                "absrel_median": round(float(rel.median()), 4),
                "beyond_1.25": round(float((ratio > 1.25).float().mean()), 4),
                "nearer_0.8": round(float((ratio < 0.8).float().mean()), 4),
                "footprint_cells_missed": "" if kind == "footprints" else round(missed[kind], 4),
            }
        )
    return rows


def _plot(by_layout: dict[tuple[str, bool, bool], torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = torch.linspace(-2.0, 2.0, 81)
    for (kind, ceiling, heights), ratio in by_layout.items():
        counts = torch.histc(torch.log2(ratio).clamp(-2.0, 2.0), bins=80, min=-2.0, max=2.0)
        label = f"{kind}, {'ceiling' if ceiling else 'no ceiling'}, {'heights' if heights else 'full height'}"
        ax.step(bins[:-1].numpy(), (counts / counts.sum()).numpy(), where="post", label=label)
    ax.set_xlabel("log2(layout depth / true depth)  (clipped to +-2)")
    ax.set_ylabel("share of pixels")
    ax.set_yscale("log")
    ax.set_title("Navigation layout against the true depth")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace, verbose: bool = True) -> list[dict]:
    """Measure, write the CSV and the plot, print the table; return the rows."""
    start = time.perf_counter()
    by_layout, missed = ratios(args)
    rows = summarise(by_layout, missed, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "layout_accuracy.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    _plot(by_layout, out / "layout_accuracy.png")
    if verbose:
        print(
            "| obstacles | ceiling | heights | pixels | AbsRel mean | AbsRel median | beyond 1.25x | nearer 0.8x "
            "| footprint cells missed |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['obstacles']} | {'yes' if r['ceiling'] else 'no'} | {'yes' if r['heights'] else 'no'} | "
                f"{r['pixels']} | {r['absrel_mean']:.3f} | "
                f"{r['absrel_median']:.3f} | "
                f"{r['beyond_1.25']:.3f} | {r['nearer_0.8']:.3f} | {r['footprint_cells_missed'] or '-'} |"
            )
        print(f"wall time {time.perf_counter() - start:.1f} s; wrote {out / 'layout_accuracy.csv'}")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="layout_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=8, help="held-out procedural scenes (test split)")
    parser.add_argument("--views", type=int, default=64, help="cameras per scene (half level, half pitched down)")
    parser.add_argument("--resolution", type=int, default=64, help="square image side")
    parser.add_argument("--pitch-deg", type=float, default=20.0, help="downward pitch of the pitched half")
    parser.add_argument("--seed", type=int, default=0, help="seed of the camera draws")
    parser.add_argument("--quick", action="store_true", help="1 scene, 8 views, 32x32")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.scenes, args.views, args.resolution = 1, 8, 32
    for name in ("scenes", "views", "resolution"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Entry point: parse, run."""
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
