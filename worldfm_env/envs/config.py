"""Typed environment configuration, merged strictly from keyword arguments."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from worldfm_env._config import check_one_of, strict_kwargs
from worldfm_env.memory import MEMORY_MODES, check_memory_mode
from worldfm_env.model.weights import resolve_weights
from worldfm_env.render.anchor_config import (
    SPLAT_RADIUS_VALUES,
    AnchorConfig,
    parse_splat_radius,
    splat_radius_arg,
    valid_splat_radius,
)
from worldfm_env.renderers.pipeline import check_depth_bound

__all__ = [
    "EnvConfig",
    "AnchorConfig",
    "TASKS",
    "RENDERERS",
    "ACTION_TYPES",
    "SPLAT_RADIUS_VALUES",
    "valid_splat_radius",
    "parse_splat_radius",
    "splat_radius_arg",
]

TASKS = ("pointnav", "explore")
RENDERERS = ("worldfm", "anchor", "oracle")
ACTION_TYPES = ("discrete", "continuous")
ARRAY_TYPES = ("torch", "numpy")
AUTORESET_MODES = ("next_step", "same_step")
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
NOISE_MODES = ("auto", "generator", "hash")
NOISE_KEYS = ("pose", "step")


@dataclass
class EnvConfig:
    """Everything that defines a worldfm-env environment. Unknown keys are a ``ValueError``."""

    task: str = "pointnav"
    """Task: ``"pointnav"`` (reach a goal given by distance and angle) or ``"explore"`` (cover free space)."""
    renderer: str = "worldfm"
    """Observation renderer: ``"worldfm"`` (the frame model, the default: ``weights``, or the model shipped for
    ``resolution``; 64x64 ships), ``"anchor"`` (the raw point splat, about 10-30x the env-steps/s on a CPU: pick it
    for speed) or ``"oracle"`` (ground-truth ray casting of the procedural mesh)."""
    resolution: int | tuple[int, int] = 64
    """Observation size: one int for square images or (height, width)."""
    hfov_deg: float = 90.0
    """Horizontal field of view of the agent's camera in degrees."""
    action_type: str = "discrete"
    """``"discrete"``: 0 stop, 1 forward, 2 turn left, 3 turn right, 4 look up, 5 look down.
    ``"continuous"``: Box(-1, 1, (4,)) = forward, strafe right, yaw rate (left +), pitch rate (up +)."""
    scenes: str | list = "procedural:train"
    """Scene source(s): ``"procedural:<split>[:<count>]"`` (split train/val/test), ``"procedural:seed:<n>"``,
    a scene file (``.wfscene``, meta.json, ``.ply``), or a list of these."""
    device: str = "auto"
    """``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    max_episode_steps: int = 500
    """Steps after which an episode is truncated."""
    forward_step: float = 0.25
    """Metres moved by one forward action (and the continuous forward/strafe maximum)."""
    turn_angle_deg: float = 15.0
    """Degrees turned by one turn action (and the continuous yaw-rate maximum)."""
    tilt_angle_deg: float = 15.0
    """Degrees tilted by one look action (and the continuous pitch-rate maximum)."""
    max_pitch_deg: float = 45.0
    """The camera pitch is clamped to [-max_pitch_deg, max_pitch_deg]."""
    allow_sliding: bool = False
    """A move into an obstacle slides along it (keeps the longer of its x-only and z-only parts that is
    free, as Habitat-sim's ``allow_sliding``) instead of being cancelled; either way it counts as a collision."""
    success_distance: float = 0.2
    """PointNav: success when STOP is taken within this geodesic distance (metres) of the goal."""
    min_goal_distance: float = 1.0
    """PointNav: shortest geodesic start-goal distance of an episode."""
    max_goal_distance: float = 10.0
    """PointNav: longest geodesic start-goal distance of an episode."""
    success_reward: float = 2.5
    """Reward added on success."""
    time_penalty: float = 0.01
    """Reward subtracted every step."""
    explore_view_distance: float = 3.0
    """Explore: how far (metres) the agent observes navigation cells along its view rays."""
    explore_success_coverage: float = 0.8
    """Explore: coverage counted as success."""
    include_depth: bool = False
    """Add a ``depth`` (H, W, 1) float32 observation (the renderer's depth, 0 where unknown)."""
    include_pose: bool = False
    """Add a ``pose`` (5,) float32 observation: x, y, z, yaw, pitch."""
    splat_radius: int | str = AnchorConfig.splat_radius
    """Anchor splat half-size in pixels (0 = one pixel per point, as published), or ``"auto"``: each point
    covers its local sample spacing in pixels (fills the holes of nearby, sparsely sampled surfaces)."""
    anchor_lod: float = AnchorConfig.anchor_lod
    """Anchor level of detail: distant points are thinned while their spacing covers at least this many
    pixels (0 draws every point, exactly as published; 0.35 keeps about 2+ points per pixel)."""
    occlusion_culling: bool = AnchorConfig.occlusion_culling
    """Skip point chunks hidden behind floor-to-ceiling walls (found in the point cloud) when splatting."""
    reference_samples: int = AnchorConfig.reference_samples
    """Target pixels voting in reference selection (published: ~300)."""
    reference_tolerance: float = AnchorConfig.reference_tolerance
    """Relative depth tolerance of a reference hit (published: 2 %)."""
    anchor_colour: str = AnchorConfig.anchor_colour
    """Colour of a covered anchor pixel: ``"splat"``, its winning point's colour (as published), or ``"bank"``,
    resampled bilinearly from the captured view that sampled that surface most finely (the splat's geometry kept)."""
    silhouettes: str = AnchorConfig.silhouettes
    """``"splat"`` or ``"learned"``: where footprint splats reach past a silhouette, take the surface they hid from
    the one-pixel splat where a small learned network says so (``worldfm_env.render.silhouette``)."""
    goal_candidates: int = 32
    """Goal cells per scene with a precomputed geodesic field."""
    num_scenes: int | None = None
    """Overrides the count of ``"procedural:<split>"`` scene specs (default 4)."""
    array_type: str = "torch"
    """Vector env outputs: ``"torch"`` tensors on the device, or ``"numpy"`` arrays."""
    autoreset_mode: str = "next_step"
    """``"next_step"`` (Gymnasium's default) or ``"same_step"``."""
    validate_actions: bool = True
    """Check every action against the action space (costs a device sync for CUDA torch actions)."""
    weights: str | None = None
    """Frame-model checkpoint for ``renderer="worldfm"``: a path, or the name of a model shipped in the package
    (``worldfm_env.model.weights.shipped_weights``, e.g. ``"worldfm-s-64x64"``); None: the one shipped for this
    resolution, if any."""
    sampler_steps: int | None = None
    """``renderer="worldfm"``: distilled sampler steps, 1 or 2 (v-prediction checkpoints: published, students);
    None takes the checkpoint's recommendation (its header), else 2 as published."""
    teacher_steps: int = 20
    """``renderer="worldfm"``: DDIM steps for eps-prediction checkpoints (stage I/II teachers)."""
    vae: str | None = None
    """``renderer="worldfm"``: a diffusers AutoencoderKL folder for latent models (the official ``vae/``)."""
    model_dtype: str = "auto"
    """``renderer="worldfm"``: ``"auto"`` (bf16 on CUDA and on CPUs with AMX or AVX512-BF16, else fp32),
    ``"float32"``, ``"bfloat16"``, ``"float16"``."""
    compile_model: bool = False
    """``renderer="worldfm"``: ``torch.compile`` the model (slow start-up, faster steps)."""
    noise: str = "auto"
    """``renderer="worldfm"``: how per-env seeds become diffusion noise: ``"generator"`` (one ``torch.Generator``
    per env and step; a host sync and N small launches per draw), ``"hash"`` (one batched counter-based draw on
    the device, no host sync) or ``"auto"`` (``"hash"`` on CUDA, ``"generator"`` on CPU). Both keep a fixed seed
    and pose giving the same frame whatever the batch; they draw different noise for the same seed."""
    noise_key: str = "pose"
    """``renderer="worldfm"``: what an env's per-frame noise seed hashes besides the env seed and episode number:
    ``"pose"`` (the camera pose, quantised to 1 mm and 2*pi/8192 rad: coming back to a pose in the static world
    gives the same frame again) or ``"step"`` (the step number: fresh noise every step, even standing still)."""
    scene_options: dict = field(default_factory=dict)
    """Extra options for scene generation/import (e.g. procedural config fields)."""
    memory: str = "static"
    """``"static"`` (the scene's captured memory only, the default) or ``"grow"``: after every step each env's frame
    is lifted to 3-D where its anchor was empty and written into that env's own memory on the device (its points
    are splatted with the scene's from then on, and the frame votes as a reference view), so the next frames and
    revisits show the same generated content. Captured points are never overwritten. Needs ``renderer="worldfm"``
    (or ``"oracle"``: ground truth written back). ``info`` reports ``memory_points`` and ``memory_views``."""
    memory_capacity: int = 65536
    """``memory="grow"``: points per env's memory (about 16 frames' worth at 64x64; a frame writes only the pixels
    its anchor left empty, and only when at least 1 % were). When full, the oldest points are overwritten first.
    Each memory also keeps its 16 latest written frames as reference views (the oldest replaced first)."""
    memory_carve: bool = False
    """``memory="grow"``: do not write generated points that lie in the space the scene's navigation grid lets the
    agent walk through (between 0.25 and 1.45 above the floor, over cells where the agent may stand). No surface of
    the scene lies there, so a generated point there floats: seen later, it puts an obstacle in the depth observation
    where the physics has none."""
    depth_bound: str = "none"
    """``renderer="worldfm"``: ``"none"`` (the frame's depth as the model generates it, the default) or
    ``"navigation"``: the depth of the pixels the anchor left empty is capped, in the ``depth`` observation and in
    what ``memory="grow"`` writes, at the depth where the pixel's ray meets the scene's navigation layout (its
    obstacles as columns as high as the grid records them, walls to the ceiling; the floor and the ceiling). Where the
    physics has a wall the model did not see, vision then agrees with collisions; a ray passing under a table top is
    capped at the table's side (one height per cell).
    The layout is the scene's true navigation grid, which collisions already use (:mod:`worldfm_env.render.layout`)."""
    keep_memory_on_reset: bool = False
    """``memory="grow"``: keep an env's grown memory across episodes while it stays in the same scene (default:
    every reset clears it)."""
    capture: str = "full"
    """How much of each procedural scene the memory (point cloud and reference bank) was captured from:
    ``"full"`` (dense capture from many points in every room, the default), ``"panorama"`` (the published
    pipeline's memory: one RGB-D panorama at one free point of the scene, the bank its 42 views: 14 headings x
    pitches 0 / +30 / -30 degrees) or ``"walk:K"`` (K views about 1 m apart along a seeded walk from that point,
    K in [1, 256]). The oracle, collisions and geodesics keep the full scene; PointNav and Explore episodes start
    within 1 m of a capture camera (in its line of sight). Deterministic per scene seed and cached like the scenes;
    procedural scenes only (see :mod:`worldfm_env.scenes.capture`)."""
    goal_outside_capture: bool = False
    """PointNav: draw goals from the cells whose floor the captured point cloud did not see (none within 0.5 m
    did), keeping ``min_goal_distance`` / ``max_goal_distance`` as far as the scene allows; a scene with no
    such cell falls back to every reachable cell with a warning. Meant for ``capture="panorama"`` / ``"walk:K"``."""

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        def is_real(v) -> bool:
            return (is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(v)

        def one_of(name: str, valid: tuple[str, ...]) -> None:
            check_one_of(name, getattr(self, name), valid)

        def number(name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False, integer=False):
            v = getattr(self, name)
            ok = is_int(v) if integer else is_real(v)
            if ok:
                ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                kind = "an int" if integer else "a number"
                fail(name, f"{kind} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")

        one_of("task", TASKS)
        one_of("renderer", RENDERERS)
        one_of("action_type", ACTION_TYPES)
        one_of("array_type", ARRAY_TYPES)
        one_of("autoreset_mode", AUTORESET_MODES)
        one_of("model_dtype", MODEL_DTYPES)
        one_of("noise", NOISE_MODES)
        one_of("noise_key", NOISE_KEYS)
        one_of("memory", MEMORY_MODES)
        check_memory_mode(self.memory, self.renderer)
        check_depth_bound(self.depth_bound, self.renderer)
        number("memory_capacity", 256, 2**24, integer=True)
        res = self.resolution
        if is_int(res):
            res = (res, res)
        if not (isinstance(res, (tuple, list)) and len(res) == 2 and all(is_int(v) and 8 <= v <= 4096 for v in res)):
            fail("resolution", "an int or (height, width) of ints in [8, 4096]")
        self.resolution = (int(res[0]), int(res[1]))
        inf = float("inf")
        number("hfov_deg", 0.0, 180.0, lo_open=True, hi_open=True)
        number("max_episode_steps", 1, 10**9, integer=True)
        for name in ("forward_step", "turn_angle_deg", "tilt_angle_deg", "success_distance", "explore_view_distance"):
            number(name, 0.0, inf, lo_open=True)
        number("max_pitch_deg", 0.0, 89.0)
        number("min_goal_distance", 0.0, inf)
        number("max_goal_distance", 0.0, inf)
        if self.min_goal_distance > self.max_goal_distance:
            fail("min_goal_distance", f"<= max_goal_distance ({self.max_goal_distance!r})")
        number("success_reward", -inf, inf, lo_open=True, hi_open=True)
        number("time_penalty", -inf, inf, lo_open=True, hi_open=True)
        number("explore_success_coverage", 0.0, 1.0, lo_open=True)
        # The anchor fields are validated (and a numpy splat_radius made an int) by the render side's config.
        self.splat_radius = self.anchor.splat_radius
        number("goal_candidates", 1, 4096, integer=True)
        number("teacher_steps", 1, 1000, integer=True)
        if self.num_scenes is not None:
            number("num_scenes", 1, 10**6, integer=True)
        for name in (
            "include_depth",
            "include_pose",
            "validate_actions",
            "compile_model",
            "allow_sliding",
            "keep_memory_on_reset",
            "memory_carve",
        ):
            if not isinstance(getattr(self, name), bool):
                fail(name, "True or False")
        if self.memory_carve and self.memory != "grow":
            raise ValueError(
                f"memory_carve=True applies to memory='grow' only (it chooses what a growing memory writes); memory "
                f"is {self.memory!r}: use memory='grow' or leave memory_carve=False"
            )
        if self.sampler_steps is not None and (self.sampler_steps not in (1, 2) or not is_int(self.sampler_steps)):
            fail("sampler_steps", "1, 2 or None (the checkpoint's recommendation)")
        for name, valid in (("weights", "a path, a shipped model's name or None"), ("vae", "a path or None")):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (str, os.PathLike)):
                fail(name, valid)
        if self.renderer != "worldfm":
            used = [n for n in ("weights", "vae") if getattr(self, n) is not None]
            if used:
                raise ValueError(f"{used} apply to renderer='worldfm' only; renderer is {self.renderer!r}")
        elif self.weights is not None:
            resolve_weights(self.weights)  # an unknown file or name fails here, before any scene is built
        if not isinstance(self.scene_options, dict):
            fail("scene_options", "a dict of scene generator/importer options")
        if not isinstance(self.scenes, (str, list, tuple)) or (
            not isinstance(self.scenes, str) and len(self.scenes) == 0
        ):
            fail("scenes", "a scene spec string or a non-empty list of them")
        from worldfm_env.scenes.capture import parse_capture

        if parse_capture(self.capture)[0] != "full":  # parse_capture names capture and its valid forms
            specs = [self.scenes] if isinstance(self.scenes, str) else list(self.scenes)
            files = [s for s in specs if isinstance(s, (str, os.PathLike)) and not str(s).startswith("procedural")]
            if files:
                raise ValueError(
                    f"capture={self.capture!r} applies to procedural scenes only ('procedural:<split>', "
                    f"'procedural:seed:<n>'); {[str(f) for f in files]} are scene files: use capture='full'"
                )
        if not isinstance(self.goal_outside_capture, bool):
            fail("goal_outside_capture", "True or False")
        if self.goal_outside_capture and self.task != "pointnav":
            raise ValueError(
                f"goal_outside_capture=True applies to task='pointnav' only (it places PointNav goals); task is "
                f"{self.task!r}: leave goal_outside_capture=False"
            )

    @classmethod
    def from_kwargs(cls, **kwargs) -> EnvConfig:
        """Build a config; an unknown key raises ``ValueError`` naming it and the closest valid keys."""
        return cls(**strict_kwargs(cls, kwargs, "environment option"))

    @property
    def anchor(self) -> AnchorConfig:
        """The anchor settings of this env (splat radius, level of detail, culling, reference vote)."""
        return AnchorConfig(
            splat_radius=self.splat_radius,
            anchor_lod=self.anchor_lod,
            occlusion_culling=self.occlusion_culling,
            reference_samples=self.reference_samples,
            reference_tolerance=self.reference_tolerance,
            anchor_colour=self.anchor_colour,
            silhouettes=self.silhouettes,
        )

    @property
    def model_options(self) -> dict:
        """The ``worldfm`` backend's options of this env (weights, sampler, dtype, compilation, noise), as keyword
        arguments of :class:`~worldfm_env.renderers.pipeline.ObservationPipeline`."""
        return dict(
            weights=self.weights,
            sampler_steps=self.sampler_steps,
            teacher_steps=self.teacher_steps,
            vae=self.vae,
            model_dtype=self.model_dtype,
            compile_model=self.compile_model,
            noise=self.noise,
        )

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-friendly)."""
        return asdict(self)
