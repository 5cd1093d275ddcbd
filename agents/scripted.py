"""Batched scripted agents over the native vector env: ``random``, ``shortest-path`` and ``frontier``.

``random`` and ``shortest-path`` are :class:`worldfm_env.policies.RandomPolicy` and
:class:`worldfm_env.policies.ShortestPathPolicy`. ``frontier`` explores (``task="explore"``): each
env heads for the nearest not-yet-observed free cell of its scene's main component (geodesic
distance on the navigation grid, read from the task's ``seen`` mask), and picks a new one once
that cell has been observed.

Every agent is a callable ``agent(observations) -> actions`` over all N envs (a torch tensor on the
env's device). Run ``python agents/scripted.py --help``; e.g.
``python agents/scripted.py --agent frontier --task explore --steps 200`` rolls the agent out and
prints env-steps/s and the mean metrics.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `agents` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents._args import env_kwargs, parse_args
from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.policies import RandomPolicy, ShortestPathPolicy, follow_distance_field
from worldfm_env.scenes.navigation import geodesic_distance

__all__ = ["AGENTS", "FrontierPolicy", "make_agent", "Args", "main"]

Agent = Callable[..., torch.Tensor]

FORWARD, TURN_LEFT, TURN_RIGHT, LOOK_UP, LOOK_DOWN = 1, 2, 3, 4, 5


class FrontierPolicy:
    """Frontier exploration: walk the geodesic towards the nearest unobserved reachable free cell.

    Per env it keeps a target cell and its geodesic field (computed with
    :func:`~worldfm_env.scenes.navigation.geodesic_distance`, batched over the envs that replan).
    An env replans when its episode starts, when its target has been observed, or after
    ``patience`` steps on one target (the target is then given up for the episode, so an agent
    never circles a cell it cannot see). Each step it scores the headings reachable by whole turns
    by the target distance after one forward step, like ``ShortestPathPolicy``, levels the camera
    first, and never takes STOP (that would end the episode). Envs with nothing left to observe
    turn in place.
    """

    def __init__(self, env: WorldFMVectorEnv, patience: int = 60) -> None:
        if env.config.task != "explore" or env.config.action_type != "discrete":
            raise ValueError("FrontierPolicy needs task='explore' with action_type='discrete'")
        self.env = env
        self.patience = patience
        nav = env.navigation
        N, dev = env.num_envs, env.device
        cells = nav.shape[0] * nav.shape[1]
        self.turn = math.radians(env.config.turn_angle_deg)
        self.target = torch.full((N,), -1, dtype=torch.long, device=dev)  # flat cell, -1 = none
        self.target_field = torch.full((N, cells), float("inf"), device=dev)  # (N, Gz*Gx) scene units
        self.pursuit_steps = torch.zeros(N, dtype=torch.long, device=dev)
        self.given_up = torch.zeros(N, cells, dtype=torch.bool, device=dev)
        self._rows = torch.arange(N, device=dev)

    def __call__(self, observations=None) -> torch.Tensor:
        """Discrete actions (N,) for the env's current state."""
        env = self.env
        new_episode = env.elapsed_steps == 0
        self.given_up &= ~new_episode[:, None]
        self.target = torch.where(new_episode, torch.full_like(self.target, -1), self.target)

        seen = env.task.seen.flatten(1).bool()  # (N, Gz*Gx)
        has_target = self.target >= 0
        target_seen = has_target & seen.gather(1, self.target.clamp_min(0)[:, None])[:, 0]
        stuck = has_target & ~target_seen & (self.pursuit_steps >= self.patience)
        self.given_up[self._rows[stuck], self.target[stuck]] = True
        replan = ~has_target | target_seen | stuck
        if bool(replan.any()):
            self._replan(torch.nonzero(replan)[:, 0], seen)
        self.pursuit_steps += 1
        return self._follow_field()

    def _replan(self, idx: torch.Tensor, seen: torch.Tensor) -> None:
        """New targets and fields for envs ``idx``: the nearest unobserved main-component cell."""
        env, nav = self.env, self.env.navigation
        Gz, Gx = nav.shape
        scene = env.scene_index.long()[idx]
        free = nav.free[scene]  # (M, Gz, Gx)
        cs = env.pool.nav_cell_size[scene]
        origin = env.pool.nav_origin[scene]
        col = torch.floor((env.position[idx, 0] - origin[:, 0]) / cs).long().clamp(0, Gx - 1)
        row = torch.floor((env.position[idx, 2] - origin[:, 1]) / cs).long().clamp(0, Gz - 1)
        from_agent = geodesic_distance(free, torch.stack([row, col], dim=-1)).flatten(1)  # (M, Gz*Gx) cells
        wanted = nav.main[scene].flatten(1) & ~seen[idx] & ~self.given_up[idx]
        from_agent = torch.where(wanted, from_agent, torch.full_like(from_agent, float("inf")))
        nearest, target = from_agent.min(dim=1)
        found = torch.isfinite(nearest)
        field = geodesic_distance(free, torch.stack([target // Gx, target % Gx], dim=-1)).flatten(1)
        self.target[idx] = torch.where(found, target, torch.full_like(target, -1))
        self.target_field[idx] = field * cs[:, None]
        self.pursuit_steps[idx] = 0

    def _follow_field(self) -> torch.Tensor:
        """Turn towards / step along the heading that most decreases the target distance."""
        action, reachable = follow_distance_field(self.env, self.target_field, self._rows, self.turn)
        # Without a reachable target, turn in place (it looks around; nothing is left to see otherwise).
        turn_in_place = ~(reachable & (self.target >= 0)) & (self.env.pitch.abs() <= 1e-4)
        return torch.where(turn_in_place, torch.full_like(action, TURN_LEFT), action)


AGENTS = ("random", "shortest-path", "frontier")


def make_agent(name: str, env: WorldFMVectorEnv, seed: int = 0) -> Agent:
    """The scripted agent ``name`` (one of :data:`AGENTS`) bound to ``env``."""
    if name == "random":
        return RandomPolicy(env, seed=seed)
    if name == "shortest-path":
        return ShortestPathPolicy(env)
    if name == "frontier":
        return FrontierPolicy(env)
    raise ValueError(f"agent={name!r} is not a scripted agent; choose one of {list(AGENTS)}")


@dataclass
class Args:
    """Roll out a scripted agent over the native vector env; print env-steps/s and mean metrics."""

    agent: str = "shortest-path"
    """Scripted agent: random, shortest-path (PointNav) or frontier (Explore)."""
    task: str = "pointnav"
    """Task: pointnav or explore."""
    num_envs: int = 8
    """Environments stepped together."""
    steps: int = 200
    """Vector steps to run."""
    seed: int = 0
    """Env i is seeded with seed + i; the random agent's generator with seed."""
    scenes: str = "procedural:train"
    """Scene spec, e.g. procedural:train, procedural:test:4."""
    renderer: str = "anchor"
    """Renderer backend: anchor, oracle or worldfm."""
    resolution: int = 64
    """Observation size (square)."""
    device: str = "auto"
    """auto, cpu or cuda."""


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the rollout; return the mean final metrics."""
    args = parse_args(Args, argv)
    env = WorldFMVectorEnv(num_envs=args.num_envs, **env_kwargs(args))  # task, scenes, renderer, resolution, device
    agent = make_agent(args.agent, env, seed=args.seed)
    obs, info = env.reset(seed=args.seed)
    start = time.perf_counter()
    for _ in range(args.steps):
        obs, _, _, _, info = env.step(agent(obs))
    elapsed = time.perf_counter() - start
    summary = {k: float(v.float().mean()) for k, v in info.items() if not k.startswith("_")}
    print(f"{args.agent} on {args.task}: {args.num_envs * args.steps / elapsed:,.0f} env-steps/s")
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    env.close()
    return summary


if __name__ == "__main__":
    main()
