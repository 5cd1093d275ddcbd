"""The immutable, device-resident scene: the :class:`Scene` dataclass and its parts.

A :class:`Scene` holds everything a step needs: the point cloud that the anchor is splatted from,
the reference bank that the implicit memory is chosen from, the navigation grid that collisions
and geodesics use, and (for procedural scenes) the triangle mesh that the oracle ray casts.
Scenes are saved and loaded by :mod:`worldfm_env.scenes.scene_file`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch

from worldfm_env.render.mesh import TriangleMesh

__all__ = ["ReferenceBank", "NavigationGrid", "TriangleMesh", "Scene"]


#: What a navigation layout's rays are cast against: ``"footprints"``, the obstacles' own cells
#: (:attr:`NavigationGrid.occupied`) and the ceiling plane where the grid records one
#: (:attr:`NavigationGrid.ceiling_y`), or ``"cores"``, the grid's obstacle cores
#: (:func:`~worldfm_env.scenes.navigation.obstacle_cores`) and no ceiling: the layout that layout frame models trained
#: before the footprints were recorded read (it loses one-cell walls).
LAYOUT_OBSTACLES_VALUES = ("footprints", "cores")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class ReferenceBank:
    """Reference views of a scene (the implicit spatial memory).

    Attributes:
        images: (B, H, W, 3) uint8 RGB of each view.
        depth: (B, H, W) float32 z-depth of each view in scene units; 0 where unknown.
        K: (B, 3, 3) float32 intrinsics in pixels of ``images``.
        c2w: (B, 4, 4) float32 camera-to-world poses (OpenCV).
    """

    images: torch.Tensor
    depth: torch.Tensor
    K: torch.Tensor
    c2w: torch.Tensor

    def __post_init__(self) -> None:
        B = self.images.shape[0]
        _check(
            self.images.ndim == 4 and self.images.shape[-1] == 3,
            f"bank images must be (B, H, W, 3), got {tuple(self.images.shape)}",
        )
        _check(self.images.dtype == torch.uint8, f"bank images must be uint8, got {self.images.dtype}")
        _check(B > 0, "reference bank must hold at least one view")
        _check(
            self.depth.shape == self.images.shape[:3],
            f"bank depth must be (B, H, W) = {tuple(self.images.shape[:3])} to match images, "
            f"got {tuple(self.depth.shape)}",
        )
        _check(self.K.shape == (B, 3, 3), f"bank K must be ({B}, 3, 3), got {tuple(self.K.shape)}")
        _check(self.c2w.shape == (B, 4, 4), f"bank c2w must be ({B}, 4, 4), got {tuple(self.c2w.shape)}")

    @property
    def num_views(self) -> int:
        """Number of views B."""
        return int(self.images.shape[0])

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width) of the bank images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def to(self, device: torch.device | str) -> ReferenceBank:
        """The same bank with every tensor on ``device``."""
        return ReferenceBank(*(getattr(self, f.name).to(device) for f in fields(self)))


@dataclass(frozen=True)
class NavigationGrid:
    """Top-down 2-D occupancy of the floor at the agent's height.

    Attributes:
        free: (Gz, Gx) bool; True where the agent's centre may stand (obstacles already dilated by
            the agent radius). Row index follows world z, column index follows world x.
        origin: (x0, z0) world coordinates of the corner of cell (0, 0).
        cell_size: edge of one square cell in scene units.
        floor_y: world y of the floor (gravity is +y, so the floor has the largest y).
        agent_radius: the radius the obstacles were dilated by (scene units; 0.18, the default of every built-in
            source).
        occupied: (Gz, Gx) bool or None; the cells the obstacles themselves cover, before the dilation by
            ``agent_radius`` (walls, furniture, and for grids built from points the cells with no floor seen).
            Every built-in source records it. Grids without it (scene files written before the field) fall back
            to :func:`~worldfm_env.scenes.navigation.obstacle_cores`, which undoes the dilation only
            approximately (:func:`~worldfm_env.scenes.navigation.obstacle_footprints`).
        ceiling_y: world y of a flat ceiling over the whole grid (smaller than ``floor_y``: +y is down), or None
            where the source does not know one. Procedural scenes record theirs; the navigation layout stops
            upward rays there (:func:`~worldfm_env.scenes.navigation.grid_layout_depth`).
        occupied_height: (Gz, Gx) float32 or None (needs ``occupied``); the height above the floor of what stands on
            each occupied cell (``inf``: floor to ceiling, as walls; read only where ``occupied`` is True), so the
            navigation layout lets rays pass over furniture. Procedural scenes record it; None: every obstacle is
            taken as floor to ceiling.
    """

    free: torch.Tensor
    origin: tuple[float, float]
    cell_size: float
    floor_y: float
    agent_radius: float = 0.18
    occupied: torch.Tensor | None = None
    ceiling_y: float | None = None
    occupied_height: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check(
            self.free.ndim == 2 and self.free.dtype == torch.bool,
            f"navigation grid free must be a 2-D bool tensor, got {self.free.dtype} {tuple(self.free.shape)}",
        )
        _check(self.cell_size > 0, f"navigation grid cell_size must be positive, got {self.cell_size}")
        _check(
            math.isfinite(self.agent_radius) and self.agent_radius >= 0,
            f"navigation grid agent_radius must be a finite number >= 0, got {self.agent_radius}",
        )
        _check(bool(self.free.any()), "navigation grid has no free cell: the scene has no space to stand in")
        if self.occupied is not None:
            _check(
                isinstance(self.occupied, torch.Tensor)
                and self.occupied.dtype == torch.bool
                and tuple(self.occupied.shape) == tuple(self.free.shape),
                f"navigation grid occupied must be None or a bool tensor shaped like free {tuple(self.free.shape)}, "
                f"got {getattr(self.occupied, 'dtype', type(self.occupied).__name__)} "
                f"{tuple(getattr(self.occupied, 'shape', ()))}",
            )
            _check(
                self.occupied.device == self.free.device,
                f"navigation grid occupied must be on free's device ({self.free.device}), got {self.occupied.device}",
            )
            _check(
                not bool((self.occupied & self.free).any()),
                "navigation grid occupied and free overlap: a cell an obstacle covers cannot be free to stand in",
            )
        if self.ceiling_y is not None:
            _check(
                isinstance(self.ceiling_y, (int, float))
                and not isinstance(self.ceiling_y, bool)
                and math.isfinite(self.ceiling_y)
                and self.ceiling_y < self.floor_y,
                f"navigation grid ceiling_y must be None or a finite number below the floor (< floor_y = "
                f"{self.floor_y}; +y is down), got {self.ceiling_y!r}",
            )
        if self.occupied_height is not None:
            h = self.occupied_height
            _check(
                self.occupied is not None,
                "navigation grid occupied_height needs occupied (the cells it gives heights for); got occupied=None",
            )
            _check(
                isinstance(h, torch.Tensor)
                and h.dtype == torch.float32
                and tuple(h.shape) == tuple(self.free.shape)
                and h.device == self.free.device,
                f"navigation grid occupied_height must be None or a float32 tensor shaped like free "
                f"{tuple(self.free.shape)} on its device ({self.free.device}), got "
                f"{getattr(h, 'dtype', type(h).__name__)} {tuple(getattr(h, 'shape', ()))} "
                f"on {getattr(h, 'device', '-')}",
            )
            on = h[self.occupied]
            _check(
                not bool(torch.isnan(on).any()) and bool((on > 0).all()),
                "navigation grid occupied_height must be > 0 (or inf: floor to ceiling) on every occupied cell, "
                "got NaN or <= 0",
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(Gz, Gx) cells."""
        return int(self.free.shape[0]), int(self.free.shape[1])

    def world_to_cell(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer (row, col) of world coordinates (may be out of range)."""
        col = torch.floor((x - self.origin[0]) / self.cell_size).long()
        row = torch.floor((z - self.origin[1]) / self.cell_size).long()
        return row, col

    def cell_center(self, row: torch.Tensor, col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World (x, z) of cell centres."""
        x = self.origin[0] + (col.to(torch.float32) + 0.5) * self.cell_size
        z = self.origin[1] + (row.to(torch.float32) + 0.5) * self.cell_size
        return x, z

    def to(self, device: torch.device | str) -> NavigationGrid:
        """The same grid on ``device``."""
        occupied = None if self.occupied is None else self.occupied.to(device)
        height = None if self.occupied_height is None else self.occupied_height.to(device)
        return replace(self, free=self.free.to(device), occupied=occupied, occupied_height=height)


@dataclass(frozen=True)
class Scene:
    """An immutable scene on one device.

    Attributes:
        name: identifier, e.g. ``procedural-train-00003`` or a file stem.
        points_xyz: (P, 3) float32 world points of the explicit 3-D anchor.
        points_rgb: (P, 3) uint8 colours of those points.
        bank: the reference views (implicit spatial memory).
        navigation_grid: free space for the agent.
        camera_height: height of the agent's camera above ``navigation_grid.floor_y`` (scene units).
        mesh: ground-truth triangle mesh, or None for imported scenes (no oracle renderer then).
        info: JSON-serialisable metadata (source, seed, units, ...).
        points_normal: optional (P, 3) float32 unit normals (zero rows = unknown); the splat uses them
            to compare surfaces at pixel centres (see :mod:`worldfm_env.render.splat`).
        points_spacing: optional (P,) float32 sample spacing of each point (the side of the surface patch
            it stands for, scene units); estimated from the point density when absent.
    """

    name: str
    points_xyz: torch.Tensor
    points_rgb: torch.Tensor
    bank: ReferenceBank
    navigation_grid: NavigationGrid
    camera_height: float
    mesh: TriangleMesh | None = None
    info: dict = field(default_factory=dict)
    points_normal: torch.Tensor | None = None
    points_spacing: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check(
            self.points_xyz.ndim == 2 and self.points_xyz.shape[1] == 3,
            f"points_xyz must be (P, 3), got {tuple(self.points_xyz.shape)}",
        )
        _check(self.points_xyz.shape[0] > 0, f"scene {self.name!r}: the point cloud is empty (points_xyz has 0 points)")
        _check(
            self.points_rgb.shape == self.points_xyz.shape,
            f"points_rgb must be {tuple(self.points_xyz.shape)} to match points_xyz, "
            f"got {tuple(self.points_rgb.shape)}",
        )
        _check(self.points_rgb.dtype == torch.uint8, f"points_rgb must be uint8, got {self.points_rgb.dtype}")
        _check(self.camera_height > 0, f"camera_height must be positive, got {self.camera_height}")
        if self.points_normal is not None:
            _check(
                self.points_normal.shape == self.points_xyz.shape,
                f"points_normal must be {tuple(self.points_xyz.shape)} to match points_xyz, "
                f"got {tuple(self.points_normal.shape)}",
            )
        if self.points_spacing is not None:
            _check(
                self.points_spacing.shape == self.points_xyz.shape[:1],
                f"points_spacing must be ({self.points_xyz.shape[0]},), got {tuple(self.points_spacing.shape)}",
            )

    @property
    def device(self) -> torch.device:
        """Device holding the scene's tensors."""
        return self.points_xyz.device

    def to(self, device: torch.device | str) -> Scene:
        """The same scene on ``device``."""
        return replace(
            self,
            points_xyz=self.points_xyz.to(device),
            points_rgb=self.points_rgb.to(device),
            bank=self.bank.to(device),
            navigation_grid=self.navigation_grid.to(device),
            mesh=None if self.mesh is None else self.mesh.to(device),
            points_normal=None if self.points_normal is None else self.points_normal.to(device),
            points_spacing=None if self.points_spacing is None else self.points_spacing.to(device),
        )
