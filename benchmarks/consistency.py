"""World consistency when the camera leaves a sparsely captured region: static against growing memory.

    python benchmarks/consistency.py                       # 4 held-out scenes, 2 trajectories each, 64x64, CPU
    python benchmarks/consistency.py --scenes 2 --trajectories 1 --time-envs 16   # quicker

Worlds: the held-out procedural *test* scenes with ``capture="panorama"`` (the published pipeline's memory: one
RGB-D panorama at one free point, 42 bank views around it). Trajectories (scripted, deterministic per scene and
``--seed``): from the capture point along the shortest path to a pose Q where the panorama did not see the floor
(first visit), then on to another point R and back to Q by the shortest path from R, turning in place to the first
visit's heading (second visit: the same pose reached by another route). Moves of 0.25 m and turns of at most
15 degrees per frame, the env's discrete action sizes. The poses are set on the env's state and rendered by the
env's own observation step (``_observe``: splat, vote, frame model, memory write-back), every trajectory an env of
one batch; the frame model's noise is the env's (``noise_key="pose"`` unless the method says ``step``).

Methods: ``anchor`` (the captured memory's splat, holes black), ``nearest_fill`` (its holes filled from the nearest
covered pixel), ``worldfm_static`` (the shipped frame model, ``memory="static"``; pose-keyed noise, the default, so a
revisited pose with an unchanged anchor gives the identical frame), ``worldfm_static_step`` (the same with
``noise_key="step"``: fresh noise every frame), ``worldfm_grow`` (``memory="grow"``), and ``oracle`` (ground truth;
its own reprojection figure is the ceiling that nearest-pixel warping allows).

Metrics (uint8 frames; PSNR capped at 100 dB):

* ``psnr`` / ``ssim`` against the oracle over every frame, and ``psnr_captured`` / ``psnr_uncaptured`` over the
  pixels the captured memory's anchor covers / leaves empty at that pose; mean and 5th percentile (``_p5``) over
  frames (frames without such pixels are left out).
* ``revisit_psnr``: the frame at Q on the second visit against the frame at Q on the first (frame to frame).
* ``reproj_uncaptured``: consistency in motion: every pixel of frame t+1 is back-projected with the true depth and
  projected into frame t (nearest pixel; kept when visible there: true depths within 5 %); PSNR between the two
  frames' colours over the pixels whose source in frame t was uncaptured; averaged over transitions that move.
* ``grown_depth_absrel`` (``worldfm_grow``): mean |d - d_true| / d_true of the anchor depth where grown points are
  shown, against the ray-cast depth: how far the generated geometry (lifted with the frame model's depth for an
  RGB-D model, else the filled anchor depth) is from the true one (what the agent sees against what collisions use).
* ``--weights`` picks the frame model of the worldfm methods (default: the shipped default); ``--splat-radius``
  their anchor splats (default 0, the env's; pass the one the model was trained on, e.g. ``auto``);
  ``--depth-bound navigation`` their ``depth_bound`` (generated depth, and what the memory grows, capped at the
  scene's navigation layout); ``--memory-carve`` ``worldfm_grow``'s ``memory_carve`` (no generated point written in
  the space the navigation grid lets the agent walk through).
* step time: ``env.step`` with random discrete actions at ``--time-envs`` envs, ``memory="static"`` against
  ``"grow"`` (A-B-B-A blocks of ``--time-steps`` steps, medians).

Writes ``consistency.csv``, ``consistency_steptime.csv``, ``consistency.png`` (bars) and ``consistency_strip.png``
(oracle | anchor | static | grow along one trajectory) to ``benchmarks/results/consistency/`` and prints tables.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fidelity import psnr, ssim  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402
from worldfm_env.render.anchor_config import splat_radius_arg  # noqa: E402
from worldfm_env.render.fill import nearest_fill  # noqa: E402
from worldfm_env.scenes.navigation import geodesic_distance  # noqa: E402

__all__ = ["main", "make_trajectories", "reprojection_psnr", "METHODS"]

RESULTS = ROOT / "benchmarks" / "results" / "consistency"
METHODS = ("anchor", "nearest_fill", "worldfm_static", "worldfm_static_step", "worldfm_grow", "oracle")
STEP = 0.25  # metres per frame (the env's forward_step)
TURN = math.radians(15.0)  # largest turn per frame (the env's turn_angle_deg)


# ------------------------------------------------------------------------------------------------- trajectories


def _descend(field: torch.Tensor, free: torch.Tensor, start: tuple[int, int]) -> list[tuple[int, int]]:
    """Cells from ``start`` down the distance ``field`` (Gz, Gx) to its zero (8-neighbour steepest descent)."""
    path = [start]
    r, c = start
    Gz, Gx = field.shape
    while float(field[r, c]) > 0:
        best, nxt = float(field[r, c]), None
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr or dc) and 0 <= rr < Gz and 0 <= cc < Gx and bool(free[rr, cc]) and float(field[rr, cc]) < best:
                    best, nxt = float(field[rr, cc]), (rr, cc)
        if nxt is None:
            raise RuntimeError(f"no descent from cell {(r, c)}")
        r, c = nxt
        path.append(nxt)
    return path


def _poses_along(points: np.ndarray, yaw: float) -> tuple[list[np.ndarray], list[float], float]:
    """Positions and yaws from the current ``yaw`` along the polyline ``points`` (P, 2) (x, z): turn in place by at
    most TURN per frame towards the next point, then move STEP at a time. Returns (xz list, yaw list, final yaw)."""
    xz, yaws = [], []
    here = points[0].astype(np.float64)
    for target in points[1:]:
        while True:
            delta = target - here
            dist = float(np.hypot(*delta))
            if dist < 1e-6:
                break
            # Yaw convention of the env: forward = (-sin(yaw), cos(yaw)) in x-z (yaw 0 looks along +z).
            want = math.atan2(-delta[0], delta[1])
            diff = (want - yaw + math.pi) % (2 * math.pi) - math.pi
            if abs(diff) > 1e-6:
                yaw += max(-TURN, min(TURN, diff))
                xz.append(here.copy())
                yaws.append(yaw)
                continue
            move = min(STEP, dist)
            here = here + delta / dist * move
            xz.append(here.copy())
            yaws.append(yaw)
    return xz, yaws, yaw


def _turn_to(here: np.ndarray, yaw: float, want: float) -> tuple[list[np.ndarray], list[float], float]:
    xz, yaws = [], []
    while True:
        diff = (want - yaw + math.pi) % (2 * math.pi) - math.pi
        if abs(diff) < 1e-6:
            return xz, yaws, yaw
        yaw += max(-TURN, min(TURN, diff))
        xz.append(here.copy())
        yaws.append(yaw)


def make_trajectories(env: WorldFMVectorEnv, scene_of_env: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per env a trajectory of poses (T, 4) = (x, y, z, yaw), padded to one length by holding the last pose, and the
    two frame indices (E, 2) at which pose Q is visited. See the module docstring."""
    nav, pool = env.navigation, env.pool
    rng = np.random.default_rng(seed)
    trajectories, visits = [], []
    for s in scene_of_env:
        free = nav.main[s].cpu()
        seen = nav.seen[s].cpu()
        cs = float(pool.nav_cell_size[s])
        ox, oz = (float(v) for v in pool.nav_origin[s])
        y = float(pool.floor_y[s] - pool.camera_height[s])

        def cell_xz(rc, ox=ox, oz=oz, cs=cs):
            return np.array([ox + (rc[1] + 0.5) * cs, oz + (rc[0] + 0.5) * cs])

        cx, _, cz = pool.scenes[s].info["capture"]["position"]
        p0 = (int((cz - oz) // cs), int((cx - ox) // cs))
        from_p0 = geodesic_distance(free, torch.tensor(p0), cs)
        unseen = free & ~seen & torch.isfinite(from_p0)
        band = unseen & (from_p0 >= 2.5) & (from_p0 <= 5.0)
        pick = band if bool(band.any()) else unseen
        cells = torch.nonzero(pick).tolist()
        q = tuple(cells[int(rng.integers(len(cells)))])
        from_q = geodesic_distance(free, torch.tensor(q), cs)
        route1 = _descend(from_q, free, p0)
        near_route = torch.zeros_like(free)
        for r, c in route1:
            near_route[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5] = True
        band = free & (from_q >= 1.5) & (from_q <= 3.0) & ~near_route
        if not bool(band.any()):
            band = free & (from_q >= 1.0) & (from_q <= 4.0) & ~near_route
        if not bool(band.any()):
            band = free & (from_q >= 1.0) & torch.isfinite(from_q)
        cells = torch.nonzero(band).tolist()
        r_cell = tuple(cells[int(rng.integers(len(cells)))])
        from_r = geodesic_distance(free, torch.tensor(r_cell), cs)
        route_out = _descend(from_r, free, q)
        route_back = _descend(from_q, free, r_cell)

        start = cell_xz(p0)
        first = cell_xz(route1[1]) if len(route1) > 1 else start + np.array([0.0, -1.0])
        yaw = math.atan2(-(first - start)[0], (first - start)[1])
        xz, yaws = [start.copy()], [yaw]
        part, part_yaw, yaw = _poses_along(np.array([cell_xz(rc) for rc in route1]), yaw)
        xz += part
        yaws += part_yaw
        first_visit = len(xz) - 1
        q_yaw = yaw
        for route in (route_out, route_back):
            part, part_yaw, yaw = _poses_along(np.array([cell_xz(rc) for rc in route]), yaw)
            xz += part
            yaws += part_yaw
        part, part_yaw, yaw = _turn_to(xz[-1], yaw, q_yaw)
        xz += part
        yaws += part_yaw
        poses = np.array([[p[0], y, p[1], a] for p, a in zip(xz, yaws, strict=True)])
        trajectories.append(poses)
        visits.append((first_visit, len(poses) - 1))
    T = max(len(t) for t in trajectories)
    padded = np.stack([np.concatenate([t, np.repeat(t[-1:], T - len(t), 0)]) for t in trajectories])
    return padded, np.array(visits)


# ------------------------------------------------------------------------------------------------- rendering


def _render(method: str, trajectories: np.ndarray, args, scene_of_env: list[int]) -> dict[str, torch.Tensor]:
    """Frames (E, T, H, W, 3), depth and the anchor (rgb, mask, grown) of one method along the trajectories."""
    renderer = {"oracle": "oracle"}.get(method, "worldfm")
    kwargs = dict(
        scenes=f"procedural:test:{args.scenes}",
        capture="panorama",
        resolution=args.resolution,
        device=args.device,
        renderer=renderer,
        memory="grow" if method == "worldfm_grow" else "static",
        memory_capacity=args.memory_capacity,
        memory_carve=args.memory_carve and method == "worldfm_grow",
        noise_key="step" if method == "worldfm_static_step" else "pose",
    )
    if renderer == "worldfm":
        kwargs["splat_radius"] = args.splat_radius
        kwargs["depth_bound"] = args.depth_bound
        if args.weights:
            kwargs["weights"] = args.weights
    E, T = trajectories.shape[:2]
    env = WorldFMVectorEnv(num_envs=E, **kwargs)
    env.reset(seed=args.seed, options={"scene_index": scene_of_env})
    dev = env.device
    out = {k: [] for k in ("rgb", "depth", "anchor", "mask", "grown")}
    poses = torch.as_tensor(trajectories, dtype=torch.float32, device=dev)
    for t in range(T):
        env.position = poses[:, t, :3].clone()
        env.yaw = poses[:, t, 3].clone()
        env.pitch = torch.zeros(E, device=dev)
        env.elapsed_steps = torch.full((E,), t, dtype=torch.int64, device=dev)
        env._observe()
        frame = env._last_frame
        out["rgb"].append(frame.rgb.clone().cpu())
        out["depth"].append(frame.depth.clone().cpu())
        anchor = frame.anchor
        if anchor is not None:
            out["anchor"].append(anchor.rgb.clone().cpu())
            out["mask"].append(anchor.mask.clone().cpu())
            out["grown"].append(anchor.grown.clone().cpu() if anchor.grown is not None else anchor.mask.cpu() & False)
    env.close()
    return {k: torch.stack(v, dim=1) for k, v in out.items() if v}


def reprojection_psnr(
    frames: torch.Tensor,
    true_depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    uncaptured: torch.Tensor,
    moved: torch.Tensor,
) -> torch.Tensor:
    """Per transition (E, T-1) PSNR of frame t+1 against frame t warped with the true depth, over the pixels whose
    source in frame t was ``uncaptured`` (E, T, H, W); NaN where no such pixel or where the pose did not change
    (``moved`` (E, T-1) False). frames (E, T, H, W, 3) uint8, true_depth (E, T, H, W), c2w (E, T, 4, 4), K (3, 3)."""
    E, T, H, W = true_depth.shape
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # (HW, 3)
    rays = pix @ torch.linalg.inv(K).T  # z = 1
    out = torch.full((E, T - 1), float("nan"), dtype=torch.float64)
    for t in range(T - 1):
        d1 = true_depth[:, t + 1].reshape(E, -1)
        world = (rays[None] * d1[..., None]) @ c2w[:, t + 1, :3, :3].transpose(1, 2) + c2w[:, t + 1, None, :3, 3]
        w2c = torch.linalg.inv(c2w[:, t])
        cam = world @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        z = cam[..., 2]
        uv = cam @ K.T
        u = torch.floor(uv[..., 0] / uv[..., 2].clamp_min(1e-6)).long()
        v = torch.floor(uv[..., 1] / uv[..., 2].clamp_min(1e-6)).long()
        inside = (d1 > 0) & (z > 1e-3) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        uc, vc = u.clamp(0, W - 1), v.clamp(0, H - 1)
        b = torch.arange(E)[:, None]
        d0 = true_depth[:, t][b, vc, uc]
        visible = inside & ((d0 - z).abs() < 0.05 * z)
        keep = visible & uncaptured[:, t][b, vc, uc]
        src = frames[:, t][b, vc, uc].double()  # (E, HW, 3)
        dst = frames[:, t + 1].reshape(E, -1, 3).double()
        err = ((src - dst) ** 2).mean(-1)
        count = keep.sum(1)
        mse = (err * keep).sum(1) / count.clamp_min(1)
        value = 10 * torch.log10(255.0**2 / mse.clamp_min(255.0**2 * 1e-10))
        out[:, t] = torch.where((count > 0) & moved[:, t], value, torch.full_like(value, float("nan")))
    return out


def _stats(values: torch.Tensor) -> tuple[float, float]:
    v = values[torch.isfinite(values)].double()
    if v.numel() == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(torch.quantile(v, 0.05))


def _step_time(args, num_envs: int) -> dict[str, float]:
    """Median seconds per env.step of static and grow (A-B-B-A blocks)."""
    kwargs = dict(
        scenes=f"procedural:test:{args.scenes}",
        capture="panorama",
        resolution=args.resolution,
        device=args.device,
        memory_capacity=args.memory_capacity,
        splat_radius=args.splat_radius,
        depth_bound=args.depth_bound,
    )
    if args.weights:
        kwargs["weights"] = args.weights
    envs = {
        m: WorldFMVectorEnv(num_envs=num_envs, memory=m, memory_carve=args.memory_carve and m == "grow", **kwargs)
        for m in ("static", "grow")
    }
    rng = np.random.default_rng(args.seed)
    times: dict[str, list[float]] = {"static": [], "grow": []}
    for env in envs.values():
        env.reset(seed=args.seed)
        for _ in range(2):  # warm-up
            env.step(rng.integers(1, 4, size=num_envs))
    for m in ("static", "grow", "grow", "static") * args.time_rounds:
        env = envs[m]
        start = time.perf_counter()
        for _ in range(args.time_steps):
            env.step(rng.integers(1, 4, size=num_envs))
        times[m].append((time.perf_counter() - start) / args.time_steps)
    for env in envs.values():
        env.close()
    return {m: statistics.median(v) for m, v in times.items()}


# ------------------------------------------------------------------------------------------------- report


def plot(rows: list[dict], path: Path) -> None:
    """Bars of the main figures per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["psnr_uncaptured", "psnr_uncaptured_p5", "revisit_psnr", "reproj_uncaptured"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, key in zip(axes, keys, strict=True):
        names = [r["method"] for r in rows]
        ax.bar(range(len(rows)), [r[key] if math.isfinite(r[key]) else 0 for r in rows], color="tab:blue")
        ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.set_ylabel("dB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def strip(frames: dict[str, torch.Tensor], env: int, path: Path, columns: int = 12) -> None:
    """One trajectory: rows oracle | anchor | worldfm static | worldfm grow, evenly spaced frames."""
    import imageio.v2 as imageio

    rows = [("oracle", "oracle"), ("anchor", "anchor"), ("worldfm_static", "static"), ("worldfm_grow", "grow")]
    T = frames["oracle"].shape[1]
    picks = np.linspace(0, T - 1, columns).round().astype(int)
    lines = []
    for key, _ in rows:
        tiles = [frames[key][env, t].numpy() for t in picks]
        gutter = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
        lines.append(np.concatenate(sum(([tile, gutter] for tile in tiles), [])[:-1], axis=1))
    sheet = np.concatenate(sum(([line, np.full((2, line.shape[1], 3), 255, np.uint8)] for line in lines), [])[:-1], 0)
    imageio.imwrite(path, sheet.repeat(2, 0).repeat(2, 1))


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; returns the CSV rows."""
    parser = argparse.ArgumentParser(prog="consistency", description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=4, help="held-out test scenes (default: %(default)s)")
    parser.add_argument("--trajectories", type=int, default=2, help="trajectories per scene (default: %(default)s)")
    parser.add_argument("--resolution", type=int, default=64, help="frame size (default: %(default)s)")
    parser.add_argument(
        "--memory-capacity", type=int, default=65536, help="points per growing memory (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="device (default: %(default)s)")
    parser.add_argument(
        "--weights",
        default=None,
        help="frame model of the worldfm methods: a checkpoint path or shipped name (default: the shipped default)",
    )
    parser.add_argument(
        "--splat-radius",
        type=splat_radius_arg,
        default=0,
        help="anchor splat half-size of the worldfm methods: an int in [0, 8] or auto (default: %(default)s, "
        "the env's)",
    )
    parser.add_argument(
        "--depth-bound",
        choices=["none", "navigation"],
        default="none",
        help="the worldfm methods' depth_bound: navigation caps generated depth, and what the memory grows, at the "
        "scene's navigation layout (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-carve",
        action="store_true",
        help="worldfm_grow's memory_carve: its memory writes no generated point in the space the navigation grid "
        "lets the agent walk through",
    )
    parser.add_argument("--seed", type=int, default=0, help="trajectory and env seed (default: %(default)s)")
    parser.add_argument(
        "--time-envs", type=int, nargs="*", default=[16, 64], help="env counts timed (default: %(default)s)"
    )
    parser.add_argument("--time-steps", type=int, default=4, help="steps per timing block (default: %(default)s)")
    parser.add_argument("--time-rounds", type=int, default=1, help="A-B-B-A rounds (default: %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    scene_of_env = [s for s in range(args.scenes) for _ in range(args.trajectories)]
    probe = WorldFMVectorEnv(
        num_envs=1,
        scenes=f"procedural:test:{args.scenes}",
        capture="panorama",
        resolution=args.resolution,
        device=args.device,
        renderer="oracle",
    )
    trajectories, visits = make_trajectories(probe, scene_of_env, args.seed)
    K = probe.K[0].cpu()
    probe.close()
    E, T = trajectories.shape[:2]
    print(f"{E} trajectories of {T} frames (Q visited at frames {visits.tolist()})")

    rendered = {}
    for method in ("oracle", "worldfm_static", "worldfm_static_step", "worldfm_grow"):
        start = time.perf_counter()
        rendered[method] = _render(method, trajectories, args, scene_of_env)
        print(f"rendered {method} in {time.perf_counter() - start:.1f} s")
    static = rendered["worldfm_static"]
    captured = static["mask"]  # (E, T, H, W): what the captured memory's anchor covers
    frames = {
        "anchor": static["anchor"],
        "nearest_fill": nearest_fill(static["anchor"], captured),
        **{m: rendered[m]["rgb"] for m in rendered},
    }
    truth, true_depth = rendered["oracle"]["rgb"], rendered["oracle"]["depth"]
    yaw = torch.as_tensor(trajectories[..., 3], dtype=torch.float32)
    from worldfm_env.geometry import pose_from_yaw_pitch

    c2w = pose_from_yaw_pitch(
        torch.as_tensor(trajectories[..., :3], dtype=torch.float32).reshape(-1, 3), yaw.reshape(-1), yaw.reshape(-1) * 0
    ).reshape(E, T, 4, 4)
    moved = torch.as_tensor(np.abs(np.diff(trajectories, axis=1)).sum(-1) > 1e-6)
    # Frames beyond a trajectory's end repeat its last pose: keep each frame once.
    real = torch.ones(E, T, dtype=torch.bool)
    real[:, 1:] = moved

    rows = []
    for method in METHODS:
        img = frames[method]
        p_all = psnr(img, truth)[real]
        s_all = ssim(img, truth)[real]
        p_cap = psnr(img, truth, captured)[real]
        p_unc = psnr(img, truth, ~captured)[real]
        e = torch.arange(E)
        revisit = psnr(img[e, visits[:, 0]], img[e, visits[:, 1]])
        reproj = reprojection_psnr(img, true_depth, c2w, K, ~captured, moved)
        row = {"method": method, "splat_radius": args.splat_radius if method != "oracle" else ""}
        row["depth_bound"] = args.depth_bound if method != "oracle" else ""
        row["memory_carve"] = args.memory_carve if method == "worldfm_grow" else ""
        row["psnr"], row["psnr_p5"] = _stats(p_all)
        row["ssim"], row["ssim_p5"] = _stats(s_all)
        row["psnr_captured"], row["psnr_captured_p5"] = _stats(p_cap)
        row["psnr_uncaptured"], row["psnr_uncaptured_p5"] = _stats(p_unc)
        row["revisit_psnr"], row["revisit_psnr_min"] = float(revisit.mean()), float(revisit.min())
        row["reproj_uncaptured"], row["reproj_uncaptured_p5"] = _stats(reproj)
        row["grown_depth_absrel"] = float("nan")
        if method == "worldfm_grow":
            grown = rendered[method]["grown"] & (true_depth > 0)
            depth = rendered[method]["depth"]
            rel = ((depth - true_depth).abs() / true_depth.clamp_min(1e-6))[grown]
            row["grown_depth_absrel"] = float(rel.mean()) if rel.numel() else float("nan")
        row["uncaptured_fraction"] = float((~captured)[real].float().mean())
        rows.append(row)

    timing = []
    for n in args.time_envs:
        t = _step_time(args, n)
        timing.append({"num_envs": n, "static_s": t["static"], "grow_s": t["grow"], "ratio": t["grow"] / t["static"]})
        print(f"step time at {n} envs: static {t['static']:.3f} s, grow {t['grow']:.3f} s ({timing[-1]['ratio']:.2f}x)")

    with open(out / "consistency.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if timing:
        with open(out / "consistency_steptime.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(timing[0]))
            writer.writeheader()
            writer.writerows(timing)
    plot(rows, out / "consistency.png")
    strip(frames, 0, out / "consistency_strip.png")

    print(
        f"\n{E} trajectories, {T} frames, {args.resolution}x{args.resolution}, capture=panorama, device={args.device}"
    )
    print("| method | PSNR | PSNR p5 | captured | uncaptured | uncaptured p5 | SSIM | revisit | reproj. uncaptured |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['psnr']:.2f} | {r['psnr_p5']:.2f} | {r['psnr_captured']:.2f} | "
            f"{r['psnr_uncaptured']:.2f} | {r['psnr_uncaptured_p5']:.2f} | {r['ssim']:.3f} | "
            f"{r['revisit_psnr']:.2f} | {r['reproj_uncaptured']:.2f} |"
        )
    return rows


if __name__ == "__main__":
    main()
