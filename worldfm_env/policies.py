"""Batched scripted policies over the native vector env (no learning): random and shortest path."""

from __future__ import annotations

import math

import torch

from worldfm_env.envs.vector import WorldFMVectorEnv

__all__ = ["RandomPolicy", "ShortestPathPolicy", "follow_distance_field"]


class RandomPolicy:
    """Uniform random actions from the env's action space, drawn on the device from a seeded generator."""

    def __init__(self, env: WorldFMVectorEnv, seed: int = 0) -> None:
        self.env = env
        self.generator = torch.Generator(device=env.device).manual_seed(seed)

    def __call__(self, observations=None) -> torch.Tensor:
        """Actions for all envs."""
        env = self.env
        if env.config.action_type == "discrete":
            # Never STOP: a random stop would end most episodes within a few steps.
            return torch.randint(1, 6, (env.num_envs,), generator=self.generator, device=env.device)
        return torch.rand(env.num_envs, 4, generator=self.generator, device=env.device) * 2 - 1


class ShortestPathPolicy:
    """Follows the geodesic field of each env's PointNav goal, turning towards the best free heading.

    Every step it scores the headings reachable by whole turns (one per ``turn_angle_deg``): the
    geodesic distance after a forward step along that heading, for moves that stay on free cells.
    It moves forward when the best heading is the current one, otherwise turns towards it, levels
    the camera pitch first, and takes STOP once within ``success_distance`` of the goal.
    """

    def __init__(self, env: WorldFMVectorEnv) -> None:
        if env.config.task != "pointnav" or env.config.action_type != "discrete":
            raise ValueError("ShortestPathPolicy needs task='pointnav' with action_type='discrete'")
        self.env = env
        cfg = env.config
        self.turn = math.radians(cfg.turn_angle_deg)

    def __call__(self, observations=None) -> torch.Tensor:
        """Discrete actions (N,) for the env's current state."""
        env, task, cfg = self.env, self.env.task, self.env.config
        action, _ = follow_distance_field(env, task.fields.flatten(0, 1), task.field_rows(), self.turn)
        return torch.where(task.distance <= cfg.success_distance - 1e-3, torch.zeros_like(action), action)


def follow_distance_field(
    env: WorldFMVectorEnv, fields: torch.Tensor, rows: torch.Tensor, turn: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One greedy step per env down a distance field: (discrete actions (N,), reachable (N,) bool).

    For every heading reachable by whole turns of ``turn`` radians it scores the field's distance
    after a forward step along that heading (moves that would collide score inf), then moves
    forward when the best heading is the current one and otherwise turns towards it, preferring
    smaller turns among equally good headings. The camera is levelled first. ``fields`` (R, Gz*Gx)
    holds distance fields, env i follows ``fields[rows[i]]``; ``reachable`` is False when no free
    heading has a finite distance (the action is then a turn).
    """
    cfg = env.config
    N = env.num_envs
    H = max(4, int(round(2 * math.pi / turn)))
    scene = env.scene_index.long()
    k = torch.arange(H, device=env.device, dtype=torch.float32)
    offsets = torch.remainder(k * turn + math.pi, 2 * math.pi) - math.pi  # (H,) relative yaw
    heading = env.yaw[:, None] + offsets[None]  # (N, H)
    nx = env.position[:, None, 0] - torch.sin(heading) * cfg.forward_step
    nz = env.position[:, None, 2] + torch.cos(heading) * cfg.forward_step
    candidate = torch.stack([nx, env.position[:, None, 1].expand(N, H), nz], dim=-1)  # (N, H, 3)
    dist = env.navigation.interpolate_field(
        fields, rows.repeat_interleave(H), scene.repeat_interleave(H), candidate.reshape(N * H, 3)
    ).reshape(N, H)
    free = env.moves_free(env.position[:, None, :].expand(N, H, 3), candidate)  # (N, H)
    dist = torch.where(free, dist, torch.full_like(dist, float("inf")))
    best = (dist + 1e-3 * offsets.abs()[None]).argmin(dim=1)
    reachable = torch.isfinite(dist.min(dim=1).values)
    best_offset = offsets[best]
    action = torch.where(best_offset > 0, torch.full_like(best, 2), torch.full_like(best, 3))
    action = torch.where(best_offset.abs() < 1e-4, torch.ones_like(best), action)
    action = torch.where(reachable, action, torch.full_like(best, 2))
    level = env.pitch.abs() > 1e-4
    return torch.where(
        level, torch.where(env.pitch > 0, torch.full_like(best, 5), torch.full_like(best, 4)), action
    ), reachable
