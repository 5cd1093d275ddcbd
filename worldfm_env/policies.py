"""Batched scripted policies over the native vector env (no learning): random and shortest path."""

from __future__ import annotations

import math

import torch

from worldfm_env.envs.vector import WorldFMVectorEnv

__all__ = ["RandomPolicy", "ShortestPathPolicy"]


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
        self.num_headings = max(4, int(round(2 * math.pi / self.turn)))

    def __call__(self, observations=None) -> torch.Tensor:
        """Discrete actions (N,) for the env's current state."""
        env, task, cfg = self.env, self.env.task, self.env.config
        N, H = env.num_envs, self.num_headings
        scene = env.scene_index.long()
        rows = task.field_rows()
        k = torch.arange(H, device=env.device, dtype=torch.float32)
        offsets = torch.remainder(k * self.turn + math.pi, 2 * math.pi) - math.pi  # (H,) relative yaw
        heading = env.yaw[:, None] + offsets[None]  # (N, H)
        step = cfg.forward_step
        nx = env.position[:, None, 0] - torch.sin(heading) * step
        nz = env.position[:, None, 2] + torch.cos(heading) * step
        candidate = torch.stack([nx, env.position[:, None, 1].expand(N, H), nz], dim=-1)  # (N, H, 3)
        dist = env.navigation.interpolate_field(
            task.fields.flatten(0, 1),
            rows.repeat_interleave(H),
            scene.repeat_interleave(H),
            candidate.reshape(N * H, 3),
        ).reshape(N, H)
        free = self._moves_free(candidate)
        dist = torch.where(free, dist, torch.full_like(dist, float("inf")))
        # Prefer smaller turns among (nearly) equally good headings.
        score = dist + 1e-3 * offsets.abs()[None]
        best = score.argmin(dim=1)
        best_offset = offsets[best]
        action = torch.where(best_offset > 0, torch.full_like(best, 2), torch.full_like(best, 3))
        action = torch.where(best_offset.abs() < 1e-4, torch.ones_like(best), action)
        level = env.pitch.abs() > 1e-4
        action = torch.where(
            level, torch.where(env.pitch > 0, torch.full_like(best, 5), torch.full_like(best, 4)), action
        )
        action = torch.where(task.distance <= cfg.success_distance - 1e-3, torch.zeros_like(best), action)
        return action

    def _moves_free(self, candidate: torch.Tensor) -> torch.Tensor:
        env = self.env
        N, H = candidate.shape[:2]
        start = env.position[:, None, :].expand(N, H, 3).reshape(N * H, 3)
        end = candidate.reshape(N * H, 3)
        n = env._collision_samples
        t = torch.arange(1, n + 1, device=env.device, dtype=torch.float32) / n
        x = start[:, None, 0] + t[None] * (end[:, None, 0] - start[:, None, 0])
        z = start[:, None, 2] + t[None] * (end[:, None, 2] - start[:, None, 2])
        scene = env.scene_index.long().repeat_interleave(H)
        return env.navigation.is_free(scene, x, z).all(dim=1).reshape(N, H)
