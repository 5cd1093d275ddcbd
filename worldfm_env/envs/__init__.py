"""Environments: the batched core, the single-env facade, tasks and their configuration."""

from worldfm_env.envs.config import EnvConfig
from worldfm_env.envs.single import WorldFMEnv
from worldfm_env.envs.vector import WorldFMVectorEnv

__all__ = ["EnvConfig", "WorldFMEnv", "WorldFMVectorEnv"]
