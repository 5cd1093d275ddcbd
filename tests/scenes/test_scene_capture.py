"""Tests of sparse captures (worldfm_env.scenes.capture): panorama and walk memories of a procedural scene."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from worldfm_env.geometry import intrinsics_from_fov, invert_pose, project_points
from worldfm_env.render.raycast import MeshRaycaster
from worldfm_env.scenes.capture import (
    PANORAMA_BANK_PITCHES_DEG,
    PANORAMA_BANK_YAWS,
    capture_point,
    capture_scene,
    cube_map_poses,
    parse_capture,
)
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.navigation import _erode, _largest_component
from worldfm_env.scenes.scene_file import load_scene_file, save_scene

CPU = torch.device("cpu")
MODES = ("panorama", "walk:6")


@pytest.fixture(scope="module")
def full():
    """The dense capture of one small procedural scene (seed 0, 32x32 bank)."""
    return resolve_scenes("procedural:seed:0", CPU, (32, 32), 90.0)[0]


@pytest.fixture(scope="module")
def captured(full):
    """Each sparse capture of ``full``."""
    return {mode: capture_scene(full, mode) for mode in MODES}


def _tensors(scene) -> dict[str, torch.Tensor]:
    return {
        "points_xyz": scene.points_xyz,
        "points_rgb": scene.points_rgb,
        "points_normal": scene.points_normal,
        "points_spacing": scene.points_spacing,
        "bank.images": scene.bank.images,
        "bank.depth": scene.bank.depth,
        "bank.K": scene.bank.K,
        "bank.c2w": scene.bank.c2w,
    }


def _assert_same_memory(a, b) -> None:
    for (name, x), y in zip(_tensors(a).items(), _tensors(b).values(), strict=True):
        assert x is not None and y is not None, name
        assert x.dtype == y.dtype and torch.equal(x, y), f"{name} differs"
    assert a.info["capture"] == b.info["capture"]


@pytest.mark.parametrize(
    "value, expected",
    [("full", ("full", 0)), ("panorama", ("panorama", 42)), ("walk:1", ("walk", 1)), ("walk:256", ("walk", 256))],
)
def test_parse_capture(value, expected):
    assert parse_capture(value) == expected


@pytest.mark.parametrize("value", ["", "pano", "walk", "walk:", "walk:0", "walk:257", "walk:-3", "walk:08", 3, None])
def test_parse_capture_rejects(value):
    with pytest.raises(ValueError, match="capture must be 'full', 'panorama' or 'walk:K'"):
        parse_capture(value)


@pytest.mark.parametrize("mode", MODES)
def test_capture_is_deterministic(full, captured, mode):
    again = capture_scene(full, mode)
    _assert_same_memory(captured[mode], again)
    # A differently seeded scene is captured elsewhere.
    other = resolve_scenes("procedural:seed:1", CPU, (32, 32), 90.0)[0]
    assert capture_scene(other, mode).info["capture"]["position"] != captured[mode].info["capture"]["position"]


@pytest.mark.parametrize("mode", MODES)
def test_capture_keeps_mesh_grid_and_camera(full, captured, mode):
    scene = captured[mode]
    assert scene.mesh is full.mesh
    assert scene.navigation_grid is full.navigation_grid
    assert scene.camera_height == full.camera_height and scene.name == full.name
    assert scene.points_xyz.shape[0] < full.points_xyz.shape[0] // 2, "a sparse capture holds far fewer points"
    assert scene.bank.resolution == full.bank.resolution and torch.equal(scene.bank.K[0], full.bank.K[0])
    info = scene.info["capture"]
    assert info["mode"] == mode and info["views"] == scene.bank.num_views
    assert "capture" not in full.info, "capturing must not write into the full scene's info"


def test_capture_point_is_a_clear_main_cell(full, captured):
    grid = full.navigation_grid
    main, _ = _largest_component(grid.free.numpy())
    row, col = capture_point(full)
    assert main[row, col]
    # Greatest clearance: the point survives eroding the main component by its clearance, nothing survives one
    # cell more, and in this scene that clearance is at least 0.5 m.
    main_t = torch.from_numpy(main)
    clear = max(k for k in range(1, 40) if bool(_erode(main_t, k * grid.cell_size, grid.cell_size).any()))
    assert clear * grid.cell_size >= 0.5
    assert bool(_erode(main_t, clear * grid.cell_size, grid.cell_size)[row, col])
    x, y, z = captured["panorama"].info["capture"]["position"]
    assert x == pytest.approx(grid.origin[0] + (col + 0.5) * grid.cell_size)
    assert z == pytest.approx(grid.origin[1] + (row + 0.5) * grid.cell_size)
    assert y == pytest.approx(grid.floor_y - full.camera_height)


def test_panorama_bank(captured):
    scene = captured["panorama"]
    info = scene.info["capture"]
    assert scene.bank.num_views == 42 == PANORAMA_BANK_YAWS * len(PANORAMA_BANK_PITCHES_DEG)
    assert info["positions"] == [info["position"]]
    centre = torch.tensor(info["position"], dtype=torch.float32)
    assert torch.allclose(scene.bank.c2w[:, :3, 3], centre.expand(42, 3), atol=1e-5)
    # Camera forward is +z; its y is -sin(pitch) (positive pitch looks up, towards -y).
    pitch = torch.rad2deg(torch.asin(-scene.bank.c2w[:, 1, 2]))
    expected = torch.tensor(PANORAMA_BANK_PITCHES_DEG).repeat_interleave(PANORAMA_BANK_YAWS)
    assert torch.allclose(pitch, expected, atol=1e-3)
    yaw = torch.atan2(-scene.bank.c2w[:, 0, 2], scene.bank.c2w[:, 2, 2])
    assert len({round(float(v), 3) for v in yaw}) == PANORAMA_BANK_YAWS


@pytest.mark.parametrize("views", [1, 6])
def test_walk_bank(full, captured, views):
    scene = captured["walk:6"] if views == 6 else capture_scene(full, f"walk:{views}")
    info = scene.info["capture"]
    assert scene.bank.num_views == views == info["views"] == len(info["positions"])
    assert info["positions"][0] == info["position"]
    centres = torch.tensor(info["positions"], dtype=torch.float32)
    assert torch.allclose(scene.bank.c2w[:, :3, 3], centres, atol=1e-5)
    assert torch.allclose(scene.bank.c2w[:, 1, 2], torch.zeros(views), atol=1e-6), "walk views look level"
    grid = full.navigation_grid
    main, _ = _largest_component(grid.free.numpy())
    col = np.floor((centres[:, 0].numpy() - grid.origin[0]) / grid.cell_size).astype(int)
    row = np.floor((centres[:, 2].numpy() - grid.origin[1]) / grid.cell_size).astype(int)
    assert main[row, col].all(), "every walk view stands on the main component"
    if views > 1:
        steps = (centres[1:] - centres[:-1])[:, [0, 2]]
        length = steps.norm(dim=1)
        assert ((length > 0.7) & (length < 1.3)).all(), f"views about 1 m apart, got {length.tolist()}"
        forward = scene.bank.c2w[:-1, :3, 2][:, [0, 2]]
        assert torch.allclose(forward, steps / length[:, None], atol=1e-4), "each view faces the walking direction"


def _seen_by(points: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """(P,) bool: points that land in some view (V) on a pixel whose depth is theirs (0.1 % + 1 mm)."""
    H, W = depth.shape[1:]
    uv, z = project_points(points[None].expand(c2w.shape[0], -1, -1), K, invert_pose(c2w))  # (V, P, 2), (V, P)
    col, row = torch.floor(uv[..., 0]).long(), torch.floor(uv[..., 1]).long()
    inside = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    view = torch.arange(c2w.shape[0])[:, None].expand_as(col)
    seen_depth = depth[view, row.clamp(0, H - 1), col.clamp(0, W - 1)]
    return (inside & ((seen_depth - z).abs() <= 1e-3 * z + 1e-3)).any(dim=0)


@pytest.mark.parametrize("mode", MODES)
def test_points_are_what_the_views_saw(full, captured, mode):
    scene = captured[mode]
    info = scene.info["capture"]
    raycaster = MeshRaycaster([full.mesh], CPU)
    if mode == "panorama":
        face = info["cube_face_size"]
        c2w = cube_map_poses(torch.tensor(info["position"], dtype=torch.float32))
        K = intrinsics_from_fov(face, face, 90.0).expand(6, 3, 3)
        _, depth = raycaster.render(torch.zeros(6, dtype=torch.int32), c2w, K[0], face, face)
    else:
        c2w, K = scene.bank.c2w, scene.bank.K
        H, W = scene.bank.resolution
        _, depth = raycaster.render(torch.zeros(c2w.shape[0], dtype=torch.int32), c2w, K, H, W)
        assert torch.equal(depth, scene.bank.depth), "the bank is the ray-cast views"
    seen = _seen_by(scene.points_xyz, c2w, K, depth)
    assert bool(seen.all()), f"{int((~seen).sum())} of {seen.numel()} captured points no capture camera saw"
    # The check can fail: most points of the dense capture are not seen from the capture cameras.
    assert float(_seen_by(full.points_xyz, c2w, K, depth).float().mean()) < 0.5


def _look_at(origin: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4) OpenCV camera poses at ``origin`` (3,) whose optical axis passes through each target (N, 3)."""
    forward = targets - origin
    forward = forward / forward.norm(dim=1, keepdim=True)
    down = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = torch.linalg.cross(down, forward)
    right = right / right.norm(dim=1, keepdim=True)
    c2w = torch.eye(4).repeat(targets.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = right, torch.linalg.cross(forward, right), forward
    c2w[:, :3, 3] = origin
    return c2w


def test_a_room_hidden_from_the_panorama_holds_no_points(full, captured):
    scene = captured["panorama"]
    origin = torch.tensor(scene.info["capture"]["position"], dtype=torch.float32)
    raycaster = MeshRaycaster([full.mesh], CPU)
    K = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])  # 1x1 pixel on the optical axis
    height = full.info["config"]["ceiling_height"]
    half = full.info["config"]["wall_thickness"] / 2 + 0.01
    hidden = []
    for x0, x1, z0, z1, _ in full.info["rooms"]:
        xs = torch.linspace(x0 + half, x1 - half, 12)
        zs = torch.linspace(z0 + half, z1 - half, 12)
        ys = torch.linspace(-height + 0.05, -0.05, 5)
        targets = torch.cartesian_prod(xs, ys, zs)
        _, depth = raycaster.render(
            torch.zeros(targets.shape[0], dtype=torch.int32), _look_at(origin, targets), K, 1, 1
        )
        distance = (targets - origin).norm(dim=1)
        if bool((depth[:, 0, 0] < distance - 0.05).all()):  # every sight line to the room hits something first
            hidden.append((x0 + half, x1 - half, z0 + half, z1 - half))
    assert hidden, "the test scene should have a room the panorama cannot see"

    def inside(points, box):
        x, z = points[:, 0], points[:, 2]
        return (x > box[0]) & (x < box[1]) & (z > box[2]) & (z < box[3])

    for box in hidden:
        assert int(inside(full.points_xyz, box).sum()) > 100, "the dense capture covers the hidden room"
        assert int(inside(scene.points_xyz, box).sum()) == 0, f"points in the hidden room {box}"


def test_capture_needs_a_mesh(full):
    with pytest.raises(ValueError, match="capture='panorama' applies to procedural scenes"):
        capture_scene(dataclasses.replace(full, mesh=None), "panorama")
    with pytest.raises(ValueError, match="capture must be"):
        capture_scene(full, "walk:0")
    assert capture_scene(full, "full") is full


@pytest.mark.parametrize("mode", MODES)
def test_cached_and_saved_captures_round_trip(full, captured, mode, tmp_path):
    first = resolve_scenes("procedural:seed:0", CPU, (32, 32), 90.0, capture=mode)[0]  # generated, then cached
    second = resolve_scenes("procedural:seed:0", CPU, (32, 32), 90.0, capture=mode)[0]  # read from the cache
    _assert_same_memory(first, captured[mode])
    _assert_same_memory(second, captured[mode])
    assert torch.equal(second.mesh.vertices, full.mesh.vertices)
    path = save_scene(captured[mode], tmp_path / "captured.wfscene")
    loaded = load_scene_file(path)
    _assert_same_memory(loaded, captured[mode])
    assert loaded.info == captured[mode].info


def test_capture_of_a_scene_file_is_refused(full, tmp_path):
    path = save_scene(full, tmp_path / "scene.wfscene")
    with pytest.raises(ValueError, match="capture='walk:3' applies to procedural scenes only"):
        resolve_scenes(str(path), CPU, (32, 32), 90.0, capture="walk:3")
    assert resolve_scenes(str(path), CPU, (32, 32), 90.0)[0].points_xyz.shape == full.points_xyz.shape


def test_panorama_density_follows_the_bank_resolution(full):
    face = capture_scene(full, "panorama").info["capture"]["cube_face_size"]
    # 6 faces hold as many pixels as an equirectangular panorama 8 bank widths wide and half as high.
    assert abs(6 * face**2 - (8 * 32) * (4 * 32)) <= 6 * (2 * face + 1)
    assert math.isclose(face, 74, abs_tol=1)
