"""The anchor settings, owned by the render side: how the point cloud is splatted and the reference voted for.

One :class:`AnchorConfig` serves the env, the render CLI, the training clips and the benchmarks, so all of them
feed the frame model the same anchors. :class:`~worldfm_env.envs.config.EnvConfig` carries the same fields under
the same names (its defaults are these) and hands them over with ``EnvConfig.anchor``.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

import numpy as np

from worldfm_env.render.resample import ANCHOR_COLOUR_VALUES
from worldfm_env.render.silhouette import SILHOUETTE_VALUES

__all__ = [
    "AnchorConfig",
    "SPLAT_RADIUS_VALUES",
    "valid_splat_radius",
    "parse_splat_radius",
    "splat_radius_arg",
]

SPLAT_RADIUS_VALUES = "an int in [0, 8] or 'auto'"
"""The valid values of ``splat_radius``, as error messages state them."""


def valid_splat_radius(value) -> bool:
    """Whether ``value`` is a valid ``splat_radius`` (env, training clips, command lines): ``"auto"`` or an
    int (Python or numpy, not bool) in [0, 8]."""
    if isinstance(value, str):
        return value == "auto"
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and 0 <= value <= 8


def parse_splat_radius(text: str | int) -> int | str:
    """A ``splat_radius`` given as text (command lines, saved run arguments) or already as a value:
    ``"auto"`` or an int in [0, 8] (ASCII digits).

    Raises ValueError naming ``splat_radius`` and its valid values otherwise.
    """
    if valid_splat_radius(text):
        return text if isinstance(text, str) else int(text)
    text = str(text).strip()
    value = text if text == "auto" else int(text) if re.fullmatch(r"[0-9]{1,2}", text) else None
    if not valid_splat_radius(value):
        raise ValueError(f"splat_radius must be {SPLAT_RADIUS_VALUES}, got {text!r}")
    return value


def splat_radius_arg(text: str) -> int | str:
    """A command-line ``--splat-radius`` value (argparse ``type=``): :func:`parse_splat_radius`, whose error
    argparse reports as is."""
    try:
        return parse_splat_radius(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class AnchorConfig:
    """How an anchor is rendered and its reference chosen. A bad value is a ``ValueError`` naming the field."""

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
    anchor_colour: str = "splat"
    """Colour of a covered anchor pixel: ``"splat"``, its winning point's colour (as published), or ``"bank"``,
    resampled bilinearly from the captured view that sampled that surface most finely (the splat's geometry kept;
    :mod:`worldfm_env.render.resample`)."""
    silhouettes: str = "splat"
    """Where a footprint splat and the one-pixel splat of the same points disagree: ``"splat"`` keeps the footprint
    splat as it is; ``"learned"`` also splats one pixel per point and takes the pixels the package's
    :class:`~worldfm_env.render.silhouette.SilhouetteResolver` scores as a surface the footprint hid past a
    silhouette (no effect with ``splat_radius=0``)."""

    def __post_init__(self) -> None:
        if not valid_splat_radius(self.splat_radius):
            raise ValueError(f"splat_radius must be {SPLAT_RADIUS_VALUES}, got {self.splat_radius!r}")
        object.__setattr__(self, "splat_radius", parse_splat_radius(self.splat_radius))  # numpy int -> int
        lod = self.anchor_lod
        if not ((_is_int(lod) or isinstance(lod, (float, np.floating))) and math.isfinite(lod) and 0 <= lod <= 4):
            raise ValueError(f"anchor_lod must be a number in [0, 4], got {lod!r}")
        if not isinstance(self.occlusion_culling, bool):
            raise ValueError(f"occlusion_culling must be True or False, got {self.occlusion_culling!r}")
        if not (_is_int(self.reference_samples) and 1 <= self.reference_samples <= 100000):
            raise ValueError(f"reference_samples must be an int in [1, 100000], got {self.reference_samples!r}")
        tol = self.reference_tolerance
        if not (isinstance(tol, (int, float, np.integer, np.floating)) and not isinstance(tol, bool) and 0 < tol < 1):
            raise ValueError(f"reference_tolerance must be a number in (0, 1), got {tol!r}")
        if self.anchor_colour not in ANCHOR_COLOUR_VALUES:
            raise ValueError(f"anchor_colour must be one of {list(ANCHOR_COLOUR_VALUES)}, got {self.anchor_colour!r}")
        if self.silhouettes not in SILHOUETTE_VALUES:
            raise ValueError(f"silhouettes must be one of {list(SILHOUETTE_VALUES)}, got {self.silhouettes!r}")
