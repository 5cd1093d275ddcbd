"""Regenerate the example scene in ``examples/scene/``: one image, its depth and an official-format meta.json.

The scene is made by the project itself: a procedural test building (``procedural:test``, its first seed) is ray
cast at one of its reference-view poses, giving an RGB image and its exact z-depth; the camera trajectory walks
forward from that pose along free navigation cells while the heading swings left and right. The files are what
InSpatio-WorldFM's ``meta.json`` input holds (``name``, ``image``, ``K``, ``c2w``) plus this project's ``depth``
key (a 16-bit PNG in millimetres), so ``worldfm-env render --meta examples/scene/meta.json`` and
``scenes="examples/scene/meta.json"`` can use them.

Run from the repository root: ``python examples/make_example_scene.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.render.raycast import MeshRaycaster
from worldfm_env.scenes.sources.procedural import generate_procedural_scene, seeds_for_split

__all__ = ["make_example_scene", "main"]

#: Depth PNGs hold millimetres in 16 bits: depths beyond 65.535 m cannot be stored.
MAX_DEPTH_MM = 65535


def _yaw_of(c2w: torch.Tensor) -> float:
    """Heading (left positive, as :func:`pose_from_yaw_pitch`) of a camera-to-world pose's forward axis."""
    forward = c2w[:3, 2]
    return math.atan2(-float(forward[0]), float(forward[2]))


def _free_distance(scene, position: torch.Tensor, yaw: float, limit: float) -> float:
    """How far (metres, up to ``limit``) the camera can walk straight ahead on free navigation cells."""
    grid = scene.navigation_grid
    step = grid.cell_size / 2
    direction = pose_from_yaw_pitch(position, torch.tensor(yaw), torch.tensor(0.0))[:3, 2]
    distance = 0.0
    while distance + step <= limit:
        p = position + (distance + step) * direction
        row, col = grid.world_to_cell(p[0], p[2])
        gz, gx = grid.shape
        if not (0 <= int(row) < gz and 0 <= int(col) < gx and bool(grid.free[row, col])):
            break
        distance += step
    return distance


def make_example_scene(
    out: Path, resolution: int = 256, poses: int = 24, walk: float = 1.2, swing_deg: float = 20.0
) -> dict:
    """Write ``image.png``, ``depth.png`` and ``meta.json`` under ``out``; returns the meta.json contents.

    Args:
        out: output folder (created).
        resolution: side of the square image in pixels (90 degree horizontal field of view).
        poses: number of trajectory poses (``c2w`` entries); the first is the image's own pose.
        walk: longest forward walk of the trajectory in metres (shortened to stay on free cells).
        swing_deg: amplitude of the heading's left-right swing along the trajectory, degrees.
    """
    if resolution < 16:
        raise ValueError(f"resolution must be at least 16 pixels, got {resolution}")
    if poses < 2:
        raise ValueError(f"poses must be at least 2 (a trajectory), got {poses}")
    seed = seeds_for_split("test", 1)[0]
    scene = generate_procedural_scene(seed, device="cpu")
    bank = scene.bank
    # The level bank view that looks furthest along free space: a corridor or a room seen lengthwise.
    best, best_score = 0, -1.0
    for i in range(bank.num_views):
        c2w = bank.c2w[i]
        if abs(float(c2w[1, 2])) > 1e-3:  # looks up or down: not a level view
            continue
        free = _free_distance(scene, c2w[:3, 3], _yaw_of(c2w), walk)
        depth = bank.depth[i]
        score = free + 0.1 * float(depth[depth > 0].median()) if bool((depth > 0).any()) else -1.0
        if score > best_score:
            best, best_score = i, score
    start = bank.c2w[best].clone()
    yaw0 = _yaw_of(start)
    position0 = start[:3, 3].clone()
    length = _free_distance(scene, position0, yaw0, walk)
    t = torch.linspace(0.0, 1.0, poses)
    yaws = yaw0 + math.radians(swing_deg) * torch.sin(2 * math.pi * t)
    forward = pose_from_yaw_pitch(position0, torch.tensor(yaw0), torch.tensor(0.0))[:3, 2]
    positions = position0[None] + (length * t)[:, None] * forward[None]
    trajectory = pose_from_yaw_pitch(positions, yaws, torch.zeros(poses))
    trajectory[0] = pose_from_yaw_pitch(position0, torch.tensor(yaw0), torch.tensor(0.0))

    K = intrinsics_from_fov(resolution, resolution, 90.0)
    caster = MeshRaycaster([scene.mesh], device="cpu")
    rgb, depth = caster.render(torch.zeros(1, dtype=torch.int64), trajectory[:1], K, resolution, resolution)
    depth_mm = np.round(depth[0].numpy() * 1000.0)
    depth_mm = np.where(depth_mm > MAX_DEPTH_MM, 0, depth_mm).astype(np.uint16)  # 0 = unknown

    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb[0].numpy()).save(out / "image.png", optimize=True)
    Image.fromarray(depth_mm).save(out / "depth.png", optimize=True)
    meta = {
        "name": "example-procedural-test-0",
        "image": "image.png",
        "depth": "depth.png",
        "K": [[round(float(v), 6) for v in row] for row in K.tolist()],
        "c2w": [[[round(float(v), 6) for v in row] for row in T] for T in trajectory.tolist()],
    }
    (out / "meta.json").write_text(_format_meta(meta))
    return meta


def _format_meta(meta: dict) -> str:
    """JSON text of ``meta`` with one matrix (K, or one trajectory pose) per line."""
    lines = ["{"]
    for key in ("name", "image", "depth"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(meta[key])},")
    lines.append(f'  "K": {json.dumps(meta["K"])},')
    lines.append('  "c2w": [')
    poses = [f"    {json.dumps(T)}" for T in meta["c2w"]]
    lines.append(",\n".join(poses))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python examples/make_example_scene.py [--out examples/scene]``."""
    parser = argparse.ArgumentParser(
        prog="make_example_scene.py",
        description="Regenerate the example scene (image, depth PNG in millimetres, meta.json with a trajectory).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "scene"), help="output folder")
    parser.add_argument("--resolution", type=int, default=256, help="side of the square image in pixels")
    parser.add_argument("--poses", type=int, default=24, help="number of trajectory poses")
    args = parser.parse_args(argv)
    meta = make_example_scene(Path(args.out), resolution=args.resolution, poses=args.poses)
    print(f"wrote {args.out}: {meta['image']}, {meta['depth']}, meta.json with {len(meta['c2w'])} poses")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
