"""Tests of the seeded procedural scene generator (worldfm_env.scenes.sources.procedural)."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
import torch

from worldfm_env._device import init_warp
from worldfm_env.geometry import unproject_depth
from worldfm_env.render.raycast import MeshRaycaster
from worldfm_env.scenes.pointcloud import points_from_views
from worldfm_env.scenes.scene import NavigationGrid
from worldfm_env.scenes.scene_file import load_scene_file, save_scene
from worldfm_env.scenes.sources.procedural import (
    SPLITS,
    ProceduralConfig,
    generate_procedural_scene,
    render_overview,
    seeds_for_split,
)

wp = init_warp()

SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def scenes():
    return {seed: generate_procedural_scene(seed) for seed in SEEDS}


def test_same_seed_identical_different_seed_different(scenes):
    a = scenes[2]
    b = generate_procedural_scene(2)
    for f in ("vertices", "faces", "face_material", "materials"):
        assert torch.equal(getattr(a.mesh, f), getattr(b.mesh, f)), f
    assert torch.equal(a.navigation_grid.free, b.navigation_grid.free)
    assert a.navigation_grid.origin == b.navigation_grid.origin
    for f in ("images", "depth", "K", "c2w"):
        assert torch.equal(getattr(a.bank, f), getattr(b.bank, f)), f
    assert torch.equal(a.points_xyz, b.points_xyz) and torch.equal(a.points_rgb, b.points_rgb)
    assert a.info == b.info and a.name == "procedural-2"
    layouts = {str(scenes[s].info["rooms"]) for s in SEEDS}
    assert len(layouts) == len(SEEDS)
    assert not torch.equal(scenes[0].bank.images[:4], scenes[1].bank.images[:4])


def _components(free: np.ndarray) -> list[int]:
    """Sizes of the 4-connected components of a boolean grid (plain BFS)."""
    seen = np.zeros_like(free)
    sizes = []
    Gz, Gx = free.shape
    for r0, c0 in zip(*np.nonzero(free), strict=True):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        q, n = deque([(r0, c0)]), 0
        while q:
            r, c = q.popleft()
            n += 1
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < Gz and 0 <= cc < Gx and free[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    q.append((rr, cc))
        sizes.append(n)
    return sorted(sizes, reverse=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_navigation_connected_and_doors_passable(scenes, seed):
    scene = scenes[seed]
    grid = scene.navigation_grid
    free = grid.free.cpu().numpy()
    sizes = _components(free)
    assert sizes[0] > 0.9 * free.sum(), f"largest component {sizes[0]} of {free.sum()} free cells"
    assert len(sizes) == 1, f"free space split into {len(sizes)} components {sizes[:5]}"
    # Every door's centre cell is free: the agent fits through doors.
    for axis, coord, lo, hi in scene.info["doors"]:
        x, z = (coord, (lo + hi) / 2) if axis == 0 else ((lo + hi) / 2, coord)
        r, c = grid.world_to_cell(torch.tensor(x), torch.tensor(z))
        assert free[int(r), int(c)], f"door at x={x}, z={z} is blocked"
    # Cells outside the building are never free; the floor is y = 0.
    W, D = scene.info["building_size"]
    assert grid.floor_y == 0.0 and grid.shape == (round(D / grid.cell_size), round(W / grid.cell_size))
    assert not free[0].any() and not free[-1].any() and not free[:, 0].any() and not free[:, -1].any()


def test_bank_poses_and_layout(scenes):
    cfg = ProceduralConfig()
    scene = scenes[0]
    bank = scene.bank
    V = cfg.bank_yaws + cfg.bank_down_views
    assert bank.num_views == V * scene.info["num_captures"]
    assert bank.resolution == cfg.resolution
    assert torch.allclose(bank.c2w[:, 1, 3], torch.full((bank.num_views,), -cfg.camera_height))
    # Views of one capture share the position; the first bank_yaws look level, the rest look down (+y).
    c2w = bank.c2w.reshape(-1, V, 4, 4)
    assert torch.equal(c2w[:, :1, :3, 3].expand(-1, V, -1), c2w[:, :, :3, 3])
    assert torch.allclose(c2w[:, : cfg.bank_yaws, 1, 2], torch.zeros(1), atol=1e-6)
    assert (c2w[:, cfg.bank_yaws :, 1, 2] > 0.5).all()
    # Capture positions stand on free cells.
    grid = scene.navigation_grid
    r, c = grid.world_to_cell(bank.c2w[:, 0, 3], bank.c2w[:, 2, 3])
    assert grid.free[r, c].all()
    # Most pixels hit something: the building is closed.
    assert (bank.depth > 0).float().mean() > 0.99
    assert scene.camera_height == cfg.camera_height and scene.info["source"] == "procedural"


def test_bank_depth_lies_on_mesh(scenes):
    scene = scenes[1]
    bank = scene.bank
    # Re-ray-casting the bank poses reproduces the bank exactly.
    rc = MeshRaycaster([scene.mesh])
    rgb, depth = rc.render(torch.zeros(bank.num_views, dtype=torch.int32), bank.c2w, bank.K, *bank.resolution)
    assert torch.equal(depth, bank.depth) and torch.equal(rgb, bank.images)
    # Independently: every unprojected bank pixel lies on a triangle of the mesh.
    xyz, _ = points_from_views(bank.images, bank.depth, bank.K, bank.c2w, voxel_size=None)
    assert xyz.shape[0] == int((bank.depth > 0).sum())
    dist = _distance_to_mesh(scene.mesh, xyz[::5])
    assert dist.max().item() < 2e-3, f"max distance {dist.max().item()}"
    # The voxelised scene cloud is a subset of those points.
    assert scene.points_xyz.shape[0] < xyz.shape[0]


@wp.kernel
def _closest_kernel(mesh: wp.uint64, pts: wp.array(dtype=wp.vec3), out: wp.array(dtype=float)):
    i = wp.tid()
    q = wp.mesh_query_point_no_sign(mesh, pts[i], 1.0e3)
    d = wp.float32(1.0e3)
    if q.result:
        d = wp.length(wp.mesh_eval_position(mesh, q.face, q.u, q.v) - pts[i])
    out[i] = d


def _distance_to_mesh(mesh, xyz: torch.Tensor) -> torch.Tensor:
    verts = mesh.vertices.float().contiguous()
    idx = mesh.faces.int().reshape(-1).contiguous()
    m = wp.Mesh(points=wp.from_torch(verts, dtype=wp.vec3), indices=wp.from_torch(idx))
    out = torch.empty(xyz.shape[0])
    wp.launch(
        _closest_kernel,
        dim=xyz.shape[0],
        inputs=[m.id, wp.from_torch(xyz.contiguous(), dtype=wp.vec3), wp.from_torch(out)],
        device="cpu",
    )
    return out


def test_first_hits_face_the_camera(scenes):
    """Brute-force ray/triangle intersection: depths match and every visible face points at the camera."""
    scene = scenes[3]
    bank = scene.bank
    v = scene.mesh.vertices.double().numpy()
    f = scene.mesh.faces.long().numpy()
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]  # (F, 3)
    e1, e2 = b - a, c - a
    normal = np.cross(e1, e2)
    rng = np.random.default_rng(0)
    H, W = bank.resolution
    views = rng.integers(0, bank.num_views, 40)
    pix = rng.integers(0, min(H, W), (40, 2))
    for k, (vi, (row, col)) in enumerate(zip(views, pix, strict=True)):
        T = bank.c2w[vi].double().numpy()
        K = bank.K[vi].double().numpy()
        dc = np.array([(col + 0.5 - K[0, 2]) / K[0, 0], (row + 0.5 - K[1, 2]) / K[1, 1], 1.0])
        d, o = T[:3, :3] @ dc, T[:3, 3]
        # Moller-Trumbore against every triangle.
        p = np.cross(d, e2)
        det = (e1 * p).sum(1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = o - a
        u = (s * p).sum(1) * inv
        q = np.cross(s, e1)
        w = (q @ d) * inv
        t = (q * e2).sum(1) * inv
        hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 1e-6)
        assert hit.any()
        t_hit = np.where(hit, t, np.inf)
        j = int(np.argmin(t_hit))
        assert t_hit[j] == pytest.approx(float(bank.depth[vi, row, col]), abs=1e-3)
        # Ties (coplanar faces) must agree on orientation too: check all faces at the nearest t.
        near = np.nonzero(np.abs(t_hit - t_hit[j]) < 1e-6)[0]
        assert (normal[near] @ d < 0).all(), f"ray {k} sees a back face"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"wall_thickness": -0.1}, "wall_thickness"),
        ({"door_width": 0.3}, "door_width"),
        ({"door_height": 3.0}, "door_height"),
        ({"ceiling_height": 1.0}, "ceiling_height"),
        ({"camera_height": 2.9}, "camera_height"),
        ({"building_size_min": (20.0, 20.0)}, "building_size_max"),
        ({"building_size_min": (1.0, 8.0)}, "building_size_min"),
        ({"min_room_size": 1.0}, "min_room_size"),
        ({"corridor_prob": 1.5}, "corridor_prob"),
        ({"corridor_width": (1.6, 1.2)}, "corridor_width"),
        ({"furniture_per_room": (3, 1)}, "furniture_per_room"),
        ({"cell_size": 0.0}, "cell_size"),
        ({"resolution": (0, 64)}, "resolution"),
        ({"hfov_deg": 180.0}, "hfov_deg"),
        ({"capture_spacing": 0.0}, "capture_spacing"),
        ({"bank_yaws": 0}, "bank_yaws"),
        ({"bank_down_views": -1}, "bank_down_views"),
        ({"down_pitch_deg": 95.0}, "down_pitch_deg"),
        ({"voxel_size": 0.0}, "voxel_size"),
    ],
)
def test_bad_config_raises_naming_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ProceduralConfig(**kwargs)


def test_bad_seed_raises():
    with pytest.raises(ValueError, match="seed"):
        generate_procedural_scene(-1)


def test_splits():
    assert seeds_for_split("train", 3) == [0, 1, 2]
    assert seeds_for_split("val", 2, start=5) == [1_000_005, 1_000_006]
    assert seeds_for_split("test", 1)[0] == SPLITS["test"].start
    with pytest.raises(ValueError, match="train"):
        seeds_for_split("validation", 1)
    with pytest.raises(ValueError, match="start"):
        seeds_for_split("val", 5, start=len(SPLITS["val"]) - 2)


def test_small_config_and_no_voxel():
    cfg = ProceduralConfig(
        building_size_min=(6.0, 6.0),
        building_size_max=(7.0, 7.0),
        resolution=(24, 32),
        bank_yaws=4,
        bank_down_views=0,
        voxel_size=None,
    )
    scene = generate_procedural_scene(11, cfg, name="tiny")
    assert scene.name == "tiny" and scene.bank.resolution == (24, 32)
    assert scene.points_xyz.shape[0] == int((scene.bank.depth > 0).sum())
    depth_pts = unproject_depth(scene.bank.depth, scene.bank.K, scene.bank.c2w)[scene.bank.depth > 0]
    assert torch.equal(depth_pts, scene.points_xyz)


def test_scene_file_keeps_the_grid_agent_radius_and_reads_older_files(scenes, tmp_path):
    """The grid's agent radius (what its obstacles were dilated by) is written to the header; a file written before
    the field existed reads as 0.18, every grid source's default."""
    import dataclasses
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    grid = dataclasses.replace(scenes[0].navigation_grid, agent_radius=0.25)
    path = save_scene(dataclasses.replace(scenes[0], navigation_grid=grid), tmp_path / "r.wfscene")
    assert load_scene_file(path).navigation_grid.agent_radius == 0.25
    with safe_open(str(path), "pt") as f:
        header = json.loads(f.metadata()["scene"])
    del header["navigation_grid"]["agent_radius"]
    old = tmp_path / "old.wfscene"
    save_file(load_file(str(path)), str(old), metadata={"scene": json.dumps(header)})
    assert load_scene_file(old).navigation_grid.agent_radius == 0.18


def test_scene_file_keeps_the_obstacle_footprints_and_reads_older_files(scenes, tmp_path):
    """``NavigationGrid.occupied`` is written and read back; a file written before the field reads as None, and the
    layout's obstacles then fall back to the grid's obstacle cores."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from worldfm_env.scenes.navigation import grid_obstacles, obstacle_cores

    grid = scenes[0].navigation_grid
    path = save_scene(scenes[0], tmp_path / "o.wfscene")
    loaded = load_scene_file(path).navigation_grid
    assert loaded.occupied is not None and torch.equal(loaded.occupied, grid.occupied)
    tensors = load_file(str(path))
    del tensors["navigation_grid.occupied"]
    del tensors["navigation_grid.occupied_height"]  # files from before the footprints had no heights either
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    old = tmp_path / "old.wfscene"
    save_file(tensors, str(old), metadata=metadata)
    old_grid = load_scene_file(old).navigation_grid
    assert old_grid.occupied is None
    cores = obstacle_cores(grid.free, grid.agent_radius, grid.cell_size)
    with pytest.warns(UserWarning, match="falls back to the obstacle cores"):
        assert torch.equal(grid_obstacles([old_grid], "cpu")[0], cores)
    assert torch.equal(grid_obstacles([loaded], "cpu")[0], grid.occupied)
    assert not torch.equal(cores, grid.occupied)


def test_scene_file_keeps_the_ceiling_and_reads_older_files_without_one(scenes, tmp_path):
    """``NavigationGrid.ceiling_y`` (the procedural ceiling plane, y = -ceiling_height) is written and read back; a file
    written before the field reads as None (a layout without a ceiling)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    grid = scenes[0].navigation_grid
    assert grid.ceiling_y == -ProceduralConfig().ceiling_height
    path = save_scene(scenes[0], tmp_path / "c.wfscene")
    assert load_scene_file(path).navigation_grid.ceiling_y == grid.ceiling_y
    with safe_open(str(path), "pt") as f:
        header = json.loads(f.metadata()["scene"])
    del header["navigation_grid"]["ceiling_y"]
    old = tmp_path / "old.wfscene"
    save_file(load_file(str(path)), str(old), metadata={"scene": json.dumps(header)})
    assert load_scene_file(old).navigation_grid.ceiling_y is None


def test_scene_file_keeps_the_obstacle_heights_and_reads_older_files_without_them(scenes, tmp_path):
    """``NavigationGrid.occupied_height`` is written and read back exactly; a file written before the field reads as
    None (every obstacle floor to ceiling)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    grid = scenes[0].navigation_grid
    assert grid.occupied_height is not None
    path = save_scene(scenes[0], tmp_path / "h.wfscene")
    assert torch.equal(load_scene_file(path).navigation_grid.occupied_height, grid.occupied_height)
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    tensors = load_file(str(path))
    del tensors["navigation_grid.occupied_height"]
    old = tmp_path / "old.wfscene"
    save_file(tensors, str(old), metadata=header)
    assert load_scene_file(old).navigation_grid.occupied_height is None


def test_navigation_grid_obstacle_heights_are_validated_by_name():
    free = torch.zeros(4, 4, dtype=torch.bool)
    free[1:3, 1:3] = True
    occupied = ~free
    good = torch.where(occupied, 0.8, 0.0).float()
    grid = NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, occupied=occupied, occupied_height=good)
    assert torch.equal(grid.to("cpu").occupied_height, good)
    with pytest.raises(ValueError, match="occupied_height needs occupied"):
        NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, occupied_height=good)
    for bad in (good.double(), good[:3], torch.where(occupied, 0.0, 0.0).float(), torch.full((4, 4), float("nan"))):
        with pytest.raises(ValueError, match="occupied_height must be"):
            NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, occupied=occupied, occupied_height=bad)


@pytest.mark.parametrize("bad", [0.0, 0.5, float("nan"), float("inf"), True, "high"])
def test_navigation_grid_ceiling_must_be_a_finite_height_above_the_floor(bad):
    free = torch.ones(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="ceiling_y must be None or a finite number below the floor"):
        NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, ceiling_y=bad)
    assert NavigationGrid(free, (0.0, 0.0), 0.1, 0.0, ceiling_y=-2.5).to("cpu").ceiling_y == -2.5


@pytest.mark.parametrize("seed", SEEDS)
def test_grid_records_every_wall_and_piece_of_furniture(scenes, seed):
    """The procedural grid's ``occupied`` holds every blocking footprint: each wall piece keeps a row of cells (a
    wall one cell thick included, which the obstacle cores lose), no occupied cell is free, and every blocked cell
    lies within the agent's radius (plus a cell's diagonal) of an occupied one."""
    from worldfm_env.scenes.navigation import _erode, obstacle_cores

    grid = scenes[seed].navigation_grid
    occupied = grid.occupied
    assert occupied is not None and occupied.shape == grid.free.shape
    assert not (occupied & grid.free).any()
    # the dilation of the footprints by the agent's disk covers every cell that is not free
    reach = ~_erode(~occupied, grid.agent_radius + grid.cell_size * 0.75, grid.cell_size, outside=True)
    assert not (~grid.free & ~reach).any()
    # the default walls are one cell thick (wall_thickness = cell_size = 0.1): the cores lose a good share of them
    cores = obstacle_cores(grid.free, grid.agent_radius, grid.cell_size)
    lost = occupied & ~cores
    assert int(lost.sum()) > 0.05 * int(occupied.sum())


def test_save_load_roundtrip_and_overview(scenes, tmp_path):
    scene = scenes[0]
    path = save_scene(scene, tmp_path / "s.wfscene")
    loaded = load_scene_file(path)
    assert loaded.info == scene.info
    assert torch.equal(loaded.mesh.faces, scene.mesh.faces) and torch.equal(loaded.bank.images, scene.bank.images)
    assert torch.equal(loaded.navigation_grid.free, scene.navigation_grid.free)
    assert loaded.navigation_grid.agent_radius == scene.navigation_grid.agent_radius == 0.18
    img = render_overview(scene)
    assert img.dtype == np.uint8 and img.shape == (*[3 * s for s in scene.navigation_grid.shape], 3)
