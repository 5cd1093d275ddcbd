"""Frame fidelity along env rollouts: what users see, judged against the ray-cast truth, and the shipping rule.

    python benchmarks/rollout_fidelity.py            # 8 held-out test scenes, full + panorama capture, 64x64, CPU
    python benchmarks/rollout_fidelity.py --quick    # 2 scenes, short rollouts (a smoke run)
    python benchmarks/rollout_fidelity.py --methods anchor nearest_fill worldfm-s-64x64 --scenes 1 --frames 8

Frames: rollouts in the held-out procedural *test* scenes (``procedural:test:<--scenes>``), once per capture setting
(``capture="full"`` and ``capture="panorama"``, :mod:`worldfm_env.scenes.capture`), PointNav task, discrete actions,
the env's default dynamics. Three policies, each ``--episodes`` rollouts per scene of ``--frames`` frames:

* ``random``: :class:`worldfm_env.policies.RandomPolicy` (forward, turns and looks up/down, never STOP), stepping
  the env; blocked moves and the env's autoresets happen as they would for any agent.
* ``shortest_path``: :class:`worldfm_env.policies.ShortestPathPolicy` (the PointNav goal's geodesic field; STOP at
  the goal, then the env's autoreset starts a new episode).
* ``close_range``: a scripted camera that walks up to walls and stops close to them. From the episode's start pose
  it turns by 3-8 steps of 15 degrees (seeded), walks forward along its optical axis in moves of at most 0.25 m until
  the true centre-pixel depth reaches a distance drawn from U(0.2, 0.6) m (the last move is shortened to land on it;
  a move the navigation grid blocks ends the walk early where the centre depth is already below 0.6 m, and is
  followed by a new turn otherwise), then dwells there (15 degrees left, back, 15 degrees right, back) and turns
  away by 6-12 steps to walk to the next wall. Positions stay on free navigation cells (``env.moves_free``).

Every frame's state (scene, position, yaw, pitch, env seed, episode number, step) is recorded once per capture from
an oracle env. **Rendering.** Every method renders every recorded state through the env's own observation step: the
state is set on a ``WorldFMVectorEnv`` of that method (one env per rollout) and its ``_observe`` runs (splat,
reference vote, backend), as ``benchmarks/consistency.py`` does. This is argued over stepping one env per method with
the same seeds and actions: (1) every method sees exactly the same poses, including the close-range script's
shortened last move, which no discrete action expresses; (2) the recorded env seed, episode number and pose give the
frame model the same per-frame noise as a stepped env (``noise_key="pose"``, the default), and with
``memory="static"`` (the default) an observation depends on nothing else, so the frame is the one a user stepping
the env sees; (3) the policies run once per capture, not once per method. The growing memory is not measured here
(it makes a frame depend on the history; ``benchmarks/consistency.py`` measures it).

Methods (``--methods``; the oracle always runs: it is the truth, ``renderer="oracle"``, ``include_depth=True``):

* ``anchor``: the captured memory's splat at the pose (``renderer="anchor"``), holes black.
* ``nearest_fill``: :func:`worldfm_env.render.fill.nearest_fill` of that anchor.
* ``pull_push_fill``: :func:`worldfm_env.render.fill.pull_push_fill` of that anchor.
* every shipped frame model for the resolution, by name (``worldfm_env.model.weights.shipped_weights``, e.g.
  ``worldfm-srd-64x64``, the default of ``renderer="worldfm"``, and ``worldfm-s-64x64``, the earlier one), each
  ``renderer="worldfm", weights=<name>`` with the env's default sampler and dtype.

Metrics (uint8 frames; ``psnr`` and ``ssim`` from ``benchmarks/fidelity.py``: PSNR capped at 100 dB, Gaussian SSIM):

* ``psnr`` / ``ssim``: per frame over all pixels; the mean and the 5th percentile (``_p5``) over frames.
* ``psnr_captured`` / ``psnr_uncaptured``: per-frame PSNR over the pixels the anchor covers / leaves empty at that
  pose (*captured* = the anchor's mask); frames without such pixels are left out of that statistic.
* ``sharpness``: the frame's gradient energy over the oracle's in uncaptured pixels. Exactly: the luminance
  ``Y = 0.299 R + 0.587 G + 0.114 B`` (0-255); every horizontal and vertical pair of adjacent pixels that are both
  uncaptured gives a forward difference ``dY``; the energy of a frame is the sum of ``dY^2`` over those pairs. The
  ratio pools the frames of a row: sum of the method's energies / sum of the oracle's energies over the same pairs
  (a ratio of mean squared differences, which a flat oracle frame cannot blow up). 1 matches the truth's amount of
  detail, a blur scores lower, invented noise higher; a frame-level value (:func:`sharpness_ratio`) is used in
  the tests.
* ``depth_absrel``: per frame the mean of ``|d - d_true| / d_true`` over uncaptured pixels with a true depth, then
  the mean over frames. An RGB-D model (``depth_head``) is scored with its own depth, the env's depth observation
  (``depth_source="model"``: the anchor's depth where a point landed, the model's elsewhere). The fills and RGB models
  are given the depth the growing memory lifts their pixels with (``depth_source="filled anchor"``): the anchor's
  depth, holes filled from the nearest covered pixel, never beyond the floor plane, a 3 m backdrop where the anchor is
  empty (:func:`filled_anchor_depth`; the rule of ``GrowingMemory.write`` for frames without a depth). The raw
  anchor has no depth there (NaN), the oracle its own ray-cast depth (0). ``depth_far`` / ``depth_near``: per frame
  the share of those pixels whose depth is more than 10 % beyond / short of the true depth, then the mean over
  frames: where what the agent sees is farther than what it would collide with (a missed wall), or nearer (an
  invented surface).
* ``below_nearest_fill``: the share of frames whose PSNR is below the nearest fill's PSNR on the same frame;
  ``worst_vs_nearest_fill``: the lowest of those per-frame differences (method's PSNR minus the nearest fill's, dB),
  so a share above 0 says by how much the worst frame misses.
* ``uncaptured_fraction``: mean share of uncaptured pixels; ``empty_anchor_fraction``: share of frames whose anchor
  covers no pixel at all (the fills return them black); ``ms_per_frame``: render time of the method's env (the
  fills: the anchor's plus the fill's).

Rows: per capture and subset: ``all`` frames, each policy's, and ``close`` = frames whose true centre depth (the mean
of the 2x2 central pixels) is below 0.6 m, whichever policy produced them.

:func:`shipping_verdict` encodes the frame-fidelity rule of the RGB-D frame-model issue, fixed before the next model's
figures exist. ``--candidate WEIGHTS`` (a checkpoint path or a shipped name) adds a model and judges it against the
default shipped one; without it the script judges the default model against the earlier shipped one. ``--splat-radius``
sets the anchor splats of every splatting method (the anchor, the fills and the models; default 0, the env's);
``--anchor-colour bank`` their covered pixels' colours resampled from the captured views (the env's ``anchor_colour``);
``--silhouettes learned`` the learned choice between footprint and one-pixel splats (the env's ``silhouettes``);
``--capture-resolution`` the side of the scenes' captured views, hence the density of the point clouds every method
starts from (default: the frame size, as the env's ``scene_options`` default). ``--depth-bound navigation`` caps the
depth of every method's uncaptured pixels at the scene's navigation layout along each ray: the models' through the
env's ``depth_bound`` option, the fills' filled anchor depth with the same layout depth
(:class:`~worldfm_env.render.layout.LayoutDepth`), so every depth row is bounded alike.

Writes ``rollout_fidelity.csv``, ``rollout_fidelity.png`` (bars), ``rollout_fidelity_samples.png`` (anchor | nearest
fill | each model | oracle for a few frames, close-range ones included) and ``verdict.csv`` to
``benchmarks/results/rollout-fidelity/``, and prints markdown tables and the wall time. ``--per-frame`` also writes
``rollout_fidelity_frames.csv``: one row per capture, frame and method (:data:`FRAME_FIELDS`), to find the worst
frames and what they have in common.
"""

from __future__ import annotations

import argparse
import csv
import math
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
from worldfm_env.model.weights import default_weights_path, shipped_weights  # noqa: E402
from worldfm_env.policies import RandomPolicy, ShortestPathPolicy  # noqa: E402
from worldfm_env.render.anchor_config import splat_radius_arg  # noqa: E402
from worldfm_env.render.fill import nearest_fill, pull_push_fill  # noqa: E402
from worldfm_env.render.resample import ANCHOR_COLOUR_VALUES  # noqa: E402
from worldfm_env.render.silhouette import SILHOUETTE_VALUES  # noqa: E402
from worldfm_env.scenes.navigation import pool_layout_depth  # noqa: E402

__all__ = [
    "BASELINES",
    "CAPTURES",
    "CLOSE_RANGE_M",
    "CRITERIA",
    "POLICIES",
    "filled_anchor_depth",
    "gradient_energy",
    "main",
    "model_methods",
    "record_rollouts",
    "run",
    "settle_rollout_size",
    "sharpness_ratio",
    "shipping_verdict",
]

RESULTS = ROOT / "benchmarks" / "results" / "rollout-fidelity"
CAPTURES = ("full", "panorama")
POLICIES = ("random", "shortest_path", "close_range")
BASELINES = ("anchor", "nearest_fill", "pull_push_fill")
CLOSE_RANGE_M = 0.6
"""A frame is close-range when its true centre depth is below this many metres."""
TURN = math.radians(15.0)
STEP = 0.25
STATE_FIELDS = ("scene_index", "position", "yaw", "pitch", "seeds", "episode_count", "elapsed_steps")
LUMA = (0.299, 0.587, 0.114)
MIN_PAIRS = 16  # a frame-level sharpness ratio needs at least this many uncaptured pixel pairs


# ------------------------------------------------------------------------------------------------------ metrics


def gradient_energy(images: torch.Tensor, uncaptured: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient energy of images (..., H, W, 3) in the ``uncaptured`` (..., H, W) pixels: (sum of dY^2, pair count).

    ``Y`` is the luminance 0.299 R + 0.587 G + 0.114 B (float64); a pair is two horizontally or vertically adjacent
    pixels that are both uncaptured, and ``dY`` their forward difference. Returns two float64 tensors of shape (...).
    """
    if images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"images must be (..., H, W, 3), got {tuple(images.shape)}")
    if tuple(uncaptured.shape) != tuple(images.shape[:-1]):
        raise ValueError(f"uncaptured must be {tuple(images.shape[:-1])} (bool), got {tuple(uncaptured.shape)}")
    y = (images.double() * torch.tensor(LUMA, dtype=torch.float64, device=images.device)).sum(-1)
    m = uncaptured.to(device=images.device, dtype=torch.bool)
    pair_x = m[..., :, 1:] & m[..., :, :-1]
    pair_y = m[..., 1:, :] & m[..., :-1, :]
    dx2 = (y[..., :, 1:] - y[..., :, :-1]).square() * pair_x
    dy2 = (y[..., 1:, :] - y[..., :-1, :]).square() * pair_y
    energy = dx2.sum(dim=(-2, -1)) + dy2.sum(dim=(-2, -1))
    count = pair_x.sum(dim=(-2, -1)).double() + pair_y.sum(dim=(-2, -1)).double()
    return energy, count


def sharpness_ratio(pred: torch.Tensor, target: torch.Tensor, uncaptured: torch.Tensor) -> torch.Tensor:
    """Per-frame sharpness (...): gradient energy of ``pred`` over that of ``target`` (the oracle) in the same
    uncaptured pixel pairs (:func:`gradient_energy`). NaN where fewer than 16 pairs or the target has no energy.
    Identical images give 1; a blur of the target gives less than 1."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    e_pred, count = gradient_energy(pred, uncaptured)
    e_true, _ = gradient_energy(target, uncaptured)
    ok = (count >= MIN_PAIRS) & (e_true > 0)
    return torch.where(ok, e_pred / e_true.clamp_min(1e-12), torch.full_like(e_pred, float("nan")))


def filled_anchor_depth(
    depth: torch.Tensor,
    mask: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    floor_y: torch.Tensor,
    backdrop: float = 3.0,
) -> torch.Tensor:
    """The depth the growing memory lifts an uncaptured pixel with, for frames without a depth output.

    depth (N, H, W) anchor z-depth (0 where empty), mask (N, H, W) covered pixels, c2w (N, 4, 4) camera poses,
    K (3, 3) intrinsics, floor_y (N,) floor height (+y is down). Holes take the nearest covered pixel's depth, a
    ``backdrop`` where the anchor is empty altogether, never beyond the floor plane along the pixel's ray; covered
    pixels keep their depth (the rule of ``GrowingMemory.write``). Returns (N, H, W) float32.
    """
    N, H, W = depth.shape
    if tuple(mask.shape) != (N, H, W) or tuple(c2w.shape) != (N, 4, 4) or tuple(floor_y.shape) != (N,):
        raise ValueError(
            f"need depth (N, H, W), mask (N, H, W), c2w (N, 4, 4), floor_y (N,); got {tuple(depth.shape)}, "
            f"{tuple(mask.shape)}, {tuple(c2w.shape)}, {tuple(floor_y.shape)}"
        )
    filled = nearest_fill(depth.float()[..., None], mask)[..., 0]
    filled = torch.where(filled > 0, filled, torch.full_like(filled, backdrop))
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3).to(depth.device)
    rays = pixels @ torch.linalg.inv(K.float().to(depth.device)).T  # (HW, 3), z = 1
    down = (rays @ c2w[:, :3, :3].float().transpose(1, 2))[..., 1].reshape(N, H, W)  # world y per unit of z-depth
    to_floor = (floor_y.float()[:, None, None] - c2w[:, None, None, 1, 3].float()) / down.clamp_min(1e-6)
    filled = torch.where(down > 1e-6, torch.minimum(filled, to_floor.clamp_min(1e-3)), filled)
    return torch.where(mask, depth.float(), filled)


def _stats(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 5th percentile of the finite entries (NaN, NaN when none)."""
    v = values[torch.isfinite(values)].double()
    if v.numel() == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(torch.quantile(v, 0.05))


# ------------------------------------------------------------------------------------------------------ shipping rule

CRITERIA = {
    "p5_vs_shipped": "full capture: 5th-percentile frame PSNR >= shipped model's + 3 dB",
    "mean_vs_nearest": "full capture: mean frame PSNR >= nearest fill's + 2 dB",
    "close_never_below_nearest": "full capture: no close-range frame's PSNR below the nearest fill's on that frame",
    "panorama_uncaptured_vs_nearest": "panorama: mean uncaptured PSNR >= nearest fill's + 3 dB",
    "panorama_sharpness": "panorama: sharpness ratio in uncaptured pixels >= 0.7",
    "panorama_depth_absrel": "panorama: depth AbsRel in uncaptured pixels <= 0.15",
}
"""The shipping rule's criteria (from the RGB-D frame-model issue, "What it must show", first bullet), by key."""


def _row(rows: list[dict], capture: str, subset: str, method: str) -> dict | None:
    for r in rows:
        if r["capture"] == capture and r["subset"] == subset and r["method"] == method:
            return r
    return None


def _num(row: dict | None, key: str) -> float:
    if row is None or row.get(key) in (None, ""):
        return float("nan")
    return float(row[key])


def shipping_verdict(rows: list[dict], candidate: str, shipped: str) -> dict[str, dict]:
    """Whether ``candidate`` meets the frame-fidelity shipping rule against the ``shipped`` model, criterion by
    criterion (:data:`CRITERIA`), from benchmark rows (dicts with ``capture``, ``subset``, ``method`` and the metric
    columns; numbers or strings as read back from the CSV).

    Criteria: full capture, all frames: ``psnr_p5 >= shipped psnr_p5 + 3`` and ``psnr >= nearest_fill psnr + 2``;
    full capture, close-range frames (subset ``close``): ``below_nearest_fill == 0`` (never below the nearest fill:
    no close-range frame whose PSNR is lower than the nearest fill's on the same frame; no close-range frame at all
    fails, as not shown); panorama, all frames: ``psnr_uncaptured >= nearest_fill psnr_uncaptured + 3``,
    ``sharpness >= 0.7``, ``depth_absrel <= 0.15``. A missing row or NaN fails its criterion.

    Returns ``{key: {"pass": bool, "value": float, "threshold": float, "rule": str}}`` plus ``"ship"`` (all passed).
    """
    for name, value in (("candidate", candidate), ("shipped", shipped)):
        if not any(r["method"] == value for r in rows):
            found = sorted({r["method"] for r in rows})
            raise ValueError(f"{name}={value!r} has no rows; methods in the rows: {found}")
    full = {m: _row(rows, "full", "all", m) for m in (candidate, shipped, "nearest_fill")}
    pano = {m: _row(rows, "panorama", "all", m) for m in (candidate, "nearest_fill")}
    close = _row(rows, "full", "close", candidate)
    checks = {
        "p5_vs_shipped": (_num(full[candidate], "psnr_p5"), _num(full[shipped], "psnr_p5") + 3.0, ">="),
        "mean_vs_nearest": (_num(full[candidate], "psnr"), _num(full["nearest_fill"], "psnr") + 2.0, ">="),
        "close_never_below_nearest": (
            _num(close, "below_nearest_fill") if close is not None and _num(close, "frames") > 0 else float("nan"),
            0.0,
            "<=",
        ),
        "panorama_uncaptured_vs_nearest": (
            _num(pano[candidate], "psnr_uncaptured"),
            _num(pano["nearest_fill"], "psnr_uncaptured") + 3.0,
            ">=",
        ),
        "panorama_sharpness": (_num(pano[candidate], "sharpness"), 0.7, ">="),
        "panorama_depth_absrel": (_num(pano[candidate], "depth_absrel"), 0.15, "<="),
    }
    verdict = {}
    for key, (value, threshold, op) in checks.items():
        ok = math.isfinite(value) and math.isfinite(threshold)
        ok = ok and (value >= threshold if op == ">=" else value <= threshold)
        verdict[key] = {"pass": bool(ok), "value": value, "threshold": threshold, "rule": CRITERIA[key]}
    verdict["ship"] = {
        "pass": all(v["pass"] for v in verdict.values()),
        "value": float("nan"),
        "threshold": float("nan"),
        "rule": "every criterion passes",
    }
    return verdict


# ------------------------------------------------------------------------------------------------------ rollouts


def _env_kwargs(args, capture: str) -> dict:
    kwargs = dict(
        scenes=f"procedural:{getattr(args, 'scene_split', 'test')}:{args.scenes}",
        capture=capture,
        resolution=args.resolution,
        device=args.device,
        splat_radius=getattr(args, "splat_radius", 0),
        anchor_colour=getattr(args, "anchor_colour", "splat"),
        silhouettes=getattr(args, "silhouettes", "splat"),
    )
    side = getattr(args, "capture_resolution", None)
    if side is not None:  # the scenes' captured views (and so their point clouds) at side x side pixels
        kwargs["scene_options"] = {"resolution": (side, side)}
    return kwargs


def _snapshot(env: WorldFMVectorEnv) -> dict[str, torch.Tensor]:
    return {k: getattr(env, k).clone().cpu() for k in STATE_FIELDS}


def _centre_depth(depth: torch.Tensor) -> torch.Tensor:
    """Mean true depth of the central pixel(s) (N, H, W) -> (N,): the 2x2 block for even sizes, 1 pixel for odd."""
    H, W = depth.shape[-2:]
    rows = slice((H - 1) // 2, H // 2 + 1)
    cols = slice((W - 1) // 2, W // 2 + 1)
    return depth[..., rows, cols].float().mean(dim=(-2, -1))


def _policy_rollouts(args, capture: str, policy: str, scene_of_env: list[int], seed: int) -> list[dict]:
    """States of the envs stepped by a policy (``random`` / ``shortest_path``), one dict per frame."""
    E = len(scene_of_env)
    env = WorldFMVectorEnv(num_envs=E, renderer="anchor", **_env_kwargs(args, capture))
    env.reset(seed=seed, options={"scene_index": scene_of_env})
    act = RandomPolicy(env, seed=seed) if policy == "random" else ShortestPathPolicy(env)
    states = [_snapshot(env)]
    for _ in range(args.frames - 1):
        env.step(act())
        states.append(_snapshot(env))
    env.close()
    return states


def _close_range_rollouts(args, capture: str, scene_of_env: list[int], seed: int) -> list[dict]:
    """States of the scripted close-range camera (see the module docstring), one dict per frame."""
    E = len(scene_of_env)
    env = WorldFMVectorEnv(num_envs=E, renderer="oracle", include_depth=True, **_env_kwargs(args, capture))
    env.reset(seed=seed, options={"scene_index": scene_of_env})
    rng = np.random.default_rng(seed)
    mode = ["turn"] * E
    turns = rng.integers(3, 9, E)
    direction = rng.choice([-1.0, 1.0], E)
    target = rng.uniform(0.2, 0.6, E)
    dwell = [0] * E
    pattern = (1.0, -1.0, -1.0, 1.0)  # left, back, right, back
    states = []
    for t in range(args.frames):
        env.elapsed_steps = torch.full((E,), t, dtype=torch.int64, device=env.device)
        env._observe()
        states.append(_snapshot(env))
        centre = _centre_depth(env._last_frame.depth).cpu().numpy()
        position, yaw = env.position.clone(), env.yaw.clone()
        far = np.where(centre > 0, centre, np.inf)
        move = torch.as_tensor(np.clip(far - target, 0.0, STEP), dtype=position.dtype, device=position.device)
        forward = torch.stack([-torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)], dim=1)
        proposed = position + move[:, None] * forward
        free = env.moves_free(position, proposed).cpu()
        for i in range(E):
            if mode[i] == "walk":
                if far[i] <= target[i] + 1e-3:
                    mode[i], dwell[i] = "dwell", 0
                else:
                    if bool(free[i]):
                        position[i] = proposed[i]
                        continue
                    if far[i] < CLOSE_RANGE_M:
                        mode[i], dwell[i] = "dwell", 0
                    else:
                        mode[i], turns[i], direction[i] = "turn", rng.integers(3, 9), rng.choice([-1.0, 1.0])
            if mode[i] == "dwell":
                if dwell[i] < len(pattern):
                    yaw[i] += pattern[dwell[i]] * TURN
                    dwell[i] += 1
                    continue
                mode[i], turns[i], direction[i] = "turn", rng.integers(6, 13), rng.choice([-1.0, 1.0])
                target[i] = rng.uniform(0.2, 0.6)
            if mode[i] == "turn":
                yaw[i] += direction[i] * TURN
                turns[i] -= 1
                if turns[i] <= 0:
                    mode[i] = "walk"
        env.position, env.yaw = position, yaw
    env.close()
    return states


def record_rollouts(args, capture: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every policy's rollouts of one capture setting: states ``{field: (E, T, ...)}`` and the policy of each env.

    ``args`` needs ``scenes``, ``episodes``, ``frames``, ``resolution``, ``device``, ``seed`` and ``policies``.
    """
    scene_of_env = [s for s in range(args.scenes) for _ in range(args.episodes)]
    per_policy, policy_of_env = [], []
    for k, policy in enumerate(args.policies):
        seed = args.seed * 1000 + 100 * k
        if policy == "close_range":
            states = _close_range_rollouts(args, capture, scene_of_env, seed)
        else:
            states = _policy_rollouts(args, capture, policy, scene_of_env, seed)
        per_policy.append({f: torch.stack([s[f] for s in states], dim=1) for f in STATE_FIELDS})
        policy_of_env += [policy] * len(scene_of_env)
    return {f: torch.cat([p[f] for p in per_policy]) for f in STATE_FIELDS}, policy_of_env


# ------------------------------------------------------------------------------------------------------ rendering


def model_methods(resolution: int) -> list[str]:
    """The shipped frame models for ``resolution`` x ``resolution``, by name, the default one first."""
    suffix = f"-{resolution}x{resolution}"
    names = [n for n in shipped_weights() if n.endswith(suffix)]
    default = default_weights_path(resolution, resolution)
    return sorted(names, key=lambda n: (default is None or n != default.stem, n))


def _render(args, capture: str, states: dict[str, torch.Tensor], renderer: str, weights: str | None = None) -> dict:
    """Frames of one env (``renderer``, ``weights``) at every recorded state: rgb (E, T, H, W, 3) uint8, depth,
    the anchor's rgb / depth / mask where the renderer splats, the poses (E, T, 4, 4), floor heights (E, T),
    the layout depth of ``--depth-bound navigation`` (anchor renderer) and the render time per frame in ms."""
    E, T = states["yaw"].shape
    kwargs = _env_kwargs(args, capture)
    if renderer == "oracle":
        kwargs["include_depth"] = True
    if weights is not None:
        kwargs["weights"] = weights
    bound = getattr(args, "depth_bound", "none")
    if renderer == "worldfm":
        kwargs["depth_bound"] = bound
    env = WorldFMVectorEnv(num_envs=E, renderer=renderer, **kwargs)
    env.reset(seed=args.seed)
    dev = env.device
    layout = None
    # The layout the env caps with for a model that reads none (a layout model's env may cap with the cores it was
    # trained on).
    if renderer == "anchor" and bound == "navigation":
        pool = env.pool
        layout = pool_layout_depth(pool, E, env.height, env.width)
    out: dict[str, list] = {
        k: [] for k in ("rgb", "depth", "anchor", "anchor_depth", "mask", "c2w", "floor_y", "layout_depth")
    }
    seconds = 0.0
    for t in range(T):
        for field in STATE_FIELDS:
            current = getattr(env, field)
            setattr(env, field, states[field][:, t].to(device=dev, dtype=current.dtype).clone())
        start = time.perf_counter()
        env._observe()
        seconds += time.perf_counter() - start
        frame = env._last_frame
        out["rgb"].append(frame.rgb.cpu().clone())
        out["depth"].append(frame.depth.float().cpu().clone())
        out["c2w"].append(env.camera_poses().cpu())
        out["floor_y"].append(env.pool.floor_y[env.scene_index.long()].float().cpu())
        if frame.anchor is not None:
            out["anchor"].append(frame.anchor.rgb.cpu().clone())
            out["anchor_depth"].append(frame.anchor.depth.float().cpu().clone())
            out["mask"].append(frame.anchor.mask.cpu().clone())
        if layout is not None:
            out["layout_depth"].append(
                layout.render(env.scene_index, env.camera_poses(), env.pipeline.K_inv).cpu().clone()
            )
    K = env.K[0].cpu() if env.K.ndim == 3 else env.K.cpu()
    frame_model = getattr(env.pipeline.backend, "frame_model", None)
    env.close()
    result = {k: torch.stack(v, dim=1) for k, v in out.items() if v}
    result["K"] = K
    result["model_depth"] = frame_model is not None and frame_model.has_depth
    result["ms_per_frame"] = 1000.0 * seconds / (E * T)
    return result


# ------------------------------------------------------------------------------------------------------ evaluation


FRAME_FIELDS = {
    "capture": "capture setting",
    "rollout": "rollout index within the capture (policies in --policies order, then scenes, then episodes)",
    "frame": "frame index within the rollout",
    "policy": "the policy that produced the frame",
    "close": "true centre depth below the close-range limit",
    "centre_depth": "true centre depth (m)",
    "uncaptured_fraction": "share of the frame's pixels the anchor leaves empty",
    "method": "the method that rendered the frame",
    "psnr": "PSNR over all pixels (dB)",
    "ssim": "SSIM",
    "psnr_uncaptured": "PSNR over the uncaptured pixels (dB; NaN without any)",
    "vs_nearest_fill": "psnr minus the nearest fill's on the same frame (dB)",
    "depth_absrel": "depth AbsRel over uncaptured pixels with a true depth (NaN where the method has no depth)",
}
"""The columns of ``rollout_fidelity_frames.csv`` (``--per-frame``), one row per capture, frame and method."""


def _frame_metrics(
    img: torch.Tensor, truth: torch.Tensor, captured: torch.Tensor, chunk: int = 256, is_truth: bool = False
) -> dict:
    """Per-frame metrics of flattened frames (F, H, W, 3) against the truth (``is_truth``: the frames are the truth
    itself, whose SSIM is 1 by definition and is not computed: SSIM is the slowest metric on a CPU)."""
    parts: dict[str, list] = {k: [] for k in ("psnr", "ssim", "psnr_captured", "psnr_uncaptured", "e_pred", "e_true")}
    for s in range(0, img.shape[0], chunk):
        x, y, m = img[s : s + chunk], truth[s : s + chunk], captured[s : s + chunk]
        parts["psnr"].append(psnr(x, y))
        parts["ssim"].append(torch.ones(x.shape[0], dtype=torch.float64) if is_truth else ssim(x, y))
        parts["psnr_captured"].append(psnr(x, y, m))
        parts["psnr_uncaptured"].append(psnr(x, y, ~m))
        parts["e_pred"].append(gradient_energy(x, ~m)[0])
        parts["e_true"].append(gradient_energy(y, ~m)[0])
    return {k: torch.cat(v) for k, v in parts.items()}


#: A depth more than this fraction beyond / short of the true depth counts in ``depth_far`` / ``depth_near``.
DEPTH_DISAGREEMENT = 0.1


def _depth_errors(depth: torch.Tensor, true_depth: torch.Tensor, uncaptured: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-frame (F,) depth errors over uncaptured pixels with a true depth, NaN where a frame has none: ``absrel``
    (mean |d - d_true| / d_true), ``far`` / ``near`` (share of those pixels with d > 1.1 d_true / d < 0.9 d_true)."""
    valid = uncaptured & (true_depth > 0)
    d, t = depth.double(), true_depth.double()
    rel = (d - t).abs() / t.clamp_min(1e-6)
    count = valid.sum(dim=(-2, -1))

    def per_frame(values: torch.Tensor) -> torch.Tensor:
        value = (values.double() * valid).sum(dim=(-2, -1)) / count.clamp_min(1)
        return torch.where(count > 0, value, torch.full_like(value, float("nan")))

    return {
        "absrel": per_frame(rel),
        "far": per_frame(d > (1 + DEPTH_DISAGREEMENT) * t),
        "near": per_frame(d < (1 - DEPTH_DISAGREEMENT) * t),
    }


def evaluate_capture(args, capture: str, methods: list[str], verbose: bool = True) -> tuple[list[dict], dict]:
    """Rollouts, renders and rows of one capture setting; returns (rows, frames for the sample grid)."""
    start = time.perf_counter()
    states, policy_of_env = record_rollouts(args, capture)
    E, T = states["yaw"].shape
    if verbose:
        print(f"[{capture}] {E} rollouts x {T} frames recorded in {time.perf_counter() - start:.1f} s", flush=True)
    oracle = _render(args, capture, states, "oracle")
    anchor = _render(args, capture, states, "anchor")
    truth, true_depth = oracle["rgb"].flatten(0, 1), oracle["depth"].flatten(0, 1)
    captured = anchor["mask"].flatten(0, 1)
    anchor_rgb = anchor["anchor"].flatten(0, 1)
    filled_depth = filled_anchor_depth(
        anchor["anchor_depth"].flatten(0, 1),
        captured,
        anchor["c2w"].flatten(0, 1),
        anchor["K"],
        anchor["floor_y"].flatten(0, 1),
    )
    if "layout_depth" in anchor:  # --depth-bound navigation: the fills' depth capped as the models' env caps theirs
        layout = anchor["layout_depth"].flatten(0, 1)
        filled_depth = torch.where((~captured) & (layout > 0), torch.minimum(filled_depth, layout), filled_depth)
    frames = {"anchor": anchor_rgb}
    timing = {"anchor": anchor["ms_per_frame"], "oracle": oracle["ms_per_frame"]}
    depths = {"anchor": None}
    depth_source = {"anchor": "none", "oracle": "ray cast"}
    weights_of = getattr(args, "weights_of", {})
    for m in methods:
        if m == "nearest_fill":
            t0 = time.perf_counter()
            frames[m] = nearest_fill(anchor_rgb, captured)
            timing[m] = anchor["ms_per_frame"] + 1000 * (time.perf_counter() - t0) / truth.shape[0]
        elif m == "pull_push_fill":
            t0 = time.perf_counter()
            frames[m] = pull_push_fill(anchor_rgb, captured)
            timing[m] = anchor["ms_per_frame"] + 1000 * (time.perf_counter() - t0) / truth.shape[0]
        elif m != "anchor":
            t0 = time.perf_counter()
            rendered = _render(args, capture, states, "worldfm", weights=weights_of.get(m, m))
            frames[m] = rendered["rgb"].flatten(0, 1)
            if rendered["model_depth"]:  # an RGB-D model: the env's depth is the model's in the anchor's holes
                depths[m], depth_source[m] = rendered["depth"].flatten(0, 1), "model"
            timing[m] = rendered["ms_per_frame"]
            if not torch.equal(rendered["mask"].flatten(0, 1), captured):
                raise RuntimeError(f"method {m!r}: its env's anchor mask differs from the anchor env's")
            if verbose:
                print(f"[{capture}] rendered {m} in {time.perf_counter() - t0:.1f} s", flush=True)
        if m != "anchor" and m not in depths:
            depths[m], depth_source[m] = filled_depth, "filled anchor"
    frames["oracle"], depths["oracle"], order = truth, true_depth, [*methods, "oracle"]
    if "anchor" not in order:
        order.insert(0, "anchor")

    policy = np.repeat(np.array(policy_of_env), T)
    centre = _centre_depth(true_depth)
    close = (centre > 0) & (centre < CLOSE_RANGE_M)
    subsets = {"all": torch.ones_like(close)}
    subsets.update({p: torch.as_tensor(policy == p) for p in args.policies})
    subsets["close"] = close

    metrics = {m: _frame_metrics(frames[m], truth, captured, is_truth=m == "oracle") for m in order}
    empty = ~captured.flatten(1).any(dim=1)  # frames whose anchor covers no pixel (the fills leave them black)
    depth_errors = {
        m: _depth_errors(depths[m], true_depth, ~captured) if depths[m] is not None else None for m in order
    }
    fill_psnr = metrics["nearest_fill"]["psnr"] if "nearest_fill" in metrics else None
    # per frame: the method's PSNR minus the nearest fill's on the same frame (None without the fill)
    margin = {m: metrics[m]["psnr"] - fill_psnr if fill_psnr is not None else None for m in order}
    rows = []
    for subset, sel in subsets.items():
        for m in order:
            mt = metrics[m]
            row = {"capture": capture, "subset": subset, "method": m, "frames": int(sel.sum())}
            row["psnr"], row["psnr_p5"] = _stats(mt["psnr"][sel])
            row["ssim"], row["ssim_p5"] = _stats(mt["ssim"][sel])
            row["psnr_captured"], row["psnr_captured_p5"] = _stats(mt["psnr_captured"][sel])
            row["psnr_uncaptured"], row["psnr_uncaptured_p5"] = _stats(mt["psnr_uncaptured"][sel])
            e_true = float(mt["e_true"][sel].sum())
            row["sharpness"] = float(mt["e_pred"][sel].sum()) / e_true if e_true > 0 else float("nan")
            for key in ("absrel", "far", "near"):
                errors = depth_errors[m]
                row[f"depth_{key}"] = _stats(errors[key][sel])[0] if errors is not None else float("nan")
            row["depth_source"] = depth_source[m]
            if margin[m] is not None and int(sel.sum()) > 0:
                row["below_nearest_fill"] = float((margin[m][sel] < 0).double().mean())
                row["worst_vs_nearest_fill"] = float(margin[m][sel].min())
            else:
                row["below_nearest_fill"] = row["worst_vs_nearest_fill"] = float("nan")
            row["uncaptured_fraction"] = float((~captured[sel]).float().mean()) if int(sel.sum()) else float("nan")
            row["empty_anchor_fraction"] = float(empty[sel].float().mean()) if int(sel.sum()) else float("nan")
            row["ms_per_frame"] = timing[m]
            row["resolution"] = args.resolution
            row["splat_radius"] = getattr(args, "splat_radius", 0)
            row["anchor_colour"] = getattr(args, "anchor_colour", "splat")
            row["silhouettes"] = getattr(args, "silhouettes", "splat")
            row["capture_resolution"] = getattr(args, "capture_resolution", None) or args.resolution
            row["depth_bound"] = getattr(args, "depth_bound", "none")
            row["device"] = args.device
            rows.append(row)
    grid = {"frames": frames, "close": close, "policy": policy, "centre": centre}
    if getattr(args, "per_frame", False):
        F = truth.shape[0]
        nan = [float("nan")] * F
        frame = {
            "close": close.tolist(),
            "centre_depth": centre.double().tolist(),
            "uncaptured_fraction": (~captured).flatten(1).double().mean(dim=1).tolist(),
        }
        grid["per_frame"] = []
        for m in order:
            per_method = {
                "psnr": metrics[m]["psnr"].tolist(),
                "ssim": metrics[m]["ssim"].tolist(),
                "psnr_uncaptured": metrics[m]["psnr_uncaptured"].tolist(),
                "vs_nearest_fill": margin[m].tolist() if margin[m] is not None else nan,
                "depth_absrel": depth_errors[m]["absrel"].tolist() if depth_errors[m] is not None else nan,
            }
            grid["per_frame"] += [
                {
                    "capture": capture,
                    "rollout": i // T,
                    "frame": i % T,
                    "policy": str(policy[i]),
                    "close": frame["close"][i],
                    "centre_depth": round(frame["centre_depth"][i], 4),
                    "uncaptured_fraction": round(frame["uncaptured_fraction"][i], 4),
                    "method": m,
                    **{k: round(v[i], 4 if k in ("ssim", "depth_absrel") else 3) for k, v in per_method.items()},
                }
                for i in range(F)
            ]
    return rows, grid


# ------------------------------------------------------------------------------------------------------ report


def plot(rows: list[dict], path: Path) -> None:
    """Bars per method: mean / p5 PSNR, uncaptured PSNR, close-range PSNR, sharpness and depth AbsRel, per capture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captures = [c for c in CAPTURES if any(r["capture"] == c for r in rows)]
    panels = [
        ("all", "psnr", "PSNR mean (dB)"),
        ("all", "psnr_p5", "PSNR p5 (dB)"),
        ("all", "psnr_uncaptured", "uncaptured PSNR (dB)"),
        ("close", "psnr", "close-range PSNR (dB)"),
        ("all", "sharpness", "sharpness ratio"),
        ("all", "depth_absrel", "depth AbsRel, uncaptured"),
    ]
    fig, axes = plt.subplots(
        len(captures), len(panels), figsize=(3.2 * len(panels), 3.3 * len(captures)), squeeze=False
    )
    for i, capture in enumerate(captures):
        for j, (subset, key, title) in enumerate(panels):
            ax = axes[i, j]
            sel = [r for r in rows if r["capture"] == capture and r["subset"] == subset and r["method"] != "oracle"]
            values = [r[key] if math.isfinite(r[key]) else 0.0 for r in sel]
            ax.bar(range(len(sel)), values, color="tab:blue")
            ax.set_xticks(range(len(sel)), [r["method"] for r in sel], rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{capture}: {title}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_grid(grids: dict[str, dict], models: list[str], path: Path, count: int = 8) -> None:
    """Rows of frames (half of them close-range, both captures): anchor | nearest fill | each model | oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [
        c for c in ("anchor", "nearest_fill", *models, "oracle") if all(c in g["frames"] for g in grids.values())
    ]
    picks = []
    per_capture = max(1, count // max(1, len(grids)))
    for capture, g in grids.items():
        close = torch.nonzero(g["close"]).flatten().tolist()
        other = torch.nonzero(~g["close"]).flatten().tolist()
        n_close = min(len(close), (per_capture + 1) // 2)
        chosen = [close[int(k)] for k in np.linspace(0, len(close) - 1, n_close).round()] if n_close else []
        n_other = min(len(other), per_capture - len(chosen))
        chosen += [other[int(k)] for k in np.linspace(0, len(other) - 1, n_other).round()] if n_other else []
        picks += [(capture, i) for i in chosen]
    if not picks:
        return
    fig, axes = plt.subplots(len(picks), len(columns), figsize=(1.3 * len(columns), 1.45 * len(picks)), squeeze=False)
    for r, (capture, i) in enumerate(picks):
        g = grids[capture]
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(g["frames"][name][i].numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=6)
        label = f"{capture}\n{g['policy'][i]}\n{float(g['centre'][i]):.2f} m"
        axes[r, 0].set_ylabel(label, fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, digits: int = 2) -> str:
    return "" if not isinstance(v, float) or not math.isfinite(v) else f"{v:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    """The main figures (subset ``all``, plus close-range PSNR) per capture and method, as a markdown table."""
    lines = [
        "| capture | method | PSNR | PSNR p5 | SSIM | captured | uncaptured | uncaptured p5 | close-range PSNR "
        "(p5) | close below nearest fill | sharpness | depth AbsRel | depth far / near | ms/frame |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["subset"] != "all":
            continue
        c = _row(rows, r["capture"], "close", r["method"])
        close = f"{_fmt(_num(c, 'psnr'))} ({_fmt(_num(c, 'psnr_p5'))})" if c and c["frames"] else ""
        below = f"{100 * _num(c, 'below_nearest_fill'):.0f} %" if c and c["frames"] else ""
        if below and _num(c, "below_nearest_fill") > 0:  # by how much the worst close-range frame misses
            below += f" (worst {_num(c, 'worst_vs_nearest_fill'):+.2f} dB)"
        far, near = _num(r, "depth_far"), _num(r, "depth_near")
        far_near = f"{100 * far:.0f} / {100 * near:.0f} %" if math.isfinite(far) and math.isfinite(near) else ""
        lines.append(
            f"| {r['capture']} | {r['method']} | {_fmt(r['psnr'])} | {_fmt(r['psnr_p5'])} | {_fmt(r['ssim'], 3)} | "
            f"{_fmt(r['psnr_captured'])} | {_fmt(r['psnr_uncaptured'])} | {_fmt(r['psnr_uncaptured_p5'])} | {close} | "
            f"{below} | "
            f"{_fmt(r['sharpness'], 3)} | {_fmt(r['depth_absrel'], 3)} | {far_near} | {_fmt(r['ms_per_frame'], 1)} |"
        )
    return "\n".join(lines)


def verdict_table(verdict: dict[str, dict]) -> str:
    """The verdict as a markdown table."""
    lines = ["| criterion | value | needs | pass |", "|---|---:|---:|---|"]
    for key, v in verdict.items():
        if key == "ship":
            continue
        op = "<=" if key in ("close_never_below_nearest", "panorama_depth_absrel") else ">="
        lines.append(f"| {v['rule']} | {_fmt(v['value'], 3)} | {op} {_fmt(v['threshold'], 3)} | {v['pass']} |")
    lines.append(f"| **ship** | | | **{verdict['ship']['pass']}** |")
    return "\n".join(lines)


def run(args, verbose: bool = True) -> tuple[list[dict], dict[str, dict] | None]:
    """Run the benchmark for parsed ``args``; writes the outputs; returns (rows, verdict or None)."""
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = model_methods(args.resolution)
    args.weights_of = {}
    if getattr(args, "candidate", None):
        from worldfm_env.model.weights import resolve_weights

        label = resolve_weights(args.candidate).stem
        if label not in models:
            args.weights_of[label] = str(resolve_weights(args.candidate))
        models = [label, *[m for m in models if m != label]]  # first: the verdict's candidate
    methods = list(args.methods) if args.methods else [*BASELINES, *models]
    if getattr(args, "candidate", None) and models[0] not in methods:
        methods.append(models[0])  # the candidate is judged whatever --methods lists
    valid = [*BASELINES, *models]
    bad = [m for m in methods if m not in valid]
    if bad:
        raise ValueError(f"methods {bad} are not valid; valid: {valid} (the oracle always runs)")
    if "nearest_fill" not in methods:
        methods.insert(0, "nearest_fill")
    methods = sorted(set(methods), key=valid.index)
    bad = [c for c in args.captures if c not in CAPTURES]
    if bad or not args.captures:
        raise ValueError(f"captures {list(args.captures)}: give one or more of {list(CAPTURES)}")
    bad = [p for p in args.policies if p not in POLICIES]
    if bad or not args.policies:
        raise ValueError(f"policies {list(args.policies)}: give one or more of {list(POLICIES)}")
    rows, grids = [], {}
    for capture in args.captures:
        capture_rows, grids[capture] = evaluate_capture(args, capture, methods, verbose)
        rows += capture_rows
    with open(out / "rollout_fidelity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if getattr(args, "per_frame", False):
        with open(out / "rollout_fidelity_frames.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(FRAME_FIELDS))
            writer.writeheader()
            for capture in args.captures:
                writer.writerows(grids[capture]["per_frame"])
    used_models = [m for m in methods if m in models]
    plot(rows, out / "rollout_fidelity.png")
    sample_grid(grids, used_models, out / "rollout_fidelity_samples.png", args.samples)
    verdict = None
    if len(used_models) >= 2:
        verdict = shipping_verdict(rows, candidate=used_models[0], shipped=used_models[1])
        with open(out / "verdict.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["criterion", "rule", "value", "threshold", "pass"])
            writer.writeheader()
            for key, v in verdict.items():
                writer.writerow({"criterion": key, **v})
    wall = time.perf_counter() - start
    if verbose:
        frames = {c: next(r["frames"] for r in rows if r["capture"] == c) for c in args.captures}
        share = {
            c: f"{100 * next(r['uncaptured_fraction'] for r in rows if r['capture'] == c):.0f} %" for c in args.captures
        }
        close = {c: _row(rows, c, "close", "oracle")["frames"] for c in args.captures}
        empty = {
            c: f"{100 * next(r['empty_anchor_fraction'] for r in rows if r['capture'] == c):.1f} %"
            for c in args.captures
        }
        print(
            f"\n{args.scenes} test scenes, {len(args.policies)} policies x {args.episodes} rollouts per scene x "
            f"{args.frames} frames, {args.resolution}x{args.resolution}, device={args.device}; frames per capture: "
            f"{frames}; uncaptured pixels: {share}; frames with an empty anchor: {empty}; close-range frames (true "
            f"centre depth < {CLOSE_RANGE_M} m): {close}"
        )
        print(markdown_table(rows))
        print("\nPSNR per policy subset (mean / p5):")
        subsets = [*args.policies, "close"]
        print("| capture | method | " + " | ".join(subsets) + " |")
        print("|---|---|" + "---:|" * len(subsets))
        for r in rows:
            if r["subset"] == "all":
                cells = []
                for s in subsets:
                    x = _row(rows, r["capture"], s, r["method"])
                    cells.append(f"{_fmt(_num(x, 'psnr'))} / {_fmt(_num(x, 'psnr_p5'))} ({x['frames']})" if x else "")
                print(f"| {r['capture']} | {r['method']} | " + " | ".join(cells) + " |")
        if verdict is not None:
            print(f"\nShipping verdict: candidate {used_models[0]} against shipped {used_models[1]}")
            print(verdict_table(verdict))
        print(f"\nwall time {wall:.1f} s")
    return rows, verdict


def settle_rollout_size(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Apply ``--quick`` (2 scenes, 1 rollout each, 16 frames) and check ``--scenes``, ``--episodes`` and
    ``--frames`` are positive, naming the bad one: shared by the benchmarks that replay these rollouts."""
    if args.quick:
        args.scenes, args.episodes, args.frames = 2, 1, 16
    for name in ("scenes", "episodes", "frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="rollout_fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=8, help="held-out test scenes (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=2, help="rollouts per scene and policy (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=80, help="frames per rollout (default: %(default)s)")
    parser.add_argument("--captures", nargs="+", default=list(CAPTURES), help="capture settings (default: both)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), help="policies (default: all three)")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="methods besides the oracle (default: the fills and every model)"
    )
    parser.add_argument(
        "--candidate",
        default=None,
        help="a frame model to judge against the default shipped one (checkpoint path or shipped name); it joins the "
        "methods and the verdict compares it with the default (without it: the default against the earlier model)",
    )
    parser.add_argument(
        "--splat-radius",
        type=splat_radius_arg,
        default=0,
        help="anchor splat half-size of every splatting method: an int in [0, 8] or auto (default: %(default)s, the "
        "env's)",
    )
    parser.add_argument(
        "--anchor-colour",
        choices=list(ANCHOR_COLOUR_VALUES),
        default="splat",
        help="colour of covered anchor pixels for every splatting method: each point's own (splat) or resampled from "
        "the captured views (bank) (default: %(default)s, the env's)",
    )
    parser.add_argument(
        "--silhouettes",
        choices=list(SILHOUETTE_VALUES),
        default="splat",
        help="where footprint and one-pixel splats disagree, keep the footprint (splat) or take the learned choice "
        "(learned), for every splatting method (default: %(default)s, the env's)",
    )
    parser.add_argument("--resolution", type=int, default=64, help="frame size (default: %(default)s)")
    parser.add_argument(
        "--capture-resolution",
        type=int,
        default=None,
        help="side of the scenes' captured views, which sets the density of their point clouds (default: the frame "
        "size, as the env does)",
    )
    parser.add_argument(
        "--depth-bound",
        choices=["none", "navigation"],
        default="none",
        help="cap every method's depth in uncaptured pixels at the scene's navigation layout (the env's depth_bound; "
        "default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="device (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="rollout seed (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=8, help="rows of the sample grid (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 scenes, 1 rollout each, 16 frames")
    parser.add_argument(
        "--per-frame", action="store_true", help="also write rollout_fidelity_frames.csv: every frame's metrics"
    )
    parser.add_argument("--out", default=str(RESULTS), help="output folder (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    settle_rollout_size(parser, args)
    if args.capture_resolution is not None and args.capture_resolution < 1:
        parser.error(f"--capture-resolution must be a positive integer, got {args.capture_resolution}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark from the command line; returns the CSV rows."""
    rows, _ = run(parse_args(argv))
    return rows


if __name__ == "__main__":
    main()
