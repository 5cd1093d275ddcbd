"""The navigation layout's depth (warp kernel), the obstacle cores it casts against, and the env's depth bound."""

import math

import pytest
import torch

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.render.anchor_config import AnchorConfig
from worldfm_env.render.layout import LayoutDepth
from worldfm_env.renderers.pipeline import CARVE_HEIGHTS, ObservationPipeline
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.navigation import FreeSpace, _erode, obstacle_cores, pool_layout_depth
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


def _march(obstacles, origin, cell, floor_y, c2w, K_inv, H, W, step=5e-4, far=6.0):
    """Brute force: walk each pixel ray in small z-depth steps until it leaves free cells or reaches the floor."""
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ K_inv.T
    ts = torch.arange(1, int(far / step)) * step
    out = torch.zeros(c2w.shape[0], H * W)
    Gz, Gx = obstacles.shape
    for i in range(c2w.shape[0]):
        pts = c2w[i, :3, 3] + ts[:, None, None] * (rays @ c2w[i, :3, :3].T)[None]  # (T, HW, 3)
        col = torch.floor((pts[..., 0] - origin[0]) / cell).long()
        row = torch.floor((pts[..., 2] - origin[1]) / cell).long()
        outside = (col < 0) | (row < 0) | (col >= Gx) | (row >= Gz)
        hit = outside | obstacles[row.clamp(0, Gz - 1), col.clamp(0, Gx - 1)] | (pts[..., 1] >= floor_y)
        first = hit.float().argmax(0)
        out[i] = torch.where(hit.any(0), ts[first], torch.zeros(()))
    return out.reshape(-1, H, W)


def test_layout_depth_matches_a_brute_force_march():
    """Random obstacle blocks in a 3 m x 2.4 m grid, cameras at free cells looking every way (pitched too): the
    kernel's cell walk gives the depth a fine march finds, to the march's step."""
    gen = torch.Generator().manual_seed(5)
    Gz, Gx, cell = 24, 30, 0.1
    obstacles = torch.zeros(Gz, Gx, dtype=torch.bool)
    for _ in range(6):
        r, c = int(torch.randint(0, Gz - 3, (1,), generator=gen)), int(torch.randint(0, Gx - 3, (1,), generator=gen))
        obstacles[r : r + 3, c : c + 2] = True
    free_cells = torch.nonzero(~obstacles)
    N, H, W = 5, 12, 16
    origin, floor_y = (-1.0, 0.5), 0.2
    c2w = torch.empty(N, 4, 4)
    for i in range(N):
        r, c = free_cells[int(torch.randint(len(free_cells), (1,), generator=gen))].tolist()
        yaw = float(torch.rand(1, generator=gen)) * 2 * math.pi
        pitch = (float(torch.rand(1, generator=gen)) - 0.5) * 1.2
        c2w[i] = _pose(origin[0] + (c + 0.37) * cell, floor_y - 1.2, origin[1] + (r + 0.61) * cell, yaw, pitch)
    K = intrinsics_from_fov(W, H, 90.0)
    layout = LayoutDepth(
        obstacles[None], torch.tensor([origin]), torch.tensor([cell]), torch.tensor([floor_y]), N, H, W
    )
    depth = layout.render(torch.zeros(N, dtype=torch.long), c2w, torch.linalg.inv(K)).clone()
    truth = _march(obstacles, origin, cell, floor_y, c2w, torch.linalg.inv(K), H, W)
    assert (depth > 0).all()
    assert float((depth - truth).abs().max()) < 2e-3


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
