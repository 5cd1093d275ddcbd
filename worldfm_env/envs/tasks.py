"""Tasks: hooks over the batched core's state (episode start, reward, termination, metrics).

A task is built from what never changes during a run: the world (scene pool and navigation data), the
:class:`~worldfm_env.envs.config.EnvConfig`, ``num_envs`` and the device. It never holds the env and never
writes the env's state: its hooks read an :class:`~worldfm_env.envs.state.EnvState` (the ``(N, ...)`` tensors
the env owns: ``position``, ``yaw``, ``pitch``, ``scene_index``, ``path_length``, ``collisions``...) and return
what they decide; the env applies it. A task keeps its own per-env task state (goals, observed cells, success
flags...) as ``(N, ...)`` tensors it updates itself. The hooks, all batched and free of host syncs on CUDA:

* ``observation_spaces() -> {key: single-env space}``: the task's observation keys.
* ``initialize_episodes(state, rows, draws) -> EpisodeStart``: new episodes in the envs ``rows``
  (:class:`~worldfm_env.envs.state.EnvRows`, M rows) with ``draws`` (M, ``num_draws``) uniform [0, 1). ``state``
  already holds those envs' new ``scene_index``, ``yaw``, zero ``pitch`` and counters, but their previous
  ``position``; the task resets its own state in those rows, leaves the other envs' task state as it was,
  and returns the start positions (and optionally yaws) (M, ...) that the env writes into ``state``.
* ``evaluate(state, stop, active) -> (reward (N,), terminated (N,) bool)``: after the dynamics moved the
  ``active`` envs; ``stop`` (N,) bool marks STOP actions. Updates the task state.
* ``metrics(state) -> {name: (N,)}``: the metrics of the current state (the env's ``info``). With NEXT_STEP
  autoreset the env calls it once per step, after the resets, so an env reset in that step reports its new
  episode's metrics and the others this step's; with SAME_STEP once after ``evaluate`` and, when envs
  finished, once more after their reset (the first call's go to ``final_info``).
* ``observations(state) -> {key: (N, ...)}``: the task observations of the current state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from gymnasium import spaces

from worldfm_env._device import init_warp, warp_device
from worldfm_env.envs.state import EnvRows, EnvState

if TYPE_CHECKING:  # pragma: no cover
    from worldfm_env.envs.config import EnvConfig
    from worldfm_env.envs.shared import SharedWorld

wp = init_warp()

__all__ = ["EpisodeStart", "Task", "PointNavTask", "ExploreTask", "make_task"]


@dataclass
class EpisodeStart:
    """What :meth:`Task.initialize_episodes` decides for the M envs it starts.

    Attributes:
        position: (M, 3) float32 start positions in world coordinates.
        yaw: (M,) float32 start headings, or None to keep the env's own draw (already in ``state.yaw``).
    """

    position: torch.Tensor
    yaw: torch.Tensor | None = None


class Task:
    """Base task: the hooks the core env calls (see the module docstring). Subclasses override what they need.

    Args:
        world: the scene pool and navigation data (``.pool``, ``.navigation``) shared with the env.
        config: the env configuration.
        num_envs: N, the batch size of every hook.
        device: where the batched tensors live.
    """

    name = "base"
    #: Uniform draws per env that :meth:`initialize_episodes` consumes, after the core's own.
    num_draws = 0
    #: The attributes holding the per-env task state ((N, ...) tensors), saved by :meth:`state_dict`.
    state_fields: tuple[str, ...] = ()

    def __init__(self, world: SharedWorld, config: EnvConfig, num_envs: int, device: torch.device) -> None:
        self.pool = world.pool
        self.navigation = world.navigation
        self.config = config
        self.num_envs = num_envs
        self.device = device

    def observation_spaces(self) -> dict[str, spaces.Space]:
        """Task observation keys and their single-env spaces."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The per-env task state: a copy of each tensor named in :attr:`state_fields` (pickling, copies)."""
        return {name: getattr(self, name).detach().clone() for name in self.state_fields}

    def load_state_dict(self, values: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output, copying into the existing tensors (warp arrays may alias them)."""
        if set(values) != set(self.state_fields):
            raise ValueError(
                f"task state for task={self.name!r} must have the keys {sorted(self.state_fields)}, "
                f"got {sorted(values)}"
            )
        for name in self.state_fields:
            target, value = getattr(self, name), values[name]
            if tuple(value.shape) != tuple(target.shape) or value.dtype != target.dtype:
                raise ValueError(
                    f"task state {name!r} must be {target.dtype} {tuple(target.shape)}, got {value.dtype} "
                    f"{tuple(value.shape)}"
                )
            target.copy_(value.to(target.device))

    def initialize_episodes(self, state: EnvState, rows: EnvRows, draws: torch.Tensor) -> EpisodeStart:
        """Start new episodes in the envs ``rows``; ``draws`` (M, num_draws) uniform [0, 1). Returns their starts."""
        raise NotImplementedError

    def evaluate(self, state: EnvState, stop: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """After the dynamics: (reward (N,), terminated (N,) bool); updates the task state of the active envs."""
        raise NotImplementedError

    def metrics(self, state: EnvState) -> dict[str, torch.Tensor]:
        """Current metrics {name: (N,)} (fresh tensors, safe to hand out)."""
        raise NotImplementedError

    def observations(self, state: EnvState) -> dict[str, torch.Tensor]:
        """Task observations (N, ...) for the current state."""
        return {}


class PointNavTask(Task):
    """Reach a goal given as (distance, angle) in the agent frame; STOP within ``success_distance``.

    Reward: decrease of geodesic distance to the goal + ``success_reward`` on success -
    ``time_penalty``. With continuous actions (no STOP) success is reaching the goal radius.

    Task state (N, ...): ``goal`` (world position), ``goal_scene`` and ``goal_slot`` (the scene and goal
    candidate whose geodesic field is read), ``start_distance``, ``distance`` (geodesic, to the goal) and
    ``success``.
    """

    name = "pointnav"
    num_draws = 2 + 64  # goal choice, yaw, start candidates
    state_fields = ("goal", "goal_scene", "goal_slot", "start_distance", "distance", "success")

    #: Points the straight path to the goal is checked at (at most half a cell apart): the straight-line
    #: distance replaces the grid field up to ``(SIGHT_SAMPLES - 1) / 2`` = 31.5 cells from the goal.
    SIGHT_SAMPLES = 64

    def __init__(self, world: SharedWorld, config: EnvConfig, num_envs: int, device: torch.device) -> None:
        super().__init__(world, config, num_envs, device)
        nav = self.navigation
        N = num_envs
        self.goal_cells = nav.goal_cells  # (S, G) flat cell index
        self.fields = nav.goal_fields  # (S, G, Gz*Gx) metres, inf unreachable
        self.goal = torch.zeros(N, 3, device=self.device)
        self.goal_scene = torch.zeros(N, dtype=torch.long, device=self.device)
        self.goal_slot = torch.zeros(N, dtype=torch.long, device=self.device)
        self.start_distance = torch.ones(N, device=self.device)
        self.distance = torch.zeros(N, device=self.device)
        self.success = torch.zeros(N, dtype=torch.bool, device=self.device)
        self.min_d, self.max_d = config.min_goal_distance, config.max_goal_distance
        self._sight_fractions = torch.linspace(0.0, 1.0, self.SIGHT_SAMPLES, device=self.device)

    def observation_spaces(self) -> dict[str, spaces.Space]:
        """``pointgoal``: (distance, angle) to the goal in the agent frame; angle positive to the left."""
        low = np.array([0.0, -math.pi], dtype=np.float32)
        high = np.array([np.inf, math.pi], dtype=np.float32)
        return {"pointgoal": spaces.Box(low, high, dtype=np.float32)}

    def initialize_episodes(self, state: EnvState, rows: EnvRows, draws: torch.Tensor) -> EpisodeStart:
        """Pick a goal among the scene's candidates and a start in the scene's start region
        (:attr:`NavigationData.start_region`) at geodesic distance in range (the closest to the range if none of
        the drawn candidates is)."""
        nav, pool = self.navigation, self.pool
        scene = rows.gather(state.scene_index).long()  # (M,)
        G = self.fields.shape[1]
        slot = (draws[:, 0] * G).long().clamp(max=G - 1)
        # Start candidates in the scene's start region (its main component, or where a sparse capture saw).
        count = nav.start_count[scene]  # (M,)
        cand = (draws[:, 2:] * count[:, None]).long().clamp(max=nav.start_cells.shape[1] - 1)
        cells = nav.start_cells[scene[:, None], cand]  # (M, T)
        cells_per_field = self.fields.shape[2]
        field_row = scene * G + slot
        d = self.fields.reshape(-1)[field_row[:, None] * cells_per_field + cells]  # (M, T)
        # First candidate inside [min, max]; if none, the one closest to the range (small scenes).
        violation = torch.relu(self.min_d - d) + torch.relu(d - self.max_d)
        violation = torch.where(torch.isfinite(d) & (d > 0), violation, torch.full_like(d, float("inf")))
        first_ok = (violation == 0).float()
        rank = torch.where(first_ok > 0, -1.0 + torch.arange(d.shape[1], device=d.device) * 1e-6, violation)
        pick = rank.argmin(dim=1)
        start_cell = cells.gather(1, pick[:, None])[:, 0]
        start_xz = nav.cell_to_world(scene, start_cell)
        goal_xz = nav.cell_to_world(scene, self.goal_cells[scene, slot])
        y = pool.floor_y[scene] - pool.camera_height[scene]
        start = torch.stack([start_xz[:, 0], y, start_xz[:, 1]], -1)
        goal = torch.stack([goal_xz[:, 0], y, goal_xz[:, 1]], -1)
        d_start = self._distance(scene, field_row, goal, start)
        rows.write(self.goal, goal)
        rows.write(self.goal_scene, scene)
        rows.write(self.goal_slot, slot)
        rows.write(self.start_distance, d_start.clamp_min(1e-6))
        rows.write(self.distance, d_start)
        rows.write(self.success, False)
        return EpisodeStart(position=start)

    def _distance(
        self, scene: torch.Tensor, field_row: torch.Tensor, goal: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """Geodesic distance (M,) from ``position`` (M, 3) to ``goal`` (M, 3) in ``scene`` (M,), whose goal
        field is row ``field_row`` (M,) of ``fields.flatten(0, 1)``; see :meth:`_geodesic`."""
        nav = self.navigation
        field = nav.interpolate_field(self.fields.flatten(0, 1), field_row, scene, position)
        dx, dz = goal[:, 0] - position[:, 0], goal[:, 2] - position[:, 2]
        straight = torch.sqrt(dx * dx + dz * dz)
        near = straight <= self.pool.nav_cell_size[scene] * (self.SIGHT_SAMPLES - 1) / 2
        visible = near & nav.segment_free(scene, position, goal, self._sight_fractions)
        return torch.where(visible, torch.minimum(field, straight), field)

    def _geodesic(self, position: torch.Tensor) -> torch.Tensor:
        """Geodesic distance (N,) from each env's ``position`` (N, 3) to its goal.

        Where the straight path to the goal stays on free cells (checked at least every half cell, up to
        ``(SIGHT_SAMPLES - 1) / 2`` cells away), the shortest path is that line and its length is exact. Elsewhere
        it is the goal field read at the 2x2 nearest cell centres (:meth:`NavigationData.interpolate_field`),
        which over-estimates by up to half a cell near the goal: alone, it failed some STOPs made inside the
        success radius.
        """
        return self._distance(self.goal_scene, self.field_rows(), self.goal, position)

    def field_rows(self) -> torch.Tensor:
        """Row of each env's goal field in ``fields.flatten(0, 1)`` (N,)."""
        return self.goal_scene * self.fields.shape[1] + self.goal_slot

    def evaluate(self, state: EnvState, stop: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance-decrease reward and STOP-based success (reaching the radius with continuous actions)."""
        cfg = self.config
        previous = self.distance
        distance = self._geodesic(state.position)
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
        return reward, terminated

    def metrics(self, state: EnvState) -> dict[str, torch.Tensor]:
        """success, spl, soft_spl, distance_to_goal, collisions."""
        L = self.start_distance
        P = state.path_length
        ratio = L / torch.maximum(P, L)
        soft = (1.0 - (self.distance / L).clamp(0.0, 1.0)) * ratio
        return {
            "success": self.success.clone(),
            "spl": self.success.float() * ratio,
            "soft_spl": soft,
            "distance_to_goal": self.distance.clone(),
            "collisions": state.collisions.clone(),
        }

    def observations(self, state: EnvState) -> dict[str, torch.Tensor]:
        """``pointgoal`` (N, 2): distance and angle (left positive) of the goal in the agent frame."""
        dx = self.goal[:, 0] - state.position[:, 0]
        dz = self.goal[:, 2] - state.position[:, 2]
        s, c = torch.sin(state.yaw), torch.cos(state.yaw)
        forward = -s * dx + c * dz
        left = -(c * dx + s * dz)
        rho = torch.sqrt(forward * forward + left * left)
        phi = torch.atan2(left, forward)
        return {"pointgoal": torch.stack([rho, phi], dim=-1)}


@wp.kernel
def _mark_seen_kernel(
    free: wp.array3d(dtype=wp.uint8),  # (S, Gz, Gx)
    scene_index: wp.array(dtype=wp.int32),  # (M,)
    position: wp.array(dtype=wp.vec3),  # (M,)
    yaw: wp.array(dtype=wp.float32),  # (M,)
    env_index: wp.array(dtype=wp.int64),  # (M,) row of ``seen`` each camera marks
    origin: wp.array(dtype=wp.vec2),  # (S,) (x0, z0)
    cell_size: wp.array(dtype=wp.float32),  # (S,)
    half_fov: float,
    max_distance: float,
    num_rays: int,
    seen: wp.array3d(dtype=wp.uint8),  # (N, Gz, Gx)
):
    i, ray = wp.tid()
    env = int(env_index[i])
    s = scene_index[i]
    cs = cell_size[s]
    o = origin[s]
    p = position[i]
    # Ray directions spread evenly over [-half_fov, half_fov] around the heading (left positive).
    frac = float(ray) / float(wp.max(num_rays - 1, 1))
    angle = yaw[i] + half_fov - 2.0 * half_fov * frac
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

    Task state (N, ...): ``seen`` (N, Gz, Gx) uint8 observed cells, ``seen_count``, ``coverage`` and ``success``.
    """

    name = "explore"
    num_draws = 2 + 1
    state_fields = ("seen", "seen_count", "coverage", "success")

    def __init__(self, world: SharedWorld, config: EnvConfig, num_envs: int, device: torch.device) -> None:
        super().__init__(world, config, num_envs, device)
        nav = self.navigation
        N = num_envs
        Gz, Gx = nav.free.shape[1:]
        self.seen = torch.zeros(N, Gz, Gx, dtype=torch.uint8, device=self.device)
        self.seen_count = torch.zeros(N, device=self.device)
        self.coverage = torch.zeros(N, device=self.device)
        self.success = torch.zeros(N, dtype=torch.bool, device=self.device)
        self.wp_device = warp_device(self.device)
        self._wp = dict(
            free=wp.from_torch(nav.free.to(torch.uint8).contiguous()),
            origin=wp.from_torch(self.pool.nav_origin.contiguous(), dtype=wp.vec2),
            cell_size=wp.from_torch(self.pool.nav_cell_size.contiguous()),
            seen=wp.from_torch(self.seen),
        )
        self.num_rays = max(8, int(math.ceil(config.hfov_deg / 2.0)))
        self._all_envs = torch.arange(N, device=self.device)

    def initialize_episodes(self, state: EnvState, rows: EnvRows, draws: torch.Tensor) -> EpisodeStart:
        """Start anywhere in the scene's start region (:attr:`NavigationData.start_region`: the main free component,
        or the captured region of a sparsely captured scene), clear the observed cells, observe the first view."""
        nav = self.navigation
        scene = rows.gather(state.scene_index).long()  # (M,)
        count = nav.start_count[scene]
        cand = (draws[:, 2] * count).long().clamp(max=nav.start_cells.shape[1] - 1)
        cell = nav.start_cells[scene, cand]
        xz = nav.cell_to_world(scene, cell)
        y = self.pool.floor_y[scene] - self.pool.camera_height[scene]
        start = torch.stack([xz[:, 0], y, xz[:, 1]], -1)
        rows.write(self.seen, 0)
        # With a mask every env is computed: the others look again from the pose they last observed (no change).
        self._mark_seen(
            rows.gather(state.scene_index), rows.updated(state.position, start), rows.gather(state.yaw), rows.envs
        )
        rows.write(self.seen_count, self._count(rows.gather(self.seen)))
        rows.write(self.coverage, self._coverage(scene, rows.gather(self.seen_count)))
        rows.write(self.success, False)
        return EpisodeStart(position=start)

    def _mark_seen(
        self, scene_index: torch.Tensor, position: torch.Tensor, yaw: torch.Tensor, envs: torch.Tensor
    ) -> None:
        """Mark in ``seen[envs]`` the cells seen by the M cameras at ``position``, ``yaw`` in ``scene_index``."""
        cfg = self.config
        stream = wp.stream_from_torch(torch.cuda.current_stream(self.device)) if self.device.type == "cuda" else None
        wp.launch(
            _mark_seen_kernel,
            dim=(envs.shape[0], self.num_rays),
            inputs=[
                self._wp["free"],
                wp.from_torch(scene_index.to(torch.int32).contiguous()),
                wp.from_torch(position.contiguous(), dtype=wp.vec3),
                wp.from_torch(yaw.contiguous()),
                wp.from_torch(envs.contiguous()),
                self._wp["origin"],
                self._wp["cell_size"],
                math.radians(cfg.hfov_deg) / 2.0,
                cfg.explore_view_distance,
                self.num_rays,
                self._wp["seen"],
            ],
            device=self.wp_device,
            stream=stream,
        )

    @staticmethod
    def _count(seen: torch.Tensor) -> torch.Tensor:
        return seen.sum(dim=(1, 2), dtype=torch.int32).float()

    def _coverage(self, scene: torch.Tensor, seen_count: torch.Tensor) -> torch.Tensor:
        total = self.navigation.main_count[scene].float()
        return (seen_count / total).clamp(max=1.0)

    def evaluate(self, state: EnvState, stop: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Newly-observed-area reward; STOP ends the episode; success when coverage >= the target."""
        cfg = self.config
        self._mark_seen(state.scene_index, state.position, state.yaw, self._all_envs)
        count = self._count(self.seen)
        scene = state.scene_index.long()
        cell_area = self.pool.nav_cell_size[scene] ** 2
        reward = (count - self.seen_count) * cell_area - cfg.time_penalty
        reward = torch.where(active, reward, torch.zeros_like(reward))
        self.seen_count = count
        self.coverage = self._coverage(scene, count)
        self.success = (self.coverage >= cfg.explore_success_coverage) & active
        terminated = (stop & active) if cfg.action_type == "discrete" else torch.zeros_like(stop)
        return reward, terminated

    def metrics(self, state: EnvState) -> dict[str, torch.Tensor]:
        """success, coverage, collisions."""
        return {
            "success": self.success.clone(),
            "coverage": self.coverage.clone(),
            "collisions": state.collisions.clone(),
        }


TASK_CLASSES = {"pointnav": PointNavTask, "explore": ExploreTask}


def make_task(name: str, world: SharedWorld, config: EnvConfig, num_envs: int, device: torch.device) -> Task:
    """The task called ``name`` (one of ``pointnav``, ``explore``) for ``num_envs`` envs in ``world`` on ``device``."""
    if name not in TASK_CLASSES:
        raise ValueError(f"task={name!r} is not valid; choose one of {sorted(TASK_CLASSES)}")
    return TASK_CLASSES[name](world, config, num_envs, device)
