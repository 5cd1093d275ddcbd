"""Vector wrappers for torch outputs, and the check that names them when a numpy-only wrapper meets torch.

:class:`~worldfm_env.envs.vector.WorldFMVectorEnv` returns torch tensors on its device by default
(``array_type="torch"``). Many of Gymnasium's vector wrappers take them (``TransformObservation``,
``TransformReward``, ``ClipReward``, ``ClipAction``, ``RescaleAction``, ``RecordVideo``, ``ArrayConversion``,
``NumpyToTorch``; ``FlattenObservation``, ``DtypeObservation`` and ``ReshapeObservation`` too, but they return numpy
observations converted env by env); the ones in :data:`NUMPY_ONLY_WRAPPERS` compute with numpy and fail on tensors.
This module has torch-native equivalents to swap in for the common ones, with the same arguments and ``info`` keys,
tensors staying on the device (as ManiSkill does):

* ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` -> :class:`RecordEpisodeStatistics`
* ``gymnasium.wrappers.vector.NormalizeReward`` -> :class:`NormalizeReward`
* ``gymnasium.wrappers.vector.NormalizeObservation`` -> :class:`NormalizeObservation` (takes ``Dict`` spaces too)
* ``gymnasium.wrappers.vector.FilterObservation`` -> :class:`FilterObservation` (no per-env loop)
* ``DictInfoToList``, ``ResizeObservation``, ``GrayscaleObservation``, ``RescaleObservation``: put
  :class:`TorchToNumpy` under them, or build the env with ``array_type="numpy"``.

:class:`TorchToNumpy` turns every output into numpy (the values ``array_type="numpy"`` gives), so any Gymnasium
wrapper works above it. A numpy-only Gymnasium wrapper over the torch env is detected when it calls ``reset()`` or
its first ``step()`` (:func:`check_wrapper_stack`): a ``TypeError`` names the wrapper and the fix, instead of a numpy
error deep inside it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from worldfm_env.envs.wrapper_check import NUMPY_ONLY_WRAPPERS, check_wrapper_stack

__all__ = [
    "NUMPY_ONLY_WRAPPERS",
    "FilterObservation",
    "NormalizeObservation",
    "NormalizeReward",
    "RecordEpisodeStatistics",
    "RunningMeanStd",
    "TorchToNumpy",
    "check_wrapper_stack",
]


def _to_tensor(value: Any, device: torch.device | None = None) -> torch.Tensor:
    """``value`` as a tensor (on ``device`` when given); tensors are not copied."""
    if isinstance(value, torch.Tensor):
        return value if device is None else value.to(device)
    return torch.as_tensor(np.asarray(value), device=device)


def _env_device(env: VectorEnv) -> torch.device:
    """The device the env's tensors live on (its ``device`` attribute; CPU when it has none)."""
    device = getattr(env.unwrapped, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


def _reset_rows(options: dict | None, num_envs: int, device: torch.device) -> torch.Tensor:
    """(N,) bool: the envs a reset with ``options`` resets (``env_idx`` or ``reset_mask``; every env by default)."""
    options = options or {}
    if options.get("reset_mask") is not None:
        return _to_tensor(options["reset_mask"], device).bool().reshape(num_envs)
    if options.get("env_idx") is not None:
        idx = _to_tensor(options["env_idx"])
        if idx.dtype == torch.bool:
            return idx.to(device).reshape(num_envs)
        mask = torch.zeros(num_envs, dtype=torch.bool)
        mask[idx.long().reshape(-1)] = True
        return mask.to(device)
    return torch.ones(num_envs, dtype=torch.bool, device=device)


class RunningMeanStd:
    """Running mean and variance of batches of tensors (the parallel algorithm of Gymnasium's ``RunningMeanStd``),
    in float64 on ``device``; rows can be masked out of an update without a host sync.

    Args:
        shape: the shape of one sample. epsilon: the initial count (as Gymnasium). device: where the statistics live.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4, device: torch.device | str = "cpu") -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(epsilon, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the rows of ``x`` (B, *shape) (those where ``mask`` (B,) is True, when given) to the statistics."""
        x = x.to(device=self.mean.device, dtype=torch.float64)
        if mask is None:
            weight = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        else:
            weight = mask.to(device=x.device, dtype=torch.float64)
        w = weight.view(-1, *([1] * (x.ndim - 1)))
        batch_count = weight.sum()
        safe = batch_count.clamp_min(1.0)
        batch_mean = (x * w).sum(0) / safe
        batch_var = (((x - batch_mean) ** 2) * w).sum(0) / safe
        delta = batch_mean - self.mean
        total = self.count + batch_count
        new_mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        some = batch_count > 0  # an all-masked batch leaves the statistics as they were
        self.mean = torch.where(some, new_mean, self.mean)
        self.var = torch.where(some, m2 / total, self.var)
        self.count = torch.where(some, total, self.count)


class RecordEpisodeStatistics(VectorWrapper):
    """Torch-native ``gymnasium.wrappers.vector.RecordEpisodeStatistics``: episode returns, lengths and times.

    When an env finishes an episode, ``info[stats_key]`` is ``{"r": returns, "l": lengths, "t": seconds}`` ((N,)
    tensors on the env's device, zero for the envs that did not finish) and ``info["_" + stats_key]`` the (N,) bool
    mask of the envs that did; ``return_queue``, ``length_queue`` and ``time_queue`` keep the last ``buffer_length``
    episodes as Python numbers. Both autoreset modes are handled as Gymnasium does. One host sync per step (whether any
    env finished), as Gymnasium adds the key only then.

    Args:
        env: the vector env (torch outputs). buffer_length: size of the queues. stats_key: the info key.
    """

    def __init__(self, env: VectorEnv, buffer_length: int = 100, stats_key: str = "episode") -> None:
        super().__init__(env)
        if not isinstance(buffer_length, int) or buffer_length <= 0:
            raise ValueError(f"buffer_length must be a positive int, got {buffer_length!r}")
        self._stats_key = stats_key
        self._autoreset_mode = self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.device = _env_device(env)
        N, dev = self.num_envs, self.device
        self.episode_count = 0
        self.episode_returns = torch.zeros(N, dtype=torch.float64, device=dev)
        self.episode_lengths = torch.zeros(N, dtype=torch.int64, device=dev)
        self.episode_start_times = torch.full((N,), time.perf_counter(), dtype=torch.float64, device=dev)
        self.prev_dones = torch.zeros(N, dtype=torch.bool, device=dev)
        self.time_queue: deque[float] = deque(maxlen=buffer_length)
        self.return_queue: deque[float] = deque(maxlen=buffer_length)
        self.length_queue: deque[int] = deque(maxlen=buffer_length)

    def reset(self, *, seed: Any = None, options: dict | None = None):
        """Reset the env and the statistics of the envs it resets (``env_idx``/``reset_mask``: only those)."""
        obs, info = self.env.reset(seed=seed, options=options)
        rows = _reset_rows(options, self.num_envs, self.device)
        self.episode_returns = torch.where(rows, 0.0, self.episode_returns)
        self.episode_lengths = torch.where(rows, 0, self.episode_lengths)
        self.prev_dones = self.prev_dones & ~rows
        self.episode_start_times = torch.where(rows, time.perf_counter(), self.episode_start_times)
        return obs, info

    def step(self, actions: Any):
        """Step the env and add ``info[stats_key]`` for the envs that finished (see the class docstring)."""
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        dev = self.device
        rewards_t = _to_tensor(rewards, dev).to(torch.float64)
        if self._autoreset_mode == AutoresetMode.SAME_STEP:
            self.episode_returns = self.episode_returns + rewards_t
            self.episode_lengths = self.episode_lengths + 1
        else:
            # NEXT_STEP: the step after an env finished is its reset step, no part of the next episode.
            prev = self.prev_dones
            self.episode_returns = torch.where(prev, 0.0, self.episode_returns + rewards_t)
            self.episode_lengths = torch.where(prev, 0, self.episode_lengths + 1)
            self.episode_start_times = torch.where(prev, time.perf_counter(), self.episode_start_times)
        dones = _to_tensor(terminations, dev).bool() | _to_tensor(truncations, dev).bool()
        self.prev_dones = dones
        if bool(dones.any()):  # the one host sync
            if self._stats_key in infos or f"_{self._stats_key}" in infos:
                raise ValueError(
                    f"stats_key={self._stats_key!r} is already an info key ({sorted(infos)}); pass another stats_key"
                )
            elapsed = time.perf_counter() - self.episode_start_times
            infos = dict(infos)
            infos[self._stats_key] = {
                "r": torch.where(dones, self.episode_returns, 0.0),
                "l": torch.where(dones, self.episode_lengths, 0),
                "t": torch.where(dones, elapsed, 0.0),
            }
            infos[f"_{self._stats_key}"] = dones
            idx = torch.nonzero(dones).flatten()
            self.episode_count += int(idx.numel())
            self.time_queue.extend(elapsed[idx].tolist())
            self.return_queue.extend(self.episode_returns[idx].tolist())
            self.length_queue.extend(self.episode_lengths[idx].tolist())
            if self._autoreset_mode == AutoresetMode.SAME_STEP:
                self.episode_returns = torch.where(dones, 0.0, self.episode_returns)
                self.episode_lengths = torch.where(dones, 0, self.episode_lengths)
                self.episode_start_times = torch.where(dones, time.perf_counter(), self.episode_start_times)
        return obs, rewards, terminations, truncations, infos


class NormalizeReward(VectorWrapper):
    """Torch-native ``gymnasium.wrappers.vector.NormalizeReward``: rewards scaled so that their discounted return
    has about unit variance (the same algorithm and autoreset handling as Gymnasium's, on the device, no host sync).

    ``update_running_mean = False`` freezes the statistics (evaluation).

    Args:
        env: the vector env (torch outputs). gamma: discount of the return, in [0, 1]. epsilon: > 0, added to the
            variance.
    """

    def __init__(self, env: VectorEnv, gamma: float = 0.99, epsilon: float = 1e-8) -> None:
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        if not epsilon > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        super().__init__(env)
        self.gamma, self.epsilon = float(gamma), float(epsilon)
        self.device = _env_device(env)
        self.return_rms = RunningMeanStd(shape=(), device=self.device)
        self.accumulated_reward = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)
        self._prev_dones = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._autoreset_mode = self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.update_running_mean = True

    def reset(self, *, seed: Any = None, options: dict | None = None):
        """Reset the env and the accumulated returns."""
        self.accumulated_reward.zero_()
        self._prev_dones.zero_()
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any):
        """Step the env and return the normalised rewards (in the rewards' dtype)."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        dev = self.device
        reward_t = _to_tensor(reward, dev)
        term = _to_tensor(terminated, dev).bool()
        done = term | _to_tensor(truncated, dev).bool()
        if self._autoreset_mode == AutoresetMode.SAME_STEP:
            active = torch.ones_like(done)
        else:
            active = ~self._prev_dones
        updated = self.accumulated_reward * self.gamma * (~term).to(torch.float64) + reward_t.to(torch.float64)
        self.accumulated_reward = torch.where(active, updated, self.accumulated_reward)
        if self.update_running_mean:
            self.return_rms.update(self.accumulated_reward, mask=active)
        self._prev_dones = done
        if self._autoreset_mode == AutoresetMode.SAME_STEP:
            self.accumulated_reward = torch.where(done, 0.0, self.accumulated_reward)
        scale = torch.sqrt(self.return_rms.var + self.epsilon)
        dtype = reward_t.dtype if reward_t.dtype.is_floating_point else torch.float32
        return obs, (reward_t / scale).to(dtype), terminated, truncated, info


class NormalizeObservation(VectorWrapper):
    """Torch-native ``gymnasium.wrappers.vector.NormalizeObservation``: observations centred to unit variance with
    running statistics (float32 out), on the device, no host sync.

    Takes a ``Box`` observation space, or a ``Dict`` one: then ``keys`` (default: every float ``Box`` key, e.g.
    ``pointgoal``, ``depth``, ``pose``; ``rgb`` stays uint8) are normalised, each with its own statistics, and the
    other keys pass through. Both autoreset modes: with SAME_STEP, ``info["final_obs"]`` (batched torch, as the env
    gives it) is normalised too. ``update_running_mean = False`` freezes the statistics.

    Args:
        env: the vector env (torch outputs). epsilon: > 0, added to the variance. keys: the ``Dict`` keys to normalise.
    """

    def __init__(self, env: VectorEnv, epsilon: float = 1e-8, keys: list[str] | tuple[str, ...] | None = None) -> None:
        if not epsilon > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        super().__init__(env)
        self.epsilon = float(epsilon)
        self.device = _env_device(env)
        self.update_running_mean = True
        single = env.single_observation_space
        if isinstance(single, spaces.Box):
            if keys is not None:
                raise ValueError(f"keys applies to Dict observation spaces only; this env's is {single}")
            self.keys = None
            self.obs_rms: RunningMeanStd | dict[str, RunningMeanStd] = RunningMeanStd(single.shape, device=self.device)
            new_single: spaces.Space = spaces.Box(-np.inf, np.inf, single.shape, np.float32)
        elif isinstance(single, spaces.Dict):
            boxes = [k for k, s in single.spaces.items() if isinstance(s, spaces.Box)]
            if keys is None:
                keys = [k for k in boxes if np.issubdtype(single[k].dtype, np.floating)]
            bad = [k for k in keys if k not in boxes]
            if bad or not keys:
                raise ValueError(f"keys must be a non-empty list of the Box keys {boxes} of this env, got {keys!r}")
            self.keys = list(keys)
            self.obs_rms = {k: RunningMeanStd(single[k].shape, device=self.device) for k in self.keys}
            new_single = spaces.Dict(
                {
                    k: spaces.Box(-np.inf, np.inf, s.shape, np.float32) if k in self.keys else s
                    for k, s in single.spaces.items()
                }
            )
        else:
            raise TypeError(f"NormalizeObservation takes a Box or Dict observation space, got {single}")
        self.single_observation_space = new_single
        self.observation_space = batch_space(new_single, self.num_envs)

    def _normalize(self, rms: RunningMeanStd, x: Any, update: bool) -> torch.Tensor:
        x = _to_tensor(x, self.device)
        if update and self.update_running_mean:
            rms.update(x)
        return ((x.to(torch.float64) - rms.mean) / torch.sqrt(rms.var + self.epsilon)).to(torch.float32)

    def observations(self, observations: Any, update: bool = True) -> Any:
        """Normalise a batch of observations (and update the statistics unless ``update`` is False or frozen)."""
        if self.keys is None:
            return self._normalize(self.obs_rms, observations, update)
        out = dict(observations)
        for k in self.keys:
            out[k] = self._normalize(self.obs_rms[k], observations[k], update)
        return out

    def reset(self, *, seed: Any = None, options: dict | None = None):
        """Reset the env and normalise the observations."""
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observations(obs), info

    def step(self, actions: Any):
        """Step the env and normalise the observations (and a SAME_STEP ``final_obs``, without updating)."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        final = info.get("final_obs") if isinstance(info, dict) else None
        if final is not None and (isinstance(final, torch.Tensor) or isinstance(final, dict)):
            info = dict(info)
            info["final_obs"] = self.observations(final, update=False)
        return self.observations(obs), reward, terminated, truncated, info


class FilterObservation(VectorWrapper):
    """Torch-native ``gymnasium.wrappers.vector.FilterObservation``: keep only ``filter_keys`` of a ``Dict``
    observation (tensors stay as they are, no per-env loop); a SAME_STEP ``info["final_obs"]`` is filtered too.

    Args:
        env: the vector env with a ``Dict`` observation space. filter_keys: the keys to keep, in this order.
    """

    def __init__(self, env: VectorEnv, filter_keys: list[str] | tuple[str, ...]) -> None:
        super().__init__(env)
        single = env.single_observation_space
        if not isinstance(single, spaces.Dict):
            raise TypeError(f"FilterObservation takes a Dict observation space, got {single}")
        keys = list(filter_keys) if isinstance(filter_keys, (list, tuple)) else None
        if not keys or any(k not in single.spaces for k in keys) or len(set(keys)) != len(keys):
            raise ValueError(
                f"filter_keys must be a non-empty list of distinct keys of {list(single.spaces)}, got {filter_keys!r}"
            )
        self.filter_keys = keys
        self.single_observation_space = spaces.Dict({k: single[k] for k in keys})
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    def _filter(self, obs: Any) -> Any:
        return None if obs is None else {k: obs[k] for k in self.filter_keys}

    def reset(self, *, seed: Any = None, options: dict | None = None):
        """Reset the env; the kept keys."""
        obs, info = self.env.reset(seed=seed, options=options)
        return self._filter(obs), info

    def step(self, actions: Any):
        """Step the env; the kept keys (and in ``info["final_obs"]``)."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        final = info.get("final_obs") if isinstance(info, dict) else None
        if isinstance(final, dict):
            info = {**info, "final_obs": self._filter(final)}
        elif isinstance(final, np.ndarray) and final.dtype == object:
            info = {**info, "final_obs": np.array([self._filter(o) for o in final] + [None], dtype=object)[:-1]}
        return self._filter(obs), reward, terminated, truncated, info


def _numpy_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _numpy_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy_tree(v) for v in value)
    return value


class TorchToNumpy(VectorWrapper):
    """Every output of a torch vector env as numpy, so that any numpy wrapper (Gymnasium's) works above it.

    Observations, rewards, terminations, truncations and infos (nested) become numpy arrays, the same values as
    ``array_type="numpy"`` gives; a SAME_STEP ``info["final_obs"]`` becomes Gymnasium's object array of per-env
    observations (None where the env did not finish). Actions pass through (the env takes numpy actions).

    Args:
        env: the vector env (torch outputs).
    """

    #: The wrappers above get numpy: :func:`check_wrapper_stack` stops here.
    outputs_numpy = True

    def reset(self, *, seed: Any = None, options: dict | None = None):
        """Reset the env; numpy outputs."""
        obs, info = self.env.reset(seed=seed, options=options)
        return _numpy_tree(obs), self._info(info)

    def step(self, actions: Any):
        """Step the env; numpy outputs."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return _numpy_tree(obs), _numpy_tree(reward), _numpy_tree(terminated), _numpy_tree(truncated), self._info(info)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        out = _numpy_tree(info)
        final = out.get("final_obs")
        if isinstance(final, dict):  # batched per key (N, ...) -> Gymnasium's object array of per-env observations
            mask = np.asarray(out.get("_final_obs", np.ones(self.num_envs, dtype=bool)))
            arr = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(mask):
                arr[i] = {k: v[i] for k, v in final.items()}
            out["final_obs"] = arr
        return out
