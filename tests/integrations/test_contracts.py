"""Contracts users rely on: closed envs refuse to step, adapters refuse bad actions by name, top-level names."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL
from gymnasium.error import ClosedEnvironmentError

import worldfm_env
from worldfm_env.envs.actions import check_action, check_action_batch
from worldfm_env.envs.vector import WorldFMVectorEnv

KW = SMALL


def test_top_level_names_are_the_integrations():
    from worldfm_env.integrations.pettingzoo import WorldFMParallelEnv, parallel_env
    from worldfm_env.integrations.sb3 import SB3VecEnv

    assert worldfm_env.parallel_env is parallel_env
    assert worldfm_env.WorldFMParallelEnv is WorldFMParallelEnv
    assert worldfm_env.SB3VecEnv is SB3VecEnv
    assert {"parallel_env", "SB3VecEnv"} <= set(dir(worldfm_env))
    with pytest.raises(AttributeError, match="no attribute 'parallel_envs'"):
        worldfm_env.parallel_envs  # noqa: B018


def test_vector_env_after_close():
    env = WorldFMVectorEnv(num_envs=2, **KW)
    env.reset(seed=0)
    env.close()
    assert env.pipeline is None and env.state is None  # what it held is released
    env.close()  # twice is harmless
    with pytest.raises(ClosedEnvironmentError, match=r"step\(\) was called on a closed WorldFMVectorEnv"):
        env.step(torch.tensor([1, 1]))
    with pytest.raises(ClosedEnvironmentError, match=r"reset\(\)"):
        env.reset(seed=0)


def test_single_env_after_close():
    env = gym.make("WorldFM/PointNav-v0", **KW)
    env.reset(seed=0)
    env.close()
    env.close()
    with pytest.raises(ClosedEnvironmentError):
        env.step(1)
    with pytest.raises(ClosedEnvironmentError):
        env.reset(seed=0)


def test_pettingzoo_after_close_and_bad_actions():
    env = worldfm_env.parallel_env(num_agents=2, **KW)
    env.reset(seed=0)
    for bad, match in [
        (2.5, "agent 'agent_0'.*single integer"),
        (np.float32(1.7), "agent 'agent_0'.*single integer"),
        ("1", "agent 'agent_0'.*must be a number"),
        (None, "agent 'agent_0'.*must be a number"),
        (True, "agent 'agent_0'.*bool"),
        (6, "agent 'agent_0'.*\\[0, 6\\)"),
        (-1, "agent 'agent_0'.*\\[0, 6\\)"),
        ([1, 2], "agent 'agent_0'.*shape"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.step({"agent_0": bad, "agent_1": 1})
    # An integral float and numpy/torch integers are fine, and a refused step changed nothing.
    twin = worldfm_env.parallel_env(num_agents=2, **KW)
    twin.reset(seed=0)
    a = env.step({"agent_0": 2.0, "agent_1": np.int64(1)})[0]
    b = twin.step({"agent_0": 2, "agent_1": torch.tensor(1)})[0]
    for agent in a:
        np.testing.assert_array_equal(a[agent]["rgb"], b[agent]["rgb"])
    env.close()
    env.close()
    with pytest.raises(ClosedEnvironmentError):
        env.step({"agent_0": 1, "agent_1": 1})
    with pytest.raises(ClosedEnvironmentError):
        env.reset(seed=0)


def test_sb3_after_close_and_bad_actions():
    from worldfm_env import SB3VecEnv

    venv = SB3VecEnv.from_kwargs(num_envs=3, **KW)
    venv.reset()
    with pytest.raises(ValueError, match="env 1: action must be a single integer"):
        venv.step(np.array([1, 2.5, 1]))
    with pytest.raises(ValueError, match="env 2: action must be a single integer"):
        venv.step(np.array([1, 1, 9]))
    with pytest.raises(ValueError, match=r"actions must have shape \(3,\)"):
        venv.step(np.array([1, 1]))
    venv.step(np.array([1, 2, 3]))
    venv.close()
    venv.close()
    with pytest.raises(ClosedEnvironmentError):
        venv.step(np.array([1, 1, 1]))
    with pytest.raises(ClosedEnvironmentError):
        venv.reset()


def test_check_action_rules():
    assert check_action(3, "discrete", "x") == 3 and check_action(np.array([4.0]), "discrete", "x") == 4
    assert check_action(torch.tensor(5), "discrete", "x").dtype == np.int64
    out = check_action([0.5, -1, 1, 0], "continuous", "agent 'a'")
    assert out.dtype == np.float32 and out.shape == (4,)
    for bad, match in [
        ([0.5, 0, 0], "agent 'a': continuous action must have shape"),
        ([np.nan, 0, 0, 0], "finite"),
        ([1.5, 0, 0, 0], r"\[-1, 1\]"),
        (["a", 0, 0, 0], "numeric"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_action(bad, "continuous", "agent 'a'")
    batch = check_action_batch(np.zeros((2, 4)), "continuous", 2)
    assert batch.shape == (2, 4)
    with pytest.raises(ValueError, match="env 1: continuous action must lie"):
        check_action_batch(np.array([[0, 0, 0, 0], [0, 2, 0, 0]]), "continuous", 2)
