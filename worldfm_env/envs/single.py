"""The single-env facade: a ``gymnasium.Env`` over a one-env :class:`WorldFMVectorEnv`."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from worldfm_env.envs.vector import WorldFMVectorEnv

__all__ = ["WorldFMEnv"]


class WorldFMEnv(gym.Env):
    """One agent in a generated world, with numpy observations (what ``gym.make`` returns).

    This is a thin facade: it owns a :class:`WorldFMVectorEnv` with ``num_envs=1`` and converts
    its outputs to numpy and Python scalars; there is no second implementation of the step. See
    :class:`WorldFMVectorEnv` for the action and observation spaces, rewards, starting state and
    episode end, and :class:`~worldfm_env.envs.config.EnvConfig` for the keyword arguments.
    ``reset(seed=s)`` gives the same episodes as env ``i`` of a vector env reset with ``seed=s - i``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'")
        for key in ("autoreset_mode", "array_type"):
            if key in kwargs:
                raise ValueError(f"{key} applies to the vector env only; a single env is reset by its caller")
        kwargs = {**kwargs, "array_type": "torch", "autoreset_mode": "next_step"}
        # gym.make wraps the single env in TimeLimit (500 steps, or its own max_episode_steps=k, which never
        # reaches us): that wrapper owns the limit unless max_episode_steps is passed to the env itself.
        kwargs.setdefault("max_episode_steps", 10**9)
        self.vector_env = WorldFMVectorEnv(num_envs=1, **kwargs)
        self.render_mode = render_mode
        self.config = self.vector_env.config
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space

    @staticmethod
    def _first(tree: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {k: v[0].detach().cpu().numpy() for k, v in tree.items()}

    @staticmethod
    def _info(infos: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in infos.items():
            if key.startswith("_") or not isinstance(value, torch.Tensor):
                continue
            item = value[0].item()
            out[key] = item
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new episode; ``seed`` makes it reproducible."""
        self.vector_env.ensure_open("reset")
        super().reset(seed=seed)
        if seed is None and not self.vector_env._has_reset:
            # Derive the first seed from gym's np_random so that unseeded runs still differ.
            seed = int(self.np_random.integers(0, 2**31 - 1))
        obs, infos = self.vector_env.reset(seed=seed, options=options)
        return self._first(obs), self._info(infos)

    def step(self, action):
        """One step; ``action`` is an int (discrete) or a (4,) array (continuous)."""
        self.vector_env.ensure_open("step")
        if self.config.action_type == "discrete":
            if isinstance(action, torch.Tensor):
                action = action.reshape(1)
            else:
                arr = np.asarray(action)
                if arr.shape not in ((), (1,)):
                    raise ValueError(f"action must be a single integer in [0, 6), got shape {arr.shape}")
                action = arr.reshape(1)
        else:
            if isinstance(action, torch.Tensor):
                action = action.reshape(1, -1)
            else:
                arr = np.asarray(action, dtype=np.float64) if np.asarray(action).dtype != object else np.asarray(action)
                if arr.shape != (4,):
                    raise ValueError(f"action must have shape (4,) for continuous actions, got {arr.shape}")
                action = arr[None]
        obs, reward, terminated, truncated, infos = self.vector_env.step(action)
        return (
            self._first(obs),
            float(reward[0].item()),
            bool(terminated[0].item()),
            bool(truncated[0].item()),
            self._info(infos),
        )

    def render(self):
        """The current rgb frame (H, W, 3) uint8 when ``render_mode="rgb_array"``."""
        frames = self.vector_env.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        """Release resources."""
        self.vector_env.close()
