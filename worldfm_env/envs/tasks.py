"""Tasks: small hooks on top of the batched core (episode start, reward, termination, metrics).

A task sees the core env's batched state tensors (``position``, ``yaw``, ``pitch``,
``scene_index``, ``path_length``, ``collisions``...) and overrides four hooks:
``observation_spaces``, ``initialize_episodes(mask, draws)``, ``evaluate(stop, active)`` and
``observations()``. All hooks are batched over N envs and run on the device without host syncs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from gymnasium import spaces

from worldfm_env._device import init_warp, warp_device

if TYPE_CHECKING:  # pragma: no cover
    from worldfm_env.envs.vector import WorldFMVectorEnv

wp = init_warp()

__all__ = ["Task", "PointNavTask", "ExploreTask", "make_task"]


class Task:
    """Base task: the hooks the core env calls. Subclasses override what they need."""

    name = "base"
    #: Uniform draws per env that :meth:`initialize_episodes` consumes, after the core's own.
    num_draws = 0

    def __init__(self, env: WorldFMVectorEnv) -> None:
        self.env = env
        self.device = env.device

    def observation_spaces(self) -> dict[str, spaces.Space]:
        """Task observation keys and their single-env spaces."""
        return {}

    def initialize_episodes(self, mask: torch.Tensor, draws: torch.Tensor) -> None:
        """Start new episodes where ``mask`` (N,) is True. ``draws`` (N, num_draws) uniform [0, 1)."""

    def evaluate(
        self, stop: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """After the dynamics: (reward (N,), terminated (N,) bool, metrics {name: (N,)})."""
        raise NotImplementedError

    def metrics(self) -> dict[str, torch.Tensor]:
        """Current metrics without stepping (used at reset)."""
        raise NotImplementedError

    def observations(self) -> dict[str, torch.Tensor]:
        """Task observations (N, ...) for the current state."""
        return {}


class PointNavTask(Task):
    """Reach a goal given as (distance, angle) in the agent frame; STOP within ``success_distance``.

    Reward: decrease of geodesic distance to the goal + ``success_reward`` on success -
    ``time_penalty``. With continuous actions (no STOP) success is reaching the goal radius.
    """

    name = "pointnav"
    num_draws = 2 + 64  # goal choice, yaw, start candidates

    #: Points the straight path to the goal is checked at (at most half a cell apart): the straight-line
    #: distance replaces the grid field up to ``(SIGHT_SAMPLES - 1) / 2`` = 31.5 cells from the goal.
    SIGHT_SAMPLES = 64

    def __init__(self, env: WorldFMVectorEnv) -> None:
        super().__init__(env)
        nav = env.navigation
        cfg = env.config
        N = env.num_envs
        self.goal_cells = nav.goal_cells  # (S, G) flat cell index
        self.fields = nav.goal_fields  # (S, G, Gz*Gx) metres, inf unreachable
        self.goal = torch.zeros(N, 3, device=self.device)
        self.goal_slot = torch.zeros(N, dtype=torch.long, device=self.device)
        self.start_distance = torch.ones(N, device=self.device)
        self.distance = torch.zeros(N, device=self.device)
        self.success = torch.zeros(N, dtype=torch.bool, device=self.device)
        self.min_d, self.max_d = cfg.min_goal_distance, cfg.max_goal_distance
        self._sight_fractions = torch.linspace(0.0, 1.0, self.SIGHT_SAMPLES, device=self.device)

    def observation_spaces(self) -> dict[str, spaces.Space]:
        """``pointgoal``: (distance, angle) to the goal in the agent frame; angle positive to the left."""
        low = np.array([0.0, -math.pi], dtype=np.float32)
        high = np.array([np.inf, math.pi], dtype=np.float32)
        return {"pointgoal": spaces.Box(low, high, dtype=np.float32)}

    def initialize_episodes(self, mask: torch.Tensor, draws: torch.Tensor) -> None:
        """Pick a goal among the scene's candidates and a start at geodesic distance in range."""
        env, nav = self.env, self.env.navigation
        scene = env.scene_index.long()
        G = self.fields.shape[1]
        slot = (draws[:, 0] * G).long().clamp(max=G - 1)
        count = nav.main_count[scene]  # (N,)
        cand = (draws[:, 2:] * count[:, None]).long().clamp(max=nav.main_cells.shape[1] - 1)
        cells = nav.main_cells[scene[:, None], cand]  # (N, T)
        cells_per_field = self.fields.shape[2]
        d = self.fields.reshape(-1)[(scene * G + slot)[:, None] * cells_per_field + cells]  # (N, T)
        # First candidate inside [min, max]; if none, the one closest to the range (small scenes).
        violation = torch.relu(self.min_d - d) + torch.relu(d - self.max_d)
        violation = torch.where(torch.isfinite(d) & (d > 0), violation, torch.full_like(d, float("inf")))
        first_ok = (violation == 0).float()
        rank = torch.where(first_ok > 0, -1.0 + torch.arange(d.shape[1], device=d.device) * 1e-6, violation)
        pick = rank.argmin(dim=1)
        start_cell = cells.gather(1, pick[:, None])[:, 0]
        start_xz = nav.cell_to_world(scene, start_cell)
        goal_xz = nav.cell_to_world(scene, self.goal_cells[scene, slot])
        y = env.pool.floor_y[scene] - env.pool.camera_height[scene]
        m3 = mask[:, None]
        env.position.copy_(torch.where(m3, torch.stack([start_xz[:, 0], y, start_xz[:, 1]], -1), env.position))
        self.goal.copy_(torch.where(m3, torch.stack([goal_xz[:, 0], y, goal_xz[:, 1]], -1), self.goal))
        self.goal_slot.copy_(torch.where(mask, slot, self.goal_slot))
        d_start = self._geodesic(env.position)
        self.start_distance.copy_(torch.where(mask, d_start.clamp_min(1e-6), self.start_distance))
        self.distance.copy_(torch.where(mask, d_start, self.distance))
        self.success.masked_fill_(mask, False)

    def _geodesic(self, position: torch.Tensor) -> torch.Tensor:
        """Geodesic distance (N,) from each agent to its goal.

        Where the straight path to the goal stays on free cells (checked at least every half cell, up to
        ``(SIGHT_SAMPLES - 1) / 2`` cells away), the shortest path is that line and its length is exact. Elsewhere
        it is the goal field read at the 2x2 nearest cell centres (:meth:`NavigationData.interpolate_field`),
        which over-estimates by up to half a cell near the goal: alone, it failed some STOPs made inside the
        success radius.
        """
        env, nav = self.env, self.env.navigation
        scene = env.scene_index.long()
        field = nav.interpolate_field(self.fields.flatten(0, 1), self.field_rows(), scene, position)
        dx, dz = self.goal[:, 0] - position[:, 0], self.goal[:, 2] - position[:, 2]
        straight = torch.sqrt(dx * dx + dz * dz)
        near = straight <= env.pool.nav_cell_size[scene] * (self.SIGHT_SAMPLES - 1) / 2
        visible = near & nav.segment_free(scene, position, self.goal, self._sight_fractions)
        return torch.where(visible, torch.minimum(field, straight), field)

    def field_rows(self) -> torch.Tensor:
        """Row of each env's goal field in ``fields.flatten(0, 1)`` (N,)."""
        return self.env.scene_index.long() * self.fields.shape[1] + self.goal_slot

    def evaluate(self, stop, active):
        """Distance-decrease reward, STOP-based success, SPL and SoftSPL."""
        cfg = self.env.config
        previous = self.distance
        distance = self._geodesic(self.env.position)
        near = distance <= cfg.success_distance
        if cfg.action_type == "discrete":
            success = stop & near & active
            terminated = stop & active
        else:
            success = near & active
            terminated = success
        reward = (previous - distance) + cfg.success_reward * success.float() - cfg.time_penalty
        reward = torch.where(active, reward, torch.zeros_like(reward))
        self.distance = torch.where(active, distance, previous)
        self.success = success
        return reward, terminated, self.metrics()

    def metrics(self) -> dict[str, torch.Tensor]:
        """success, spl, soft_spl, distance_to_goal, collisions."""
        L = self.start_distance
        P = self.env.path_length
        ratio = L / torch.maximum(P, L)
        soft = (1.0 - (self.distance / L).clamp(0.0, 1.0)) * ratio
        return {
            "success": self.success.clone(),
            "spl": self.success.float() * ratio,
            "soft_spl": soft,
            "distance_to_goal": self.distance.clone(),
            "collisions": self.env.collisions.clone(),
        }

    def observations(self) -> dict[str, torch.Tensor]:
        """``pointgoal`` (N, 2): distance and angle (left positive) of the goal in the agent frame."""
        env = self.env
        dx = self.goal[:, 0] - env.position[:, 0]
        dz = self.goal[:, 2] - env.position[:, 2]
        s, c = torch.sin(env.yaw), torch.cos(env.yaw)
        forward = -s * dx + c * dz
        left = -(c * dx + s * dz)
        rho = torch.sqrt(forward * forward + left * left)
        phi = torch.atan2(left, forward)
        return {"pointgoal": torch.stack([rho, phi], dim=-1)}


@wp.kernel
def _mark_seen_kernel(
    free: wp.array3d(dtype=wp.uint8),  # (S, Gz, Gx)
    scene_index: wp.array(dtype=wp.int32),  # (N,)
    position: wp.array(dtype=wp.vec3),  # (N,)
    yaw: wp.array(dtype=wp.float32),  # (N,)
    origin: wp.array(dtype=wp.vec2),  # (S,) (x0, z0)
    cell_size: wp.array(dtype=wp.float32),  # (S,)
    half_fov: float,
    max_distance: float,
    num_rays: int,
    seen: wp.array3d(dtype=wp.uint8),  # (N, Gz, Gx)
):
    env, ray = wp.tid()
    s = scene_index[env]
    cs = cell_size[s]
    o = origin[s]
    p = position[env]
    # Ray directions spread evenly over [-half_fov, half_fov] around the heading (left positive).
    frac = float(ray) / float(wp.max(num_rays - 1, 1))
    angle = yaw[env] + half_fov - 2.0 * half_fov * frac
    dx = -wp.sin(angle)
    dz = wp.cos(angle)
    step = 0.5 * cs
    n = int(max_distance / step) + 1
    for k in range(n):
        x = p[0] + dx * step * float(k)
        z = p[2] + dz * step * float(k)
        col = int(wp.floor((x - o[0]) / cs))
        row = int(wp.floor((z - o[1]) / cs))
        if row < 0 or col < 0 or row >= free.shape[1] or col >= free.shape[2]:
            return
        if free[s, row, col] == wp.uint8(0):
            return
        seen[env, row, col] = wp.uint8(1)


class ExploreTask(Task):
    """Observe as much of the free space as possible.

    Reward: newly observed free area (cells x cell_size^2, m^2) - ``time_penalty``. A cell is
    observed when a view ray in the horizontal field of view reaches it within
    ``explore_view_distance`` through free cells. ``coverage`` = observed / reachable free cells.
    """

    name = "explore"
    num_draws = 2 + 1

    def __init__(self, env: WorldFMVectorEnv) -> None:
        super().__init__(env)
        nav = env.navigation
        N = env.num_envs
        Gz, Gx = nav.free.shape[1:]
        self.seen = torch.zeros(N, Gz, Gx, dtype=torch.uint8, device=self.device)
        self.seen_count = torch.zeros(N, device=self.device)
        self.coverage = torch.zeros(N, device=self.device)
        self.success = torch.zeros(N, dtype=torch.bool, device=self.device)
        self.wp_device = warp_device(self.device)
        self._wp = dict(
            free=wp.from_torch(nav.free.to(torch.uint8).contiguous()),
            origin=wp.from_torch(env.pool.nav_origin.contiguous(), dtype=wp.vec2),
            cell_size=wp.from_torch(env.pool.nav_cell_size.contiguous()),
            seen=wp.from_torch(self.seen),
        )
        self.num_rays = max(8, int(math.ceil(env.config.hfov_deg / 2.0)))

    def initialize_episodes(self, mask: torch.Tensor, draws: torch.Tensor) -> None:
        """Start anywhere in the scene's main free component, clear the observed cells."""
        env, nav = self.env, self.env.navigation
        scene = env.scene_index.long()
        count = nav.main_count[scene]
        cand = (draws[:, 2] * count).long().clamp(max=nav.main_cells.shape[1] - 1)
        cell = nav.main_cells[scene, cand]
        xz = nav.cell_to_world(scene, cell)
        y = env.pool.floor_y[scene] - env.pool.camera_height[scene]
        env.position.copy_(torch.where(mask[:, None], torch.stack([xz[:, 0], y, xz[:, 1]], -1), env.position))
        self.seen.masked_fill_(mask[:, None, None], 0)
        self._observe()
        self.seen_count.copy_(torch.where(mask, self._count(), self.seen_count))
        self._update_coverage()
        self.success.masked_fill_(mask, False)

    def _observe(self) -> None:
        env = self.env
        wp.launch(
            _mark_seen_kernel,
            dim=(env.num_envs, self.num_rays),
            inputs=[
                self._wp["free"],
                wp.from_torch(env.scene_index),
                wp.from_torch(env.position, dtype=wp.vec3),
                wp.from_torch(env.yaw),
                self._wp["origin"],
                self._wp["cell_size"],
                math.radians(env.config.hfov_deg) / 2.0,
                env.config.explore_view_distance,
                self.num_rays,
                self._wp["seen"],
            ],
            device=self.wp_device,
        )

    def _count(self) -> torch.Tensor:
        return self.seen.sum(dim=(1, 2), dtype=torch.int32).float()

    def _update_coverage(self) -> None:
        total = self.env.navigation.main_count[self.env.scene_index.long()].float()
        self.coverage = (self.seen_count / total).clamp(max=1.0)

    def evaluate(self, stop, active):
        """Newly-observed-area reward; STOP ends the episode; success when coverage >= the target."""
        cfg = self.env.config
        self._observe()
        count = self._count()
        cell_area = self.env.pool.nav_cell_size[self.env.scene_index.long()] ** 2
        reward = (count - self.seen_count) * cell_area - cfg.time_penalty
        reward = torch.where(active, reward, torch.zeros_like(reward))
        self.seen_count = count
        self._update_coverage()
        self.success = (self.coverage >= cfg.explore_success_coverage) & active
        terminated = (stop & active) if cfg.action_type == "discrete" else torch.zeros_like(stop)
        return reward, terminated, self.metrics()

    def metrics(self) -> dict[str, torch.Tensor]:
        """success, coverage, collisions."""
        return {
            "success": self.success.clone(),
            "coverage": self.coverage.clone(),
            "collisions": self.env.collisions.clone(),
        }


TASK_CLASSES = {"pointnav": PointNavTask, "explore": ExploreTask}


def make_task(name: str, env: WorldFMVectorEnv) -> Task:
    """The task called ``name`` (one of ``pointnav``, ``explore``) bound to ``env``."""
    if name not in TASK_CLASSES:
        raise ValueError(f"task={name!r} is not valid; choose one of {sorted(TASK_CLASSES)}")
    return TASK_CLASSES[name](env)
