"""Stable-Baselines3: :class:`SB3VecEnv`, an SB3 ``VecEnv`` over one batched :class:`WorldFMVectorEnv`.

SB3 keeps its own vector-env API (``step_async``/``step_wait``, ``dones``, a list of info dicts,
auto-reset inside the step with ``info["terminal_observation"]``). Gymnasium's SAME_STEP autoreset
mode has the same timing, so the adapter is a format conversion at the numpy boundary: one batched
step of the wrapped env per SB3 step, no per-env Python loop except to build the info list.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.error import ClosedEnvironmentError
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from worldfm_env.envs.actions import check_action_batch

__all__ = ["SB3VecEnv"]


def _numpy(value: Any) -> Any:
    """Tensors (any device) to numpy; numpy and Python values unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _item(value: Any) -> Any:
    """A numpy scalar or 0-d array as a Python scalar (what loggers and ``Monitor`` expect)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


class SB3VecEnv(VecEnv):
    """A Stable-Baselines3 ``VecEnv`` over a :class:`~worldfm_env.envs.vector.WorldFMVectorEnv`.

    ``SB3VecEnv(vec_env)`` wraps an existing vector env, which must be in SAME_STEP autoreset mode
    (``autoreset_mode="same_step"``), the timing SB3 expects: on the step an env finishes, the
    returned observation is already the first one of its next episode. Any other mode is a
    ``ValueError``; ``SB3VecEnv.from_kwargs(num_envs=N, **env_kwargs)`` builds a suitable one.
    ``array_type`` may be ``"torch"`` (recommended: one device-to-host copy per key and step) or
    ``"numpy"``. Other Gymnasium vector envs in SAME_STEP mode (e.g. ``SyncVectorEnv``) work too.

    SB3 semantics:

    * ``reset()`` returns the observation dict of numpy arrays (N, ...); it uses the seeds set by
      :meth:`seed` (env ``i`` gets ``seed + i``, the same episodes as ``vec_env.reset(seed=seed)``)
      once, then seeds are cleared as in ``DummyVecEnv``. Reset infos land in ``reset_infos``.
    * ``step_wait()`` returns ``(obs, rewards float32 (N,), dones bool (N,), infos)``, ``infos`` a list
      of N dicts of Python scalars (the task metrics: ``success``, ``spl``, ``distance_to_goal``, ...).
      For a finished env its info holds the metrics of the finished episode,
      ``"terminal_observation"`` (its last observation, a dict of numpy arrays) and
      ``"TimeLimit.truncated"`` (truncated and not terminated).
    * The observation space is the single-env ``Dict`` (``rgb`` uint8 HWC, which SB3's
      ``MultiInputPolicy`` transposes and feeds to ``NatureCNN``). ``NatureCNN`` needs images of at
      least 36x36: use ``resolution >= 36`` (64 is the default), or a custom
      ``policy_kwargs["features_extractor_class"]`` for smaller images.
    * ``get_attr``/``set_attr``/``env_method`` address the wrapped vector env, which holds all N
      envs at once: ``get_attr`` returns its attribute once per requested index; ``set_attr`` and
      ``env_method`` act on the whole batch, so they accept only ``indices`` naming every env.
      ``env_is_wrapped`` is False for every wrapper (the envs are not separate ``gym.Env`` objects).
    * ``get_images()`` gives one (H, W, 3) frame per env when ``render_mode="rgb_array"``.

    ``set_options`` is not supported: the wrapped env has no per-env reset options (a non-empty
    option dict makes ``reset()`` raise ``ValueError``).
    """

    def __init__(self, vec_env: VectorEnv) -> None:
        if not isinstance(vec_env, VectorEnv):
            raise TypeError(f"SB3VecEnv wraps a gymnasium.vector.VectorEnv, got {type(vec_env).__name__}")
        mode = vec_env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3VecEnv needs a vector env in SAME_STEP autoreset mode (SB3 resets finished envs within the "
                f"step), got {mode!r}. Build it with autoreset_mode='same_step', e.g. "
                "SB3VecEnv.from_kwargs(num_envs=N, **env_kwargs)."
            )
        self.vec_env = vec_env
        self._actions: Any = None
        super().__init__(vec_env.num_envs, vec_env.single_observation_space, vec_env.single_action_space)

    @classmethod
    def from_kwargs(cls, num_envs: int = 1, **env_kwargs: Any) -> SB3VecEnv:
        """Build a :class:`WorldFMVectorEnv` with ``num_envs`` envs in SAME_STEP mode and wrap it.

        ``env_kwargs`` are :class:`~worldfm_env.envs.config.EnvConfig` fields (and ``render_mode``);
        ``autoreset_mode`` defaults to, and must be, ``"same_step"``.
        """
        from worldfm_env.envs.vector import WorldFMVectorEnv

        mode = env_kwargs.setdefault("autoreset_mode", "same_step")
        if mode != "same_step":
            raise ValueError(f"SB3VecEnv needs autoreset_mode='same_step', got {mode!r}")
        return cls(WorldFMVectorEnv(num_envs=num_envs, **env_kwargs))

    # ------------------------------------------------------------------ reset / step
    def _ensure_open(self, method: str) -> None:
        if getattr(self.vec_env, "closed", False):
            raise ClosedEnvironmentError(f"{method}() was called on a closed SB3VecEnv; build a new one to continue")

    def reset(self) -> VecEnvObs:
        """Reset every env (with the seeds given to :meth:`seed`, if any) and return the observations."""
        self._ensure_open("reset")
        seeds = list(self._seeds)
        if any(s is not None for s in seeds) and any(s is None for s in seeds):
            raise ValueError(f"seed all envs or none before reset(), got seeds {seeds}")
        if any(self._options):
            raise ValueError(f"SB3VecEnv does not support reset options (set_options), got {self._options}")
        seed = None if seeds[0] is None else [int(s) for s in seeds]
        obs, infos = self.vec_env.reset(seed=seed)
        self.reset_infos = self._split_info(infos)
        self._reset_seeds()
        self._reset_options()
        return self._obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Check and store the actions (N,) (discrete) or (N, 4) (continuous) for :meth:`step_wait`; a bad action
        of a worldfm-env vector env raises ``ValueError`` naming its env index."""
        self._ensure_open("step_async")
        action_type = getattr(getattr(self.vec_env, "config", None), "action_type", None)
        if action_type is not None:
            actions = check_action_batch(actions, action_type, self.num_envs)
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step all envs at once; finished envs are already reset (see the class docstring)."""
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, infos = self.vec_env.step(actions)
        terminated = np.asarray(_numpy(terminated), dtype=bool)
        truncated = np.asarray(_numpy(truncated), dtype=bool)
        dones = terminated | truncated
        final_obs = infos.pop("final_obs", None)
        final_info = infos.pop("final_info", None)
        infos.pop("_final_obs", None)
        infos.pop("_final_info", None)
        info_list = self._split_info(infos)
        done_idx = np.flatnonzero(dones)
        if done_idx.size:
            # The step's own infos are already those of the new episodes: they become the reset infos,
            # and the finished episode's metrics (final_info) go into the step's info list.
            final_list = self._split_info(final_info) if final_info is not None else info_list
            for i in done_idx:
                self.reset_infos[i] = info_list[i]
                info = dict(final_list[i])
                info["terminal_observation"] = self._final_observation(final_obs, i)
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                info_list[i] = info
        for i in np.flatnonzero(~dones):
            info_list[i]["TimeLimit.truncated"] = False
        rewards = np.asarray(_numpy(reward), dtype=np.float32)
        return self._obs(obs), rewards, dones, info_list

    # ------------------------------------------------------------------ conversion helpers
    @staticmethod
    def _obs(obs: Any) -> VecEnvObs:
        if isinstance(obs, dict):
            return {key: _numpy(value) for key, value in obs.items()}
        return _numpy(obs)

    def _final_observation(self, final_obs: Any, i: int) -> VecEnvObs:
        if final_obs is None:
            raise RuntimeError("the wrapped env finished an episode without info['final_obs'] (not SAME_STEP?)")
        if isinstance(final_obs, dict):  # batched (N, ...) per key: WorldFMVectorEnv with array_type="torch"
            return {key: np.array(_numpy(value[i])) for key, value in final_obs.items()}
        # An object array of per-env observations: Gymnasium's convention (and WorldFMVectorEnv's numpy one).
        final = final_obs[i]
        return dict(final) if isinstance(final, dict) else np.array(_numpy(final))

    def _split_info(self, infos: dict[str, Any]) -> list[dict[str, Any]]:
        """Gymnasium vector infos (batched values with ``_key`` masks) to one dict per env."""
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in infos.items():
            if key.startswith("_"):
                continue
            mask = _numpy(infos.get(f"_{key}"))
            if isinstance(value, dict):
                nested = self._split_info(value)
                for i in range(self.num_envs):
                    if mask is None or mask[i]:
                        out[i][key] = nested[i]
                continue
            value = _numpy(value)
            for i in range(self.num_envs):
                if mask is None or mask[i]:
                    out[i][key] = _item(value[i])
        return out

    # ------------------------------------------------------------------ VecEnv plumbing
    def _all_indices(self, indices: VecEnvIndices, what: str) -> None:
        chosen = sorted(set(int(i) for i in self._get_indices(indices)))
        if chosen != list(range(self.num_envs)):
            raise ValueError(
                f"{what} acts on the whole batched env (all {self.num_envs} envs share one WorldFMVectorEnv); "
                f"indices must name every env or be None, got {indices!r}"
            )

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The wrapped vector env's attribute ``attr_name``, once per requested env index."""
        value = getattr(self.vec_env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on the wrapped vector env (``indices`` must name every env)."""
        self._all_indices(indices, "set_attr")
        setattr(self.vec_env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call ``method_name`` once on the wrapped vector env; its result is repeated for every env."""
        self._all_indices(indices, "env_method")
        result = getattr(self.vec_env, method_name)(*method_args, **method_kwargs)
        return [result for _ in range(self.num_envs)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the envs are rows of one batched env, not ``gym.Env`` objects that could be wrapped."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One rgb frame (H, W, 3) uint8 per env (``render_mode="rgb_array"``; None per env otherwise)."""
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but get_images() needs render_mode='rgb_array'.",
                stacklevel=2,
            )
            return [None for _ in range(self.num_envs)]
        frames = self.vec_env.render()
        if frames is None:
            return [None for _ in range(self.num_envs)]
        return [np.asarray(frame) for frame in frames]

    def close(self) -> None:
        """Close the wrapped vector env."""
        self.vec_env.close()
