"""The batched core: :class:`WorldFMVectorEnv`, a native ``gymnasium.vector.VectorEnv``."""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ClosedEnvironmentError
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldfm_env._device import resolve_device
from worldfm_env.envs.config import EnvConfig
from worldfm_env.envs.shared import shared_world
from worldfm_env.envs.state import EnvRows, EnvState
from worldfm_env.envs.tasks import make_task
from worldfm_env.envs.wrapper_check import check_wrapper_stack
from worldfm_env.geometry import integrate_continuous, integrate_discrete, pose_from_yaw_pitch
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.rng import hash_combine, hash_uniform

__all__ = ["WorldFMVectorEnv"]

NUM_DISCRETE_ACTIONS = 6
_CORE_DRAWS = 2  # scene choice, yaw


def _state_property(name: str) -> property:
    """A read/write attribute of the env forwarding to ``env.state.<name>``."""

    def get(self: WorldFMVectorEnv) -> torch.Tensor:
        return getattr(self.state, name)

    def set(self: WorldFMVectorEnv, value: torch.Tensor) -> None:
        setattr(self.state, name, value)

    return property(get, set, doc=f"``state.{name}`` (see :class:`~worldfm_env.envs.state.EnvState`).")


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    return value


class WorldFMVectorEnv(VectorEnv):
    """N camera agents in generated worlds, stepped together on one device.

    ## Description
    Each env is an agent's camera moving through a scene (procedural or imported). Every step
    integrates the actions, blocks moves into occupied navigation cells (counted as collisions; with
    ``allow_sliding`` the agent slides along the obstacle instead),
    renders all N observations in one batch (the scene's point cloud splatted at each pose with
    warp, the reference view voted for by depth consistency, then the chosen renderer backend),
    and evaluates the task. State lives in ``(num_envs, ...)`` torch tensors on ``device``, held in ``state``
    (:class:`~worldfm_env.envs.state.EnvState`; ``position``, ``yaw``, ``scene_index``... forward to it).
    The task (:mod:`worldfm_env.envs.tasks`) reads that state and returns episode starts, rewards and metrics.
    With ``memory="grow"`` each env's generated pixels are written back into its own memory after every render
    (:attr:`memory`, :mod:`worldfm_env.memory`); ``capture`` chooses how much of a procedural scene the memory
    starts from (``"full"``, ``"panorama"``, ``"walk:K"``).

    ## Action Space
    ``discrete`` (default): ``MultiDiscrete([6] * N)``: 0 stop, 1 forward ``forward_step`` m, 2 turn
    left / 3 turn right ``turn_angle_deg``, 4 look up / 5 look down ``tilt_angle_deg``.
    ``continuous``: ``Box(-1, 1, (N, 4))``: forward, strafe right, yaw rate (left +), pitch rate (up +),
    scaled by the same step sizes.

    ## Observation Space
    ``Dict``: ``rgb`` uint8 (N, H, W, 3); task keys (PointNav: ``pointgoal`` float32 (N, 2) = distance
    and angle to the goal in the agent frame, angle positive to the left); optional ``depth``
    float32 (N, H, W, 1) and ``pose`` float32 (N, 5) = x, y, z, yaw, pitch.

    ## Rewards
    PointNav: decrease of the geodesic distance to the goal + ``success_reward`` on success -
    ``time_penalty``. Explore: newly observed free area (m^2) - ``time_penalty``.

    ## Starting State
    Drawn per env from its seed and episode number (counter-based hashing, so independent of the
    batch): a scene of the pool, a start on the scene's main free component (within 1 m of a capture camera
    in a sparsely captured scene), a random yaw, pitch 0;
    PointNav picks one of ``goal_candidates`` goal cells per scene and a start whose geodesic
    distance lies in [``min_goal_distance``, ``max_goal_distance``] (the nearest to that range in
    scenes too small for it).

    ## Episode End
    Terminated on STOP (discrete), or on reaching the goal radius (continuous PointNav).
    Truncated after ``max_episode_steps`` (also on a step that terminates, like Gymnasium's
    ``TimeLimit``). Finished envs are reset by mask according to ``metadata["autoreset_mode"]``
    (NEXT_STEP by default, SAME_STEP selectable). ``reset(options=...)`` takes ``env_idx`` or
    ``reset_mask`` (partial reset) and ``scene_index`` (force scenes).

    ## Arguments
    ``num_envs`` and every field of :class:`~worldfm_env.envs.config.EnvConfig` as keyword arguments
    (``task``, ``renderer``, ``resolution``, ``action_type``, ``scenes``, ``device``, ...). Unknown
    keys raise ``ValueError``.

    ## Vectorized environment
    This *is* the vectorized form; ``gym.make`` gives :class:`~worldfm_env.envs.single.WorldFMEnv`,
    a thin facade over this class with ``num_envs=1``. ``reset(options={"env_idx": idx})`` resets
    only the listed envs. Outputs are torch tensors on the device (``array_type="torch"``) or numpy.

    ## Version History
    * v0: initial release (``capture``, ``goal_outside_capture`` and ``memory`` added later without changing the
      defaults' behaviour).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["rgb_array"], "render_fps": 10}

    # The batched state as env attributes (read and write), forwarding to ``self.state``.
    scene_index = _state_property("scene_index")
    position = _state_property("position")
    yaw = _state_property("yaw")
    pitch = _state_property("pitch")
    elapsed_steps = _state_property("elapsed_steps")
    collisions = _state_property("collisions")
    path_length = _state_property("path_length")
    seeds = _state_property("seeds")
    episode_count = _state_property("episode_count")

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'")
        self.config = cfg = EnvConfig.from_kwargs(**kwargs)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.device = resolve_device(cfg.device)
        self.autoreset_mode = AutoresetMode.NEXT_STEP if cfg.autoreset_mode == "next_step" else AutoresetMode.SAME_STEP
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        H, W = cfg.resolution
        self.height, self.width = H, W
        N, dev = self.num_envs, self.device

        self._build_device_parts()
        # The anchors the frame model's header says it learned from, against the ones this env renders.
        for name in ("splat_radius", "anchor_colour", "silhouettes"):
            trained, rendered = getattr(self.renderer, f"trained_{name}", None), getattr(cfg, name)
            if trained is not None and trained != rendered:
                warnings.warn(
                    f"the frame model {self.renderer.weights_path.name} was trained on anchors with "
                    f"{name}={trained!r} but this env renders {name}={rendered!r}; pass {name}={trained!r} to give "
                    "it the anchors it learned from",
                    stacklevel=2,
                )

        # Batched state, (N, ...) on the device; ``self.position`` etc. forward to it.
        self.state = EnvState.zeros(N, dev)
        self._autoreset = torch.zeros(N, dtype=torch.bool, device=dev)
        self._has_reset = False
        self._last_obs: dict[str, torch.Tensor] | None = None
        self._wrappers_checked = False
        self._setup_spaces()
        # Collision checks sample the move at half a cell; the longest move is a diagonal full step.
        max_move = cfg.forward_step * (math.sqrt(2.0) if cfg.action_type == "continuous" else 1.0)
        self._collision_samples = max(2, int(math.ceil(max_move / (0.5 * float(self.pool.nav_cell_size.min())))))

    def _build_device_parts(self) -> None:
        """Build what lives on the device and is derived from the config alone (at construction and when
        unpickled): the shared world (scene pool, navigation), the observation pipeline (cameras, splat and vote
        buffers, renderer backend, frame model) and the task with fresh per-env task state."""
        cfg, N, dev = self.config, self.num_envs, self.device
        self.world = shared_world(cfg, dev, with_goal_fields=cfg.task == "pointnav")
        self.pool = self.world.pool
        self.navigation = self.world.navigation
        self.pipeline = ObservationPipeline(
            self.pool,
            N,
            self.height,
            self.width,
            renderer=cfg.renderer,
            anchor=cfg.anchor,
            hfov_deg=cfg.hfov_deg,
            memory=cfg.memory,
            memory_capacity=cfg.memory_capacity,
            memory_carve=cfg.memory_carve,
            depth_bound=cfg.depth_bound,
            **(cfg.model_options if cfg.renderer == "worldfm" else {}),
        )
        self.renderer = self.pipeline.backend
        self.K = self.pipeline.K
        self.task = make_task(cfg.task, self.world, cfg, N, dev)
        self._last_frame = None

    # ------------------------------------------------------------------ pickling
    #: Attributes rebuilt on load by :meth:`_build_device_parts` (never pickled: warp arrays, the frame model).
    _DEVICE_PARTS = ("world", "pool", "navigation", "pipeline", "renderer", "K", "task", "_last_frame", "device")

    def __getstate__(self) -> dict[str, Any]:
        """The configuration and the state, on the CPU: ``config``, ``num_envs``, the batched ``state``
        (:class:`~worldfm_env.envs.state.EnvState`), the task's per-env state, the autoreset flags, the last
        observation, the spaces (with their random generators) and Gymnasium's bookkeeping. The device parts
        (scene pool, observation pipeline, warp arrays, frame model) are left out and rebuilt by
        :meth:`__setstate__`, so ``pickle`` and ``copy.deepcopy`` work and the copy continues the same episodes."""
        out = {k: v for k, v in self.__dict__.items() if k not in self._DEVICE_PARTS}
        out["_wrappers_checked"] = False
        if self.closed:
            return out

        def host(t: torch.Tensor) -> torch.Tensor:  # always a copy (``.cpu()`` of a CPU tensor is the tensor)
            return t.detach().to("cpu", copy=True)

        out["state"] = EnvState(**{name: host(getattr(self.state, name)) for name in EnvState.field_names()})
        out["_autoreset"] = host(self._autoreset)
        out["_last_obs"] = None if self._last_obs is None else {k: host(v) for k, v in self._last_obs.items()}
        out["_task_state"] = {k: host(v) for k, v in self.task.state_dict().items()}
        if self.pipeline.memory is not None:
            out["_memory_state"] = self.pipeline.memory.state_dict()
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled env: rebuild the device parts on ``config.device`` (resolved again: ``"auto"`` takes
        this machine's device) and move the state, the task state and the last observation onto it."""
        state = dict(state)
        task_state = state.pop("_task_state", None)
        memory_state = state.pop("_memory_state", None)
        self.__dict__.update(state)
        for name in self._DEVICE_PARTS:
            self.__dict__.setdefault(name, None)
        if self.closed:
            return
        self.device = dev = resolve_device(self.config.device)
        self._build_device_parts()
        self.state = EnvState(**{name: getattr(self.state, name).to(dev) for name in EnvState.field_names()})
        self._autoreset = self._autoreset.to(dev)
        if self._last_obs is not None:
            self._last_obs = {k: v.to(dev) for k, v in self._last_obs.items()}
        if task_state is not None:
            self.task.load_state_dict(task_state)
        if memory_state is not None:
            self.pipeline.memory.load_state_dict(memory_state)

    # ------------------------------------------------------------------ spaces
    def _setup_spaces(self) -> None:
        cfg = self.config
        H, W = self.height, self.width
        obs = {"rgb": spaces.Box(0, 255, (H, W, 3), dtype=np.uint8)}
        obs.update(self.task.observation_spaces())
        if cfg.include_depth:
            obs["depth"] = spaces.Box(0.0, np.inf, (H, W, 1), dtype=np.float32)
        if cfg.include_pose:
            obs["pose"] = spaces.Box(-np.inf, np.inf, (5,), dtype=np.float32)
        self.single_observation_space = spaces.Dict(obs)
        if cfg.action_type == "discrete":
            self.single_action_space = spaces.Discrete(NUM_DISCRETE_ACTIONS)
        else:
            self.single_action_space = spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset all envs, or only some of them.

        Options: ``env_idx`` (indices, or a bool mask) or Gymnasium's ``reset_mask`` (bool (N,)) picks
        the envs to reset; ``scene_index`` (an int, or one per env) puts the reset envs in given
        scenes of the pool instead of drawing them. ``seed`` (int) seeds env i with ``seed + i`` (the
        SyncVectorEnv convention); a list gives one seed per env, ``None`` entries keep that env's
        seed and continue its episode sequence. Returns (observations, infos) for all envs; the info
        masks (``_key``) mark the envs that were reset.
        """
        self.ensure_open("reset")
        if self.config.array_type == "torch":
            # A numpy-only Gymnasium wrapper on top is named here (TypeError with the fix), not failing in numpy.
            check_wrapper_stack(self, sys._getframe(1))
            self._wrappers_checked = False  # and again at the next step (a wrapper added after this reset)
        N, dev = self.num_envs, self.device
        options = dict(options or {})
        unknown = set(options) - {"env_idx", "reset_mask", "scene_index"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; valid: ['env_idx', 'reset_mask', 'scene_index']"
            )
        if "env_idx" in options and "reset_mask" in options:
            raise ValueError("give options['env_idx'] or options['reset_mask'], not both")
        if "reset_mask" in options:
            reset_mask = torch.as_tensor(
                np.asarray(options["reset_mask"])
                if not isinstance(options["reset_mask"], torch.Tensor)
                else options["reset_mask"].cpu()
            )
            if reset_mask.dtype != torch.bool or reset_mask.shape != (N,):
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({N},), got "
                    f"{reset_mask.dtype} {tuple(reset_mask.shape)}"
                )
            mask = reset_mask.to(dev)
        else:
            mask = self._env_mask(options.get("env_idx"))
        scene_index = self._parse_scene_index(options.get("scene_index"))
        if not self._has_reset:
            # Fresh entropy first; seeds given below override it env by env (None keeps the fresh one).
            base = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
            self.seeds = torch.arange(N, dtype=torch.int64, device=dev) + base
        if seed is not None:
            seeds, given = self._parse_seed(seed)
            given = given & mask
            self.seeds = torch.where(given, seeds, self.seeds)
            self.episode_count = torch.where(given, torch.full_like(self.episode_count, -1), self.episode_count)
        if not self._has_reset and not bool(mask.all()):
            raise ValueError("the first reset must reset every env (options['env_idx'] given before any full reset)")
        self._has_reset = True
        self._begin_episodes(mask, scene_index)
        self._autoreset = self._autoreset & ~mask
        obs = self._observe(write_mask=mask)  # the other envs wrote their current frames when they were rendered
        infos = self._wrap_info({**self.task.metrics(self.state), **self._memory_stats()}, mask)
        return self._out(obs), infos

    def _parse_seed(self, seed) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-env seeds (N,) and which envs got one (N,) bool."""
        N = self.num_envs

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if is_int(seed):
            values = [int(seed) + i for i in range(N)]
        elif (
            isinstance(seed, (list, tuple, np.ndarray)) and len(seed) == N and all(s is None or is_int(s) for s in seed)
        ):
            values = [None if s is None else int(s) for s in seed]
        else:
            raise ValueError(f"seed must be an int or a list of {N} ints (or None), got {seed!r}")
        if any(v is not None and v < 0 for v in values):
            raise ValueError(f"seed must be non-negative, got {seed!r}")
        given = torch.tensor([v is not None for v in values], device=self.device)
        seeds = torch.tensor([0 if v is None else v for v in values], dtype=torch.int64, device=self.device)
        return seeds, given

    def _parse_scene_index(self, scene_index) -> torch.Tensor | None:
        if scene_index is None:
            return None
        S, N = self.pool.num_scenes, self.num_envs
        values = torch.as_tensor(
            scene_index.cpu() if isinstance(scene_index, torch.Tensor) else np.asarray(scene_index)
        )
        if values.dtype.is_floating_point or values.dtype == torch.bool or values.ndim > 1:
            raise ValueError(f"options['scene_index'] must be an int or {N} ints, got {scene_index!r}")
        values = values.reshape(-1).long().expand(N) if values.numel() == 1 else values.reshape(-1).long()
        if values.shape != (N,) or int(values.min()) < 0 or int(values.max()) >= S:
            raise ValueError(f"options['scene_index'] must be an int or {N} ints in [0, {S}), got {scene_index!r}")
        return values.to(torch.int32).to(self.device)

    def _env_mask(self, env_idx) -> torch.Tensor:
        N = self.num_envs
        if env_idx is None:
            return torch.ones(N, dtype=torch.bool, device=self.device)
        idx = torch.as_tensor(env_idx.cpu() if isinstance(env_idx, torch.Tensor) else np.asarray(env_idx))
        if idx.numel() == 0:
            return torch.zeros(N, dtype=torch.bool, device=self.device)
        if idx.dtype == torch.bool:
            if idx.shape != (N,):
                raise ValueError(f"options['env_idx'] as a mask must have shape ({N},), got {tuple(idx.shape)}")
            return idx.to(self.device)
        if idx.dtype.is_floating_point or idx.dtype.is_complex:
            raise ValueError(f"options['env_idx'] must hold integer indices or a bool mask, got {idx.dtype}")
        idx = idx.reshape(-1).long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= N):
            raise ValueError(f"options['env_idx'] must index envs in [0, {N}), got {idx.tolist()}")
        mask = torch.zeros(N, dtype=torch.bool)
        mask[idx] = True
        return mask.to(self.device)

    def _begin_episodes(self, mask: torch.Tensor, scene_index: torch.Tensor | None = None) -> None:
        """New episodes where ``mask``: bump the episode counter, draw scene and yaw, clear the counters, ask the
        task for the starts and apply them. ``scene_index`` (N,) forces the scenes of the reset envs."""
        state = self.state
        memory = self.pipeline.memory
        keep = memory is not None and self.config.keep_memory_on_reset
        if keep:
            scene_before = state.scene_index.clone()  # a memory is kept only while its env stays in its scene
        elif memory is not None:
            memory.clear(mask)
        if self.device.type == "cpu":
            if not bool(mask.any()):
                return  # nothing to reset (a free check on the CPU)
            # Only the resetting envs are computed (their indices; a free host sync on the CPU).
            rows = EnvRows(index=torch.nonzero(mask).flatten())
        else:
            # CUDA: no host sync; every env is computed and the results are kept where ``mask`` is set.
            rows = EnvRows(mask=mask)
        episode = rows.gather(state.episode_count) + 1
        rows.write(state.episode_count, episode)
        draws = hash_uniform(rows.gather(state.seeds), episode, _CORE_DRAWS + self.task.num_draws)
        S = self.pool.num_scenes
        scene = (draws[:, 0] * S).long().clamp(max=S - 1).to(torch.int32)
        if scene_index is not None:
            scene = rows.gather(scene_index)
        rows.write(state.scene_index, scene)
        rows.write(state.yaw, draws[:, 1] * (2 * math.pi) - math.pi)
        rows.write(state.pitch, 0.0)
        rows.write(state.elapsed_steps, 0)
        rows.write(state.collisions, 0)
        rows.write(state.path_length, 0.0)
        start = self.task.initialize_episodes(state, rows, draws[:, _CORE_DRAWS:])
        rows.write(state.position, start.position)
        if start.yaw is not None:
            rows.write(state.yaw, start.yaw)
        if keep:
            memory.clear(mask & (state.scene_index != scene_before))

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """Advance every env by one action; see the class docstring for the autoreset semantics.

        Host syncs left in a CUDA step, each where it happens: (1) action validation (``validate_actions=True``),
        (2) SAME_STEP mode's check whether any env finished, (3) the ``worldfm`` renderer's ``noise="generator"``
        seeding (``noise="hash"``, the CUDA default, has none), and the numpy conversion of ``array_type="numpy"``.
        On the CPU, resets also index the finishing envs (``nonzero``), which costs nothing there.
        """
        self.ensure_open("step")
        if not self._has_reset:
            raise RuntimeError("call reset() before step()")
        if not self._wrappers_checked:
            if self.config.array_type == "torch":
                check_wrapper_stack(self, sys._getframe(1))
            self._wrappers_checked = True
        action = self._convert_actions(actions)
        cfg = self.config
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resetting = self._autoreset
        else:
            resetting = torch.zeros_like(self._autoreset)
        active = ~resetting

        # Dynamics.
        if cfg.action_type == "discrete":
            new_pos, new_yaw, new_pitch = integrate_discrete(
                self.position,
                self.yaw,
                self.pitch,
                action,
                cfg.forward_step,
                math.radians(cfg.turn_angle_deg),
                math.radians(cfg.tilt_angle_deg),
                math.radians(cfg.max_pitch_deg),
            )
            stop = action == 0
        else:
            new_pos, new_yaw, new_pitch = integrate_continuous(
                self.position,
                self.yaw,
                self.pitch,
                action,
                cfg.forward_step,
                cfg.forward_step,
                math.radians(cfg.turn_angle_deg),
                math.radians(cfg.tilt_angle_deg),
                math.radians(cfg.max_pitch_deg),
            )
            stop = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        move = new_pos - self.position
        attempted = (move[:, 0].abs() + move[:, 2].abs()) > 0
        # Non-finite moves (possible only with validate_actions=False) are blocked, never applied.
        blocked = (attempted & ~self.moves_free(self.position, new_pos)) | ~torch.isfinite(move).all(dim=1)
        new_yaw = torch.where(torch.isfinite(new_yaw), new_yaw, self.yaw)
        new_pitch = torch.where(torch.isfinite(new_pitch), new_pitch, self.pitch)
        if cfg.allow_sliding:  # a blocked move keeps its free axis-aligned part (zero where none is free)
            slide = self._slide(torch.where(torch.isfinite(move), move, torch.zeros_like(move)))
            new_pos = torch.where(blocked[:, None], self.position + slide, new_pos)
            move = torch.where(blocked[:, None], slide, move)
        else:
            new_pos = torch.where(blocked[:, None], self.position, new_pos)
            move = torch.where(blocked[:, None], torch.zeros_like(move), move)
        a3 = active[:, None]
        moved = torch.where(active, move[:, [0, 2]].norm(dim=1), torch.zeros_like(self.path_length))
        self.position = torch.where(a3, new_pos, self.position)
        self.yaw = torch.where(active, new_yaw, self.yaw)
        self.pitch = torch.where(active, new_pitch, self.pitch)
        self.collisions = self.collisions + (blocked & active).to(torch.int32)
        self.path_length = self.path_length + moved
        self.elapsed_steps = self.elapsed_steps + active.long()

        reward, terminated = self.task.evaluate(self.state, stop, active)
        # As Gymnasium's TimeLimit: truncated at the limit even when the same step also terminates.
        truncated = (self.elapsed_steps >= cfg.max_episode_steps) & active
        terminated = terminated & active

        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._begin_episodes(resetting)
            # Metrics once per step, after the autoreset: the envs reset here report their new episode's, the
            # others this step's (a reset leaves their rows alone). No host sync (nor a check for resets) on CUDA.
            metrics = self.task.metrics(self.state)
            obs = self._observe()
            self._autoreset = terminated | truncated
            infos = self._wrap_info({**metrics, **self._memory_stats()})
        else:
            obs = self._observe()
            done = terminated | truncated
            infos = self._wrap_info({**self.task.metrics(self.state), **self._memory_stats()})
            # Host sync 2 (SAME_STEP mode only): final_obs/final_info are built only when some env finished.
            if bool(done.any()):
                infos = self._same_step_reset(done, obs, infos)
                obs = self._last_obs
        return self._out(obs), self._out(reward), self._out(terminated), self._out(truncated), infos

    def _same_step_reset(self, done: torch.Tensor, final_obs: dict, infos: dict) -> dict:
        final_info = infos
        self._begin_episodes(done)
        self._observe(write_mask=done)  # only the new episodes' first frames are written to a growing memory
        # The new episodes' metrics (final_info keeps the last).
        infos = self._wrap_info({**self.task.metrics(self.state), **self._memory_stats()})
        if self.config.array_type == "numpy":
            idx = torch.nonzero(done).flatten().tolist()
            arr = np.full(self.num_envs, None, dtype=object)
            for i in idx:
                arr[i] = {k: v[i] for k, v in _to_numpy(final_obs).items()}
            infos["final_obs"] = arr
        else:
            infos["final_obs"] = {k: v.clone() for k, v in final_obs.items()}
        infos["_final_obs"] = self._out(done)
        infos["final_info"] = {k: v for k, v in final_info.items()}
        for k in list(infos["final_info"]):
            if k.startswith("_"):
                infos["final_info"][k] = self._out(done)
        infos["_final_info"] = self._out(done)
        return infos

    def _convert_actions(self, actions) -> torch.Tensor:
        N = self.num_envs
        cfg = self.config
        if isinstance(actions, torch.Tensor):
            a = actions.to(self.device)
        else:
            try:
                arr = np.asarray(actions)
            except Exception as err:  # pragma: no cover - exotic inputs
                raise ValueError(f"actions could not be read as an array: {err}") from err
            if arr.dtype.kind not in "iufb":  # complex, strings, objects
                raise ValueError(f"actions must be real numbers (int or float), got {arr.dtype} values {actions!r}")
            a = torch.as_tensor(arr, device=self.device)
        if a.is_complex():
            raise ValueError(f"actions must be real numbers (int or float), got {a.dtype} values {actions!r}")
        if cfg.action_type == "discrete":
            if a.shape != (N,):
                raise ValueError(
                    f"actions must have shape ({N},) for {N} envs with discrete actions, got {tuple(a.shape)}"
                )
            if cfg.validate_actions:
                # Host sync 1 of a step (CUDA): a bad action must raise before the step; validate_actions=False
                # skips it. One reduction covers every check.
                invalid = (a < 0) | (a >= NUM_DISCRETE_ACTIONS)
                if a.dtype.is_floating_point:
                    invalid = invalid | ~torch.isfinite(a) | (a != torch.round(a))
                if a.dtype == torch.bool or bool(invalid.any()):
                    raise ValueError(f"actions must be integers in [0, {NUM_DISCRETE_ACTIONS}), got {actions!r}")
            return a.long()
        if a.shape != (N, 4):
            raise ValueError(
                f"actions must have shape ({N}, 4) for {N} envs with continuous actions, got {tuple(a.shape)}"
            )
        a = a.float()
        if not cfg.validate_actions:
            # Unchecked actions are clamped into the box (a sync-free guard: the collision test samples moves
            # sized for |a| <= 1); NaN passes through and the step blocks it.
            return a.clamp(-1.0, 1.0)
        # Host sync 1 of a step (CUDA), as for discrete actions: one reduction; the message is chosen after it.
        nonfinite = ~torch.isfinite(a)
        if bool((nonfinite | (a < -1.0) | (a > 1.0)).any()):
            if bool(nonfinite.any()):
                raise ValueError(f"actions must be finite (no NaN or inf), got {actions!r}")
            raise ValueError(f"actions must lie in [-1, 1], got {actions!r}")
        return a

    def _slide(self, move: torch.Tensor) -> torch.Tensor:
        """The part of each blocked move (N, 3) that slides along the obstacle: the longer of its x-only and
        z-only components whose segment is free, else zero (the grid's walls are axis-aligned cell edges)."""
        zero = torch.zeros_like(move[:, 0])
        along_x = torch.stack([move[:, 0], zero, zero], dim=-1)
        along_z = torch.stack([zero, zero, move[:, 2]], dim=-1)
        parts = torch.stack([along_x, along_z], dim=1)  # (N, 2, 3)
        free = self.moves_free(self.position[:, None].expand_as(parts), self.position[:, None] + parts)  # (N, 2)
        length = torch.where(free, parts.abs().sum(-1), -1.0)  # -1: that part is blocked too
        chosen = parts.gather(1, length.argmax(dim=1)[:, None, None].expand(-1, 1, 3))[:, 0]
        return torch.where(length.amax(dim=1, keepdim=True) > 0, chosen, torch.zeros_like(move))

    def moves_free(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """Whether straight moves stay on free cells of each env's scene, as the collision check sees it.

        ``start``, ``end``: (N, ..., 3) world positions (env i's moves in row i); returns (N, ...) bool.
        The segment is sampled every half cell, like the step's own collision test.
        """
        n = self._collision_samples
        t = torch.arange(1, n + 1, device=self.device, dtype=torch.float32) / n  # (n,)
        x = start[..., 0, None] + t * (end[..., 0, None] - start[..., 0, None])  # (N, ..., n)
        z = start[..., 2, None] + t * (end[..., 2, None] - start[..., 2, None])
        return self.navigation.is_free(self.scene_index.long(), x, z).all(dim=-1)

    # ------------------------------------------------------------------ observation
    def camera_poses(self) -> torch.Tensor:
        """Current camera-to-world poses (N, 4, 4)."""
        return pose_from_yaw_pitch(self.position, self.yaw, self.pitch)

    def _noise_seed(self) -> torch.Tensor:
        """Per-env seeds (N,) int64 of the frame model's noise: a hash of (env seed, episode) and, by
        ``noise_key``, the quantised pose (a revisited pose gets the same noise, so the same frame) or the step."""
        if self.config.noise_key == "step":
            return hash_combine(self.seeds, torch.stack([self.episode_count, self.elapsed_steps], dim=1), stream=1)
        turn = 8192 / (2 * math.pi)  # yaw/pitch buckets of 2*pi/8192 rad; yaw wraps exactly at 8192
        keys = (
            self.episode_count[:, None].long(),
            torch.round(self.position * 1000.0).long(),  # (N, 3) millimetres
            (torch.round(self.yaw * turn).long() % 8192)[:, None],
            torch.round(self.pitch * turn).long()[:, None],
        )
        return hash_combine(self.seeds, torch.cat(keys, dim=1), stream=2)

    @property
    def memory(self):
        """The envs' growing memory (:class:`~worldfm_env.memory.GrowingMemory`) with ``memory="grow"``, else None."""
        return self.pipeline.memory if self.pipeline is not None else None

    def _memory_stats(self) -> dict[str, torch.Tensor]:
        """``memory_points`` and ``memory_views`` per env with a growing memory (for ``info``), else nothing."""
        return self.pipeline.memory.stats() if self.pipeline.memory is not None else {}

    def _observe(self, write_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        frame = self.pipeline.render(
            self.scene_index,
            self.camera_poses(),
            self._noise_seed() if self.pipeline.stochastic else None,
            write_mask=write_mask,
        )
        obs = {"rgb": frame.rgb.clone()}
        obs.update(self.task.observations(self.state))
        if self.config.include_depth:
            obs["depth"] = frame.depth[..., None].clone()
        if self.config.include_pose:
            obs["pose"] = torch.cat([self.position, self.yaw[:, None], self.pitch[:, None]], dim=1)
        self._last_obs = obs
        self._last_frame = frame
        return obs

    def _wrap_info(self, metrics: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        present = torch.ones(self.num_envs, dtype=torch.bool, device=self.device) if mask is None else mask
        for key, value in metrics.items():
            infos[key] = self._out(value)
            infos[f"_{key}"] = self._out(present)
        return infos

    def _out(self, value):
        return _to_numpy(value) if self.config.array_type == "numpy" else value

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The current rgb observations, one (H, W, 3) uint8 numpy frame per env (a tuple, Gymnasium's vector
        convention; ``np.stack`` gives (N, H, W, 3)); None before the first reset."""
        if self._last_obs is None:
            return None
        return tuple(self._last_obs["rgb"].cpu().numpy())

    def ensure_open(self, method: str) -> None:
        """Raise ``gymnasium.error.ClosedEnvironmentError`` naming ``method`` when the env was closed."""
        if self.closed:
            raise ClosedEnvironmentError(
                f"{method}() was called on a closed {type(self).__name__}; closing released its device state, "
                "so build a new env (gym.make / gym.make_vec) to continue"
            )

    def close(self, **kwargs: Any) -> None:
        """Release what the env holds: the observation pipeline (warp buffers, frame model, bank latents), the
        task, the batched state and the last observation; the shared scene pool is freed when no other env uses
        it. Closing twice is harmless; ``step()``/``reset()`` afterwards raise ``ClosedEnvironmentError``."""
        if self.closed:
            return
        self.pipeline = self.renderer = self.task = self.world = self.pool = self.navigation = None
        self.state = None
        self._last_obs = self._last_frame = None
        super().close(**kwargs)
