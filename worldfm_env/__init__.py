"""worldfm-env: Gymnasium environments whose renderer is a WorldFM-style generative frame model.

``import worldfm_env`` registers ``WorldFM/PointNav-v0`` and ``WorldFM/Explore-v0`` (single
``entry_point`` and native ``vector_entry_point``). ``worldfm_env.parallel_env(...)`` is the PettingZoo
``ParallelEnv`` and ``worldfm_env.SB3VecEnv`` the Stable-Baselines3 ``VecEnv`` (both loaded on first use).
"""

from __future__ import annotations

import gymnasium as gym

from worldfm_env import _fork

# Forked workers (AsyncVectorEnv, SubprocVecEnv with start method "fork") of a process that already ran torch's
# OpenMP thread pool would hang in their first parallel op; the hook makes them single-threaded (see _fork.py).
_fork.install()

__version__ = "0.1.0"

ENV_IDS = {"WorldFM/PointNav-v0": "pointnav", "WorldFM/Explore-v0": "explore"}


def _register() -> None:
    for env_id, task in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="worldfm_env.envs.single:WorldFMEnv",
            vector_entry_point="worldfm_env.envs.vector:WorldFMVectorEnv",
            kwargs={"task": task},
            # gym.make wraps TimeLimit(500); the env's own max_episode_steps (also 500) truncates the
            # same way (truncated at the limit even on a terminating step), so both paths agree.
            max_episode_steps=500,
        )


_register()


def __getattr__(name: str):
    # Heavy modules (torch, warp, PettingZoo, Stable-Baselines3) load on first use, not on `import worldfm_env`.
    if name in ("WorldFMEnv", "WorldFMVectorEnv", "EnvConfig"):
        from worldfm_env import envs

        return getattr(envs, name)
    if name in ("parallel_env", "WorldFMParallelEnv", "SB3VecEnv"):
        from worldfm_env import integrations

        return getattr(integrations, name)
    raise AttributeError(f"module 'worldfm_env' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ENV_IDS",
    "EnvConfig",
    "SB3VecEnv",
    "WorldFMEnv",
    "WorldFMParallelEnv",
    "WorldFMVectorEnv",
    "__version__",
    "parallel_env",
]
