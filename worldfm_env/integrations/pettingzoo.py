"""PettingZoo: several camera agents in one shared world, rendered in one batch.

:func:`parallel_env` returns a :class:`WorldFMParallelEnv`, a ``pettingzoo.ParallelEnv`` whose agents
are the rows of one :class:`~worldfm_env.envs.vector.WorldFMVectorEnv` with ``num_envs=num_agents``:
one step integrates every agent's action, renders every agent's view in one batch and evaluates the
task per agent. All agents are in the same scene (the same anchor point cloud and reference bank).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from worldfm_env.envs.actions import check_action
from worldfm_env.envs.vector import WorldFMVectorEnv

__all__ = ["WorldFMParallelEnv", "parallel_env"]

# Options the parallel env sets itself on the inner vector env.
_RESERVED = ("autoreset_mode", "array_type", "num_envs")


class WorldFMParallelEnv(ParallelEnv):
    """Agents ``agent_0 .. agent_{n-1}`` moving their own cameras through one shared scene.

    ## Description
    One :class:`~worldfm_env.envs.vector.WorldFMVectorEnv` with one env per agent holds the state;
    each step renders all agents' observations in one batch. Every episode puts all agents in the
    same scene: with a one-scene pool this is automatic; with several scenes, the scene drawn for
    ``agent_0`` is imposed on every agent after the reset and the task re-draws each agent's start
    (and PointNav goal) in it from that agent's own random draws. Agents do **not** collide with
    each other or see each other: each is blocked only by the scene's navigation grid, and the
    scene's point cloud has no agent bodies in it.

    ## Action Space
    Per agent, the single-env action space: ``Discrete(6)`` (0 stop, 1 forward, 2 turn left,
    3 turn right, 4 look up, 5 look down) or ``Box(-1, 1, (4,))`` with ``action_type="continuous"``.

    ## Observation Space
    Per agent, the single-env ``Dict``: ``rgb`` uint8 (H, W, 3) and the task keys (PointNav:
    ``pointgoal`` = distance and angle to the agent's own goal); numpy arrays.

    ## Rewards
    Per agent, the task reward of :class:`~worldfm_env.envs.vector.WorldFMVectorEnv` (PointNav:
    progress to the agent's own goal; Explore: area newly seen by that agent).

    ## Starting State
    PointNav: each agent draws its own goal among the scene's goal candidates and its own start,
    from its seed (``seed + i`` for ``agent_i``); goals may coincide by chance
    (1 / ``goal_candidates`` per pair). Explore: each agent its own start.

    ## Episode End
    An agent that terminates (STOP, or reaching its goal with continuous PointNav actions) or is
    truncated (``max_episode_steps``) leaves ``agents``; it takes no further actions (an action for
    it is a ``ValueError``) and its state is frozen in :meth:`state`. The episode ends when every
    agent has left; then call :meth:`reset`.

    ## State
    :meth:`state` is a float32 vector, per agent in order: ``x, y, z, yaw, pitch`` (its camera),
    for PointNav its goal ``x, y, z``, then ``alive`` (1.0 while in ``agents``), concatenated over
    ``possible_agents`` (``state_space`` gives the shape).

    ## Arguments
    ``num_agents`` (default 2), ``task`` (``"pointnav"`` or ``"explore"``), ``render_mode``
    (None or ``"rgb_array"``: all agents' frames side by side) and every other field of
    :class:`~worldfm_env.envs.config.EnvConfig`. ``autoreset_mode`` and ``array_type`` are set by
    this class.

    ## Version History
    * v0: initial release.
    """

    metadata = {"name": "worldfm_parallel_v0", "render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self, num_agents: int = 2, task: str = "pointnav", render_mode: str | None = None, **env_kwargs: Any
    ) -> None:
        for key in _RESERVED:
            if key in env_kwargs:
                raise ValueError(f"{key!r} is set by the parallel env itself; remove it from the keyword arguments")
        if not isinstance(num_agents, (int, np.integer)) or isinstance(num_agents, bool) or num_agents <= 0:
            raise ValueError(f"num_agents must be a positive int, got {num_agents!r}")
        # NEXT_STEP: a finished agent's last observation is returned as is; the vector env resets that row on
        # the next step, which nobody sees since the agent has left.
        self.vector_env = WorldFMVectorEnv(
            num_envs=int(num_agents),
            task=task,
            render_mode=render_mode,
            autoreset_mode="next_step",
            array_type="torch",
            **env_kwargs,
        )
        self.render_mode = render_mode
        self.config = self.vector_env.config
        if self.vector_env.memory is not None:
            # memory="grow": the agents of one world share one growing memory (what one generated, all see).
            self.vector_env.memory.set_groups(torch.zeros(int(num_agents), dtype=torch.long))
        self.possible_agents = [f"agent_{i}" for i in range(int(num_agents))]
        self.agent_index = {agent: i for i, agent in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        # One space object per agent: seeding one agent's action space does not touch another's.
        self.observation_spaces = {
            a: copy.deepcopy(self.vector_env.single_observation_space) for a in self.possible_agents
        }
        self.action_spaces = {a: copy.deepcopy(self.vector_env.single_action_space) for a in self.possible_agents}
        self._pointnav = self.config.task == "pointnav"
        self._state_width = 5 + (3 if self._pointnav else 0) + 1
        self.state_space = spaces.Box(
            -np.inf, np.inf, (len(self.possible_agents) * self._state_width,), dtype=np.float32
        )
        self._state = np.zeros((len(self.possible_agents), self._state_width), dtype=np.float32)
        # Action taken by rows whose agent has left: it moves nobody and ends nothing (turn in place / zero rates).
        self._scene_rng: np.random.Generator | None = None
        if self.config.action_type == "discrete":
            self._idle_actions = np.full(len(self.possible_agents), 2, dtype=np.int64)
        else:
            self._idle_actions = np.zeros((len(self.possible_agents), 4), dtype=np.float32)

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> gym.Space:
        """The observation space of ``agent`` (the same object on every call)."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gym.Space:
        """The action space of ``agent`` (the same object on every call)."""
        return self.action_spaces[agent]

    # ------------------------------------------------------------------ reset / step
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start a new episode for every agent in one shared scene; returns (observations, infos).

        ``seed`` seeds ``agent_i`` with ``seed + i``. ``options`` is accepted for API compatibility;
        no option is used.
        """
        env = self.vector_env
        env.ensure_open("reset")
        # One shared scene per episode, drawn from a generator that the reset seed re-seeds.
        if seed is not None or self._scene_rng is None:
            self._scene_rng = np.random.default_rng(seed)
        scene = int(self._scene_rng.integers(env.pool.num_scenes))
        if env.memory is not None:
            env.memory.writers.fill_(True)
        obs, infos = env.reset(seed=seed, options={"scene_index": scene})
        self.agents = list(self.possible_agents)
        self._snapshot(torch.ones(len(self.possible_agents), dtype=torch.bool))
        obs_np = {key: value.cpu().numpy() for key, value in obs.items()}
        metrics = self._metrics(infos)
        observations = {a: self._agent_obs(obs_np, i) for a, i in self.agent_index.items()}
        return observations, {a: self._agent_info(metrics, i) for a, i in self.agent_index.items()}

    def step(self, actions: dict[str, Any]):
        """One step for every agent in ``agents``; returns five dicts keyed by those agents.

        ``actions`` must hold an action for every agent in ``agents`` and none for another.
        Agents that terminate or are truncated leave ``agents`` after this step.
        """
        self.vector_env.ensure_open("step")
        if not self.agents:
            raise RuntimeError("no agent is left in this episode (or reset() was not called); call reset()")
        unexpected = set(actions) - set(self.agents)
        if unexpected:
            raise ValueError(f"actions for agents not in the episode: {sorted(unexpected)}; live agents: {self.agents}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing actions for live agents {missing}")
        batch = self._idle_actions.copy()
        for agent, action in actions.items():
            # Checked before the copy into the batch, which would cast 2.5 to 2 or "1" to 1 silently.
            batch[self.agent_index[agent]] = check_action(action, self.config.action_type, f"agent {agent!r}")
        live = torch.zeros(len(self.possible_agents), dtype=torch.bool)
        live[[self.agent_index[a] for a in self.agents]] = True
        memory = self.vector_env.memory
        if memory is not None:
            memory.writers.copy_(live)  # agents that left keep an idle camera; it must not write into the world
        obs, reward, terminated, truncated, infos = self.vector_env.step(batch)

        self._snapshot(live)
        obs_np = {key: value.cpu().numpy() for key, value in obs.items()}
        reward_np = reward.cpu().numpy()
        terminated_np = terminated.cpu().numpy()
        truncated_np = truncated.cpu().numpy()
        metrics = self._metrics(infos)
        observations, rewards, terminations, truncations, agent_infos = {}, {}, {}, {}, {}
        for agent in self.agents:
            i = self.agent_index[agent]
            observations[agent] = self._agent_obs(obs_np, i)
            rewards[agent] = float(reward_np[i])
            terminations[agent] = bool(terminated_np[i])
            truncations[agent] = bool(truncated_np[i])
            agent_infos[agent] = self._agent_info(metrics, i)
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        for agent in set(observations) - set(self.agents):
            self._state[self.agent_index[agent], -1] = 0.0
        return observations, rewards, terminations, truncations, agent_infos

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _agent_obs(obs_np: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        return {key: value[i] for key, value in obs_np.items()}

    @staticmethod
    def _metrics(infos: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in infos.items() if not k.startswith("_") and isinstance(v, torch.Tensor)}

    @staticmethod
    def _agent_info(metrics: dict[str, np.ndarray], i: int) -> dict[str, Any]:
        return {key: value[i].item() for key, value in metrics.items()}

    def _snapshot(self, rows: torch.Tensor) -> None:
        """Record the state of the agents in ``rows`` (N,) bool (the others keep their final state)."""
        env = self.vector_env
        parts = [env.position, env.yaw[:, None], env.pitch[:, None]]
        if self._pointnav:
            parts.append(env.task.goal)
        parts.append(torch.ones_like(env.yaw)[:, None])
        current = torch.cat(parts, dim=1).cpu().numpy()
        rows_np = rows.cpu().numpy()
        self._state[rows_np] = current[rows_np]

    def state(self) -> np.ndarray:
        """The global state: per agent ``x, y, z, yaw, pitch, [goal x, y, z,] alive`` (see the class docstring)."""
        return self._state.reshape(-1).copy()

    def render(self) -> np.ndarray | None:
        """All agents' current frames side by side, (H, n * W, 3) uint8 (``render_mode="rgb_array"``)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array' to parallel_env()")
            return None
        frames = self.vector_env.render()
        if frames is None:
            return None
        return np.concatenate(list(frames), axis=1)

    def close(self) -> None:
        """Release the inner vector env (closing twice is harmless; step/reset afterwards raise
        ``ClosedEnvironmentError``)."""
        self.vector_env.close()
        self.agents = []


def parallel_env(num_agents: int = 2, task: str = "pointnav", **env_kwargs: Any) -> WorldFMParallelEnv:
    """A PettingZoo ``ParallelEnv`` of ``num_agents`` camera agents sharing one scene.

    ``task`` is ``"pointnav"`` (each agent its own goal) or ``"explore"``; ``env_kwargs`` are
    ``render_mode`` and :class:`~worldfm_env.envs.config.EnvConfig` fields. See
    :class:`WorldFMParallelEnv`.
    """
    return WorldFMParallelEnv(num_agents=num_agents, task=task, **env_kwargs)
