"""Tests of the scene importers (meta.json, panorama, PLY) and the navigation grid from points."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from worldfm_env.geometry import invert_pose, pose_from_yaw_pitch, project_points
from worldfm_env.scenes.navigation import navigation_grid_from_points
from worldfm_env.scenes.scene_file import save_scene
from worldfm_env.scenes.sources import (
    load_meta_json_scene,
    load_panorama_scene,
    load_ply_scene,
    load_scene,
    panorama_directions,
    read_ply,
    save_ply,
)

H, W = 32, 48
K_META = [[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]
WALL_Z = 3.0  # world z of the back wall of the synthetic meta.json scene; the floor is y = 0
WALL_TOP = 1.0  # the wall rises to y = -1 (gravity +y), leaving sky pixels with no depth above it


def _pose(x, y, z, yaw, pitch) -> np.ndarray:
    c2w = pose_from_yaw_pitch(torch.tensor([x, y, z]), torch.tensor(yaw), torch.tensor(pitch))
    return c2w.numpy().astype(np.float64)


def _synthetic_view() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, z-depth (H, W) of a floor y=0 + 1 m wall at z=3 seen from c2w, c2w (4, 4))."""
    c2w = _pose(0.2, -1.2, 0.0, 0.1, -0.35)  # 1.2 above the floor, looking down a little
    K = np.array(K_META)
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    ray = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # (H, W, 3), z = 1
    d = ray @ c2w[:3, :3].T  # world direction per unit of camera z
    o = c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[..., 1] > 1e-6, (0.0 - o[1]) / d[..., 1], np.inf)
        t_wall = np.where(d[..., 2] > 1e-6, (WALL_Z - o[2]) / d[..., 2], np.inf)
    t_wall = np.where(o[1] + t_wall * d[..., 1] >= -WALL_TOP, t_wall, np.inf)  # open sky above the wall
    t_floor = np.where(o[2] + t_floor * d[..., 2] <= WALL_Z, t_floor, np.inf)  # no floor behind the wall
    depth = np.minimum(t_floor, t_wall)
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    return image, depth, c2w


def _write_meta(tmp_path, depth_kind: str | None = "npy", **overrides) -> tuple:
    image, depth, c2w = _synthetic_view()
    Image.fromarray(image).save(tmp_path / "input.png")
    trajectory = [c2w, _pose(0.3, -1.2, 0.2, 0.2, 0.0), _pose(0.4, -1.2, 0.4, 0.3, 0.0)]
    meta = {"name": "synthetic", "image": "input.png", "K": K_META, "c2w": [t.tolist() for t in trajectory]}
    if depth_kind == "npy":
        np.save(tmp_path / "depth.npy", depth)
        meta["depth"] = "depth.npy"
    elif depth_kind == "png":
        Image.fromarray(np.round(depth * 1000.0).astype(np.uint16)).save(tmp_path / "depth.png")
        meta["depth"] = "depth.png"
    meta.update(overrides)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path / "meta.json", image, depth, c2w, trajectory


# ------------------------------------------------------------------------------------------------
# meta.json
# ------------------------------------------------------------------------------------------------


def test_meta_json_points_reproject_to_their_pixels(tmp_path):
    meta_path, image, depth, c2w, trajectory = _write_meta(tmp_path)
    scene = load_meta_json_scene(meta_path)
    valid = depth > 0
    assert 0 < valid.sum() < H * W  # the synthetic view has sky pixels that must be skipped
    assert scene.points_xyz.shape == (int(valid.sum()), 3)
    assert torch.equal(scene.points_rgb, torch.from_numpy(image[valid]))
    uv, z = project_points(scene.points_xyz, torch.tensor(K_META), invert_pose(torch.from_numpy(c2w).float()))
    v, u = np.nonzero(valid)
    expected = torch.from_numpy(np.stack([u + 0.5, v + 0.5], -1)).float()
    assert torch.allclose(uv, expected, atol=1e-3)
    assert torch.allclose(z, torch.from_numpy(depth[valid]), rtol=1e-5)
    # The floor points lie on the floor plane y = 0 and the wall points on z = 3.
    y = scene.points_xyz[:, 1]
    on_floor = y.abs() < 1e-3
    assert on_floor.sum() > 0 and (scene.points_xyz[~on_floor, 2] - WALL_Z).abs().max() < 1e-3

    assert scene.name == "synthetic"
    assert scene.bank.num_views == 1 and scene.bank.resolution == (H, W)
    assert torch.equal(scene.bank.images[0], torch.from_numpy(image))
    assert np.allclose(scene.info["trajectory_c2w"], np.stack(trajectory))
    assert scene.info["trajectory_K"] == K_META
    assert scene.info["trajectory_image_size"] == [H, W]
    assert abs(scene.navigation_grid.floor_y) < 0.02 and abs(scene.camera_height - 1.2) < 0.02


def test_meta_json_png_depth_matches_npy_and_bank_resize(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    meta_npy = _write_meta(tmp_path / "a", "npy")[0]
    meta_png = _write_meta(tmp_path / "b", "png")[0]
    a = load_meta_json_scene(meta_npy)
    b = load_meta_json_scene(meta_png, resolution=(16, 24))
    assert a.points_xyz.shape == b.points_xyz.shape
    assert (a.points_xyz - b.points_xyz).abs().max() < 1e-3  # within 1 mm
    assert b.bank.resolution == (16, 24)
    assert torch.allclose(b.bank.K[0], torch.tensor(K_META) * torch.tensor([[0.5], [0.5], [1.0]]))
    # Explicit depth arguments and the directory / .json dispatch all reach the same scene.
    image, depth, _ = _synthetic_view()
    c = load_meta_json_scene(tmp_path / "a", depth=torch.from_numpy(depth))
    assert torch.equal(a.points_xyz, c.points_xyz)
    assert torch.equal(load_scene(tmp_path / "a").points_xyz, a.points_xyz)
    assert torch.equal(load_scene(meta_npy).points_xyz, a.points_xyz)


def test_meta_json_single_pose_and_image_pose(tmp_path):
    _, _, _, c2w, _ = _write_meta(tmp_path, c2w=np.eye(4).tolist())
    # With one target pose and an explicit image pose, the trajectory is one 4x4 and the cloud uses image_c2w.
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["image_c2w"] = c2w.tolist()
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    scene = load_meta_json_scene(tmp_path / "meta.json")
    assert np.allclose(scene.info["trajectory_c2w"], [np.eye(4)])
    assert torch.allclose(scene.bank.c2w[0], torch.from_numpy(c2w).float())


def _scaled(T, s):
    T = np.array(T, dtype=np.float64)
    T[:3, :3] *= s
    return T.tolist()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: m.pop("K"), r"missing required key 'K'"),
        (lambda m: m.pop("c2w"), r"missing required key 'c2w'"),
        (lambda m: m.update(K=[[40.0, 0.0], [0.0, 40.0]]), r"K must be 3x3"),
        (lambda m: m.update(c2w=np.eye(3).tolist()), r"c2w must be one 4x4"),
        (lambda m: m.update(c2w=[np.zeros((4, 4)).tolist()]), r"c2w\[0\] is not invertible"),
        (lambda m: m.update(c2w=[m["c2w"][0], _scaled(m["c2w"][1], 2.0)]), r"c2w\[1\] is not rigid"),
        (lambda m: m.update(image="missing.png"), r"image: image file .*missing\.png"),
        (lambda m: m.pop("depth"), r"no depth"),
    ],
)
def test_meta_json_errors(tmp_path, mutate, match):
    meta_path = _write_meta(tmp_path)[0]
    meta = json.loads(meta_path.read_text())
    mutate(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        load_meta_json_scene(meta_path)


def test_meta_json_depth_errors(tmp_path):
    meta_path, _, depth, _, _ = _write_meta(tmp_path)
    with pytest.raises(ValueError, match=r"depth size 30x48 \(HxW\) does not match image size 32x48"):
        load_meta_json_scene(meta_path, depth=depth[:30])
    with pytest.raises(ValueError, match=r"depth has no valid pixels"):
        load_meta_json_scene(meta_path, depth=np.zeros_like(depth))
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "d8.png")
    with pytest.raises(ValueError, match=r"depth: depth PNG .* must be 16-bit"):
        load_meta_json_scene(meta_path, depth=tmp_path / "d8.png")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"not valid JSON"):
        load_scene(tmp_path / "bad.json")


def test_unknown_scene_kind(tmp_path):
    (tmp_path / "room.obj").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"unknown kind '\.obj'.*\.wfscene.*meta\.json.*\.ply"):
        load_scene(tmp_path / "room.obj")
    with pytest.raises(ValueError, match=r"directory without meta\.json"):
        load_scene(tmp_path)


# ------------------------------------------------------------------------------------------------
# panorama
# ------------------------------------------------------------------------------------------------

CUBE = 2.0  # half-size of the box room around the panorama's centre
FACE_RGB = {
    (0, 1): (255, 0, 0),
    (0, -1): (0, 255, 255),
    (1, 1): (0, 255, 0),
    (1, -1): (255, 0, 255),
    (2, 1): (0, 0, 255),
    (2, -1): (255, 255, 0),
}


def _cube_range(d: np.ndarray) -> np.ndarray:
    """Range along unit directions (..., 3) from the centre of the cube to its walls."""
    return CUBE / np.abs(d).max(-1)


def _face_colour(d: np.ndarray) -> np.ndarray:
    axis = np.abs(d).argmax(-1)
    sign = np.sign(np.take_along_axis(d, axis[..., None], -1)[..., 0]).astype(int)
    out = np.zeros(d.shape[:-1] + (3,), np.uint8)
    for (a, s), colour in FACE_RGB.items():
        out[(axis == a) & (sign == s)] = colour
    return out


def _cube_panorama(ph: int = 96) -> tuple[np.ndarray, np.ndarray]:
    d = panorama_directions(ph, 2 * ph).double().numpy()
    return _face_colour(d), _cube_range(d).astype(np.float32)


def test_panorama_cube_points_and_bank(tmp_path):
    rgb, rng = _cube_panorama()
    Image.fromarray(rgb).save(tmp_path / "room.png")
    np.save(tmp_path / "room_depth.npy", rng)
    scene = load_panorama_scene(tmp_path / "room.png", tmp_path / "room_depth.npy", bank_resolution=(24, 32))
    # Every point lies on a wall of the cube.
    assert scene.points_xyz.shape == (rng.size, 3)
    assert (scene.points_xyz.abs().max(dim=1).values - CUBE).abs().max() < 1e-4
    # The WorldFM convention: row 0 looks up (-y), column W/4 looks along +z (our yaw 0).
    d = panorama_directions(96, 192)
    assert torch.allclose(d[0, 0], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)
    assert torch.allclose(d[48, 48], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(d[48, 96], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)

    bank = scene.bank
    assert bank.images.shape == (24, 24, 32, 3) and bank.depth.shape == (24, 24, 32)
    assert bank.K.shape == (24, 3, 3) and bank.c2w.shape == (24, 4, 4)
    # Analytic z-depth of every crop pixel.
    K = bank.K[0].double()
    v, u = torch.meshgrid(torch.arange(24.0).double() + 0.5, torch.arange(32.0).double() + 0.5, indexing="ij")
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)  # (h, w, 3)
    unit = ray / ray.norm(dim=-1, keepdim=True)
    world = torch.einsum("bij,hwj->bhwi", bank.c2w[:, :3, :3].double(), unit).numpy()
    z_true = _cube_range(world) / ray.norm(dim=-1).numpy()
    rel = np.abs(bank.depth.numpy() - z_true) / z_true
    assert (bank.depth > 0).all()
    assert np.median(rel) < 0.01 and rel.max() < 0.05  # nearest sampling: about one panorama pixel
    # Crop colours show the right faces: yaw 0 looks at +z, yaw 90 deg (left) at -x, yaw 180 at -z.
    faces = _face_colour(world)
    agree = (bank.images.numpy() == faces).all(-1).mean()
    assert agree > 0.9  # only pixels near the cube's edges blend two faces
    assert tuple(bank.images[0, 12, 16].tolist()) == FACE_RGB[(2, 1)]
    assert tuple(bank.images[2, 12, 16].tolist()) == FACE_RGB[(0, -1)]
    assert tuple(bank.images[4, 12, 16].tolist()) == FACE_RGB[(2, -1)]

    # Floor estimated at y = +CUBE, so the camera is CUBE above it; free cells are inside the walls.
    grid = scene.navigation_grid
    assert abs(grid.floor_y - CUBE) < 1e-3 and abs(scene.camera_height - CUBE) < 1e-3
    rows, cols = torch.nonzero(grid.free, as_tuple=True)
    x, z = grid.cell_center(rows, cols)
    assert rows.numel() > 50
    assert x.abs().max() < CUBE - 0.18 and z.abs().max() < CUBE - 0.18


def test_panorama_errors_and_png_depth(tmp_path):
    rgb, rng = _cube_panorama(32)
    with pytest.raises(ValueError, match=r"image: an equirectangular panorama must be H x 2H"):
        load_panorama_scene(rgb[:, :60], rng[:, :60])
    with pytest.raises(ValueError, match=r"depth size 32x60 \(HxW\) does not match panorama image size 32x64"):
        load_panorama_scene(rgb, rng[:, :60])
    with pytest.raises(ValueError, match=r"depth has no valid pixels"):
        load_panorama_scene(rgb, np.zeros_like(rng))
    Image.fromarray(np.round(rng * 1000).astype(np.uint16)).save(tmp_path / "d.png")
    scene = load_panorama_scene(
        rgb, tmp_path / "d.png", camera_height=CUBE, bank_pitches=(0.0,), bank_yaws=4, cell_size=0.3
    )
    assert scene.bank.num_views == 4 and scene.camera_height == CUBE
    assert (scene.points_xyz.abs().max(dim=1).values - CUBE).abs().max() < 1e-3


# ------------------------------------------------------------------------------------------------
# PLY and the navigation grid
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_ply_round_trip(tmp_path, fmt):
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(100, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(100, 3), dtype=np.uint8)
    path = save_ply(tmp_path / f"cloud_{fmt}.ply", xyz, rgb, fmt=fmt)
    xyz2, rgb2 = read_ply(path)
    assert np.array_equal(xyz, xyz2) and np.array_equal(rgb, rgb2)


def test_ply_float_colours_no_colours_and_faces(tmp_path):
    text = (
        "ply\nformat ascii 1.0\ncomment test\nelement vertex 3\nproperty double x\nproperty double y\n"
        "property double z\nproperty float red\nproperty float green\nproperty float blue\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "0 0 0 1.0 0.0 0.5\n1 0 0 0 1 0\n0 1 0 0 0 1\n3 0 1 2\n"
    )
    (tmp_path / "f.ply").write_text(text)
    xyz, rgb = read_ply(tmp_path / "f.ply")
    assert xyz.shape == (3, 3) and rgb.tolist() == [[255, 0, 128], [0, 255, 0], [0, 0, 255]]
    # Binary with a face element after the vertices and no colours: grey.
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
    )
    body = np.arange(6, dtype="<f4").tobytes() + bytes([3]) + np.arange(3, dtype="<i4").tobytes()
    (tmp_path / "g.ply").write_bytes(header.encode() + body)
    xyz, rgb = read_ply(tmp_path / "g.ply")
    assert xyz.tolist() == [[0, 1, 2], [3, 4, 5]] and (rgb == 128).all()
    (tmp_path / "bad.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 5\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n\0\0"
    )
    with pytest.raises(ValueError, match=r"file truncated"):
        read_ply(tmp_path / "bad.ply")
    (tmp_path / "noz.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n"
    )
    with pytest.raises(ValueError, match=r"no 'z' property"):
        read_ply(tmp_path / "noz.ply")


def _room_points(half: float = 2.0, step: float = 0.05, wall_height: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """A square room: floor y = 0, four walls up to y = -wall_height, a 0.3 m pillar at (0.6, 0.6)."""
    s = np.arange(-half, half + 1e-6, step)
    h = np.arange(0.0, wall_height + 1e-6, step)
    fx, fz = np.meshgrid(s, s, indexing="ij")
    floor = np.stack([fx.ravel(), np.zeros(fx.size), fz.ravel()], 1)
    a, y = np.meshgrid(s, -h, indexing="ij")
    a, y = a.ravel(), y.ravel()
    walls = [np.stack([np.full_like(a, c), y, a], 1) for c in (-half, half)]
    walls += [np.stack([a, y, np.full_like(a, c)], 1) for c in (-half, half)]
    p = np.arange(0.45, 0.75 + 1e-6, step)
    px, py, pz = np.meshgrid(p, -np.arange(0.0, 1.0, step), p, indexing="ij")
    pillar = np.stack([px.ravel(), py.ravel(), pz.ravel()], 1)
    xyz = np.concatenate([floor, *walls, pillar]).astype(np.float32)
    rgb = np.random.default_rng(2).integers(0, 256, size=xyz.shape, dtype=np.uint8)
    return xyz, rgb


def test_navigation_grid_of_a_room():
    xyz, _ = _room_points()
    grid = navigation_grid_from_points(torch.from_numpy(xyz), cell_size=0.1)
    assert abs(grid.floor_y) < 1e-6
    rows, cols = torch.nonzero(grid.free, as_tuple=True)
    x, z = grid.cell_center(rows, cols)
    assert rows.numel() > 0.6 * (40 * 40)
    assert x.abs().max() < 2.0 - 0.18 and z.abs().max() < 2.0 - 0.18
    # The pillar (x, z in [0.45, 0.75]) and a margin of the agent radius around it are not free.
    r, c = grid.world_to_cell(torch.tensor([0.6, 0.4, 0.85]), torch.tensor([0.6, 0.6, 0.6]))
    assert not grid.free[r, c].any()
    assert bool(grid.free[grid.world_to_cell(torch.tensor(-1.0), torch.tensor(-1.0))])


def test_no_floor_means_no_free_space(tmp_path):
    s = np.arange(-2.0, 2.0, 0.05)
    a, y = np.meshgrid(s, -np.arange(0.0, 2.5, 0.05), indexing="ij")
    wall = np.stack([a.ravel(), y.ravel(), np.zeros(a.size)], 1).astype(np.float32)
    save_ply(tmp_path / "wall.ply", wall)
    with pytest.raises(ValueError, match=r"no free space"):
        load_ply_scene(tmp_path / "wall.ply")


def test_ply_scene_bank_and_scene_file_round_trip(tmp_path):
    xyz, rgb = _room_points()
    save_ply(tmp_path / "room.ply", xyz, rgb)
    scene = load_scene(tmp_path / "room.ply", bank_positions=3, bank_yaws=4, bank_resolution=(24, 32))
    assert torch.equal(scene.points_xyz, torch.from_numpy(xyz)) and torch.equal(scene.points_rgb, torch.from_numpy(rgb))
    bank = scene.bank
    assert bank.images.shape == (12, 24, 32, 3)
    # Capture positions stand on free cells at camera height; every view sees the room around it.
    grid = scene.navigation_grid
    pos = bank.c2w[:, :3, 3]
    assert torch.allclose(pos[:, 1], torch.full((12,), grid.floor_y - scene.camera_height))
    assert grid.free[grid.world_to_cell(pos[:, 0], pos[:, 2])].all()
    assert (bank.depth[:, 12:] > 0).all()  # the lower half sees floor and walls (the room has no ceiling)
    assert (bank.depth[bank.depth > 0] < 2.0 * math.sqrt(2) * 2.0).all()

    # save_scene / load_scene_file round trip is tensor-exact.
    for imported in (scene, load_meta_json_scene(_write_meta(tmp_path)[0])):
        path = save_scene(imported, tmp_path / f"{imported.name}.wfscene")
        loaded = load_scene(path)
        for f in ("points_xyz", "points_rgb"):
            assert torch.equal(getattr(imported, f), getattr(loaded, f))
        for f in fields(imported.bank):
            assert torch.equal(getattr(imported.bank, f.name), getattr(loaded.bank, f.name))
        assert torch.equal(imported.navigation_grid.free, loaded.navigation_grid.free)
        assert imported.navigation_grid.origin == loaded.navigation_grid.origin
        assert imported.navigation_grid.floor_y == loaded.navigation_grid.floor_y
        assert imported.camera_height == loaded.camera_height and imported.info == loaded.info


def test_a_depth_file_with_a_damaged_header_names_the_file(tmp_path):
    """numpy parses an .npy header as a Python literal: an unclosed bracket there raises a tokenizer error, which the
    reader turns into a ValueError naming the field and the file (as for any other unreadable depth file)."""
    import struct

    from worldfm_env.scenes.sources._io import read_depth

    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3"
    header += " " * (64 - 10 - len(header) - 1) + "\n"
    path = tmp_path / "depth.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + bytes(24))
    with pytest.raises(ValueError, match=r"depth: .*depth\.npy.* is not a readable \.npy array"):
        read_depth(path)
