"""Navigation: free-space grids, their connected components, geodesic distances, and per-pool packing.

* Grid building: :func:`navigation_grid_from_points` (a height slice of a point cloud above the floor
  found by :func:`estimate_floor_y`, eroded by the agent radius) for imported scenes; obstacle
  footprints dilated by the agent's disc (``_blocked_mask``) and the largest 4-connected component
  (``_largest_component``) for procedural scenes. Either way the grid also records the obstacles' own cells before
  the dilation (``NavigationGrid.occupied``; procedural rectangles through ``_covered_mask``), which the layout casts
  rays against (:func:`obstacle_footprints`, :func:`grid_layout_depth`).
* Geodesics: :func:`geodesic_distance`.
* Pools: :class:`NavigationData`, the navigation tensors of every scene of a
  :class:`~worldfm_env.scenes.pool.ScenePool` (main free component, the captured region where episodes start,
  the cells the captured memory saw, goal candidates, goal fields).

Geodesic distance fields are computed on the device. Distances are shortest paths on the
16-connected grid of free cells (the 8 neighbours plus the 8 knight moves, each costing its
Euclidean length; a move is allowed only when the cells its straight segment passes through are
free, so paths never cut a corner), in scene units. Against the true (any-angle) shortest path this
overestimates by at most about 2.7 % in open space, where an 8-connected grid overestimates by up to
8.2 %, which matters for SPL.

The solver is a chaotic Bellman-Ford relaxation in a warp kernel, alternating forward and
backward sweeps until nothing changes: on the CPU each sweep runs in index order
(Gauss-Seidel, so distances travel the whole grid in a few sweeps), on CUDA the sweeps run in
parallel (Jacobi-like) and simply need more of them. Either way the fixed point is the exact
16-connected shortest-path distance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from worldfm_env._device import init_warp, warp_device
from worldfm_env.render.layout import LayoutDepth
from worldfm_env.scenes.scene import LAYOUT_OBSTACLES_VALUES, NavigationGrid

if TYPE_CHECKING:
    from worldfm_env.scenes.pool import ScenePool

wp = init_warp()

__all__ = [
    "geodesic_distance",
    "UNREACHABLE",
    "estimate_floor_y",
    "navigation_grid_from_points",
    "obstacle_cores",
    "obstacle_footprints",
    "LAYOUT_OBSTACLES_VALUES",
    "grid_layout_depth",
    "grid_obstacles",
    "grid_obstacle_heights",
    "pool_layout_depth",
    "pool_obstacles",
    "FreeSpace",
    "NavigationData",
    "CAPTURE_START_RADIUS",
    "SEEN_FLOOR_BAND",
    "GOAL_MARGIN_FROM_SEEN",
]

#: Episodes in a sparsely captured scene start within this distance (scene units) of a capture camera centre.
CAPTURE_START_RADIUS = 1.0
#: A captured point within this height of the floor marks its navigation cell's floor as seen.
SEEN_FLOOR_BAND = 0.05
#: With ``goal_outside_capture``, goal candidates keep at least this distance (scene units, per axis) from every
#: seen cell: the floor seen at a grazing angle is sampled in sparse rows, and a goal between two rows was seen.
GOAL_MARGIN_FROM_SEEN = 0.5


# --------------------------------------------------------------------------------------------------
# grids from point clouds (imported scenes)
# --------------------------------------------------------------------------------------------------


MAX_GRID_CELLS = 2**26
"""Most cells of a navigation grid built from points (a larger one means absurd coordinates or scale)."""


def estimate_floor_y(xyz: torch.Tensor, top_fraction: float = 0.3, bin_size: float = 0.02) -> float:
    """World y of the floor: the densest horizontal layer among the lowest points.

    Gravity is +y, so the floor holds the largest y. We histogram the y of the ``top_fraction`` of
    points with the largest y in bins of ``bin_size`` and return the mean y of the fullest bin: a
    floor is a large flat layer, so it concentrates many points in one bin, whereas walls and
    furniture spread over many bins.

    Args:
        xyz: (P, 3) points.
        top_fraction: fraction (0, 1] of points with the largest y that are considered.
        bin_size: histogram bin width in scene units.

    Returns:
        The estimated floor y.
    """
    y = xyz[:, 1].float()
    y = y[torch.isfinite(y)]
    if y.numel() == 0:
        raise ValueError("floor_y: cannot estimate the floor of an empty point cloud")
    if y.numel() > 2_000_000:
        # A strided subsample keeps the sort cheap for panoramas of tens of millions of pixels.
        y = y[:: math.ceil(y.numel() / 2_000_000)]
    k = max(1, int(math.ceil(top_fraction * y.numel())))
    top = torch.topk(y, k).values  # (k,) largest y
    lo, hi = float(top.min()), float(top.max())
    if hi - lo < bin_size:
        return float(top.mean())
    # Bins kept sparse (only the occupied ones): a cloud with absurd coordinates (a corrupted file) must not ask for
    # a dense histogram of 10**30 bins. Ties go to the lowest bin.
    _, inverse, counts = torch.unique(torch.floor((top - lo) / bin_size), return_inverse=True, return_counts=True)
    return float(top[inverse == counts.argmax()].mean())


def _erode(free: torch.Tensor, radius: float, cell_size: float, outside: bool = False) -> torch.Tensor:
    """Cells (Gz, Gx) of ``free`` whose centre is farther than ``radius`` from the square of every cell not in it.

    Outside the grid counts as ``outside`` (default: not in ``free``, so free space never touches the border).
    """
    r = int(math.ceil(radius / cell_size))
    if r <= 0:
        return free
    d = torch.arange(-r, r + 1, dtype=torch.float32, device=free.device)
    gap = (d.abs() - 0.5).clamp(min=0.0) * cell_size  # per-axis distance from a cell centre to a neighbour's square
    kernel = ((gap[:, None] ** 2 + gap[None, :] ** 2) < radius**2).float()  # (2r+1, 2r+1) disk
    blocked = F.pad((~free).float()[None, None], (r, r, r, r), value=0.0 if outside else 1.0)
    return F.conv2d(blocked, kernel[None, None])[0, 0] < 0.5  # (Gz, Gx): no blocked cell under the disk


def obstacle_cores(free: torch.Tensor, agent_radius: float, cell_size: float) -> torch.Tensor:
    """The obstacles of a navigation grid with the agent's dilation undone: (Gz, Gx) bool.

    ``free`` marks where the agent's centre may stand, obstacles grown by ``agent_radius``
    (:class:`~worldfm_env.scenes.scene.NavigationGrid`). A blocked cell is a core cell when no free cell lies
    within ``agent_radius`` of its centre (outside the grid counts as obstacle): an erosion of the blocked cells
    by the disk that dilated them. What is left approximates the obstacles' own footprints (walls and furniture
    at cell precision; the cell of an inner corner and a gap narrower than the agent's diameter, which the
    dilation closed, stay closed).
    """
    return _erode(~free, agent_radius, cell_size, outside=True)


def obstacle_footprints(grid: NavigationGrid) -> torch.Tensor:
    """(Gz, Gx) bool: the cells a grid's obstacles cover, before the agent's dilation.

    The grid's own record (``NavigationGrid.occupied``, which every built-in source writes) where it has one;
    otherwise (a scene file written before the field) :func:`obstacle_cores` of its free cells. The cores lose what
    the erosion cannot tell from the dilation: a wall one cell thick whose cells all lie within ``agent_radius`` of
    a free cell's square vanishes, and a ray cast against the cores passes through it.
    """
    if grid.occupied is not None:
        return grid.occupied
    warnings.warn(
        "a navigation grid without recorded obstacle footprints (NavigationGrid.occupied: a scene file written before "
        "the field): its layout falls back to the obstacle cores, which lose walls one cell thick; build or import "
        "the scene again to record them",
        stacklevel=2,
    )
    return obstacle_cores(grid.free, grid.agent_radius, grid.cell_size)


def grid_obstacles(
    grids: list[NavigationGrid], device: torch.device | str, obstacles: str = "footprints"
) -> torch.Tensor:
    """(S, Gz, Gx) bool: the obstacle cells of every grid, padded to the largest grid (cells outside a grid's own
    extent are obstacles), on ``device``; what :class:`~worldfm_env.render.layout.LayoutDepth` casts rays against.
    ``obstacles`` (:data:`LAYOUT_OBSTACLES_VALUES`): ``"footprints"`` (:func:`obstacle_footprints`) or ``"cores"``
    (:func:`obstacle_cores`, what layout frame models trained before the footprints existed read). The padding is a
    :class:`~worldfm_env.scenes.pool.ScenePool`'s, so scene ``i`` of a pool is row ``i``."""
    if obstacles not in LAYOUT_OBSTACLES_VALUES:
        raise ValueError(f"obstacles={obstacles!r} is not valid; choose one of {list(LAYOUT_OBSTACLES_VALUES)}")
    Gz = max(g.shape[0] for g in grids)
    Gx = max(g.shape[1] for g in grids)
    out = torch.ones(len(grids), Gz, Gx, dtype=torch.bool, device=device)
    for i, g in enumerate(grids):
        cells = (
            obstacle_footprints(g) if obstacles == "footprints" else obstacle_cores(g.free, g.agent_radius, g.cell_size)
        )
        out[i, : g.shape[0], : g.shape[1]] = cells.to(device)
    return out


def grid_obstacle_heights(grids: list[NavigationGrid], device: torch.device | str) -> torch.Tensor:
    """(S, Gz, Gx) float32: the height above the floor of what stands on every grid's obstacle cells
    (:attr:`NavigationGrid.occupied_height`), padded as :func:`grid_obstacles`; ``inf`` (floor to ceiling) for a grid
    that records none and outside a grid's own extent."""
    Gz = max(g.shape[0] for g in grids)
    Gx = max(g.shape[1] for g in grids)
    out = torch.full((len(grids), Gz, Gx), torch.inf, dtype=torch.float32, device=device)
    for i, g in enumerate(grids):
        if g.occupied_height is not None:
            out[i, : g.shape[0], : g.shape[1]] = g.occupied_height.to(device)
    return out


def pool_obstacles(pool: ScenePool, obstacles: str = "footprints") -> torch.Tensor:
    """:func:`grid_obstacles` of every scene of a pool, on its device."""
    return grid_obstacles([scene.navigation_grid for scene in pool.scenes], pool.device, obstacles)


def grid_layout_depth(
    grids: list[NavigationGrid],
    device: torch.device | str,
    num_envs: int,
    height: int,
    width: int,
    obstacles: str = "footprints",
    ceiling: bool | None = None,
    heights: bool | None = None,
) -> LayoutDepth:
    """The :class:`~worldfm_env.render.layout.LayoutDepth` of navigation grids (:func:`grid_obstacles` of kind
    ``obstacles``, their origins, cell sizes and floor heights) for ``num_envs`` cameras of ``height`` x ``width``
    pixels; scene index ``i`` of a render is ``grids[i]``.

    ``ceiling``: whether upward rays stop at the grids' ceiling planes (:attr:`NavigationGrid.ceiling_y`, where a
    grid records one). ``heights``: whether obstacles stand only as high as the grids record
    (:attr:`NavigationGrid.occupied_height`, so rays pass over furniture) instead of floor to ceiling. None: the kind's
    own layout (:data:`LAYOUT_OBSTACLES_VALUES`): ``"footprints"`` has the ceiling and the heights, ``"cores"`` (the
    layout older layout models were trained on) has neither."""
    for name, value in (("ceiling", ceiling), ("heights", heights)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not valid; choose True, False or None (the obstacles kind's own)")
    if ceiling is None:
        ceiling = obstacles == "footprints"
    if heights is None:
        heights = obstacles == "footprints"
    f32 = dict(dtype=torch.float32, device=device)
    ceilings = [g.ceiling_y if ceiling and g.ceiling_y is not None else -math.inf for g in grids]
    return LayoutDepth(
        grid_obstacles(grids, device, obstacles),
        torch.tensor([list(g.origin) for g in grids], **f32),
        torch.tensor([g.cell_size for g in grids], **f32),
        torch.tensor([g.floor_y for g in grids], **f32),
        num_envs,
        height,
        width,
        ceiling_y=torch.tensor(ceilings, **f32),
        obstacle_height=grid_obstacle_heights(grids, device) if heights else None,
    )


def pool_layout_depth(
    pool: ScenePool,
    num_envs: int,
    height: int,
    width: int,
    obstacles: str = "footprints",
    ceiling: bool | None = None,
    heights: bool | None = None,
) -> LayoutDepth:
    """:func:`grid_layout_depth` of a pool's scenes (scene index ``i`` is the pool's scene ``i``)."""
    grids = [scene.navigation_grid for scene in pool.scenes]
    return grid_layout_depth(grids, pool.device, num_envs, height, width, obstacles, ceiling, heights)


class FreeSpace:
    """The space a navigation grid lets the agent walk through, for every scene of a pool: over a cell where the
    agent's centre may stand (``NavigationGrid.free``, whose obstacles are dilated by the agent's radius) and whose
    eight neighbours are such cells too, between two heights above the floor. No surface of the scene lies there
    (the grid blocks every cell that holds one within the body's height); a generated point there floats.

    Args:
        grids: the scenes' navigation grids (scene ``i`` is ``grids[i]``).
        device: where the padded grids live.
    """

    def __init__(self, grids: list[NavigationGrid], device: torch.device | str) -> None:
        Gz = max(g.shape[0] for g in grids)
        Gx = max(g.shape[1] for g in grids)
        free = torch.zeros(len(grids), 1, Gz, Gx, device=device)
        for i, g in enumerate(grids):
            free[i, 0, : g.shape[0], : g.shape[1]] = g.free.to(device=device, dtype=torch.float32)
        # One cell of margin: a surface's cell may touch a free one after the grid's quantisation.
        # Outside a grid counts as blocked.
        padded = torch.nn.functional.pad(free, (1, 1, 1, 1), value=0.0)
        self.clear = -torch.nn.functional.max_pool2d(-padded, 3, stride=1)[:, 0] > 0.5  # (S, Gz, Gx)
        f32 = dict(dtype=torch.float32, device=device)
        self.origin = torch.tensor([list(g.origin) for g in grids], **f32)  # (S, 2) world (x0, z0)
        self.cell_size = torch.tensor([g.cell_size for g in grids], **f32)
        self.floor_y = torch.tensor([g.floor_y for g in grids], **f32)

    def contains(self, points: torch.Tensor, scene_index: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """(N, P) bool: which of the world points (N, P, 3) of env ``n`` (in scene ``scene_index[n]``) lie in the
        free space, strictly between ``low`` and ``high`` above the floor (+y is down)."""
        s = scene_index.long().to(points.device)
        cell = self.cell_size[s][:, None]
        origin = self.origin[s]
        col = torch.floor((points[..., 0] - origin[:, None, 0]) / cell).long()
        row = torch.floor((points[..., 2] - origin[:, None, 1]) / cell).long()
        rows, cols = self.clear.shape[1:]
        inside = (row >= 0) & (col >= 0) & (row < rows) & (col < cols)
        clear = self.clear[s[:, None], row.clamp(0, rows - 1), col.clamp(0, cols - 1)]
        height = self.floor_y[s][:, None] - points[..., 1]
        return inside & clear & (height > low) & (height < high)


def navigation_grid_from_points(
    xyz: torch.Tensor,
    cell_size: float = 0.1,
    floor_y: float | None = None,
    camera_height: float | None = None,
    agent_height: float = 1.5,
    agent_radius: float = 0.18,
    step_height: float = 0.2,
    floor_band: float = 0.05,
    top_fraction: float = 0.3,
    unobserved_is_free: bool = False,
    include_xz: torch.Tensor | Sequence[Sequence[float]] | None = None,
    ceiling_y: float | None = None,
) -> NavigationGrid:
    """Top-down free space of a point cloud from a height slice above the floor.

    A cell is *observed floor* when it holds a point within ``floor_band`` of ``floor_y``; it is
    *occupied* when it holds a point whose height above the floor is in
    ``(step_height, max(agent_height, camera_height)]`` (anything the body or the camera would hit;
    lower points are steps the agent walks over). Free = observed floor and not occupied (or simply
    not occupied when ``unobserved_is_free``), then eroded by ``agent_radius``: a cell stays free only
    if no blocked cell (occupied, unobserved, or outside the grid) lies within ``agent_radius`` of its
    centre. The grid covers the x-z bounding box of the points (plus ``include_xz``).

    Args:
        xyz: (P, 3) float world points (gravity +y).
        cell_size: edge of a square cell in scene units.
        floor_y: world y of the floor; estimated with :func:`estimate_floor_y` when None.
        camera_height: height of the agent's camera above the floor; raises the obstacle slice's top
            to it when larger than ``agent_height``.
        agent_height: height of the agent's body.
        agent_radius: radius of the agent's footprint; obstacles are dilated by it.
        step_height: points up to this height above the floor do not block.
        floor_band: half-thickness of the slab around ``floor_y`` that counts as floor.
        top_fraction: fraction of the lowest points (largest y) searched for the floor layer.
        unobserved_is_free: treat cells with no floor point as free (for single views whose floor
            near the camera is outside the image).
        include_xz: (M, 2) world (x, z) positions the grid must cover (e.g. camera centres).
        ceiling_y: world y of a flat ceiling, when known (kept as :attr:`NavigationGrid.ceiling_y`; not estimated:
            a cloud's highest points need not be a ceiling).

    Returns:
        The :class:`NavigationGrid`.

    Raises:
        ValueError: bad parameters, an empty cloud, or no free cell left ("no free space").
    """
    if cell_size <= 0:
        raise ValueError(f"cell_size must be positive (scene units), got {cell_size}")
    if agent_radius < 0 or agent_height <= 0 or step_height < 0 or floor_band <= 0:
        raise ValueError(
            "navigation grid parameters must satisfy agent_radius >= 0, agent_height > 0, step_height >= 0, "
            f"floor_band > 0; got agent_radius={agent_radius}, agent_height={agent_height}, "
            f"step_height={step_height}, floor_band={floor_band}"
        )
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (P, 3) points, got shape {tuple(xyz.shape)}")
    pts = xyz.float()
    pts = pts[torch.isfinite(pts).all(dim=1)]
    if pts.shape[0] == 0:
        raise ValueError("xyz: the point cloud is empty (no finite points); cannot build a navigation grid")
    device = pts.device
    if floor_y is None:
        floor_y = estimate_floor_y(pts, top_fraction=top_fraction)
    floor_y = float(floor_y)

    # Grid extent: the x-z bounding box of the points, plus any position that must be inside it.
    xz = pts[:, [0, 2]]  # (P, 2)
    lo, hi = xz.min(0).values, xz.max(0).values
    if include_xz is not None:
        extra = torch.as_tensor(include_xz, dtype=torch.float32, device=device).reshape(-1, 2)
        if extra.shape[0] > 0:
            lo = torch.minimum(lo, extra.min(0).values)
            hi = torch.maximum(hi, extra.max(0).values)
    x0, z0 = float(lo[0]), float(lo[1])
    gx = int(math.floor((float(hi[0]) - x0) / cell_size)) + 1
    gz = int(math.floor((float(hi[1]) - z0) / cell_size)) + 1
    if gx * gz > MAX_GRID_CELLS:
        raise ValueError(
            f"xyz: the points span {float(hi[0]) - x0:.3g} x {float(hi[1]) - z0:.3g} scene units in x and z, a "
            f"{gz} x {gx} navigation grid at cell_size={cell_size}; at most {MAX_GRID_CELLS} cells are supported "
            "(check the file's coordinates and scale, or pass a larger cell_size)"
        )
    col = ((xz[:, 0] - x0) / cell_size).floor().long().clamp(0, gx - 1)
    row = ((xz[:, 1] - z0) / cell_size).floor().long().clamp(0, gz - 1)
    flat = row * gx + col  # (P,)

    height = floor_y - pts[:, 1]  # (P,) height above the floor (y points down)
    top = max(agent_height, camera_height or 0.0)
    is_floor = height.abs() <= floor_band
    is_obstacle = (height > step_height) & (height <= top)
    observed = torch.bincount(flat[is_floor], minlength=gz * gx).reshape(gz, gx) > 0
    occupied = torch.bincount(flat[is_obstacle], minlength=gz * gx).reshape(gz, gx) > 0
    free = ~occupied if unobserved_is_free else observed & ~occupied
    blocked = ~free  # the obstacles' own cells, before the dilation (NavigationGrid.occupied)

    # Erode by the agent radius: a cell is blocked if the agent's disk (centred on the cell centre)
    # touches any blocked cell's square. Outside the grid counts as blocked (padding value 1).
    free = _erode(free, agent_radius, cell_size)
    if not bool(free.any()):
        raise ValueError(
            f"navigation grid: no free space: {int(observed.sum())} observed floor cells at floor_y={floor_y:.3f}, "
            f"{int(occupied.sum())} occupied cells, agent_radius={agent_radius}, cell_size={cell_size}. "
            "The point cloud needs a visible floor (a dense layer at the largest y) with room to stand; "
            "pass floor_y explicitly or a smaller agent_radius/cell_size"
        )
    return NavigationGrid(
        free=free,
        origin=(x0, z0),
        cell_size=float(cell_size),
        floor_y=floor_y,
        agent_radius=float(agent_radius),
        occupied=blocked,
        ceiling_y=None if ceiling_y is None else float(ceiling_y),
    )


# --------------------------------------------------------------------------------------------------
# grids from obstacle footprints (procedural scenes)
# --------------------------------------------------------------------------------------------------


def _covered_mask(rects: np.ndarray, gx: int, gz: int, cell_size: float) -> np.ndarray:
    """(Gz, Gx) bool: the cells that stand for rects (R, 4) = (x0, x1, z0, z1) in a grid whose cell (0, 0) has its
    corner at the origin: along each axis, the cells whose centre lies in ``[lo, hi)``, or, where a rect is too thin
    to hold a centre, the one cell holding its middle. So a wall of any thickness keeps a row of cells, and a wall
    on a cell boundary takes one row, not the two it touches (its faces stay within half a cell of the true ones).
    """
    out = np.zeros((gz, gx), dtype=bool)

    def cells(lo: float, hi: float, n: int) -> slice:
        # centre (k + 0.5) * cell_size in [lo, hi); rounded so that float noise on a boundary cannot drop a row
        first = math.ceil(round(lo / cell_size - 0.5, 6))
        last = math.ceil(round(hi / cell_size - 0.5, 6)) - 1
        if last < first:
            first = last = math.floor((lo + hi) / 2 / cell_size)
        return slice(max(first, 0), max(min(last + 1, n), 0))

    for x0, x1, z0, z1 in np.asarray(rects, dtype=np.float64).reshape(-1, 4):
        out[cells(z0, z1, gz), cells(x0, x1, gx)] = True
    return out


def _blocked_mask(rects: np.ndarray, xs: np.ndarray, zs: np.ndarray, radius: float) -> np.ndarray:
    """(Gz, Gx) bool: cell centres closer than ``radius`` to any rect (R, 4) = (x0, x1, z0, z1)."""
    if len(rects) == 0:
        return np.zeros((len(zs), len(xs)), dtype=bool)
    dx = np.maximum(np.maximum(rects[:, 0:1] - xs[None], xs[None] - rects[:, 1:2]), 0.0)  # (R, Gx)
    dz = np.maximum(np.maximum(rects[:, 2:3] - zs[None], zs[None] - rects[:, 3:4]), 0.0)  # (R, Gz)
    # Exact Minkowski sum of each rectangle with the agent's disc: distance to the rect < radius.
    if radius <= 0:  # no dilation: the footprints themselves
        return ((dz[:, :, None] + dx[:, None, :]) <= 0.0).any(0)
    out = np.zeros((len(zs), len(xs)), dtype=bool)
    r2 = radius * radius
    for k in range(0, len(rects), 64):  # chunks bound the (chunk, Gz, Gx) temporary
        out |= ((dz[k : k + 64, :, None] ** 2 + dx[k : k + 64, None, :] ** 2) < r2).any(0)
    return out


def _largest_component(free: np.ndarray) -> tuple[np.ndarray, int]:
    """Mask of the largest 4-connected component of ``free`` and the number of components."""
    try:
        from scipy import ndimage

        labels, n = ndimage.label(free)
    except ImportError:  # pragma: no cover - scipy is optional
        labels, n = _label_bfs(free)
    if n == 0:
        return free.copy(), 0
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts)), int(n)


def _label_bfs(free: np.ndarray) -> tuple[np.ndarray, int]:  # pragma: no cover - fallback without scipy
    from collections import deque

    labels = np.zeros(free.shape, dtype=np.int32)
    n = 0
    H, W = free.shape
    for r0, c0 in zip(*np.nonzero(free), strict=True):
        if labels[r0, c0]:
            continue
        n += 1
        labels[r0, c0] = n
        q = deque([(r0, c0)])
        while q:
            r, c = q.popleft()
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < H and 0 <= cc < W and free[rr, cc] and not labels[rr, cc]:
                    labels[rr, cc] = n
                    q.append((rr, cc))
    return labels, n


# --------------------------------------------------------------------------------------------------
# geodesic distance fields
# --------------------------------------------------------------------------------------------------

UNREACHABLE = float("inf")
_BIG = 1.0e30


@wp.kernel
def _relax_kernel(
    free: wp.array3d(dtype=wp.uint8),  # (G, Gz, Gx)
    dist: wp.array3d(dtype=wp.float32),  # (G, Gz, Gx) updated in place
    reverse: int,
    changed: wp.array(dtype=wp.int32),  # (1,)
):
    g, i, j = wp.tid()
    rows = dist.shape[1]
    cols = dist.shape[2]
    if reverse == 1:
        i = rows - 1 - i
        j = cols - 1 - j
    if free[g, i, j] == wp.uint8(0):
        return
    best = dist[g, i, j]
    for di in range(-2, 3):
        for dj in range(-2, 3):
            adi = wp.abs(di)
            adj = wp.abs(dj)
            if (adi == 0 and adj == 0) or (adi == 2 and adj != 1) or (adj == 2 and adi != 1):
                continue  # 16 neighbours: the 8 around plus the 8 knight moves
            ni = i + di
            nj = j + dj
            if ni < 0 or nj < 0 or ni >= rows or nj >= cols:
                continue
            if free[g, ni, nj] == wp.uint8(0):
                continue
            # The straight segment must stay on free cells: the two cells it passes between.
            si = int(wp.sign(float(di)))
            sj = int(wp.sign(float(dj)))
            if adi == 1 and adj == 1:
                if free[g, i + di, j] == wp.uint8(0) or free[g, i, j + dj] == wp.uint8(0):
                    continue
            elif adj == 2:
                if free[g, i, j + sj] == wp.uint8(0) or free[g, i + di, j + sj] == wp.uint8(0):
                    continue
            elif adi == 2:
                if free[g, i + si, j] == wp.uint8(0) or free[g, i + si, j + dj] == wp.uint8(0):
                    continue
            candidate = dist[g, ni, nj] + wp.sqrt(float(adi * adi + adj * adj))
            if candidate < best:
                best = candidate
    if best < dist[g, i, j]:
        dist[g, i, j] = best
        changed[0] = 1


def geodesic_distance(
    free: torch.Tensor, sources: torch.Tensor, cell_size: float = 1.0, max_sweeps: int = 100000
) -> torch.Tensor:
    """Shortest-path distance from source cells to every cell, batched.

    Args:
        free: (Gz, Gx) or (G, Gz, Gx) bool grids of free cells.
        sources: (G, 2) long (row, col) of one source cell per field (each must be free), or (2,)
            for a single field. With a 2-D ``free`` all G fields share the grid.
        cell_size: scene units per cell; distances are multiplied by it.
        max_sweeps: safety bound on relaxation sweeps.

    Returns:
        (G, Gz, Gx) float32 distances in scene units (``inf`` where unreachable or blocked); (Gz, Gx)
        when ``sources`` was (2,).
    """
    single = sources.ndim == 1
    if single:
        sources = sources[None]
    if sources.ndim != 2 or sources.shape[1] != 2:
        raise ValueError(f"sources must be (G, 2) (row, col) cells, got {tuple(sources.shape)}")
    G = sources.shape[0]
    if free.ndim == 2:
        free = free[None].expand(G, *free.shape)
    if free.ndim != 3 or free.shape[0] != G:
        raise ValueError(f"free must be (Gz, Gx) or ({G}, Gz, Gx), got {tuple(free.shape)}")
    device = free.device
    rows, cols = free.shape[1], free.shape[2]
    r, c = sources[:, 0].long(), sources[:, 1].long()
    if ((r < 0) | (r >= rows) | (c < 0) | (c >= cols)).any():
        raise ValueError(f"source cells must lie inside the {rows}x{cols} grid, got {sources.tolist()}")
    gi = torch.arange(G, device=device)
    if not bool(free[gi, r, c].all()):
        raise ValueError("every source cell must be free")
    free_u8 = free.to(torch.uint8).contiguous()
    dist = torch.full((G, rows, cols), _BIG, dtype=torch.float32, device=device)
    dist[gi, r, c] = 0.0
    changed = torch.zeros(1, dtype=torch.int32, device=device)
    wdev = warp_device(device)
    wp_free = wp.from_torch(free_u8)
    wp_dist = wp.from_torch(dist)
    wp_changed = wp.from_torch(changed)
    for sweep in range(max_sweeps):
        changed.zero_()
        wp.launch(_relax_kernel, dim=(G, rows, cols), inputs=[wp_free, wp_dist, sweep % 2, wp_changed], device=wdev)
        if int(changed.item()) == 0:
            break
    dist = torch.where(dist >= _BIG * 0.5, torch.full_like(dist, UNREACHABLE), dist * cell_size)
    return dist[0] if single else dist


# --------------------------------------------------------------------------------------------------
# per-pool navigation data
# --------------------------------------------------------------------------------------------------


class NavigationData:
    """Navigation tensors of every scene of a pool, padded to one grid shape.

    Attributes (S scenes, grid Gz x Gx, G goal candidates):
        free: (S, Gz, Gx) bool.
        main: (S, Gz, Gx) bool, the largest connected free component of each scene.
        main_cells: (S, Fmax) long flat indices of main-component cells (padded by repetition).
        main_count: (S,) long number of main-component cells.
        start_region: (S, Gz, Gx) bool, where episodes start: in a sparsely captured scene (``info["capture"]``,
            see :mod:`worldfm_env.scenes.capture`) the main-component cells within ``start_radius`` of a capture
            camera centre and in straight line of sight of it on free cells; elsewhere the whole main component.
        start_cells: (S, Smax) long flat indices of ``start_region`` cells (padded by repetition); for a scene
            without a capture identical to ``main_cells``' row.
        start_count: (S,) long number of ``start_region`` cells.
        seen: (S, Gz, Gx) bool, free cells whose floor the scene's point cloud covers (a point within
            :data:`SEEN_FLOOR_BAND` of the floor in the cell): what the captured memory saw of the floor.
        goal_cells: (S, G) long flat indices of goal candidates (main component).
        goal_fields: (S, G, Gz*Gx) float32 geodesic distance to each candidate, scene units, inf unreachable.

    Args:
        pool: the scenes.
        goal_candidates: G.
        with_goal_fields: build ``goal_cells`` and ``goal_fields`` (PointNav).
        goal_outside_capture: draw goal candidates from main-component cells farther than
            :data:`GOAL_MARGIN_FROM_SEEN` (per axis) from every ``seen`` cell; a scene without one falls back to
            the whole main component with a warning.
        goal_distance: (min, max) start-goal geodesic distance of the task. In a captured scene (or with
            ``goal_outside_capture``) candidates in that range of a capture camera centre are preferred; when a
            scene has none, the candidates closest to the range are taken. A scene without a capture and without
            ``goal_outside_capture`` draws its candidates uniformly from the main component, as always.
        start_radius: the ``start_region`` radius.
    """

    def __init__(
        self,
        pool: ScenePool,
        goal_candidates: int = 32,
        with_goal_fields: bool = True,
        goal_outside_capture: bool = False,
        goal_distance: tuple[float, float] = (0.0, math.inf),
        start_radius: float = CAPTURE_START_RADIUS,
    ) -> None:
        self.pool = pool
        self.device = pool.device
        self.free = pool.nav_free
        S, Gz, Gx = self.free.shape
        self.shape = (Gz, Gx)
        main = torch.zeros_like(self.free)
        for s in range(S):
            main[s] = self._main_component(s)
        self.main = main
        self.main_cells, self.main_count = self._pack_cells(main)
        counts, cells = self.main_count, self.main_cells
        self.seen = torch.stack([self._seen_cells(s) for s in range(S)])
        start = main.clone()
        for s in range(S):
            centres = self._capture_centres(s)
            if centres is not None:
                region = self._start_region(s, centres, start_radius) & main[s]
                if bool(region.any()):
                    start[s] = region
        self.start_region = start
        self.start_cells, self.start_count = self._pack_cells(start)
        if with_goal_fields:
            goal_cells = torch.zeros(S, goal_candidates, dtype=torch.long, device=self.device)
            fields = torch.zeros(S, goal_candidates, Gz * Gx, dtype=torch.float32, device=self.device)
            for s in range(S):
                # Goal candidates are fixed per scene (not per env seed), spread by a seeded permutation.
                gen = torch.Generator().manual_seed(7919 * (s + 1))
                if self._capture_centres(s) is None and not goal_outside_capture:
                    pick = torch.randperm(int(counts[s]), generator=gen)[:goal_candidates]
                    pick = pick.repeat((goal_candidates + pick.numel() - 1) // pick.numel())[:goal_candidates]
                    flat = cells[s, pick.to(self.device)]
                else:
                    flat = self._capture_goal_cells(s, goal_candidates, gen, goal_outside_capture, goal_distance)
                goal_cells[s] = flat
                rc = torch.stack([flat // Gx, flat % Gx], dim=-1)
                fields[s] = geodesic_distance(self.free[s], rc, float(pool.nav_cell_size[s])).flatten(1)
            self.goal_cells = goal_cells
            self.goal_fields = fields

    def _pack_cells(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices (S, Fmax) of the True cells of each scene's ``mask`` (padded by repetition), and counts."""
        S = mask.shape[0]
        counts = mask.flatten(1).sum(1)
        cells = torch.zeros(S, int(counts.max()), dtype=torch.long, device=self.device)
        for s in range(S):
            idx = torch.nonzero(mask[s].flatten(), as_tuple=False)[:, 0]
            cells[s, : idx.numel()] = idx
            cells[s, idx.numel() :] = idx[0]
        return cells, counts.long()

    def _capture_centres(self, s: int) -> torch.Tensor | None:
        """(C, 2) world (x, z) of scene ``s``'s capture camera centres, or None for a scene without a capture."""
        capture = self.pool.scenes[s].info.get("capture")
        if not isinstance(capture, dict) or not capture.get("positions"):
            return None
        xyz = torch.tensor(capture["positions"], dtype=torch.float32, device=self.device).reshape(-1, 3)
        return xyz[:, [0, 2]]

    def _seen_cells(self, s: int) -> torch.Tensor:
        """(Gz, Gx) bool: free cells of scene ``s`` holding a point within :data:`SEEN_FLOOR_BAND` of its floor."""
        scene = self.pool.scenes[s]
        grid = scene.navigation_grid
        Gz, Gx = self.shape
        xyz = scene.points_xyz
        floor = xyz[(xyz[:, 1] - grid.floor_y).abs() <= SEEN_FLOOR_BAND]
        col = torch.floor((floor[:, 0] - grid.origin[0]) / grid.cell_size).long()
        row = torch.floor((floor[:, 2] - grid.origin[1]) / grid.cell_size).long()
        inside = (row >= 0) & (row < Gz) & (col >= 0) & (col < Gx)
        covered = torch.bincount((row * Gx + col)[inside], minlength=Gz * Gx).reshape(Gz, Gx) > 0
        return covered & self.free[s]

    def _start_region(self, s: int, centres: torch.Tensor, radius: float) -> torch.Tensor:
        """(Gz, Gx) bool: cells of scene ``s`` within ``radius`` of a centre (C, 2) whose straight segment to that
        centre stays on free cells (sampled at least every half cell)."""
        Gz, Gx = self.shape
        free = self.free[s]
        cs = float(self.pool.nav_cell_size[s])
        ox, oz = (float(v) for v in self.pool.nav_origin[s])
        reach = int(math.ceil(radius / cs)) + 1
        offsets = torch.arange(-reach, reach + 1, device=self.device)
        samples = torch.linspace(0.0, 1.0, 2 * reach + 2, device=self.device)  # (T,): under half a cell apart
        region = torch.zeros(Gz, Gx, dtype=torch.bool, device=self.device)
        for x, z in centres.tolist():
            fc, fr = (x - ox) / cs - 0.5, (z - oz) / cs - 0.5  # centre in cell-index units
            rows = (round(fr) + offsets)[:, None].expand(-1, offsets.numel())
            cols = (round(fc) + offsets)[None, :].expand(offsets.numel(), -1)
            rows, cols = rows.flatten(), cols.flatten()
            near = torch.hypot((rows - fr) * cs, (cols - fc) * cs) <= radius
            # Cell of every sample along the segment from the cell centre to the camera centre.
            sr = torch.floor(rows[:, None] + samples[None] * (fr - rows[:, None]) + 0.5).long()
            sc = torch.floor(cols[:, None] + samples[None] * (fc - cols[:, None]) + 0.5).long()
            ok = (sr >= 0) & (sr < Gz) & (sc >= 0) & (sc < Gx)
            ok = ok & free[sr.clamp(0, Gz - 1), sc.clamp(0, Gx - 1)]
            keep = near & ok.all(dim=1)
            region[rows[keep], cols[keep]] = True
        return region

    def _capture_goal_cells(
        self,
        s: int,
        count: int,
        gen: torch.Generator,
        outside: bool,
        goal_distance: tuple[float, float],
    ) -> torch.Tensor:
        """(count,) flat goal cells of scene ``s``: main-component cells (outside what the capture saw when
        ``outside``), preferring those within ``goal_distance`` of a capture camera centre (see the class)."""
        Gz, Gx = self.shape
        main = self.main[s]
        eligible = main
        if outside:
            margin = int(math.ceil(GOAL_MARGIN_FROM_SEEN / float(self.pool.nav_cell_size[s])))
            seen = self.seen[s][None, None].float()
            near_seen = F.max_pool2d(seen, 2 * margin + 1, stride=1, padding=margin)[0, 0] > 0
            unseen = main & ~near_seen
            if bool(unseen.any()):
                eligible = unseen
            else:
                warnings.warn(
                    f"goal_outside_capture=True: scene {self.pool.scenes[s].name!r} has no reachable cell that its "
                    "capture did not see; its goals are drawn from every reachable cell",
                    stacklevel=3,
                )
        idx = torch.nonzero(eligible.flatten(), as_tuple=False)[:, 0]  # (E,) row-major
        violation = torch.zeros(idx.numel(), device=self.device)
        centres = self._capture_centres(s)
        if centres is not None:
            cs = float(self.pool.nav_cell_size[s])
            origin = self.pool.nav_origin[s]
            # Distances from up to 16 camera centres spread along the capture (a goal in range of one suffices).
            centres = centres[torch.linspace(0, centres.shape[0] - 1, min(16, centres.shape[0])).round().long()]
            rc = torch.stack(
                [
                    torch.floor((centres[:, 1] - origin[1]) / cs).long().clamp(0, Gz - 1),
                    torch.floor((centres[:, 0] - origin[0]) / cs).long().clamp(0, Gx - 1),
                ],
                dim=-1,
            )
            rc = rc[main[rc[:, 0], rc[:, 1]]]
            if rc.shape[0] > 0:
                d = geodesic_distance(main, rc, cs).flatten(1)[:, idx]  # (C, E)
                lo, hi = goal_distance
                violation = (torch.relu(lo - d) + torch.relu(d - hi)).min(dim=0).values
        order = torch.randperm(idx.numel(), generator=gen).to(self.device)
        preferred = order[violation[order] == 0]
        if preferred.numel() > 0:
            pick = preferred[:count]
            pick = pick.repeat((count + pick.numel() - 1) // pick.numel())[:count]
        else:  # nothing in range: the candidates closest to it (ties in the seeded order)
            ranked = order[torch.sort(violation[order], stable=True).indices]
            pick = ranked[:count]
            pick = pick.repeat((count + pick.numel() - 1) // pick.numel())[:count]
        return idx[pick]

    def _main_component(self, s: int) -> torch.Tensor:
        free = self.free[s]
        remaining = free.clone()
        best = torch.zeros_like(free)
        total = int(free.sum())
        # Flood from free cells until the largest component found covers over half of what is left.
        while int(remaining.sum()) > int(best.sum()):
            idx = torch.nonzero(remaining.flatten(), as_tuple=False)[0, 0]
            src = torch.stack([idx // free.shape[1], idx % free.shape[1]])
            component = torch.isfinite(geodesic_distance(free, src))
            if int(component.sum()) > int(best.sum()):
                best = component
            remaining &= ~component
            if int(best.sum()) * 2 >= total:
                break
        return best

    def cell_to_world(self, scene: torch.Tensor, flat_cell: torch.Tensor) -> torch.Tensor:
        """World (x, z) (N, 2) of the centres of flat cell indices in each env's scene."""
        Gx = self.shape[1]
        row = (flat_cell // Gx).float()
        col = (flat_cell % Gx).float()
        cs = self.pool.nav_cell_size[scene]
        origin = self.pool.nav_origin[scene]
        return torch.stack([origin[:, 0] + (col + 0.5) * cs, origin[:, 1] + (row + 0.5) * cs], dim=-1)

    def is_free(self, scene: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Whether world points (x, z) (N, ...) are on free cells of each env's scene (N,)."""
        Gz, Gx = self.shape
        shape = x.shape
        cs = self.pool.nav_cell_size[scene].view(-1, *([1] * (x.ndim - 1)))
        ox = self.pool.nav_origin[scene, 0].view_as(cs)
        oz = self.pool.nav_origin[scene, 1].view_as(cs)
        col = torch.floor((x - ox) / cs).long()
        row = torch.floor((z - oz) / cs).long()
        inside = (row >= 0) & (row < Gz) & (col >= 0) & (col < Gx)
        flat = row.clamp(0, Gz - 1) * Gx + col.clamp(0, Gx - 1) + scene.view_as(cs).long() * (Gz * Gx)
        return self.free.reshape(-1)[flat.reshape(-1)].reshape(shape) & inside

    def segment_free(
        self, scene: torch.Tensor, start: torch.Tensor, end: torch.Tensor, fractions: torch.Tensor
    ) -> torch.Tensor:
        """Whether the straight segments start -> end (N, 3) world points stay on free cells (N,) bool, tested at
        ``fractions`` (K,) of the way along (0 and 1 included for the end points)."""
        xs = start[:, 0, None] + fractions * (end[:, 0] - start[:, 0])[:, None]
        zs = start[:, 2, None] + fractions * (end[:, 2] - start[:, 2])[:, None]
        return self.is_free(scene, xs, zs).all(dim=1)

    def interpolate_field(
        self, fields: torch.Tensor, row: torch.Tensor, scene: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """Geodesic distance (N,) at continuous positions; env i reads field ``fields[row[i]]``.

        ``fields`` is (R, Gz*Gx) (e.g. all goal fields flattened to (S*G, Gz*Gx)); no per-env copy is made.

        The minimum over the 2x2 cell centres around the point of field + straight-line offset,
        which is exact wherever those centres are in line of sight (always locally, on free cells).
        """
        Gz, Gx = self.shape
        cs = self.pool.nav_cell_size[scene]
        fx = (position[:, 0] - self.pool.nav_origin[scene, 0]) / cs - 0.5
        fz = (position[:, 2] - self.pool.nav_origin[scene, 1]) / cs - 0.5
        c0 = torch.floor(fx).long()
        r0 = torch.floor(fz).long()
        best = torch.full_like(fx, float("inf"))
        for dr in (0, 1):
            for dc in (0, 1):
                r = r0 + dr
                c = c0 + dc
                inside = (r >= 0) & (r < Gz) & (c >= 0) & (c < Gx)
                flat = r.clamp(0, Gz - 1) * Gx + c.clamp(0, Gx - 1) + row * (Gz * Gx)
                value = fields.reshape(-1)[flat]
                offset = torch.sqrt((fx - c.float()) ** 2 + (fz - r.float()) ** 2) * cs
                value = torch.where(inside, value + offset, torch.full_like(value, float("inf")))
                best = torch.minimum(best, value)
        return best
