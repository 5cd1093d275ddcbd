"""Checking one env's action before it joins a batch: the adapters (single env, PettingZoo, Stable-Baselines3) use
these so that a bad action is refused, naming the agent or env, instead of being cast silently (2.5 -> 2, "1" -> 1).

The rules are the vector env's: discrete actions are integers in [0, 6) (an integral float such as 2.0 counts, a
bool or a string does not); continuous actions are 4 finite numbers in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["NUM_DISCRETE_ACTIONS", "check_action", "check_action_batch"]

NUM_DISCRETE_ACTIONS = 6


def _as_array(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{where}: action must be a number, got {value!r}")
    try:
        arr = np.asarray(value)
    except Exception as error:  # ragged lists and other objects numpy cannot read
        raise ValueError(f"{where}: action {value!r} is not an array of numbers") from error
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{where}: action must be numeric (int or float), got {arr.dtype} {value!r}")
    return arr


def check_action(value: Any, action_type: str, where: str) -> np.ndarray:
    """One env's action, checked: an int64 array of shape () (discrete) or a float32 (4,) array (continuous).

    ``where`` names the env in the error (e.g. ``"agent 'agent_1'"``). Raises ValueError saying what is valid.
    """
    if action_type == "discrete":
        valid = f"a single integer in [0, {NUM_DISCRETE_ACTIONS})"
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{where}: action must be {valid}, got the bool {value!r}")
        arr = _as_array(value, where)
        if arr.shape not in ((), (1,)):
            raise ValueError(f"{where}: action must be {valid}, got shape {arr.shape}")
        number = arr.reshape(())
        if arr.dtype.kind == "f" and not (np.isfinite(number) and float(number).is_integer()):
            raise ValueError(f"{where}: action must be {valid}, got {value!r}")
        if not 0 <= number < NUM_DISCRETE_ACTIONS:
            raise ValueError(f"{where}: action must be {valid}, got {value!r}")
        return number.astype(np.int64)
    arr = _as_array(value, where)
    if arr.shape != (4,):
        raise ValueError(f"{where}: continuous action must have shape (4,), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: continuous action must be finite (no NaN or inf), got {value!r}")
    if (np.abs(arr) > 1.0).any():
        raise ValueError(f"{where}: continuous action must lie in [-1, 1], got {value!r}")
    return arr.astype(np.float32)


def check_action_batch(actions: Any, action_type: str, num_envs: int) -> np.ndarray:
    """A batch of actions (N,) or (N, 4), checked env by env: the error names the first bad env's index."""
    arr = _as_array(actions, "actions")
    shape = (num_envs,) if action_type == "discrete" else (num_envs, 4)
    if arr.shape != shape:
        raise ValueError(f"actions must have shape {shape} for {num_envs} envs, got {arr.shape}")
    return np.stack([check_action(arr[i], action_type, f"env {i}") for i in range(num_envs)])
