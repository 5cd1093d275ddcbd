"""Seeded procedural indoor scenes: BSP floor plans of axis-aligned boxes, ray-cast into a reference bank.

A scene is a rectangular building split into rooms by recursive binary space partitioning (BSP);
some splits carve a corridor (a narrow strip with a door on each long side). Every split wall
gets a door and later splits keep clear of existing doors, so every room is reachable; a few extra
doors between adjacent rooms add loops. Rooms hold pillars, furniture (tables and desks with legs,
shelves, beds, sofas, cabinets, wardrobes) and framed posters, all axis-aligned boxes. Each room
has its own wall / floor / ceiling materials so that different places look different.

World frame (see :mod:`worldfm_env.geometry`): gravity is +y, the floor is the plane y = 0, the
ceiling is y = -ceiling_height, and the building occupies x in [0, W], z in [0, D] (wall centre
lines; exterior walls are centred on the boundary). Every face is oriented towards the free space
(boxes outward, floors up, ceilings down), which the oracle's view-independent shading relies on.

Generation is deterministic given the seed (numpy ``default_rng(seed)`` drives every choice) and
the config; the layout is computed in integer centimetres so that wall coincidences are exact.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from worldfm_env._device import resolve_device
from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.render.raycast import (
    PATTERN_BRICK,
    PATTERN_CHECKER,
    PATTERN_PLAIN,
    PATTERN_STRIPES,
    PATTERN_TILES,
    PATTERN_WOOD,
    MeshRaycaster,
    make_material,
)
from worldfm_env.scenes.navigation import _blocked_mask, _covered_mask, _largest_component
from worldfm_env.scenes.pointcloud import points_from_views
from worldfm_env.scenes.scene import NavigationGrid, ReferenceBank, Scene, TriangleMesh

__all__ = [
    "SPLITS",
    "seeds_for_split",
    "ProceduralConfig",
    "generate_procedural_scene",
    "render_overview",
]

SPLITS: dict[str, range] = {
    "train": range(0, 1_000_000),
    "val": range(1_000_000, 1_010_000),
    "test": range(2_000_000, 2_010_000),
}


def seeds_for_split(split: str, count: int, start: int = 0) -> list[int]:
    """The ``count`` seeds of ``split`` starting at offset ``start`` within the split.

    Args:
        split: one of ``"train"``, ``"val"``, ``"test"``.
        count: number of seeds (>= 0).
        start: offset of the first seed inside the split's range (>= 0).

    Returns:
        list of ``count`` consecutive integer seeds.

    Raises:
        ValueError: unknown split, or ``start`` / ``count`` outside the split's range.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {sorted(SPLITS)}")
    r = SPLITS[split]
    if count < 0 or start < 0 or start + count > len(r):
        raise ValueError(
            f"split {split!r} holds {len(r)} seeds; start={start}, count={count} must satisfy 0 <= start, "
            f"0 <= count and start + count <= {len(r)}"
        )
    return list(r[start : start + count])


@dataclass
class ProceduralConfig:
    """Parameters of :func:`generate_procedural_scene` (lengths in metres, angles in degrees).

    Attributes:
        building_size_min: smallest building extent (x, z).
        building_size_max: largest building extent (x, z).
        min_room_size: smallest room edge (wall centre to wall centre) a BSP split may create.
        max_room_size: regions longer than this along either axis are always split (when possible).
        stop_split_prob: probability that a region that may (but need not) be split becomes a room.
        wall_thickness: thickness of every wall.
        ceiling_height: floor-to-ceiling height (the ceiling is at y = -ceiling_height).
        door_width: width of door openings.
        door_height: height of door openings (a lintel fills the wall above).
        corridor_prob: probability that a large enough region is split as room | corridor | room.
        corridor_width: (min, max) corridor width (wall centre to wall centre).
        max_corridors: most corridors per building.
        extra_door_prob: probability of an extra door between two adjacent rooms (loops in the plan).
        pillars_per_room: (min, max) pillars tried per large room (interior >= 4 m both ways).
        furniture_per_room: (min, max) furniture pieces tried per room (corridors get none).
        posters_per_room: (min, max) framed posters / paintings tried per room.
        cell_size: navigation grid cell edge.
        agent_radius: obstacles are dilated by this radius in the navigation grid.
        camera_height: camera height above the floor (the camera is at y = -camera_height).
        resolution: (H, W) of the reference-bank images.
        hfov_deg: horizontal field of view of the bank cameras.
        capture_spacing: bank capture positions are added until every candidate free cell of a room
            is within this distance of a capture position in that room.
        bank_yaws: views at pitch 0 per capture position, evenly spaced in yaw.
        bank_down_views: views looking down (pitch -down_pitch_deg) per capture position.
        down_pitch_deg: downward pitch of the down views (covers the floor near the agent).
        voxel_size: voxel edge for point-cloud downsampling; None keeps one point per bank pixel.
    """

    building_size_min: tuple[float, float] = (8.0, 8.0)
    building_size_max: tuple[float, float] = (16.0, 16.0)
    min_room_size: float = 2.6
    max_room_size: float = 6.0
    stop_split_prob: float = 0.3
    wall_thickness: float = 0.1
    ceiling_height: float = 2.7
    door_width: float = 1.0
    door_height: float = 2.1
    corridor_prob: float = 0.35
    corridor_width: tuple[float, float] = (1.2, 1.6)
    max_corridors: int = 2
    extra_door_prob: float = 0.3
    pillars_per_room: tuple[int, int] = (0, 2)
    furniture_per_room: tuple[int, int] = (1, 4)
    posters_per_room: tuple[int, int] = (0, 3)
    cell_size: float = 0.1
    agent_radius: float = 0.18
    camera_height: float = 1.25
    resolution: tuple[int, int] = (64, 64)
    hfov_deg: float = 90.0
    capture_spacing: float = 2.5
    bank_yaws: int = 8
    bank_down_views: int = 4
    down_pitch_deg: float = 40.0
    voxel_size: float | None = 0.03

    def __post_init__(self) -> None:
        def fail(name: str, valid: str) -> None:
            raise ValueError(f"ProceduralConfig.{name} must be {valid}, got {getattr(self, name)!r}")

        def pair(name: str, lo: float, hi: float, integer: bool = False) -> None:
            v = getattr(self, name)
            kind = "integers" if integer else "numbers"
            if (
                not isinstance(v, (tuple, list))
                or len(v) != 2
                or (integer and not all(isinstance(x, (int, np.integer)) for x in v))
                or not (lo <= v[0] <= v[1] <= hi)
            ):
                fail(name, f"a pair (min, max) of {kind} with {lo} <= min <= max <= {hi}")
            setattr(self, name, tuple(v))

        t = self.wall_thickness
        if not 0.02 <= t <= 0.5:
            fail("wall_thickness", "in [0.02, 0.5]")
        if not 2.0 <= self.ceiling_height <= 10.0:
            fail("ceiling_height", "in [2.0, 10.0]")
        # A door must let the agent's disc through with at least one free cell of slack.
        if not 2 * self.agent_radius + self.cell_size < self.door_width <= 3.0:
            fail("door_width", f"in ({2 * self.agent_radius + self.cell_size:.3g}, 3.0] (2 * agent_radius + cell_size)")
        if not 0.5 <= self.door_height <= self.ceiling_height - 0.05:
            fail("door_height", f"in [0.5, ceiling_height - 0.05 = {self.ceiling_height - 0.05:.3g}]")
        min_room = self.door_width + 2 * (_DOOR_MARGIN + t / 2) + 0.05
        if not min_room <= self.min_room_size <= 50.0:
            fail("min_room_size", f"in [{min_room:.3g}, 50] (door_width + 2 * ({_DOOR_MARGIN} + wall_thickness / 2))")
        if not self.max_room_size >= 2 * self.min_room_size:
            fail("max_room_size", f">= 2 * min_room_size = {2 * self.min_room_size:.3g}")
        pair("building_size_min", self.min_room_size, 200.0)
        pair("building_size_max", self.min_room_size, 200.0)
        if not all(a <= b for a, b in zip(self.building_size_min, self.building_size_max, strict=True)):
            fail("building_size_max", f">= building_size_min = {self.building_size_min} in both axes")
        if not 0.0 <= self.stop_split_prob <= 1.0:
            fail("stop_split_prob", "in [0, 1]")
        if not 0.0 <= self.corridor_prob <= 1.0:
            fail("corridor_prob", "in [0, 1]")
        pair("corridor_width", 2 * self.agent_radius + t + 0.2, 10.0)
        if not (isinstance(self.max_corridors, (int, np.integer)) and self.max_corridors >= 0):
            fail("max_corridors", "an integer >= 0")
        if not 0.0 <= self.extra_door_prob <= 1.0:
            fail("extra_door_prob", "in [0, 1]")
        pair("pillars_per_room", 0, 20, integer=True)
        pair("furniture_per_room", 0, 50, integer=True)
        pair("posters_per_room", 0, 50, integer=True)
        if not 0.01 <= self.cell_size <= 1.0:
            fail("cell_size", "in [0.01, 1.0]")
        if not 0.0 <= self.agent_radius <= 1.0:
            fail("agent_radius", "in [0, 1.0]")
        if not 0.05 <= self.camera_height <= self.ceiling_height - 0.05:
            fail("camera_height", f"in [0.05, ceiling_height - 0.05 = {self.ceiling_height - 0.05:.3g}]")
        res = self.resolution
        if not (
            isinstance(res, (tuple, list))
            and len(res) == 2
            and all(isinstance(x, (int, np.integer)) and 1 <= x <= 4096 for x in res)
        ):
            fail("resolution", "a pair (H, W) of integers in [1, 4096]")
        self.resolution = tuple(int(x) for x in res)
        if not 1.0 <= self.hfov_deg <= 170.0:
            fail("hfov_deg", "in [1, 170]")
        if not 0.3 <= self.capture_spacing <= 100.0:
            fail("capture_spacing", "in [0.3, 100]")
        if not (isinstance(self.bank_yaws, (int, np.integer)) and 1 <= self.bank_yaws <= 64):
            fail("bank_yaws", "an integer in [1, 64]")
        if not (isinstance(self.bank_down_views, (int, np.integer)) and 0 <= self.bank_down_views <= 64):
            fail("bank_down_views", "an integer in [0, 64]")
        if not 0.0 < self.down_pitch_deg < 90.0:
            fail("down_pitch_deg", "in (0, 90)")
        if self.voxel_size is not None and not 0.0 < self.voxel_size <= 1.0:
            fail("voxel_size", "None or in (0, 1.0]")


# ------------------------------------------------------------------------------------------------
# Layout (integer centimetres)
# ------------------------------------------------------------------------------------------------

_DOOR_MARGIN = 0.3  # metres between a door opening and the nearest perpendicular wall face
_SNAP = 5  # cm grid of split and door positions


@dataclass
class _Room:
    x0: int
    x1: int
    z0: int
    z1: int
    kind: str  # "room" | "corridor"


@dataclass
class _Layout:
    width: int  # cm, building extent along x
    depth: int  # cm, building extent along z
    rooms: list[_Room] = field(default_factory=list)
    walls: list[tuple[int, int, int, int]] = field(default_factory=list)  # (axis, coord, lo, hi)
    doors: list[tuple[int, int, int, int]] = field(default_factory=list)  # (axis, coord, lo, hi)
    corridors: int = 0


def _snap(x: float) -> int:
    return int(round(x / _SNAP)) * _SNAP


def _door_on_rect(door: tuple[int, int, int, int], x0: int, x1: int, z0: int, z1: int) -> bool:
    """Whether a door lies on the boundary of the rectangle (axis 0 = wall at x = coord)."""
    axis, c, lo, hi = door
    if axis == 0:
        return c in (x0, x1) and lo >= z0 and hi <= z1
    return c in (z0, z1) and lo >= x0 and hi <= x1


def _place_door(rng: np.random.Generator, axis: int, coord: int, lo: int, hi: int, cm: dict) -> tuple:
    """A door on the wall line (axis, coord) inside [lo, hi] (cm), clear of the line's ends."""
    half = cm["door"] / 2
    a = lo + cm["door_margin"] + half
    b = hi - cm["door_margin"] - half
    # Snap to the cm grid but stay inside [a, b] (the caller guarantees b >= a).
    c = min(max(_snap(rng.uniform(a, b)), math.ceil(a / _SNAP) * _SNAP), math.floor(b / _SNAP) * _SNAP)
    return (axis, coord, int(c - half), int(c + half))


def _split_ok(s: int, axis: int, doors: list, cm) -> bool:
    """A new wall at coordinate s (perpendicular to ``axis``'s doors) keeps clear of doors on the sides."""
    m = cm["door_margin"]
    for d_axis, _, lo, hi in doors:
        if d_axis != axis and lo - m < s < hi + m:
            return False
    return True


def _bsp(rng, lay: _Layout, x0: int, x1: int, z0: int, z1: int, doors: list, depth: int, cfg, cm) -> None:
    """Recursively split [x0, x1] x [z0, z1] (cm); ``doors`` are the doors on its boundary."""
    w, d = x1 - x0, z1 - z0
    mn = cm["min_room"]
    can = [w >= 2 * mn, d >= 2 * mn]  # can split with a wall at x = s (axis 0) / z = s (axis 1)
    must = w > cm["max_room"] or d > cm["max_room"]
    if not any(can) or (not must and depth > 0 and rng.random() < cfg.stop_split_prob):
        lay.rooms.append(_Room(x0, x1, z0, z1, "room"))
        return
    lo_r = [x0, z0]
    hi_r = [x1, z1]
    span_lo = [z0, x0]  # extent of a wall of each axis
    span_hi = [z1, x1]

    def recurse_children(axis: int, cuts: list[int], corridor_index: int | None) -> None:
        # New walls + one door each, then the children (between consecutive cuts) inherit their doors.
        new_doors = []
        for s in cuts:
            lay.walls.append((axis, s, span_lo[axis], span_hi[axis]))
            door = _place_door(rng, axis, s, span_lo[axis], span_hi[axis], cm)
            lay.doors.append(door)
            new_doors.append(door)
        bounds = [lo_r[axis], *cuts, hi_r[axis]]
        all_doors = doors + new_doors
        for k in range(len(bounds) - 1):
            if axis == 0:
                rect = (bounds[k], bounds[k + 1], z0, z1)
            else:
                rect = (x0, x1, bounds[k], bounds[k + 1])
            child_doors = [dd for dd in all_doors if _door_on_rect(dd, *rect)]
            if k == corridor_index:
                lay.rooms.append(_Room(*rect, "corridor"))
            else:
                _bsp(rng, lay, *rect, child_doors, depth + 1, cfg, cm)

    # Corridor: room | corridor | room across the short axis, so the corridor runs along the long one.
    if lay.corridors < cfg.max_corridors and rng.random() < cfg.corridor_prob:
        axis = 1 if w >= d else 0  # walls perpendicular to the short extent
        length = w if axis == 1 else d
        extent = d if axis == 1 else w
        cw = _snap(rng.uniform(*cm["corridor"]))
        if length >= 400 and extent >= 2 * mn + cw:
            for _ in range(12):
                s1 = _snap(rng.uniform(lo_r[axis] + mn, hi_r[axis] - mn - cw))
                s2 = s1 + cw
                if (
                    lo_r[axis] + mn <= s1
                    and s2 <= hi_r[axis] - mn
                    and _split_ok(s1, axis, doors, cm)
                    and _split_ok(s2, axis, doors, cm)
                ):
                    lay.corridors += 1
                    recurse_children(axis, [s1, s2], corridor_index=1)
                    return
    # Ordinary split, preferably across the longer extent.
    longer = 0 if w >= d else 1
    order = [longer, 1 - longer] if rng.random() < 0.8 else [1 - longer, longer]
    for axis in order:
        if not can[axis]:
            continue
        for _ in range(16):
            s = _snap(rng.uniform(lo_r[axis] + mn, hi_r[axis] - mn))
            if lo_r[axis] + mn <= s <= hi_r[axis] - mn and _split_ok(s, axis, doors, cm):
                recurse_children(axis, [s], corridor_index=None)
                return
    lay.rooms.append(_Room(x0, x1, z0, z1, "room"))


def _add_extra_doors(rng, lay: _Layout, cfg, cm) -> None:
    """Extra doors between adjacent rooms whose shared wall is long enough (adds loops)."""
    need = cm["door"] + 2 * cm["door_margin"]
    rooms = lay.rooms
    for i in range(len(rooms)):
        for j in range(len(rooms)):
            a, b = rooms[i], rooms[j]
            if a.x1 == b.x0:  # shared wall at x = a.x1, running along z
                axis, coord, lo, hi = 0, a.x1, max(a.z0, b.z0), min(a.z1, b.z1)
            elif a.z1 == b.z0:
                axis, coord, lo, hi = 1, a.z1, max(a.x0, b.x0), min(a.x1, b.x1)
            else:
                continue
            if hi - lo < need:
                continue
            if any(d[0] == axis and d[1] == coord and d[2] < hi and d[3] > lo for d in lay.doors):
                continue  # already connected through this stretch of wall
            p = cfg.extra_door_prob
            if "corridor" in (a.kind, b.kind):
                p = max(p, 0.75)  # corridors should open into most rooms along them
            if rng.random() < p:
                lay.doors.append(_place_door(rng, axis, coord, lo, hi, cm))


def _make_layout(rng: np.random.Generator, cfg: ProceduralConfig) -> _Layout:
    cm = {
        "min_room": int(round(cfg.min_room_size * 100)),
        "max_room": int(round(cfg.max_room_size * 100)),
        "door": int(round(cfg.door_width * 100)),
        "door_margin": int(math.ceil((_DOOR_MARGIN + cfg.wall_thickness / 2) * 100)),
        "corridor": (cfg.corridor_width[0] * 100, cfg.corridor_width[1] * 100),
    }
    W = _snap(rng.uniform(cfg.building_size_min[0], cfg.building_size_max[0]) * 100)
    D = _snap(rng.uniform(cfg.building_size_min[1], cfg.building_size_max[1]) * 100)
    lay = _Layout(W, D)
    lay.walls += [(0, 0, 0, D), (0, W, 0, D), (1, 0, 0, W), (1, D, 0, W)]  # exterior
    _bsp(rng, lay, 0, W, 0, D, [], 0, cfg, cm)
    _add_extra_doors(rng, lay, cfg, cm)
    return lay


# ------------------------------------------------------------------------------------------------
# Materials
# ------------------------------------------------------------------------------------------------


class _MaterialTable:
    """Accumulates material rows; ``add`` returns the row index."""

    def __init__(self):
        self.rows: list[np.ndarray] = []

    def add(self, row: np.ndarray) -> int:
        self.rows.append(row)
        return len(self.rows) - 1


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=np.float32)


def _wall_material(rng) -> np.ndarray:
    kind = rng.choice(["paint", "stripes", "brick", "tiles"], p=[0.5, 0.2, 0.15, 0.15])
    h = rng.random()
    base = _hsv(h, rng.uniform(0.05, 0.4), rng.uniform(0.68, 0.93))
    if kind == "paint":
        return make_material(
            base, pattern=PATTERN_PLAIN, noise_amp=rng.uniform(0.05, 0.12), noise_scale=rng.uniform(0.3, 0.8)
        )
    if kind == "stripes":
        sec = _hsv(h + rng.uniform(-0.1, 0.1), rng.uniform(0.2, 0.55), rng.uniform(0.5, 0.8))
        return make_material(
            base,
            sec,
            PATTERN_STRIPES,
            scale=rng.uniform(0.18, 0.4),
            noise_amp=0.06,
            noise_scale=0.4,
            param=rng.uniform(0.3, 0.5),
        )
    if kind == "brick":
        base = _hsv(rng.uniform(0.0, 0.08), rng.uniform(0.35, 0.65), rng.uniform(0.5, 0.75))
        mortar = _hsv(0.1, 0.08, rng.uniform(0.7, 0.85))
        return make_material(
            base, mortar, PATTERN_BRICK, scale=rng.uniform(0.35, 0.45), noise_amp=0.12, noise_scale=0.15, param=0.1
        )
    grout = base * rng.uniform(0.7, 0.85)
    return make_material(
        base, grout, PATTERN_TILES, scale=rng.uniform(0.2, 0.35), noise_amp=0.05, noise_scale=0.3, param=0.1
    )


def _floor_material(rng) -> np.ndarray:
    kind = rng.choice(["wood", "tiles", "checker", "carpet"], p=[0.4, 0.25, 0.1, 0.25])
    if kind == "wood":
        h = rng.uniform(0.04, 0.11)
        v = rng.uniform(0.4, 0.75)
        base = _hsv(h, rng.uniform(0.4, 0.7), v)
        sec = _hsv(h + 0.01, rng.uniform(0.5, 0.8), v * 0.7)
        return make_material(
            base,
            sec,
            PATTERN_WOOD,
            scale=rng.uniform(0.15, 0.24),
            noise_amp=0.08,
            noise_scale=0.5,
            param=0.12,
            rotate=bool(rng.random() < 0.5),
        )
    if kind == "tiles":
        base = _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.55, 0.9))
        return make_material(
            base, base * 0.6, PATTERN_TILES, scale=rng.uniform(0.3, 0.6), noise_amp=0.08, noise_scale=0.3, param=0.06
        )
    if kind == "checker":
        a = _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.75, 0.95))
        b = _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.15, 0.4))
        return make_material(a, b, PATTERN_CHECKER, scale=rng.uniform(0.3, 0.5), noise_amp=0.06, noise_scale=0.3)
    base = _hsv(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.7))
    return make_material(base, pattern=PATTERN_PLAIN, noise_amp=0.18, noise_scale=rng.uniform(0.06, 0.12))


def _ceiling_material(rng) -> np.ndarray:
    base = _hsv(rng.random(), rng.uniform(0.0, 0.08), rng.uniform(0.85, 0.97))
    if rng.random() < 0.3:  # office ceiling tiles
        return make_material(base, base * 0.75, PATTERN_TILES, scale=0.6, noise_amp=0.06, noise_scale=0.12, param=0.05)
    return make_material(base, pattern=PATTERN_PLAIN, noise_amp=0.04, noise_scale=0.6)


def _furniture_material(rng, kind: str) -> np.ndarray:
    if kind == "wood" or (kind == "any" and rng.random() < 0.5):
        h = rng.uniform(0.04, 0.12)
        v = rng.uniform(0.3, 0.7)
        return make_material(
            _hsv(h, rng.uniform(0.4, 0.75), v),
            _hsv(h, 0.7, v * 0.65),
            PATTERN_WOOD,
            scale=rng.uniform(0.12, 0.2),
            noise_amp=0.08,
            noise_scale=0.4,
            param=0.0,
        )
    if kind == "fabric":
        return make_material(
            _hsv(rng.random(), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8)),
            pattern=PATTERN_PLAIN,
            noise_amp=0.2,
            noise_scale=0.07,
        )
    # painted / laminate
    return make_material(
        _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.25, 0.9)),
        pattern=PATTERN_PLAIN,
        noise_amp=0.05,
        noise_scale=0.5,
    )


def _poster_material(rng) -> np.ndarray:
    a = _hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    b = _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.9))
    kind = rng.choice([PATTERN_PLAIN, PATTERN_CHECKER, PATTERN_STRIPES, PATTERN_TILES])
    return make_material(
        a,
        b,
        int(kind),
        scale=rng.uniform(0.08, 0.25),
        noise_amp=rng.uniform(0.2, 0.45),
        noise_scale=rng.uniform(0.06, 0.2),
        param=rng.uniform(0.2, 0.5),
        rotate=bool(rng.random() < 0.5),
    )


# ------------------------------------------------------------------------------------------------
# Boxes -> triangles
# ------------------------------------------------------------------------------------------------


def _box_triangle_table() -> tuple[np.ndarray, np.ndarray]:
    """(12, 3) corner indices and (12,) face slot of a box's triangles with outward normals.

    Corner ``i`` has x = bit 0, y = bit 1, z = bit 2 of i (0 = min, 1 = max). Face slots are ordered
    -x, +x, -y, +y, -z, +z (a box's per-face material array uses the same order).
    """
    corners = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=np.float64)
    tris, slots = [], []
    for axis in range(3):
        b, c = [a for a in range(3) if a != axis]
        for side in (0, 1):
            quad = []
            for ub, uc in ((0, 0), (1, 0), (1, 1), (0, 1)):
                bits = {axis: side, b: ub, c: uc}
                quad.append(bits[0] | (bits[1] << 1) | (bits[2] << 2))
            n = np.cross(corners[quad[1]] - corners[quad[0]], corners[quad[2]] - corners[quad[0]])
            if (n[axis] > 0) != (side == 1):  # wrong winding: reverse so the normal points outward
                quad = quad[::-1]
            tris += [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
            slots += [2 * axis + side] * 2
    return np.array(tris, dtype=np.int64), np.array(slots, dtype=np.int64)


_BOX_TRIS, _BOX_SLOTS = _box_triangle_table()
_CORNER_BITS = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=np.int64)  # (8, 3)


class _MeshBuilder:
    """Collects boxes (bounds + 6 face materials) and horizontal quads, then emits one mesh."""

    def __init__(self):
        self.boxes: list[tuple[float, float, float, float, float, float]] = []  # x0, x1, y0, y1, z0, z1
        self.box_mats: list[tuple[int, ...]] = []  # 6 materials in slot order -x, +x, -y, +y, -z, +z
        self.quads: list[tuple[float, float, float, float, float, bool, int]] = []  # x0,x1,z0,z1,y,up,mat

    def box(self, x0, x1, y0, y1, z0, z1, mats) -> None:
        if isinstance(mats, (int, np.integer)):
            mats = (int(mats),) * 6
        self.boxes.append((x0, x1, y0, y1, z0, z1))
        self.box_mats.append(tuple(int(m) for m in mats))

    def quad(self, x0, x1, z0, z1, y, facing_up: bool, mat: int) -> None:
        self.quads.append((x0, x1, z0, z1, y, facing_up, int(mat)))

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices (V, 3) float32, faces (F, 3) int32, face_material (F,) int32)."""
        b = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 6)  # (B, 6)
        lo = b[:, [0, 2, 4]]  # (B, 3)
        hi = b[:, [1, 3, 5]]
        verts_b = lo[:, None, :] + _CORNER_BITS[None] * (hi - lo)[:, None, :]  # (B, 8, 3)
        faces_b = _BOX_TRIS[None] + 8 * np.arange(len(b))[:, None, None]  # (B, 12, 3)
        mats_b = np.asarray(self.box_mats, dtype=np.int64).reshape(-1, 6)[:, _BOX_SLOTS]  # (B, 12)
        q = self.quads
        qv = np.zeros((len(q), 4, 3))
        qf = np.zeros((len(q), 2, 3), dtype=np.int64)
        qm = np.zeros((len(q), 2), dtype=np.int64)
        base = 8 * len(b)
        for k, (x0, x1, z0, z1, y, up, m) in enumerate(q):
            qv[k] = [[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]]
            # (0, 1, 2) has normal -y (up, gravity is +y); reversed winding faces down.
            tri = [[0, 1, 2], [0, 2, 3]] if up else [[0, 2, 1], [0, 3, 2]]
            qf[k] = np.asarray(tri) + base + 4 * k
            qm[k] = m
        vertices = np.concatenate([verts_b.reshape(-1, 3), qv.reshape(-1, 3)]).astype(np.float32)
        faces = np.concatenate([faces_b.reshape(-1, 3), qf.reshape(-1, 3)]).astype(np.int32)
        face_material = np.concatenate([mats_b.reshape(-1), qm.reshape(-1)]).astype(np.int32)
        return vertices, faces, face_material


# ------------------------------------------------------------------------------------------------
# Scene assembly
# ------------------------------------------------------------------------------------------------

# Furniture catalogue: (name, width along the wall, depth, height, placement) ranges in metres.
_FURNITURE = [
    ("table", (1.0, 1.8), (0.7, 0.9), (0.72, 0.78), "any"),
    ("desk", (1.0, 1.6), (0.6, 0.75), (0.72, 0.76), "wall"),
    ("shelf", (0.8, 1.6), (0.3, 0.45), (1.5, 2.0), "wall"),
    ("bed", (1.4, 1.9), (1.9, 2.1), (0.45, 0.6), "wall"),
    ("cabinet", (0.5, 1.0), (0.4, 0.6), (0.8, 1.2), "wall"),
    ("sofa", (1.6, 2.2), (0.8, 0.95), (0.75, 0.9), "any"),
    ("wardrobe", (0.9, 1.6), (0.55, 0.65), (1.8, 2.0), "wall"),
]
_CLEARANCE = 0.8  # metres of free gap kept around furniture (except against its own walls)
_PILLAR_CLEARANCE = 1.0
_DOOR_ZONE_DEPTH = 1.2  # metres in front of a door kept free of furniture


def _rect_gap(a, b) -> float:
    """Euclidean gap between two x-z rectangles (x0, x1, z0, z1); 0 when they touch or overlap."""
    dx = max(0.0, a[0] - b[1], b[0] - a[1])
    dz = max(0.0, a[2] - b[3], b[2] - a[3])
    return math.hypot(dx, dz)


def _rects_overlap(a, b, eps: float = 1e-6) -> bool:
    return a[0] < b[1] - eps and b[0] < a[1] - eps and a[2] < b[3] - eps and b[2] < a[3] - eps


def _furnish_room(
    rng,
    mb: _MeshBuilder,
    mt: _MaterialTable,
    room_rect,
    room_doors,
    wall_mat: int,
    cfg,
    obstacles: list,
    kind: str,
    tops: list,
) -> None:
    """Pillars, furniture and posters of one room; appends obstacle footprints (x0, x1, z0, z1) to ``obstacles`` and
    the boxes that stand on them, (x0, x1, z0, z1, height above the floor; inf: to the ceiling), to ``tops``."""
    t = cfg.wall_thickness
    H = cfg.ceiling_height
    ix0, ix1, iz0, iz1 = room_rect  # interior (wall faces), metres
    # Keep-out zones in front of each door, both so doors stay passable and so they look like doors.
    zones = []
    for axis, c, lo, hi in room_doors:
        c, lo, hi = c / 100, lo / 100 - 0.3, hi / 100 + 0.3
        if axis == 0:
            zones.append((c - _DOOR_ZONE_DEPTH, c + _DOOR_ZONE_DEPTH, lo, hi))
        else:
            zones.append((lo, hi, c - _DOOR_ZONE_DEPTH, c + _DOOR_ZONE_DEPTH))
    placed = []  # footprints of this room's objects (x0, x1, z0, z1, height)
    walls = [("x0", ix0), ("x1", ix1), ("z0", iz0), ("z1", iz1)]

    def wall_gaps_ok(fp, touching: set[str], clearance: float) -> bool:
        gaps = {"x0": fp[0] - ix0, "x1": ix1 - fp[1], "z0": fp[2] - iz0, "z1": iz1 - fp[3]}
        return all(name in touching or g >= clearance - 1e-9 for name, g in gaps.items())

    def free_of(fp, clearance: float) -> bool:
        if any(_rects_overlap(fp, z) for z in zones):
            return False
        return all(_rect_gap(fp, p) >= clearance for p in placed)

    # Pillars (big rooms only), kept well away from walls so they never close a passage.
    if kind == "room" and min(ix1 - ix0, iz1 - iz0) >= 4.0:
        for _ in range(int(rng.integers(cfg.pillars_per_room[0], cfg.pillars_per_room[1] + 1))):
            s = rng.uniform(0.3, 0.5)
            for _ in range(20):
                x = rng.uniform(ix0 + _PILLAR_CLEARANCE, ix1 - _PILLAR_CLEARANCE - s)
                z = rng.uniform(iz0 + _PILLAR_CLEARANCE, iz1 - _PILLAR_CLEARANCE - s)
                fp = (x, x + s, z, z + s)
                if free_of(fp, _PILLAR_CLEARANCE):
                    mat = (
                        wall_mat
                        if rng.random() < 0.5
                        else mt.add(
                            make_material(_hsv(0.1, 0.03, rng.uniform(0.55, 0.75)), noise_amp=0.15, noise_scale=0.12)
                        )
                    )
                    mb.box(fp[0], fp[1], -H, 0.0, fp[2], fp[3], mat)
                    placed.append((*fp, H))
                    tops.append((*fp, math.inf))
                    break

    # Furniture: against a wall (flush to a corner or >= clearance from it) or free-standing.
    if kind == "room":
        for _ in range(int(rng.integers(cfg.furniture_per_room[0], cfg.furniture_per_room[1] + 1))):
            name, wr, dr, hr, where = _FURNITURE[int(rng.integers(len(_FURNITURE)))]
            fw, fd, fh = rng.uniform(*wr), rng.uniform(*dr), rng.uniform(*hr)
            free_standing = where == "any" and rng.random() < 0.4
            for _ in range(20):
                if free_standing:
                    along_x = rng.random() < 0.5
                    sx, sz = (fw, fd) if along_x else (fd, fw)
                    if ix1 - ix0 < sx + 2 * _CLEARANCE or iz1 - iz0 < sz + 2 * _CLEARANCE:
                        break
                    x = rng.uniform(ix0 + _CLEARANCE, ix1 - _CLEARANCE - sx)
                    z = rng.uniform(iz0 + _CLEARANCE, iz1 - _CLEARANCE - sz)
                    fp = (x, x + sx, z, z + sz)
                    touching: set[str] = set()
                    back = None
                else:
                    back, wc = walls[int(rng.integers(4))]
                    along_x = back in ("z0", "z1")  # the wall runs along x
                    lo, hi = (ix0, ix1) if along_x else (iz0, iz1)
                    if hi - lo < fw:
                        continue
                    p = rng.uniform(lo, hi - fw)
                    touching = {back}
                    # Snap near a corner to flush, so no unreachable sliver opens between furniture and wall.
                    if p - lo < _CLEARANCE:
                        p = lo
                        touching.add("x0" if along_x else "z0")
                    elif hi - (p + fw) < _CLEARANCE:
                        p = hi - fw
                        touching.add("x1" if along_x else "z1")
                    sign = 1.0 if back in ("x0", "z0") else -1.0
                    d0, d1 = sorted((wc, wc + sign * fd))
                    fp = (p, p + fw, d0, d1) if along_x else (d0, d1, p, p + fw)
                if wall_gaps_ok(fp, touching, _CLEARANCE) and free_of(fp, _CLEARANCE):
                    tops += _emit_furniture(rng, mb, mt, name, fp, fh, back)
                    placed.append((*fp, fh))
                    break

    # Posters / paintings on the walls, clear of doors, corners and tall furniture.
    posters: list[tuple[str, float, float]] = []
    for _ in range(int(rng.integers(cfg.posters_per_room[0], cfg.posters_per_room[1] + 1))):
        pw, ph = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.9)
        yc = min(rng.uniform(1.3, 1.7), H - 0.25 - ph / 2)
        bottom = yc - ph / 2
        for _ in range(10):
            side, wc = walls[int(rng.integers(4))]
            along_x = side in ("z0", "z1")
            lo, hi = (ix0, ix1) if along_x else (iz0, iz1)
            if hi - lo < pw + 0.5:
                break
            a = rng.uniform(lo + 0.25, hi - 0.25 - pw)
            b = a + pw
            ok = True
            for axis, c, dlo, dhi in room_doors:
                on_side = (axis == 1) == along_x and abs(c / 100 - wc) <= t / 2 + 1e-4
                if on_side and dlo / 100 - 0.15 < b and a < dhi / 100 + 0.15:
                    ok = False
            for p in placed:
                near = (min(abs(p[2] - wc), abs(p[3] - wc)) if along_x else min(abs(p[0] - wc), abs(p[1] - wc))) < 0.15
                span = (p[0], p[1]) if along_x else (p[2], p[3])
                if near and span[0] < b + 0.1 and a - 0.1 < span[1] and p[4] > bottom - 0.1:
                    ok = False
            if any(s == side and pa < b + 0.2 and a - 0.2 < pb for s, pa, pb in posters):
                ok = False
            if not ok:
                continue
            posters.append((side, a, b))
            sign = 1.0 if side in ("x0", "z0") else -1.0
            frame_mat = mt.add(_furniture_material(rng, "wood" if rng.random() < 0.5 else "paint"))
            pic_mat = mt.add(_poster_material(rng))
            fr = 0.04 if rng.random() < 0.8 else 0.0
            for ea, eb, y0, y1, thick, mat in (
                (a - fr, b + fr, -(yc + ph / 2 + fr), -(bottom - fr), 0.02, frame_mat),
                (a, b, -(yc + ph / 2), -bottom, 0.03, pic_mat),
            ):
                if thick == 0.02 and fr == 0.0:
                    continue
                d0, d1 = sorted((wc - sign * 0.005, wc + sign * thick))
                if along_x:
                    mb.box(ea, eb, y0, y1, d0, d1, mat)
                else:
                    mb.box(d0, d1, y0, y1, ea, eb, mat)
            break
    obstacles += [p[:4] for p in placed]


def _emit_furniture(rng, mb: _MeshBuilder, mt: _MaterialTable, name: str, fp, fh: float, back: str | None) -> list:
    """Boxes of one furniture piece with footprint fp = (x0, x1, z0, z1) and height fh (metres). Returns the piece's
    parts as (x0, x1, z0, z1, top height) for the navigation grid's heights (a table counts as a solid block)."""
    x0, x1, z0, z1 = fp
    if name in ("table", "desk"):
        mat = mt.add(_furniture_material(rng, "any"))
        top = 0.04
        mb.box(x0, x1, -fh, -fh + top, z0, z1, mat)
        leg = 0.06
        for lx in (x0, x1 - leg):
            for lz in (z0, z1 - leg):
                mb.box(lx, lx + leg, -fh + top, 0.0, lz, lz + leg, mat)
        return [(*fp, fh)]
    if name in ("bed", "sofa"):
        frame = mt.add(_furniture_material(rng, "wood" if name == "bed" else "fabric"))
        cushion = mt.add(_furniture_material(rng, "fabric"))
        base_h = 0.45 if name == "sofa" else fh
        mats = [frame] * 6
        mats[2] = cushion  # -y slot is the top face
        mb.box(x0, x1, -base_h, 0.0, z0, z1, mats)
        parts = [(*fp, base_h)]
        if back is not None:  # backrest / headboard against the wall
            d = 0.2 if name == "sofa" else 0.08
            h = fh if name == "sofa" else fh + 0.45
            bx = {
                "x0": (x0, x0 + d, z0, z1),
                "x1": (x1 - d, x1, z0, z1),
                "z0": (x0, x1, z0, z0 + d),
                "z1": (x0, x1, z1 - d, z1),
            }[back]
            mb.box(bx[0], bx[1], -h, -base_h, bx[2], bx[3], frame if name == "bed" else cushion)
            parts.append((*bx, h))
        return parts
    mat = mt.add(_furniture_material(rng, "wood" if name in ("shelf", "wardrobe") else "any"))
    mb.box(x0, x1, -fh, 0.0, z0, z1, mat)
    return [(*fp, fh)]


def _capture_positions(free, room_id, clear, xs, zs, num_rooms: int, spacing: float) -> np.ndarray:
    """(C, 2) x-z capture positions: farthest-point sampling of free cells, room by room.

    Per room, candidates are its free cells with extra clearance (``clear``; all its free cells if
    none has it), the first capture is the candidate nearest the room's centroid, and the farthest
    candidate is added until every candidate is within ``spacing`` of a capture of the same room.
    Sampling per room keeps walls from counting as "covered" by a capture on their other side.
    """
    out = []
    for k in range(num_rooms):
        cover = free & (room_id == k)
        if not cover.any():
            continue
        cand = cover & clear
        if not cand.any():
            cand = cover
        r, c = np.nonzero(cand)
        pts = np.stack([xs[c], zs[r]], axis=1)  # (P, 2)
        cr, cc = np.nonzero(cover)
        centroid = np.array([xs[cc].mean(), zs[cr].mean()])
        first = int(np.argmin(((pts - centroid) ** 2).sum(1)))
        chosen = [first]
        dist = np.sqrt(((pts - pts[first]) ** 2).sum(1))
        while True:
            far = int(np.argmax(dist))
            if dist[far] <= spacing:
                break
            chosen.append(far)
            dist = np.minimum(dist, np.sqrt(((pts - pts[far]) ** 2).sum(1)))
        out.append(pts[chosen])
    return np.concatenate(out, 0)


def generate_procedural_scene(
    seed: int,
    config: ProceduralConfig | None = None,
    device: torch.device | str = "cpu",
    name: str | None = None,
) -> Scene:
    """Generate the procedural indoor scene of ``seed`` (deterministic for a given seed and config).

    Args:
        seed: non-negative integer seed (see :data:`SPLITS` for the train / val / test ranges).
        config: generation parameters; defaults to ``ProceduralConfig()``.
        device: torch device of the returned scene ("cpu", "cuda", "cuda:N" or "auto").
        name: scene name; defaults to ``f"procedural-{seed}"``.

    Returns:
        A :class:`Scene` with mesh, navigation grid, ray-cast reference bank and its point cloud.
        ``info`` holds the seed, building size, rooms (metres, x0 x1 z0 z1), doors, counts and config.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    cfg = config if config is not None else ProceduralConfig()
    dev = resolve_device(device)
    rng = np.random.default_rng(int(seed))
    lay = _make_layout(rng, cfg)
    t = cfg.wall_thickness
    H = cfg.ceiling_height
    ht = t / 2

    # ---- materials per room ----
    mt = _MaterialTable()
    exterior_mat = mt.add(make_material([0.5, 0.5, 0.5], noise_amp=0.1, noise_scale=0.3))
    room_wall, room_floor, room_ceil = [], [], []
    for room in lay.rooms:
        if room.kind == "corridor":  # corridors: calm paint and a hard floor
            room_wall.append(
                mt.add(
                    make_material(
                        _hsv(rng.random(), rng.uniform(0.03, 0.2), rng.uniform(0.75, 0.9)),
                        noise_amp=0.06,
                        noise_scale=0.5,
                    )
                )
            )
        else:
            room_wall.append(mt.add(_wall_material(rng)))
        room_floor.append(mt.add(_floor_material(rng)))
        room_ceil.append(mt.add(_ceiling_material(rng)))

    def room_at(x: float, z: float) -> int:
        for k, r in enumerate(lay.rooms):
            if r.x0 < x < r.x1 and r.z0 < z < r.z1:
                return k
        return -1

    mb = _MeshBuilder()
    obstacles: list[tuple[float, float, float, float]] = []  # x-z footprints that block the agent
    tops: list[tuple[float, float, float, float, float]] = []  # boxes on them: (x0, x1, z0, z1, height above floor)

    # ---- walls: split every wall line at room corners and door edges, so each piece has one room per side ----
    for axis, coord, lo, hi in lay.walls:
        breaks = {lo, hi}
        for r in lay.rooms:
            if axis == 0 and coord in (r.x0, r.x1):
                breaks.update(v for v in (r.z0, r.z1) if lo < v < hi)
            elif axis == 1 and coord in (r.z0, r.z1):
                breaks.update(v for v in (r.x0, r.x1) if lo < v < hi)
        # Several wall lines can share a coordinate (different BSP branches): keep this line's doors only.
        line_doors = [d for d in lay.doors if d[0] == axis and d[1] == coord and lo <= d[2] and d[3] <= hi]
        for d in line_doors:
            breaks.update((d[2], d[3]))
        breaks = sorted(breaks)
        for p, q in zip(breaks[:-1], breaks[1:], strict=True):
            mid = (p + q) / 2
            is_door = any(d[2] <= mid <= d[3] for d in line_doors)
            if axis == 0:
                neg, pos = room_at(coord - 1, mid), room_at(coord + 1, mid)
            else:
                neg, pos = room_at(mid, coord - 1), room_at(mid, coord + 1)
            mn = room_wall[neg] if neg >= 0 else exterior_mat
            mp = room_wall[pos] if pos >= 0 else exterior_mat
            c, a, b = coord / 100, p / 100, q / 100
            y0 = -H
            y1 = -cfg.door_height if is_door else 0.0  # door: lintel only
            if axis == 0:
                mb.box(c - ht, c + ht, y0, y1, a, b, (mn, mp, mn, mn, mn, mn))
                if not is_door:
                    obstacles.append((c - ht, c + ht, a, b))
            else:
                mb.box(a, b, y0, y1, c - ht, c + ht, (mn, mn, mn, mn, mn, mp))
                if not is_door:
                    obstacles.append((a, b, c - ht, c + ht))

    n_walls = len(obstacles)  # the footprints so far are the walls'

    # ---- floors, ceilings and furniture per room ----
    for k, r in enumerate(lay.rooms):
        x0, x1, z0, z1 = r.x0 / 100, r.x1 / 100, r.z0 / 100, r.z1 / 100
        mb.quad(x0, x1, z0, z1, 0.0, True, room_floor[k])
        mb.quad(x0, x1, z0, z1, -H, False, room_ceil[k])
        doors = [d for d in lay.doors if _door_on_rect(d, r.x0, r.x1, r.z0, r.z1)]
        _furnish_room(
            rng, mb, mt, (x0 + ht, x1 - ht, z0 + ht, z1 - ht), doors, room_wall[k], cfg, obstacles, r.kind, tops
        )

    verts, faces, face_mat = mb.build()
    materials = np.stack(mt.rows).astype(np.float32)
    mesh = TriangleMesh(
        vertices=torch.from_numpy(verts).to(dev),
        faces=torch.from_numpy(faces).to(dev),
        face_material=torch.from_numpy(face_mat).to(dev),
        materials=torch.from_numpy(materials).to(dev),
    )

    # ---- navigation grid ----
    cs = cfg.cell_size
    W, D = lay.width / 100, lay.depth / 100
    gx, gz = int(math.ceil(W / cs - 1e-9)), int(math.ceil(D / cs - 1e-9))
    xs = (np.arange(gx) + 0.5) * cs  # (Gx,) cell-centre x
    zs = (np.arange(gz) + 0.5) * cs  # (Gz,) cell-centre z
    rects = np.asarray(obstacles, dtype=np.float64).reshape(-1, 4)
    inside = ((xs > ht) & (xs < W - ht))[None, :] & ((zs > ht) & (zs < D - ht))[:, None]
    # The obstacles' own cells (walls, furniture): never free, however small the agent (a thin wall's one cell can lie
    # farther than agent_radius from the wall's rectangle).
    covered = _covered_mask(rects, gx, gz, cs)
    free = inside & ~_blocked_mask(rects, xs, zs, cfg.agent_radius) & ~covered  # (Gz, Gx)
    largest, n_comp = _largest_component(free)
    occupied = ~inside | covered  # and beyond the outer walls
    # Height of what stands on each occupied cell: walls and what lies beyond the outer walls reach the ceiling,
    # furniture its own top (the tallest part over a cell).
    furniture = np.zeros((gz, gx), dtype=np.float32)
    for x0, x1, z0, z1, h in tops:
        cells = _covered_mask(np.array([[x0, x1, z0, z1]]), gx, gz, cs)
        furniture[cells] = np.maximum(furniture[cells], np.float32(h))
    full = ~inside | _covered_mask(rects[:n_walls], gx, gz, cs)
    occupied_height = np.where(full, np.float32(np.inf), np.where(covered, furniture, np.float32(0.0)))
    nav = NavigationGrid(
        torch.from_numpy(free).to(dev),
        (0.0, 0.0),
        float(cs),
        0.0,
        float(cfg.agent_radius),
        occupied=torch.from_numpy(occupied).to(dev),
        ceiling_y=-float(cfg.ceiling_height),
        occupied_height=torch.from_numpy(occupied_height.astype(np.float32)).to(dev),
    )

    # ---- reference bank ----
    room_id = np.full((gz, gx), -1, dtype=np.int64)
    for k, r in enumerate(lay.rooms):
        cx = (xs > r.x0 / 100 + ht) & (xs < r.x1 / 100 - ht)
        cz = (zs > r.z0 / 100 + ht) & (zs < r.z1 / 100 - ht)
        room_id[np.ix_(cz, cx)] = k
    clear = inside & ~_blocked_mask(rects, xs, zs, max(cfg.agent_radius, 0.45))
    caps = _capture_positions(largest, room_id, clear, xs, zs, len(lay.rooms), cfg.capture_spacing)  # (C, 2)
    C = caps.shape[0]
    n_y, n_d = cfg.bank_yaws, cfg.bank_down_views
    V = n_y + n_d
    yaw_off = rng.uniform(0.0, 2 * math.pi, size=C)  # per-capture random heading, deterministic by seed
    yaw = np.concatenate(
        [
            yaw_off[:, None] + np.arange(n_y)[None] * (2 * math.pi / n_y),
            yaw_off[:, None] + (np.arange(n_d)[None] + 0.5) * (2 * math.pi / max(n_d, 1)),
        ],
        axis=1,
    )[:, :V]  # (C, V)
    yaw = np.remainder(yaw + math.pi, 2 * math.pi) - math.pi
    pitch = np.concatenate([np.zeros((C, n_y)), np.full((C, n_d), -math.radians(cfg.down_pitch_deg))], axis=1)
    pos = np.stack([caps[:, 0], np.full(C, -cfg.camera_height), caps[:, 1]], axis=1)  # (C, 3)
    pos = np.repeat(pos[:, None], V, axis=1)  # (C, V, 3)
    c2w = pose_from_yaw_pitch(
        torch.from_numpy(pos.reshape(-1, 3)).float().to(dev),
        torch.from_numpy(yaw.reshape(-1)).float().to(dev),
        torch.from_numpy(pitch.reshape(-1)).float().to(dev),
    )  # (B, 4, 4)
    Hh, Ww = cfg.resolution
    K = intrinsics_from_fov(Ww, Hh, cfg.hfov_deg, device=dev)
    B = c2w.shape[0]
    raycaster = MeshRaycaster([mesh], dev)
    images, depth = raycaster.render(torch.zeros(B, dtype=torch.int32, device=dev), c2w, K, Hh, Ww)
    bank = ReferenceBank(images, depth, K.expand(B, 3, 3).contiguous(), c2w)
    points_xyz, points_rgb, points_normal, points_spacing = points_from_views(
        images, depth, bank.K, c2w, voxel_size=cfg.voxel_size, with_normals=True, with_spacing=True
    )

    free_count = int(free.sum())
    info = {
        "source": "procedural",
        "seed": int(seed),
        "building_size": [W, D],
        "rooms": [[r.x0 / 100, r.x1 / 100, r.z0 / 100, r.z1 / 100, r.kind] for r in lay.rooms],
        "doors": [[d[0], d[1] / 100, d[2] / 100, d[3] / 100] for d in lay.doors],
        "num_rooms": len(lay.rooms),
        "num_doors": len(lay.doors),
        "num_captures": int(C),
        "num_triangles": int(faces.shape[0]),
        "nav_components": n_comp,
        "largest_component_fraction": float(largest.sum()) / max(free_count, 1),
        "config": json.loads(json.dumps(asdict(cfg))),  # JSON-native (tuples -> lists) so it survives save/load
    }
    return Scene(
        name=name or f"procedural-{seed}",
        points_xyz=points_xyz,
        points_rgb=points_rgb,
        bank=bank,
        navigation_grid=nav,
        camera_height=float(cfg.camera_height),
        mesh=mesh,
        points_normal=points_normal,
        points_spacing=points_spacing,
        info=info,
    )


def render_overview(scene: Scene, pixels_per_cell: int = 3) -> np.ndarray:
    """Top-down debugging image (Gz * p, Gx * p, 3) uint8 of the navigation grid and bank captures.

    Free cells are light grey, blocked ones dark; bank capture positions are red dots and every
    bank view's heading is a short yellow tick. Row index follows world z, column world x.

    Args:
        scene: any scene (the mesh is not needed).
        pixels_per_cell: image pixels per grid cell edge (>= 1).
    """
    if pixels_per_cell < 1:
        raise ValueError(f"pixels_per_cell must be >= 1, got {pixels_per_cell}")
    p = int(pixels_per_cell)
    grid = scene.navigation_grid
    free = grid.free.cpu().numpy()
    img = np.where(free[..., None], np.uint8(200), np.uint8(40)).astype(np.uint8)
    img = np.repeat(np.repeat(np.broadcast_to(img, (*free.shape, 3)), p, 0), p, 1).copy()
    c2w = scene.bank.c2w.cpu().numpy()
    scale = p / grid.cell_size

    def to_px(x, z):
        return int((z - grid.origin[1]) * scale), int((x - grid.origin[0]) * scale)

    for T in c2w:
        x, z = T[0, 3], T[2, 3]
        fwd = T[:3, 2]
        for s in np.linspace(0.0, 0.5, 8):
            r, c = to_px(x + s * fwd[0], z + s * fwd[2])
            if 0 <= r < img.shape[0] and 0 <= c < img.shape[1]:
                img[r, c] = (230, 200, 40)
    for T in c2w:
        r, c = to_px(T[0, 3], T[2, 3])
        img[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = (220, 30, 30)
    return img
