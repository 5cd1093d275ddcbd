"""Typed environment configuration, merged strictly from keyword arguments."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields

__all__ = ["EnvConfig", "TASKS", "RENDERERS", "ACTION_TYPES"]

TASKS = ("pointnav", "explore")
RENDERERS = ("worldfm", "anchor", "oracle")
ACTION_TYPES = ("discrete", "continuous")
ARRAY_TYPES = ("torch", "numpy")
AUTORESET_MODES = ("next_step", "same_step")


@dataclass
class EnvConfig:
    """Everything that defines a worldfm-env environment. Unknown keys are a ``ValueError``."""

    task: str = "pointnav"
    """Task: ``"pointnav"`` (reach a goal given by distance and angle) or ``"explore"`` (cover free space)."""
    renderer: str = "anchor"
    """Observation renderer: ``"anchor"`` (raw point splat), ``"oracle"`` (ground-truth ray casting of the
    procedural mesh) or ``"worldfm"`` (the frame model; needs ``weights``)."""
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
    splat_radius: int | str = 0
    """Anchor splat half-size in pixels (0 = one pixel per point, as published), or ``"auto"``: each point
    covers its local sample spacing in pixels (fills the holes of nearby, sparsely sampled surfaces)."""
    anchor_lod: float = 0.35
    """Anchor level of detail: distant points are thinned while their spacing covers at least this many
    pixels (0 draws every point, exactly as published; 0.35 keeps about 2+ points per pixel)."""
    occlusion_culling: bool = True
    """Skip point chunks hidden behind floor-to-ceiling walls (found in the point cloud) when splatting."""
    reference_samples: int = 300
    """Target pixels voting in reference selection (published: ~300)."""
    reference_tolerance: float = 0.02
    """Relative depth tolerance of a reference hit (published: 2 %)."""
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
    """Frame-model checkpoint for ``renderer="worldfm"`` (None: the one shipped for this resolution, if any)."""
    sampler_steps: int = 2
    """``renderer="worldfm"``: distilled sampler steps, 1 or 2."""
    vae: str | None = None
    """``renderer="worldfm"``: a diffusers AutoencoderKL folder for latent models (the official ``vae/``)."""
    model_dtype: str = "auto"
    """``renderer="worldfm"``: ``"auto"`` (fp32 on CPU, bf16 on CUDA), ``"float32"``, ``"bfloat16"``, ``"float16"``."""
    compile_model: bool = False
    """``renderer="worldfm"``: ``torch.compile`` the model (slow start-up, faster steps)."""
    scene_options: dict = field(default_factory=dict)
    """Extra options for scene generation/import (e.g. procedural config fields)."""

    def __post_init__(self) -> None:
        def one_of(name: str, valid: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"{name}={value!r} is not valid; choose one of {list(valid)}")

        one_of("task", TASKS)
        one_of("renderer", RENDERERS)
        one_of("action_type", ACTION_TYPES)
        one_of("array_type", ARRAY_TYPES)
        one_of("autoreset_mode", AUTORESET_MODES)
        res = self.resolution
        if isinstance(res, int) and not isinstance(res, bool):
            res = (res, res)
        if not (
            isinstance(res, (tuple, list))
            and len(res) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in res)
        ):
            raise ValueError(
                f"resolution must be an int or (height, width) of ints in [8, 4096], got {self.resolution!r}"
            )
        self.resolution = (int(res[0]), int(res[1]))
        positive = (
            "max_episode_steps",
            "forward_step",
            "turn_angle_deg",
            "tilt_angle_deg",
            "success_distance",
            "explore_view_distance",
            "reference_samples",
            "goal_candidates",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0.0 < self.hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180), got {self.hfov_deg!r}")
        if not 0.0 <= self.max_pitch_deg <= 89.0:
            raise ValueError(f"max_pitch_deg must be in [0, 89], got {self.max_pitch_deg!r}")
        if not 0.0 <= self.min_goal_distance <= self.max_goal_distance:
            raise ValueError(
                "need 0 <= min_goal_distance <= max_goal_distance, got "
                f"{self.min_goal_distance!r} and {self.max_goal_distance!r}"
            )
        if not (isinstance(self.anchor_lod, (int, float)) and 0.0 <= self.anchor_lod <= 4.0):
            raise ValueError(f"anchor_lod must be in [0, 4] (0 disables level of detail), got {self.anchor_lod!r}")
        if self.splat_radius != "auto" and not (
            isinstance(self.splat_radius, int)
            and not isinstance(self.splat_radius, bool)
            and 0 <= self.splat_radius <= 8
        ):
            raise ValueError(f"splat_radius must be an int in [0, 8] or 'auto', got {self.splat_radius!r}")
        if not 0.0 < self.reference_tolerance < 1.0:
            raise ValueError(f"reference_tolerance must be in (0, 1), got {self.reference_tolerance!r}")
        if not 0.0 < self.explore_success_coverage <= 1.0:
            raise ValueError(f"explore_success_coverage must be in (0, 1], got {self.explore_success_coverage!r}")
        if self.num_scenes is not None and (not isinstance(self.num_scenes, int) or self.num_scenes <= 0):
            raise ValueError(f"num_scenes must be a positive int or None, got {self.num_scenes!r}")
        if not isinstance(self.scenes, (str, list, tuple)) or (
            not isinstance(self.scenes, str) and len(self.scenes) == 0
        ):
            raise ValueError(f"scenes must be a scene spec string or a non-empty list of them, got {self.scenes!r}")

    @classmethod
    def from_kwargs(cls, **kwargs) -> EnvConfig:
        """Build a config; an unknown key raises ``ValueError`` naming it and the closest valid keys."""
        valid = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in valid:
                hint = difflib.get_close_matches(key, valid, n=3)
                extra = f"; did you mean {hint}?" if hint else ""
                raise ValueError(f"unknown environment option {key!r}{extra} Valid options: {valid}")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-friendly)."""
        return asdict(self)
