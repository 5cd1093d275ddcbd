"""One viewer session: a single env driven from the keyboard, with every panel the page shows.

:class:`Session` owns one :class:`~worldfm_env.envs.vector.WorldFMVectorEnv` (``num_envs=1``) built with the chosen
renderer and memory mode; its observation is the large panel and what a ``--policy`` agent sees. The three small
panels (anchor | generated | ground truth) render the env's current pose through extra
:class:`~worldfm_env.renderers.pipeline.ObservationPipeline` objects over the same scene pool, built on first use;
the panel of the env's own renderer is its observation. Switching the renderer (keys 1/2/3) moves the env's state
(pose, episode, task, counters) into an env of the other renderer through the env's pickling contract, so the same
pose is shown.

Keys are coalesced: :meth:`Session.submit_key` keeps only the latest key not yet applied, so when frames are slower
than key presses the newest key wins and no backlog builds up. Control messages (configure, record, autopilot)
queue in order. :meth:`Session.process` applies what is waiting; the server calls it from one worker thread.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from worldfm_env.envs.config import RENDERERS, EnvConfig
from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.viewer.protocol import KEY_BINDINGS, KEY_HELP, normalize_key
from worldfm_env.viewer.topdown import TopDownMap

__all__ = ["PANELS", "ProcessResult", "Session", "memory_modes", "compose_recording_frame"]

PANELS: dict[str, str] = {"anchor": "anchor", "generated": "worldfm", "ground_truth": "oracle"}
"""Small panel name -> the renderer that draws it."""


def memory_modes() -> tuple[str, ...] | None:
    """The valid ``memory`` values when :class:`~worldfm_env.envs.config.EnvConfig` has a ``memory`` field
    (``MEMORY_MODES`` of the config module when it defines one, else ``("static", "grow")``); None when it has
    no such field (the page then hides the control)."""
    if "memory" not in {f.name for f in dataclasses.fields(EnvConfig)}:
        return None
    from worldfm_env.envs import config as config_module

    return tuple(getattr(config_module, "MEMORY_MODES", ("static", "grow")))


def _png_base64(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _scalar(value: Any) -> Any:
    """A Python bool/int/float of element 0 of a metric."""
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1)[0].item()
    elif isinstance(value, np.ndarray):
        value = value.reshape(-1)[0].item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def compose_recording_frame(
    observation: np.ndarray, panels: dict[str, np.ndarray | None], top_map: np.ndarray, caption: str
) -> np.ndarray:
    """One MP4 frame (452, 512, 3) uint8: the observation and the map on top, the three panels below, a caption.

    ``panels`` maps the names of :data:`PANELS` to (H, W, 3) frames or None (drawn as "n/a").
    """
    width, top, label_h, small, caption_h = 512, 256, 16, 160, 20
    canvas = Image.new("RGB", (width, top + label_h + small + caption_h), (24, 24, 24))
    canvas.paste(Image.fromarray(observation).resize((top, top), Image.NEAREST), (0, 0))
    map_image = Image.fromarray(top_map)
    ratio = min(top / map_image.width, top / map_image.height)
    map_image = map_image.resize((max(1, int(map_image.width * ratio)), max(1, int(map_image.height * ratio))))
    canvas.paste(map_image, (top + (top - map_image.width) // 2, (top - map_image.height) // 2))
    draw = ImageDraw.Draw(canvas)
    gap = (width - 3 * small) // 4
    for i, name in enumerate(PANELS):
        x = gap + i * (small + gap)
        draw.text((x, top + 2), name.replace("_", " "), fill=(230, 230, 230))
        frame = panels.get(name)
        if frame is None:
            draw.rectangle([x, top + label_h, x + small - 1, top + label_h + small - 1], fill=(60, 60, 60))
            draw.text((x + small // 2 - 8, top + label_h + small // 2 - 6), "n/a", fill=(200, 200, 200))
        else:
            canvas.paste(Image.fromarray(frame).resize((small, small), Image.NEAREST), (x, top + label_h))
    draw.text((4, top + label_h + small + 4), caption, fill=(230, 230, 230))
    return np.asarray(canvas)


@dataclass
class ProcessResult:
    """What one :meth:`Session.process` call produced.

    Attributes:
        errors: (origin, message) pairs: the sender of a failed key or control message and why it failed.
        frame: the new ``frame`` message when something changed, else None.
        notices: other messages for every client (e.g. ``recorded`` when a recording was written).
    """

    errors: list[tuple[Any, str]] = field(default_factory=list)
    frame: dict[str, Any] | None = None
    notices: list[dict[str, Any]] = field(default_factory=list)


class Session:
    """A single env driven from the keyboard, and everything the viewer page shows of it.

    Args:
        scenes: scene spec of the env (``EnvConfig.scenes``).
        seed: the env's seed; Backspace starts this seed's first episode again.
        renderer: ``"worldfm"``, ``"anchor"`` or ``"oracle"``: the env's renderer (the large panel).
        memory: ``EnvConfig.memory`` (e.g. ``"static"`` or ``"grow"``) when the config has that field; None leaves
            the env's default. Giving one where the config has no such field is a ``ValueError``.
        task: ``"pointnav"`` or ``"explore"`` (a ``policy`` fixes it to the one it was trained on).
        resolution: observation size (a ``policy`` fixes it to its own; a different value is a ``ValueError``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        weights: frame-model checkpoint for the worldfm renderer and panel (None: the shipped one).
        policy: ``"ppo:PATH"`` (a checkpoint of ``agents/ppo_torch.py``) that drives while the autopilot is on.
        record_dir: folder the MP4 recordings are written to.
        fps: frame rate of the recordings and steps per second of the autopilot.
        env_options: further ``EnvConfig`` options (e.g. ``max_episode_steps``).
    """

    def __init__(
        self,
        scenes: str = "procedural:test:1",
        seed: int = 0,
        renderer: str = "worldfm",
        memory: str | None = None,
        task: str = "pointnav",
        resolution: int | None = None,
        device: str = "auto",
        weights: str | None = None,
        policy: str | None = None,
        record_dir: str | Path = "viewer_recordings",
        fps: float = 8.0,
        env_options: dict[str, Any] | None = None,
    ) -> None:
        self.memory_modes = memory_modes()
        if memory is not None and self.memory_modes is None:
            raise ValueError(f"memory={memory!r} is not available: this version's EnvConfig has no memory option")
        if memory is not None and memory not in self.memory_modes:
            raise ValueError(f"memory must be one of {list(self.memory_modes)}, got {memory!r}")
        if renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {list(RENDERERS)}, got {renderer!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not (isinstance(fps, (int, float)) and 0 < fps <= 60):
            raise ValueError(f"fps must be a number in (0, 60], got {fps!r}")
        self.weights = weights
        self.fps = float(fps)
        self.record_dir = Path(record_dir)
        self.policy = None
        options = dict(env_options or {})
        options.update(task=task, device=device)
        if policy is not None:
            from worldfm_env.viewer.policy import load_policy

            self.policy = load_policy(policy)
            trained = self.policy.env_settings
            if resolution is not None and resolution != trained["resolution"]:
                raise ValueError(
                    f"resolution={resolution} does not fit the policy: it was trained at resolution "
                    f"{trained['resolution']}; leave resolution out or give that one"
                )
            options.update(trained)
        else:
            options["resolution"] = 64 if resolution is None else resolution
        self._env_options = options
        self.scenes, self.seed, self.renderer, self.memory = scenes, seed, renderer, memory
        self.env: WorldFMVectorEnv | None = None
        self.pilot = None
        self.autopilot = False
        self._lock = threading.RLock()
        self._inbox_lock = threading.Lock()
        self._pending: tuple[Any, str] | None = None
        self._controls: deque[tuple[Any, dict[str, Any]]] = deque()
        self.coalesced = 0
        self.applied_keys: list[str] = []
        self.seq = 0
        self._pipelines: dict[str, ObservationPipeline | None] = {}
        self._unavailable: dict[str, str] = {}
        self._pipelines_pool = None
        self._maps: dict[int, TopDownMap] = {}
        self._writer = None
        self._recording_path: Path | None = None
        self._recorded_frames = 0
        self.last_recording: Path | None = None
        self._adopt(*self._build_env(scenes, seed, renderer, memory))

    # ------------------------------------------------------------------ env building
    def _renderer_options(self, renderer: str) -> dict[str, Any]:
        return {"weights": self.weights} if renderer == "worldfm" and self.weights else {}

    def _build_env(self, scenes: str, seed: int, renderer: str, memory: str | None):
        kwargs = dict(self._env_options, scenes=scenes, renderer=renderer, array_type="torch")
        kwargs.update(self._renderer_options(renderer))
        if memory is not None:
            kwargs["memory"] = memory
        env = WorldFMVectorEnv(num_envs=1, **kwargs)
        try:
            obs, info = env.reset(seed=seed)
        except Exception:
            env.close()
            raise
        return env, obs, info

    def _adopt(self, env: WorldFMVectorEnv, obs: dict, info: dict) -> None:
        """Make ``env`` the session's env (closing the old one) and start a fresh episode view."""
        old, self.env = self.env, env
        if old is not None and old is not env:
            old.close()
        self.obs, self.info = obs, info
        if self._pipelines_pool is not env.pool:
            self._pipelines, self._unavailable, self._maps = {}, {}, {}
            self._pipelines_pool = env.pool
        self.pilot = None
        if self.policy is not None:
            from worldfm_env.viewer.policy import make_pilot

            self.pilot = make_pilot(self.policy, env)
        self._new_episode()

    def _new_episode(self) -> None:
        self.reward = 0.0
        self.episode_return = 0.0
        self.done = False
        self.path = [self._xz()]
        if self.pilot is not None:
            self.pilot.reset()

    def _xz(self) -> tuple[float, float]:
        p = self.env.position[0]
        return float(p[0]), float(p[2])

    # ------------------------------------------------------------------ inbox (any thread)
    def submit_key(self, key: str, origin: Any = None) -> None:
        """Queue a key press; it replaces a key that is still waiting (latest key wins, no backlog).

        Raises ``ProtocolError`` (a ``ValueError``) for a key that is not bound, naming the valid keys.
        """
        name = normalize_key(key)
        with self._inbox_lock:
            if self._pending is not None:
                self.coalesced += 1
            self._pending = (origin, name)

    def submit_control(self, message: dict[str, Any], origin: Any = None) -> None:
        """Queue a checked ``configure``, ``record``, ``autopilot`` or ``hello`` message (applied in order)."""
        with self._inbox_lock:
            self._controls.append((origin, message))

    def post(self, message: dict[str, Any], origin: Any = None) -> None:
        """Queue a message checked by :func:`~worldfm_env.viewer.protocol.parse_message`: keys coalesce, the
        others queue."""
        if message["type"] == "key":
            self.submit_key(message["key"], origin)
        else:
            self.submit_control(message, origin)

    @property
    def pending_key(self) -> str | None:
        """The key waiting to be applied, if any."""
        with self._inbox_lock:
            return None if self._pending is None else self._pending[1]

    # ------------------------------------------------------------------ processing (the worker thread)
    def process(self) -> ProcessResult:
        """Apply the waiting control messages in order, then the latest key (or, with the autopilot on and no
        key waiting, one policy step). Failures become errors for their sender; the session keeps serving."""
        result = ProcessResult()
        with self._lock:
            with self._inbox_lock:
                controls = list(self._controls)
                self._controls.clear()
                pending, self._pending = self._pending, None
            changed = False
            for origin, message in controls:
                try:
                    notice = self.apply_control(message)
                    changed = True
                    if notice is not None:
                        result.notices.append(notice)
                except Exception as err:  # bad scene spec, missing weights, ...: reported, the old env stays
                    result.errors.append((origin, _describe(err)))
            if pending is not None:
                origin, key = pending
                try:
                    self.apply_key(key)
                    changed = True
                except Exception as err:
                    result.errors.append((origin, _describe(err)))
            elif self.autopilot and self.pilot is not None:
                try:
                    self.pilot_step()
                    changed = True
                except Exception as err:
                    self.autopilot = False
                    result.errors.append((None, f"autopilot stopped: {_describe(err)}"))
            if changed:
                result.frame = self.frame_message(record=True)
        return result

    def apply_key(self, key: str) -> None:
        """Apply one key now (see :data:`~worldfm_env.viewer.protocol.KEY_BINDINGS`)."""
        name = normalize_key(key)
        command, argument = KEY_BINDINGS[name]
        with self._lock:
            self.applied_keys.append(name)
            if command == "action":
                self.autopilot = False  # a key takes the wheel
                self.step(argument)
            elif command == "reset":
                self.reset()
            elif command == "next_episode":
                self.next_episode()
            elif command == "renderer":
                self.set_renderer(argument)
            elif command == "autopilot":
                self.set_autopilot(None)

    def apply_control(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Apply one checked control message; returns a notice for every client (a finished recording) or None."""
        kind = message["type"]
        if kind == "configure":
            self.configure(**{k: v for k, v in message.items() if k != "type"})
        elif kind == "record":
            if message["on"]:
                self.start_recording()
            else:
                path = self.stop_recording()
                if path is not None:
                    return {"type": "recorded", "name": path.name, "url": f"/recordings/{path.name}"}
        elif kind == "autopilot":
            self.set_autopilot(message.get("on"))
        return None

    def step(self, action: int) -> None:
        """Step the env with one discrete action (0 stop, 1 forward, 2 left, 3 right, 4 up, 5 down)."""
        with self._lock:
            env = self.env
            episode = int(env.episode_count[0])
            obs, reward, terminated, truncated, info = env.step(torch.tensor([int(action)], device=env.device))
            self._after_step(obs, reward, terminated, truncated, info, episode)

    def _after_step(self, obs, reward, terminated, truncated, info, episode_before: int) -> None:
        self.obs, self.info = obs, info
        if int(self.env.episode_count[0]) != episode_before:  # the step after an episode's end started a new one
            self._new_episode()
            return
        self.reward = float(reward[0])
        self.episode_return += self.reward
        self.done = bool(terminated[0]) or bool(truncated[0])
        self.path.append(self._xz())

    def pilot_step(self) -> None:
        """One step with the policy's action."""
        with self._lock:
            if self.pilot is None:
                raise ValueError("the autopilot needs a policy: start the viewer with --policy ppo:PATH")
            action = self.pilot(self.obs)
            self.step(int(action.reshape(-1)[0]))

    def set_autopilot(self, on: bool | None) -> None:
        """Switch the autopilot on or off (None: toggle); a ``ValueError`` without a policy."""
        with self._lock:
            if self.pilot is None:
                raise ValueError("the autopilot needs a policy: start the viewer with --policy ppo:PATH")
            self.autopilot = (not self.autopilot) if on is None else bool(on)
            if self.autopilot:
                self.pilot.reset()  # the policy's memory starts from what it sees now

    def reset(self) -> None:
        """Start the seed's first episode again (the episode the page opened with)."""
        with self._lock:
            self.obs, self.info = self.env.reset(seed=self.seed)
            self._new_episode()

    def next_episode(self) -> None:
        """Start the env's next episode (the seed's episode sequence continues)."""
        with self._lock:
            self.obs, self.info = self.env.reset()
            self._new_episode()

    def configure(
        self, scenes: str | None = None, seed: int | None = None, renderer: str | None = None, memory=None
    ) -> None:
        """Rebuild the env with other scenes, seed, renderer or memory mode (None keeps the current one) and
        start the seed's first episode. On failure the current env stays and the error is raised."""
        with self._lock:
            scenes = self.scenes if scenes is None else scenes
            seed = self.seed if seed is None else seed
            renderer = self.renderer if renderer is None else renderer
            memory = self.memory if memory is None else memory
            if memory is not None and self.memory_modes is None:
                raise ValueError(f"memory={memory!r} is not available: this version's EnvConfig has no memory option")
            self._adopt(*self._build_env(scenes, seed, renderer, memory))
            self.scenes, self.seed, self.renderer, self.memory = scenes, seed, renderer, memory
            self.autopilot = False

    def set_renderer(self, renderer: str) -> None:
        """Show the same pose through another renderer: the env's state moves into an env of ``renderer``."""
        if renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {list(RENDERERS)}, got {renderer!r}")
        with self._lock:
            if renderer == self.env.config.renderer:
                return
            env = self.env
            state = env.__getstate__()  # the env's pickling contract: config and state on the CPU
            options = self._renderer_options(renderer) if renderer == "worldfm" else {"weights": None, "vae": None}
            state["config"] = dataclasses.replace(env.config, renderer=renderer, **options)
            switched = WorldFMVectorEnv.__new__(WorldFMVectorEnv)
            try:
                switched.__setstate__(state)
            except Exception as err:
                raise ValueError(f"renderer {renderer!r} is not available here: {_describe(err)}") from None
            keep = (self.path, self.reward, self.episode_return, self.done, self.info, self.autopilot)
            self.env = switched
            env.close()
            if self._pipelines_pool is not switched.pool:  # panels and maps follow the pool the env now uses
                self._pipelines, self._unavailable, self._maps = {}, {}, {}
                self._pipelines_pool = switched.pool
            # The new renderer's observation of the same state (the env's own observe step).
            self.obs = switched._observe()
            self.path, self.reward, self.episode_return, self.done, self.info, self.autopilot = keep
            self.renderer = renderer

    # ------------------------------------------------------------------ frames
    def _panel_pipeline(self, renderer: str) -> ObservationPipeline | None:
        if renderer in self._pipelines:
            return self._pipelines[renderer]
        env, cfg = self.env, self.env.config
        options: dict[str, Any] = {}
        if renderer == "worldfm":
            options = {**cfg.model_options, "weights": self.weights}
        try:
            if renderer == "oracle" and not env.pool.has_meshes:
                raise ValueError("these scenes have no ground-truth mesh (the oracle renders procedural scenes)")
            pipeline = ObservationPipeline(
                env.pool,
                1,
                env.height,
                env.width,
                renderer=renderer,
                anchor=cfg.anchor,
                hfov_deg=cfg.hfov_deg,
                **options,
            )
        except Exception as err:
            self._unavailable[renderer] = _describe(err)
            pipeline = None
        self._pipelines[renderer] = pipeline
        return pipeline

    def panel_frames(self) -> dict[str, np.ndarray | None]:
        """The three small panels at the current pose, (H, W, 3) uint8 each, or None where a renderer is not
        available here (see :meth:`unavailable`)."""
        with self._lock:
            env = self.env
            frames: dict[str, np.ndarray | None] = {}
            poses = None
            for panel, renderer in PANELS.items():
                if renderer == env.config.renderer:
                    frames[panel] = self.obs["rgb"][0].cpu().numpy()
                    continue
                pipeline = self._panel_pipeline(renderer)
                if pipeline is None:
                    frames[panel] = None
                    continue
                if poses is None:
                    poses = env.camera_poses()
                # The frame model's noise seed is the env's own (seed, episode, pose): the frame the env would show.
                seed = env._noise_seed() if pipeline.stochastic else None
                frames[panel] = pipeline.render(env.scene_index, poses, seed).rgb[0].cpu().numpy()
            return frames

    def unavailable(self) -> dict[str, str]:
        """Panel name -> why its renderer cannot draw here (no weights for the resolution, no meshes, ...)."""
        return {p: self._unavailable[r] for p, r in PANELS.items() if r in self._unavailable}

    def grown_memory(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(xyz (P, 3) float32, rgb (P, 3) uint8) of a growing memory of the env, when it has one: an env
        attribute ``memory`` that is not None with a ``grown_points(env_index)`` method. None otherwise."""
        memory = getattr(self.env, "memory", None)
        grown = getattr(memory, "grown_points", None) if memory is not None else None
        if not callable(grown):
            return None
        xyz, rgb = grown(0)
        xyz = xyz.detach().float().cpu().numpy() if isinstance(xyz, torch.Tensor) else np.asarray(xyz, np.float32)
        rgb = rgb.detach().cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
        return xyz.reshape(-1, 3), rgb.reshape(-1, 3)

    def map_frame(self) -> np.ndarray:
        """The top-down map of the current scene with path, heading, goal and grown memory."""
        with self._lock:
            env = self.env
            scene = int(env.scene_index[0])
            if scene not in self._maps:
                self._maps[scene] = TopDownMap(env.pool, scene)
            goal = getattr(env.task, "goal", None)
            goal_xz = None if goal is None else (float(goal[0, 0]), float(goal[0, 2]))
            memory = self.grown_memory()
            return self._maps[scene].draw(
                self.path,
                self._xz(),
                float(env.yaw[0]),
                goal_xz,
                env.config.success_distance,
                None if memory is None else memory[0],
            )

    def pose(self) -> dict[str, float]:
        """The agent's pose: x, y, z (metres), yaw and pitch (degrees; positive yaw = turned left)."""
        env = self.env
        p = env.position[0]
        return {
            "x": float(p[0]),
            "y": float(p[1]),
            "z": float(p[2]),
            "yaw_deg": math.degrees(float(env.yaw[0])),
            "pitch_deg": math.degrees(float(env.pitch[0])),
        }

    def metrics(self) -> dict[str, Any]:
        """The task's metrics of the current episode (PointNav: success, spl, soft_spl, distance_to_goal,
        collisions), as Python numbers."""
        return {k: _scalar(v) for k, v in self.info.items() if not k.startswith("_")}

    def hello_message(self) -> dict[str, Any]:
        """The ``hello`` message: options for the page's controls and the key list."""
        return {
            "type": "hello",
            "renderers": list(RENDERERS),
            "memory_modes": None if self.memory_modes is None else list(self.memory_modes),
            "keys": [list(k) for k in KEY_HELP],
            "bound_keys": sorted(KEY_BINDINGS),
            "policy": None if self.policy is None else self.policy.spec,
            "fps": self.fps,
            "settings": self.settings(),
        }

    def settings(self) -> dict[str, Any]:
        """The current scenes, seed, renderer, memory mode, task and resolution."""
        cfg = self.env.config
        return {
            "scenes": self.scenes,
            "seed": self.seed,
            "renderer": cfg.renderer,
            "memory": getattr(cfg, "memory", None),
            "task": cfg.task,
            "resolution": list(cfg.resolution),
        }

    def frame_message(self, record: bool = False) -> dict[str, Any]:
        """The ``frame`` message: images (base64 PNG), pose, reward, pointgoal, metrics and status.

        ``record``: also append this frame to the recording when one is running.
        """
        with self._lock:
            self.seq += 1
            env = self.env
            observation = self.obs["rgb"][0].cpu().numpy()
            panels = self.panel_frames()
            top_map = self.map_frame()
            pose = self.pose()
            pointgoal = self.obs.get("pointgoal")
            goal = None
            if pointgoal is not None:
                goal = {"distance": float(pointgoal[0, 0]), "angle_deg": math.degrees(float(pointgoal[0, 1]))}
            metrics = self.metrics()
            if record and self._writer is not None:
                caption = (
                    f"step {int(env.elapsed_steps[0])}  {env.config.renderer}  reward {self.reward:+.3f}  "
                    + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
                )
                self._writer.append_data(compose_recording_frame(observation, panels, top_map, caption[:80]))
                self._recorded_frames += 1
            memory = self.grown_memory()
            return {
                "type": "frame",
                "seq": self.seq,
                "renderer": env.config.renderer,
                "step": int(env.elapsed_steps[0]),
                "episode": int(env.episode_count[0]),
                "scene": int(env.scene_index[0]),
                "done": self.done,
                "reward": self.reward,
                "return": self.episode_return,
                "pose": pose,
                "pointgoal": goal,
                "metrics": metrics,
                "images": {
                    "observation": _png_base64(observation),
                    **{k: (None if v is None else _png_base64(v)) for k, v in panels.items()},
                    "map": _png_base64(top_map),
                },
                "unavailable": self.unavailable(),
                "memory_points": None if memory is None else len(memory[0]),
                "recording": {
                    "on": self._writer is not None,
                    "frames": self._recorded_frames,
                    "last": None if self.last_recording is None else f"/recordings/{self.last_recording.name}",
                },
                "autopilot": self.autopilot,
                "policy": self.policy is not None,
                "coalesced": self.coalesced,
                "settings": self.settings(),
            }

    # ------------------------------------------------------------------ recording
    @property
    def recording(self) -> bool:
        """Whether a recording is running."""
        return self._writer is not None

    def start_recording(self) -> Path:
        """Start writing every new frame (from the next :meth:`frame_message` with ``record=True`` on) to an MP4 in
        ``record_dir``; returns its path (the running one's when a recording is already running)."""
        import imageio.v2 as imageio

        with self._lock:
            if self._writer is not None:
                return self._recording_path
            self.record_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = self.record_dir / f"worldfm-view-{stamp}.mp4"
            n = 1
            while path.exists():
                n += 1
                path = self.record_dir / f"worldfm-view-{stamp}-{n}.mp4"
            self._writer = imageio.get_writer(str(path), fps=self.fps, codec="libx264", quality=8, macro_block_size=1)
            self._recording_path, self._recorded_frames = path, 0
            return path

    def stop_recording(self) -> Path | None:
        """Finish the running recording; returns its path (None when none was running)."""
        with self._lock:
            if self._writer is None:
                return None
            self._writer.close()
            self._writer = None
            self.last_recording = self._recording_path
            return self._recording_path

    def close(self) -> None:
        """Finish a running recording and close the env."""
        with self._lock:
            self.stop_recording()
            if self.env is not None:
                self.env.close()


def _describe(err: BaseException) -> str:
    """An error's message for the page (its type when the message alone would not say what happened)."""
    text = str(err)
    return text if isinstance(err, ValueError) and text else f"{type(err).__name__}: {text}"
