"""Adapters to other RL libraries: Stable-Baselines3 (:class:`SB3VecEnv`) and PettingZoo (:func:`parallel_env`).

Both load lazily: ``import worldfm_env`` (or this package) imports neither Stable-Baselines3 nor
PettingZoo; the first access to a name does (``pip install worldfm-env[agents]``).
"""

from __future__ import annotations

import importlib

__all__ = ["SB3VecEnv", "WorldFMParallelEnv", "parallel_env"]

_LAZY = {
    "SB3VecEnv": "worldfm_env.integrations.sb3",
    "WorldFMParallelEnv": "worldfm_env.integrations.pettingzoo",
    "parallel_env": "worldfm_env.integrations.pettingzoo",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'worldfm_env.integrations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
