"""The navigation layout's depth (warp kernel), the obstacle cores it casts against, and the env's depth bound."""

import math

import numpy as np
import pytest
import torch

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.render.anchor_config import AnchorConfig
from worldfm_env.render.layout import LayoutDepth
from worldfm_env.renderers.pipeline import CARVE_HEIGHTS, ObservationPipeline
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.navigation import (
    FreeSpace,
    _blocked_mask,
    _covered_mask,
    _erode,
    grid_layout_depth,
    obstacle_cores,
    pool_layout_depth,
)
from worldfm_env.scenes.pool import ScenePool
from worldfm_env.scenes.scene import NavigationGrid


def _pose(x: float, y: float, z: float, yaw: float, pitch: float) -> torch.Tensor:
    """Camera-to-world of an OpenCV camera at (x, y, z) turned by yaw about world y, then pitched about its x."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Ry = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    Rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    c2w = torch.eye(4)
    c2w[:3, :3] = Ry @ Rx
    c2w[:3, 3] = torch.tensor([x, y, z])
    return c2w


def _cameras_on_free_cells(obstacles, N, origin, cell, floor_y, gen, pitch_of) -> torch.Tensor:
    """(N, 4, 4) cameras 1.2 above the floor on random free cells (off their centres), at random yaws, pitched by
    ``pitch_of(u)`` for a uniform u."""
    free_cells = torch.nonzero(~obstacles)
    c2w = torch.empty(N, 4, 4)
    for i in range(N):
        r, c = free_cells[int(torch.randint(len(free_cells), (1,), generator=gen))].tolist()
        yaw = float(torch.rand(1, generator=gen)) * 2 * math.pi
        pitch = pitch_of(float(torch.rand(1, generator=gen)))
        c2w[i] = _pose(origin[0] + (c + 0.37) * cell, floor_y - 1.2, origin[1] + (r + 0.61) * cell, yaw, pitch)
    return c2w


def _procedural_views(scene, N: int, H: int, W: int, pitch: float, seed: int):
    """N eye-height cameras on random free cells of a procedural scene at random yaws, pitched by ``pitch`` (radians,
    up positive), 90-degree field of view: (c2w (N, 4, 4), K (3, 3), the mesh's true depth (N, H, W))."""
    from worldfm_env.render.raycast import MeshRaycaster

    grid = scene.navigation_grid
    gen = torch.Generator().manual_seed(seed)
    rows, cols = torch.nonzero(grid.free, as_tuple=True)
    pick = torch.randint(len(rows), (N,), generator=gen)
    x, z = grid.cell_center(rows[pick], cols[pick])
    pos = torch.stack([x, torch.full((N,), grid.floor_y - scene.camera_height), z], 1)
    c2w = pose_from_yaw_pitch(pos, torch.rand(N, generator=gen) * 2 * math.pi - math.pi, torch.full((N,), pitch))
    K = intrinsics_from_fov(W, H, 90.0)
    _, true = MeshRaycaster([scene.mesh], "cpu").render(torch.zeros(N, dtype=torch.int32), c2w, K, H, W)
    return c2w, K, true.reshape(N, H, W)


def _march(obstacles, origin, cell, floor_y, c2w, K_inv, H, W):
    """Brute force: walk each pixel ray in small z-depth steps until it leaves free cells or reaches the floor."""
    top = torch.where(obstacles, torch.tensor(-math.inf), torch.tensor(floor_y))
    return _march_heights(top, origin, cell, c2w, K_inv, H, W)


def test_layout_depth_matches_a_brute_force_march():
    """Random obstacle blocks in a 3 m x 2.4 m grid, cameras at free cells looking every way (pitched too): the
    kernel's cell walk gives the depth a fine march finds, to the march's step."""
    gen = torch.Generator().manual_seed(5)
    Gz, Gx, cell = 24, 30, 0.1
    obstacles = torch.zeros(Gz, Gx, dtype=torch.bool)
    for _ in range(6):
        r, c = int(torch.randint(0, Gz - 3, (1,), generator=gen)), int(torch.randint(0, Gx - 3, (1,), generator=gen))
        obstacles[r : r + 3, c : c + 2] = True
    N, H, W = 5, 12, 16
    origin, floor_y = (-1.0, 0.5), 0.2
    c2w = _cameras_on_free_cells(obstacles, N, origin, cell, floor_y, gen, lambda u: (u - 0.5) * 1.2)
    K = intrinsics_from_fov(W, H, 90.0)
    layout = LayoutDepth(
        obstacles[None], torch.tensor([origin]), torch.tensor([cell]), torch.tensor([floor_y]), N, H, W
    )
    depth = layout.render(torch.zeros(N, dtype=torch.long), c2w, torch.linalg.inv(K)).clone()
    truth = _march(obstacles, origin, cell, floor_y, c2w, torch.linalg.inv(K), H, W)
    assert (depth > 0).all()
    assert float((depth - truth).abs().max()) < 2e-3


def _march_heights(top, origin, cell, c2w, K_inv, H, W, step=5e-4, far=6.0):
    """Brute force with heights: a ray sample stops where it lies in an obstacle cell at or below the cell's top
    (``top``: world y of each cell's top, +inf where nothing stands, +y down), outside the grid, or under the floor
    (the top of an empty cell is the floor: pass ``floor_y`` there)."""
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ K_inv.T
    ts = torch.arange(1, int(far / step)) * step
    out = torch.zeros(c2w.shape[0], H * W)
    Gz, Gx = top.shape
    for i in range(c2w.shape[0]):
        pts = c2w[i, :3, 3] + ts[:, None, None] * (rays @ c2w[i, :3, :3].T)[None]  # (T, HW, 3)
        col = torch.floor((pts[..., 0] - origin[0]) / cell).long()
        row = torch.floor((pts[..., 2] - origin[1]) / cell).long()
        outside = (col < 0) | (row < 0) | (col >= Gx) | (row >= Gz)
        hit = outside | (pts[..., 1] >= top[row.clamp(0, Gz - 1), col.clamp(0, Gx - 1)])
        first = hit.float().argmax(0)
        out[i] = torch.where(hit.any(0), ts[first], torch.zeros(()))
    return out.reshape(-1, H, W)


def test_layout_depth_with_obstacle_heights_matches_a_brute_force_march():
    """Obstacle blocks of random heights (some floor to ceiling) in a 3 m x 2.4 m grid, cameras at eye height looking
    every way, mostly down: rays pass over the low blocks and meet their side or top faces where a fine march does."""
    gen = torch.Generator().manual_seed(7)
    Gz, Gx, cell = 24, 30, 0.1
    obstacles = torch.zeros(Gz, Gx, dtype=torch.bool)
    heights = torch.zeros(Gz, Gx)
    for k in range(8):
        r, c = int(torch.randint(0, Gz - 3, (1,), generator=gen)), int(torch.randint(0, Gx - 3, (1,), generator=gen))
        obstacles[r : r + 3, c : c + 2] = True
        h = math.inf if k % 4 == 0 else 0.3 + 0.6 * float(torch.rand(1, generator=gen))
        heights[r : r + 3, c : c + 2] = torch.maximum(heights[r : r + 3, c : c + 2], torch.tensor(h))
    N, H, W = 6, 12, 16
    origin, floor_y = (-1.0, 0.5), 0.2
    # looking down onto the blocks
    c2w = _cameras_on_free_cells(obstacles, N, origin, cell, floor_y, gen, lambda u: -0.2 - 0.6 * u)
    K_inv = torch.linalg.inv(intrinsics_from_fov(W, H, 90.0))
    args = (obstacles[None], torch.tensor([origin]), torch.tensor([cell]), torch.tensor([floor_y]), N, H, W)
    zero = torch.zeros(N, dtype=torch.long)
    depth = LayoutDepth(*args, obstacle_height=heights[None]).render(zero, c2w, K_inv).clone()
    top = torch.where(obstacles, floor_y - heights, torch.tensor(floor_y))
    truth = _march_heights(top, origin, cell, c2w, K_inv, H, W)
    assert (depth > 0).all()
    assert float((depth - truth).abs().max()) < 2e-3
    columns = LayoutDepth(*args).render(zero, c2w, K_inv)
    assert (columns < depth - 0.05).float().mean() > 0.05  # full columns stop rays the heights let pass
    assert torch.equal(
        columns, LayoutDepth(*args, obstacle_height=torch.full((1, Gz, Gx), math.inf)).render(zero, c2w, K_inv)
    )  # None: every obstacle floor to ceiling
    with pytest.raises(ValueError, match="obstacle_height must have obstacles' shape"):
        LayoutDepth(*args, obstacle_height=heights)
    with pytest.raises(ValueError, match="obstacle_height must be None or an"):
        LayoutDepth(*args, obstacle_height=[[0.5]])
    with pytest.raises(ValueError, match="obstacle_height must be >= 0"):
        LayoutDepth(*args, obstacle_height=torch.where(obstacles, -1.0, 0.0)[None])


def test_layout_depth_of_a_wall_ahead_and_a_floor_below():
    """A camera 0.95 m in front of a wall, level: every pixel that does not see the floor first reads 0.95 (a plane
    facing the camera has one z-depth); looking straight down it reads its height above the floor."""
    obstacles = torch.zeros(20, 20, dtype=torch.bool)
    obstacles[:, 15:] = True  # a wall from x = 1.5 on (and the grid's edges 1 m to the sides: outside is obstacle)
    N, H, W = 2, 8, 8
    c2w = torch.stack([_pose(0.55, -1.0, 1.0, math.pi / 2, 0.0), _pose(0.55, -1.0, 1.0, 0.0, -math.pi / 2 + 1e-4)])
    # yaw pi/2 turns the camera's z (forward) to world +x; pitch -pi/2 turns it to world +y (down)
    K = intrinsics_from_fov(W, H, 60.0)
    layout = LayoutDepth(obstacles[None], torch.zeros(1, 2), torch.tensor([0.1]), torch.tensor([0.0]), N, H, W)
    depth = layout.render(torch.zeros(N, dtype=torch.long), c2w, torch.linalg.inv(K))
    assert torch.allclose(depth[0], torch.full((H, W), 0.95), atol=1e-4)
    assert torch.allclose(depth[1], torch.full((H, W), 1.0), atol=1e-3)


def test_layout_depth_validates_its_inputs():
    obstacles = torch.zeros(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="obstacles"):
        LayoutDepth(obstacles.float(), torch.zeros(1, 2), torch.ones(1), torch.zeros(1), 1, 4, 4)
    with pytest.raises(ValueError, match="cell_size"):
        LayoutDepth(obstacles, torch.zeros(1, 2), torch.ones(2), torch.zeros(1), 1, 4, 4)
    layout = LayoutDepth(obstacles, torch.zeros(1, 2), torch.ones(1), torch.zeros(1), 1, 4, 4)
    with pytest.raises(ValueError, match="c2w"):
        layout.render(torch.zeros(1, dtype=torch.long), torch.eye(4), torch.eye(3))


def test_layout_depth_stops_upward_rays_at_the_ceiling_of_scenes_that_have_one():
    """Two scenes, one with a ceiling 1.5 above the camera and one without: looking straight up, every pixel of the
    first reads 1.5 (a plane facing the camera has one z-depth); the second's rays run on to the grid's edge or, with
    no top-down trace to walk, meet nothing (0). A ceiling is never met looking down or from above it."""
    obstacles = torch.zeros(2, 60, 60, dtype=torch.bool)  # 6 m empty rooms; the camera 3 m from every edge
    N, H, W = 3, 8, 8
    up = _pose(3.0, -1.0, 3.0, 0.0, math.pi / 2 - 1e-4)
    down = _pose(3.0, -1.0, 3.0, 0.0, -math.pi / 2 + 1e-4)
    c2w = torch.stack([up, up, down])
    K_inv = torch.linalg.inv(intrinsics_from_fov(W, H, 60.0))
    origin, cell, floor = torch.zeros(2, 2), torch.full((2,), 0.1), torch.zeros(2)
    ceiling = torch.tensor([-2.5, -torch.inf])
    layout = LayoutDepth(obstacles, origin, cell, floor, N, H, W, ceiling_y=ceiling)
    depth = layout.render(torch.tensor([0, 1, 0]), c2w, K_inv).clone()
    assert torch.allclose(depth[0], torch.full((H, W), 1.5), atol=1e-3)
    assert ((depth[1] == 0) | (depth[1] > 1.6)).all() and (depth[1] > 1.6).any()
    assert torch.allclose(depth[2], torch.full((H, W), 1.0), atol=1e-3)  # down: the floor, as before
    bare = LayoutDepth(obstacles, origin, cell, floor, N, H, W).render(torch.tensor([0, 1, 0]), c2w, K_inv)
    assert torch.equal(bare[0], depth[1]) and torch.equal(bare[2], depth[2])  # no ceiling_y: none anywhere
    above = LayoutDepth(obstacles, origin, cell, floor, 1, H, W, ceiling_y=torch.tensor([-0.5, -0.5]))
    seen = above.render(torch.tensor([0]), up[None], K_inv)  # the camera (y = -1) is above this ceiling (y = -0.5)
    assert ((seen[0] == 0) | (seen[0] > 1.6)).all()
    with pytest.raises(ValueError, match="ceiling_y"):
        LayoutDepth(obstacles, origin, cell, floor, 1, H, W, ceiling_y=torch.tensor([float("nan"), -1.0]))
    with pytest.raises(ValueError, match="ceiling_y"):
        LayoutDepth(obstacles, origin, cell, floor, 1, H, W, ceiling_y=torch.zeros(3))


def test_grid_layouts_take_the_ceiling_with_the_footprints_and_not_with_the_cores():
    """A procedural scene's grid records its ceiling plane. Each obstacles kind's own layout: the footprints' stops
    upward rays at the ceiling, the cores' (what older layout models were trained on) has none; ``ceiling`` chooses
    explicitly."""
    from worldfm_env.scenes.sources.procedural import ProceduralConfig, generate_procedural_scene

    scene = generate_procedural_scene(5, ProceduralConfig(ceiling_height=3.0))
    grid = scene.navigation_grid
    assert grid.ceiling_y == -3.0 and grid.floor_y == 0.0
    rows, cols = torch.nonzero(grid.free, as_tuple=True)
    x, z = grid.cell_center(rows[:1], cols[:1])
    c2w = _pose(float(x), grid.floor_y - scene.camera_height, float(z), 0.0, math.pi / 2 - 1e-4)[None]
    K_inv = torch.linalg.inv(intrinsics_from_fov(8, 8, 60.0))
    zero = torch.zeros(1, dtype=torch.long)
    to_ceiling = 3.0 - scene.camera_height

    def centre(kind, ceiling=None):
        depth = grid_layout_depth([grid], "cpu", 1, 8, 8, kind, ceiling).render(zero, c2w, K_inv)
        return depth[0, 3:5, 3:5]

    assert torch.allclose(centre("footprints"), torch.full((2, 2), to_ceiling), atol=1e-3)
    assert not torch.allclose(centre("cores"), torch.full((2, 2), to_ceiling), atol=1e-2)
    assert not torch.allclose(centre("footprints", False), torch.full((2, 2), to_ceiling), atol=1e-2)
    assert torch.allclose(centre("cores", True), torch.full((2, 2), to_ceiling), atol=1e-3)
    with pytest.raises(ValueError, match="ceiling='yes' is not valid"):
        grid_layout_depth([grid], "cpu", 1, 8, 8, "footprints", "yes")


def test_the_ceiling_brings_pitched_up_layout_views_of_procedural_scenes_to_the_true_depth():
    """Views pitched 35 degrees up from random free cells of a procedural scene, against the mesh: without the
    ceiling the upper rays run on to the walls, far beyond the truth; with it few pixels lie beyond it by a quarter."""
    from worldfm_env.scenes.sources.procedural import generate_procedural_scene

    scene = generate_procedural_scene(5)
    grid = scene.navigation_grid
    N, H, W = 16, 24, 24
    c2w, K, true = _procedural_views(scene, N, H, W, math.radians(35.0), seed=1)
    beyond = {}
    for ceiling in (False, True):
        layout = grid_layout_depth([grid], "cpu", N, H, W, "footprints", ceiling).render(
            torch.zeros(N, dtype=torch.long), c2w, torch.linalg.inv(K)
        )
        ok = (true > 0) & (layout > 0)
        beyond[ceiling] = float((layout[ok] / true[ok] > 1.25).float().mean())
    assert beyond[True] < 0.5 * beyond[False] and beyond[True] < 0.1, beyond


def test_grid_layouts_stand_furniture_only_as_high_as_it_is_and_follow_the_truth_closer():
    """A procedural grid records what stands on each obstacle cell: walls and the outside floor to ceiling, furniture
    its own height. The footprints' layout lets rays pass over furniture (``heights``), so views pitched down from
    random free cells see far fewer pixels nearer than the mesh's depth; the cores' layout keeps full columns."""
    from worldfm_env.scenes.sources.procedural import generate_procedural_scene

    scene = generate_procedural_scene(5)
    grid = scene.navigation_grid
    height = grid.occupied_height
    assert height is not None and height.dtype == torch.float32
    assert torch.isinf(height[0]).all() and torch.isinf(height[:, 0]).all()  # beyond the outer walls
    low = grid.occupied & torch.isfinite(height)
    assert low.any() and bool((height[low] > 0.2).all()) and bool((height[low] < -grid.ceiling_y).all())
    assert bool((height[~grid.occupied] == 0).all())
    N, H, W = 24, 24, 24
    c2w, K, true = _procedural_views(scene, N, H, W, -0.4, seed=2)
    zero = torch.zeros(N, dtype=torch.long)
    nearer, depths = {}, {}
    for heights in (None, False):
        depth = grid_layout_depth([grid], "cpu", N, H, W, "footprints", None, heights).render(zero, c2w, K.inverse())
        depths[heights] = depth.clone()
        ok = (true > 0) & (depth > 0)
        nearer[heights] = float((depth[ok] / true[ok] < 0.8).float().mean())
    assert nearer[None] < 0.5 * nearer[False], nearer
    assert (depths[None] > depths[False] + 0.1).any()  # over the furniture
    cores = grid_layout_depth([grid], "cpu", N, H, W, "cores").render(zero, c2w, K.inverse())
    also = grid_layout_depth([grid], "cpu", N, H, W, "cores", None, False).render(zero, c2w, K.inverse())
    assert torch.equal(cores, also)  # the cores' own layout has no heights
    with pytest.raises(ValueError, match="heights=1 is not valid"):
        grid_layout_depth([grid], "cpu", 1, 8, 8, "footprints", None, 1)


def test_obstacle_cores_undo_the_agent_dilation():
    """Walls and a block dilated by the agent's disk (as every grid source builds ``free``) come back as they were,
    but for the one cell of each inner (concave) corner, which the dilation's disk closed; the grid's border
    (outside counts as obstacle) stays an obstacle."""
    obstacles = torch.zeros(40, 50, dtype=torch.bool)
    obstacles[:, :3] = obstacles[:, -3:] = obstacles[:3, :] = obstacles[-3:, :] = True  # thick outer walls
    obstacles[15:22, 20:26] = True  # a block
    obstacles[3:20, 35:38] = True  # an inner wall
    for radius in (0.18, 0.25):
        free = _erode(~obstacles, radius, 0.1)
        assert free.sum() < (~obstacles).sum()  # the dilation took free cells
        cores = obstacle_cores(free, radius, 0.1)
        assert not (obstacles & ~cores).any()
        extra = (cores & ~obstacles).nonzero().tolist()
        assert len(extra) <= 6  # at most the 4 room corners and the 2 where the inner wall meets the outer one
        for r, c in extra:  # each at an inner corner: obstacle cells beside it along both axes
            assert bool(obstacles[r - 1, c] | obstacles[r + 1, c]) and bool(obstacles[r, c - 1] | obstacles[r, c + 1])


@pytest.mark.parametrize("thickness", [0.02, 0.1, 0.13, 0.25])
@pytest.mark.parametrize("offset", [0.0, 0.05, 0.031])
def test_covered_mask_keeps_a_wall_of_any_thickness(thickness, offset):
    """A wall's cells: at least one row whatever its thickness and however it sits on the grid, at most the rows it
    overlaps, never more than one row for a wall no thicker than a cell, and its faces within half a cell of the
    cells' faces."""
    cell = 0.1
    z0 = 1.0 + offset - thickness / 2
    rects = np.array([[0.3, 2.7, z0, z0 + thickness]])
    covered = _covered_mask(rects, 30, 30, cell)
    rows = torch.from_numpy(covered).any(1).nonzero()[:, 0].tolist()
    assert rows == list(range(rows[0], rows[-1] + 1)) and len(rows) >= 1
    overlapped = [k for k in range(30) if k * cell < z0 + thickness - 1e-9 and (k + 1) * cell > z0 + 1e-9]
    assert set(rows) <= set(overlapped)
    if thickness <= cell:
        assert len(rows) == 1
    if thickness >= cell:  # both faces within half a cell of the rows' faces
        assert abs(rows[0] * cell - z0) <= cell / 2 + 1e-6
        assert abs((rows[-1] + 1) * cell - (z0 + thickness)) <= cell / 2 + 1e-6
    assert covered[rows[0], 3:27].all() and not covered[rows[0], :3].any()


def test_layout_stops_at_a_thin_wall_the_cores_lose():
    """A room split by a one-cell wall sitting on a cell boundary: its dilated grid's obstacle cores lose the wall
    (the erosion cannot tell it from the dilation), so the layout's rays cross it into the next room; the recorded
    footprints keep it, and the layout meets it within half a cell of its true face."""
    cell, radius = 0.1, 0.18
    gx = gz = 40
    xs = (np.arange(gx) + 0.5) * cell
    zs = (np.arange(gz) + 0.5) * cell
    walls = np.array([[0.0, 4.0, 0.0, 0.1], [0.0, 4.0, 3.9, 4.0], [0.0, 0.1, 0.0, 4.0], [3.9, 4.0, 0.0, 4.0]])
    inner = np.array([[0.1, 3.9, 1.95, 2.05]])  # on the boundary between rows 19 and 20
    rects = np.concatenate([walls, inner])
    free = torch.from_numpy(~_blocked_mask(rects, xs, zs, radius))
    occupied = torch.from_numpy(_covered_mask(rects, gx, gz, cell)) & ~free
    cores = obstacle_cores(free, radius, cell)
    assert not cores[19:21, 5:35].any()  # the wall is gone from the cores
    assert occupied[19:21, 5:35].any(0).all()  # and kept, one row, by the footprints
    grid = NavigationGrid(free, (0.0, 0.0), cell, 0.0, radius, occupied=occupied)
    K = intrinsics_from_fov(8, 8, 60.0)
    c2w = _pose(2.0, -1.2, 1.0, 0.0, 0.0)[None]  # 1.2 above the floor, looking along +z at the wall 0.95 away
    depth = {}
    for kind in ("cores", "footprints"):
        layout = grid_layout_depth([grid], "cpu", 1, 8, 8, kind)
        depth[kind] = layout.render(torch.zeros(1, dtype=torch.long), c2w, torch.linalg.inv(K)).clone()
    centre = (slice(3, 5), slice(3, 5))
    assert (depth["cores"][0][centre] > 2.5).all()  # through the wall to the far one
    assert ((depth["footprints"][0][centre] - 0.95).abs() <= cell / 2 + 1e-4).all()
    # A grid that records no footprints (an old scene file) falls back to the cores, and says so.
    with pytest.warns(UserWarning, match="without recorded obstacle footprints"):
        bare = grid_layout_depth([NavigationGrid(free, (0.0, 0.0), cell, 0.0, radius)], "cpu", 1, 8, 8)
    assert torch.equal(bare.obstacles[0].bool(), cores)


def test_layout_follows_the_true_depth_of_procedural_scenes_closer_than_the_cores():
    """Level views from random free cells of a procedural scene, against the mesh's ray-cast depth: the layout cast
    against the recorded footprints is much closer to the truth than the one cast against the obstacle cores (it
    crosses no wall), and rarely farther than the truth by a quarter (what remains: the ceiling, the lintels over
    doors)."""
    from worldfm_env.render.raycast import MeshRaycaster
    from worldfm_env.scenes.sources.procedural import generate_procedural_scene

    scene = generate_procedural_scene(5)
    grid = scene.navigation_grid
    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.nonzero(grid.free, as_tuple=True)
    pick = torch.randint(len(rows), (24,), generator=gen)
    x, z = grid.cell_center(rows[pick], cols[pick])
    N, H, W = 24, 24, 24
    pos = torch.stack([x, torch.full((N,), grid.floor_y - scene.camera_height), z], 1)
    c2w = pose_from_yaw_pitch(pos, torch.rand(N, generator=gen) * 2 * math.pi - math.pi, torch.zeros(N))
    K = intrinsics_from_fov(W, H, 90.0)
    _, true = MeshRaycaster([scene.mesh], "cpu").render(torch.zeros(N, dtype=torch.int32), c2w, K, H, W)
    true = true.reshape(N, H, W)
    stats = {}
    for name, kind in (("cores", "cores"), ("occ", "footprints")):
        layout = grid_layout_depth([grid], "cpu", N, H, W, kind).render(
            torch.zeros(N, dtype=torch.long), c2w, torch.linalg.inv(K)
        )
        ok = (true > 0) & (layout > 0)
        ratio = layout[ok] / true[ok]
        stats[name] = (float((ratio - 1).abs().mean()), float((ratio > 1.25).float().mean()))
    assert stats["occ"][0] < 0.5 * stats["cores"][0]
    assert stats["occ"][1] < 0.5 * stats["cores"][1] and stats["occ"][1] < 0.15


def test_navigation_grid_refuses_a_bad_occupied():
    free = torch.zeros(4, 4, dtype=torch.bool)
    free[1:3, 1:3] = True
    with pytest.raises(ValueError, match="occupied must be None or a bool tensor shaped like free"):
        NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, occupied=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="occupied must be None or a bool tensor"):
        NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, occupied=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="occupied and free overlap"):
        NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, occupied=torch.ones(4, 4, dtype=torch.bool))
    grid = NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, occupied=~free)
    assert torch.equal(grid.to("cpu").occupied, ~free)


def test_navigation_grid_records_its_agent_radius():
    free = torch.ones(4, 4, dtype=torch.bool)
    assert NavigationGrid(free, (0.0, 0.0), 0.1, 0.0).agent_radius == 0.18
    with pytest.raises(ValueError, match="agent_radius"):
        NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, agent_radius=-0.1)


def test_depth_bound_caps_generated_depth_in_the_observation():
    """An RGB-D model in a panorama-captured scene: with ``depth_bound="navigation"`` the frames are the same, the
    captured pixels keep the anchor's depth, and the generated depth is the model's capped at the layout's."""
    kw = dict(
        num_envs=2,
        scenes="procedural:test:1",
        capture="panorama",
        device="cpu",
        weights="worldfm-srgbd-auto-64x64",
        splat_radius="auto",
        include_depth=True,
    )
    envs = {b: WorldFMVectorEnv(depth_bound=b, **kw) for b in ("none", "navigation")}
    for e in envs.values():
        e.reset(seed=4)
    capped = 0
    for _ in range(8):
        obs = {b: e.step(torch.tensor([1, 1]))[0] for b, e in envs.items()}
        assert torch.equal(torch.as_tensor(obs["none"]["rgb"]), torch.as_tensor(obs["navigation"]["rgb"]))
        pipeline = envs["navigation"].pipeline
        mask, layout = pipeline.last_request.anchor.mask, pipeline.layout.depth
        d_free = torch.as_tensor(obs["none"]["depth"])[..., 0]
        d_bound = torch.as_tensor(obs["navigation"]["depth"])[..., 0]
        assert torch.equal(d_bound[mask], d_free[mask])
        holes = ~mask & (layout > 0)
        assert torch.equal(d_bound[holes], torch.minimum(d_free[holes], layout[holes]))
        capped += int((d_bound[holes] < d_free[holes]).sum())
    assert capped > 0  # walking ahead from the panorama meets surfaces the model put too far
    for e in envs.values():
        e.close()


def test_depth_bound_caps_what_the_growing_memory_writes():
    """Every point a frame writes into its growing memory lies on its pixel's ray at the frame's (capped) depth,
    so never beyond the layout; without the bound some lie beyond it."""
    scenes = resolve_scenes("procedural:test:1", torch.device("cpu"), (64, 64), 90.0, capture="panorama")
    pool = ScenePool(scenes, torch.device("cpu"))
    n = 2
    c2w = pool.bank_c2w[torch.arange(n) * 5].clone()
    yaw = torch.atan2(c2w[:, 0, 2], c2w[:, 2, 2]) + 2.0  # turned away from the bank's headings: holes to fill
    c2w = pose_from_yaw_pitch(c2w[:, :3, 3], yaw, torch.zeros(n))
    scene = torch.zeros(n, dtype=torch.int32)
    beyond = {}
    for bound in ("none", "navigation"):
        pipeline = ObservationPipeline(
            pool,
            n,
            64,
            64,
            renderer="worldfm",
            anchor=AnchorConfig(splat_radius="auto"),
            memory="grow",
            depth_bound=bound,
            weights="worldfm-srgbd-auto-64x64",
        )
        frame = pipeline.render(scene, c2w)
        hole = ~frame.anchor.mask
        layout = pool_layout_depth(pool, n, 64, 64)
        layout_depth = layout.render(scene, c2w, pipeline.K_inv)
        beyond[bound] = 0
        for env in range(n):
            xyz, _ = pipeline.memory.grown_points(env)
            assert xyz.shape[0] == int(hole[env].sum())
            w2c = torch.linalg.inv(c2w[env])
            cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
            uv = cam @ pipeline.K[env].T
            px = (uv[:, :2] / uv[:, 2:]).floor().long()
            z = cam[:, 2]
            assert torch.allclose(z, frame.depth[env][px[:, 1], px[:, 0]], rtol=1e-4, atol=1e-4)
            beyond[bound] += int((z > layout_depth[env][px[:, 1], px[:, 0]] + 1e-4).sum())
    assert beyond["navigation"] == 0 < beyond["none"]


def test_depth_bound_is_validated_by_name():
    with pytest.raises(ValueError, match="depth_bound"):
        WorldFMVectorEnv(num_envs=1, scenes="procedural:test:1", device="cpu", depth_bound="walls")
    with pytest.raises(ValueError, match="depth_bound='navigation' bounds generated depth"):
        WorldFMVectorEnv(
            num_envs=1, scenes="procedural:test:1", device="cpu", renderer="anchor", depth_bound="navigation"
        )


def test_free_space_is_where_the_agent_may_stand_between_the_heights():
    """A point is in free space over a free cell whose eight neighbours are free too, strictly between the heights
    above the floor; next to a blocked cell, in one, outside the grid, or at floor or ceiling height it is not."""
    free = torch.ones(10, 10, dtype=torch.bool)
    free[4, 7] = False
    grid = NavigationGrid(free=free, origin=(0.0, 0.0), cell_size=0.1, floor_y=2.0)
    space = FreeSpace([grid], "cpu")
    # (x, y, z): cell column x / 0.1, row z / 0.1; height above the floor 2.0 - y (+y is down).
    points = torch.tensor(
        [
            [0.25, 1.0, 0.25],  # clear cell, 1.0 up: free space
            [0.25, 1.9, 0.25],  # clear cell, 0.1 up: the floor's band
            [0.25, 0.3, 0.25],  # clear cell, 1.7 up: above the agent
            [0.65, 1.0, 0.45],  # next to the blocked cell (diagonal neighbour)
            [0.75, 1.0, 0.45],  # in the blocked cell
            [-0.05, 1.0, 0.25],  # outside the grid
            [0.05, 1.0, 0.05],  # at the grid's edge (its outside counts as blocked)
        ]
    )
    inside = space.contains(points[None], torch.zeros(1, dtype=torch.long), 0.25, 1.45)
    assert inside.tolist() == [[True, False, False, False, False, False, False]]


def test_memory_carve_drops_floating_points_and_keeps_the_truths():
    """With the ground truth written back (every point on a real surface) the carve drops nothing; a generated
    square floating in the free middle of a room is not written with it, and is without it."""
    from worldfm_env.render.splat import AnchorRender

    scenes = resolve_scenes("procedural:test:1", torch.device("cpu"), (32, 32), 90.0, capture="panorama")
    pool = ScenePool(scenes, torch.device("cpu"))
    n = 2
    c2w = pool.bank_c2w[torch.arange(n) * 5].clone()
    yaw = torch.atan2(c2w[:, 0, 2], c2w[:, 2, 2]) + 2.0
    c2w = pose_from_yaw_pitch(c2w[:, :3, 3], yaw, torch.zeros(n))
    scene = torch.zeros(n, dtype=torch.int32)
    pipes = {
        carve: ObservationPipeline(pool, n, 32, 32, renderer="oracle", memory="grow", memory_carve=carve)
        for carve in (False, True)
    }
    for pipe in pipes.values():
        pipe.render(scene, c2w)
    held = {carve: pipe.memory.stats()["memory_points"].tolist() for carve, pipe in pipes.items()}
    assert held[True] == held[False] and min(held[False]) > 0
    # A square a third of the way to the surface ahead (into free space, 0.25-1.45 m up at the camera's height).
    quiet = torch.zeros(n, dtype=torch.bool)
    frame = pipes[False].render(scene, c2w, write_mask=quiet)
    block = torch.zeros(n, 32, 32, dtype=torch.bool)
    block[:, 12:20, 12:20] = True
    depth = frame.depth / 3
    hole = AnchorRender(frame.rgb.clone(), frame.depth.clone(), ~block)
    written = {}
    for carve, pipe in pipes.items():
        before = pipe.memory.stats()["memory_points"].clone()
        pipe.memory.write(
            frame.rgb.clone(), depth.clone(), hole, c2w, pool.floor_y[scene.long()],
            carve=pipe._carve(scene) if pipe.memory_carve else None,
        )  # fmt: skip
        written[carve] = (pipe.memory.stats()["memory_points"] - before).tolist()
    origin, rays = c2w[:, :3, 3], pipes[True].memory.rays @ c2w[:, :3, :3].transpose(1, 2)
    points = origin[:, None] + rays * depth.reshape(n, -1, 1)
    floating = pipes[True].free_space.contains(points, scene, *CARVE_HEIGHTS).reshape(n, 32, 32) & block
    assert written[False] == [64, 64]
    assert bool(floating.any())
    kept = [64 - int(f.sum()) for f in floating]  # a frame with under 10 points to write writes none
    assert written[True] == [k if k >= pipes[True].memory.min_write_pixels else 0 for k in kept]


def test_layout_models_read_the_layout_they_were_trained_on(tmp_path):
    """The shipped layout model was trained on layouts cast against the obstacle cores (its header predates the
    field): its env still gives it that layout, so it renders as before. A model whose header names the footprints
    gets them (with the heights and the ceiling), as does the shipped footprints model and the depth bound of a model
    that reads no layout; a bad header value is refused by name."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from worldfm_env.model.checkpoint import LAYOUT_OBSTACLES_METADATA_KEY, trained_layout_obstacles
    from worldfm_env.model.weights import resolve_weights
    from worldfm_env.scenes.navigation import pool_layout_depth, pool_obstacles

    layout_model = resolve_weights("worldfm-srgbd-layout-64x64")
    assert trained_layout_obstacles(layout_model) == "cores"
    assert trained_layout_obstacles(resolve_weights("worldfm-srgbd-auto-64x64")) is None
    assert trained_layout_obstacles(resolve_weights("worldfm-srgbd-layout-footprints-64x64")) == "footprints"
    with safe_open(str(layout_model), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(layout_model))
    written = {}
    for value in ("footprints", "cores", "walls"):
        written[value] = tmp_path / f"layout-{value}.safetensors"
        save_file(tensors, str(written[value]), metadata={**metadata, LAYOUT_OBSTACLES_METADATA_KEY: value})
    assert trained_layout_obstacles(written["footprints"]) == "footprints"
    with pytest.raises(ValueError, match="layout_obstacles='walls'; valid values are 'footprints', 'cores'"):
        trained_layout_obstacles(written["walls"])

    kw = dict(num_envs=1, scenes="procedural:test:1", capture="panorama", device="cpu", splat_radius="auto")
    cases = {
        "cores": dict(weights="worldfm-srgbd-layout-64x64"),
        "footprints": dict(weights=str(written["footprints"])),
        "shipped footprints": dict(weights="worldfm-srgbd-layout-footprints-64x64"),
        "bound": dict(weights="worldfm-srgbd-auto-64x64", depth_bound="navigation"),
    }
    for name, extra in cases.items():
        env = WorldFMVectorEnv(**kw, **extra)
        kind = "cores" if name == "cores" else "footprints"
        expected = pool_obstacles(env.pool, kind)
        assert torch.equal(env.pipeline.layout.obstacles.bool(), expected)
        # The kind's whole layout: the footprints' with the furniture's heights and the ceiling, the cores' without.
        own = pool_layout_depth(env.pool, 1, env.height, env.width, kind)
        assert torch.equal(env.pipeline.layout.top, own.top) and torch.equal(
            env.pipeline.layout.ceiling_y, own.ceiling_y
        )
        assert (kind == "footprints") == bool(((own.top > -1e29) & (own.top < 1e29)).any())
        if name == "bound":
            assert not torch.equal(pool_obstacles(env.pool, "cores"), expected)
        env.close()


def test_layout_obstacles_are_checked_by_name():
    from worldfm_env.scenes.navigation import grid_obstacles
    from worldfm_env.training.data import ClipConfig

    free = torch.ones(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="obstacles='walls' is not valid; choose one of"):
        grid_obstacles([NavigationGrid(free, (0.0, 0.0), 0.1, 0.0)], "cpu", "walls")
    with pytest.raises(ValueError, match="layout_obstacles='walls' is not valid"):
        ClipConfig(layout_obstacles="walls")
