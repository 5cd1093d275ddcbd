"""Tests of the warp ray caster (worldfm_env.render.raycast) on hand-made meshes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldfm_env.geometry import (
    intrinsics_from_fov,
    invert_pose,
    pose_from_yaw_pitch,
    transform_points,
    unproject_depth,
)
from worldfm_env.render.raycast import (
    MATERIAL_DIM,
    PATTERN_BRICK,
    PATTERN_CHECKER,
    PATTERN_PLAIN,
    PATTERN_STRIPES,
    PATTERN_TILES,
    PATTERN_WOOD,
    MeshRaycaster,
    make_material,
)
from worldfm_env.scenes.scene import TriangleMesh

H = W = 64


def _quad_mesh(z: float = 2.0, half: float = 1.0, pattern: int = PATTERN_TILES) -> TriangleMesh:
    """A square quad in the plane z = const, facing the origin (normal -z)."""
    v = torch.tensor([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], dtype=torch.float32)
    # cross(v1 - v0, v2 - v0) = (2h, 0, 0) x (2h, 2h, 0) = +z; reverse the winding for -z (towards the camera).
    f = torch.tensor([[0, 2, 1], [0, 3, 2]], dtype=torch.int32)
    mat = torch.from_numpy(make_material([0.8, 0.5, 0.3], [0.3, 0.3, 0.35], pattern, scale=0.3, noise_amp=0.2))
    return TriangleMesh(v, f, torch.zeros(2, dtype=torch.int32), mat[None])


def _corner_mesh() -> TriangleMesh:
    """A floor (y = 1, facing up = -y) and a back wall (z = 4, facing -z), each with its own material."""
    v = torch.tensor(
        [[-4, 1, -1], [4, 1, -1], [4, 1, 4], [-4, 1, 4], [-4, -3, 4], [4, -3, 4], [4, 1, 4], [-4, 1, 4]],
        dtype=torch.float32,
    )
    f = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6]], dtype=torch.int32)
    mats = np.stack(
        [
            make_material([0.6, 0.4, 0.2], [0.4, 0.25, 0.1], PATTERN_WOOD, scale=0.2, noise_amp=0.1, param=0.1),
            make_material([0.7, 0.7, 0.8], [0.3, 0.3, 0.5], PATTERN_STRIPES, scale=0.3, noise_amp=0.1, param=0.4),
            make_material([0.9, 0.2, 0.2], pattern=PATTERN_PLAIN, noise_amp=0.3, noise_scale=0.1),
        ]
    )
    return TriangleMesh(v, f, torch.tensor([0, 0, 1, 1], dtype=torch.int32), torch.from_numpy(mats))


def _render1(rc: MeshRaycaster, c2w: torch.Tensor, K: torch.Tensor, h: int = H, w: int = W, scene: int = 0):
    return rc.render(torch.full((c2w.shape[0],), scene, dtype=torch.int64), c2w, K, h, w)


def _pose(pos, yaw_deg=0.0, pitch_deg=0.0) -> torch.Tensor:
    return pose_from_yaw_pitch(
        torch.tensor(pos, dtype=torch.float32),
        torch.tensor(math.radians(yaw_deg)),
        torch.tensor(math.radians(pitch_deg)),
    )


def test_quad_depth_exact_and_coverage():
    rc = MeshRaycaster([_quad_mesh(z=2.0, half=1.0)])
    K = intrinsics_from_fov(W, H, 90.0)  # f = 32 px, principal point (32, 32)
    rgb, depth = _render1(rc, torch.eye(4)[None], K)
    assert rgb.shape == (1, H, W, 3) and rgb.dtype == torch.uint8
    assert depth.shape == (1, H, W) and depth.dtype == torch.float32
    # Pixel centre u + 0.5 sees x = (u + 0.5 - 32) / 32 * 2, inside [-1, 1] for u in [16, 47].
    idx = torch.arange(W)
    inside = (idx >= 16) & (idx <= 47)
    expected_mask = inside[:, None] & inside[None, :]
    assert torch.equal(depth[0] > 0, expected_mask)
    assert torch.allclose(depth[0][expected_mask], torch.full((int(expected_mask.sum()),), 2.0), atol=1e-5)
    assert (rgb[0][~expected_mask] == 0).all()
    assert (rgb[0][expected_mask].float().sum(-1) > 0).all()


def test_depth_is_camera_z_not_ray_length():
    rc = MeshRaycaster([_quad_mesh(z=2.0, half=50.0)])
    K = intrinsics_from_fov(W, H, 90.0)
    _, depth = _render1(rc, torch.eye(4)[None], K)
    # The corner pixel's ray is ~1.7x longer than its z; the depth must stay the plane's z = 2.
    assert depth[0, 0, 0].item() == pytest.approx(2.0, abs=1e-5)
    assert depth[0, -1, -1].item() == pytest.approx(2.0, abs=1e-5)
    # A turned and tilted camera: unprojecting its z-depth must land every pixel on the plane z = 2.
    c2w = _pose([0.3, -0.2, 0.1], yaw_deg=25.0, pitch_deg=-15.0)[None]
    _, depth = _render1(rc, c2w, K)
    assert (depth > 0).all()
    world = unproject_depth(depth[0], K, c2w[0])
    assert torch.allclose(world[..., 2], torch.full((H, W), 2.0), atol=1e-4)


def test_batched_equals_single_renders_bit_exact():
    rc = MeshRaycaster([_quad_mesh(), _corner_mesh()])
    poses = torch.stack(
        [
            _pose([0.0, 0.0, 0.0]),
            _pose([0.5, -0.5, 0.5], 20.0, -30.0),
            _pose([-1.0, -0.5, 0.0], -35.0, -10.0),
            _pose([0.2, 0.0, -0.3], 5.0, 5.0),
        ]
    )
    scenes = torch.tensor([0, 1, 1, 0])
    Ks = torch.stack([intrinsics_from_fov(W, H, fov) for fov in (90.0, 70.0, 100.0, 60.0)])
    rgb, depth = rc.render(scenes, poses, Ks, H, W)
    for i in range(4):
        r1, d1 = rc.render(scenes[i : i + 1], poses[i : i + 1], Ks[i], H, W)
        assert torch.equal(r1[0], rgb[i]) and torch.equal(d1[0], depth[i])
    assert (depth[1] > 0).any() and (depth[0] > 0).any()


def test_out_buffers_written_in_place():
    rc = MeshRaycaster([_corner_mesh()])
    c2w = torch.stack([_pose([0.0, -0.5, 0.0], 10.0, -20.0), _pose([1.0, -0.5, 0.5], -20.0, -5.0)])
    K = intrinsics_from_fov(W, H, 90.0)
    ref_rgb, ref_depth = _render1(rc, c2w, K)
    out_rgb = torch.full((2, H, W, 3), 7, dtype=torch.uint8)
    out_depth = torch.full((2, H, W), -3.0)
    ptrs = (out_rgb.data_ptr(), out_depth.data_ptr())
    rgb, depth = rc.render(torch.zeros(2, dtype=torch.int32), c2w, K, H, W, out_rgb=out_rgb, out_depth=out_depth)
    assert rgb is out_rgb and depth is out_depth
    assert (out_rgb.data_ptr(), out_depth.data_ptr()) == ptrs
    assert torch.equal(out_rgb, ref_rgb) and torch.equal(out_depth, ref_depth)
    with pytest.raises(ValueError, match="out_depth"):
        rc.render(torch.zeros(2, dtype=torch.int32), c2w, K, H, W, out_depth=torch.empty(2, H, W + 1))


@pytest.mark.parametrize(
    "pattern", [PATTERN_PLAIN, PATTERN_CHECKER, PATTERN_STRIPES, PATTERN_TILES, PATTERN_WOOD, PATTERN_BRICK]
)
def test_colour_is_view_independent(pattern):
    """A world point seen by two very different cameras gets the same colour (within 1/255)."""
    mesh = _corner_mesh()
    mats = mesh.materials.clone()
    mats[0] = torch.from_numpy(make_material([0.7, 0.5, 0.3], [0.2, 0.3, 0.6], pattern, scale=0.25, noise_amp=0.3))
    mesh = TriangleMesh(mesh.vertices, mesh.faces, mesh.face_material, mats)
    rc = MeshRaycaster([mesh])
    K = intrinsics_from_fov(W, H, 90.0)
    cam_b = _pose([0.5, -0.8, 0.0], yaw_deg=-20.0, pitch_deg=-35.0)
    rgb_b, depth_b = _render1(rc, cam_b[None], K)
    world = unproject_depth(depth_b[0], K, cam_b)  # (H, W, 3)
    rows, cols = torch.nonzero(depth_b[0] > 0, as_tuple=True)
    sel = torch.linspace(0, rows.numel() - 1, 300).long()
    rows, cols = rows[sel], cols[sel]
    points = world[rows, cols]  # (P, 3)
    # Camera A: elsewhere, turned the other way. A 1x1 image per point with the principal point chosen so
    # that the single pixel centre's ray passes exactly through that point.
    cam_a = _pose([-1.5, -1.6, -1.0], yaw_deg=-25.0, pitch_deg=-30.0)
    cam_pts = transform_points(invert_pose(cam_a), points)  # (P, 3)
    in_front = cam_pts[:, 2] > 0.1
    assert in_front.float().mean() > 0.9
    points, cam_pts, rows, cols = points[in_front], cam_pts[in_front], rows[in_front], cols[in_front]
    f = 40.0
    Ks = torch.zeros(points.shape[0], 3, 3)
    Ks[:, 0, 0] = f
    Ks[:, 1, 1] = f
    Ks[:, 0, 2] = 0.5 - f * cam_pts[:, 0] / cam_pts[:, 2]
    Ks[:, 1, 2] = 0.5 - f * cam_pts[:, 1] / cam_pts[:, 2]
    Ks[:, 2, 2] = 1.0
    P = points.shape[0]
    rgb_a, depth_a = rc.render(torch.zeros(P, dtype=torch.int32), cam_a.expand(P, 4, 4), Ks, 1, 1)
    visible = (depth_a[:, 0, 0] - cam_pts[:, 2]).abs() < 1e-3  # not occluded from A
    assert visible.float().mean() > 0.9
    diff = (rgb_a[:, 0, 0].int() - rgb_b[0, rows, cols].int()).abs()[visible]
    assert diff.max().item() <= 1, f"max colour difference {diff.max().item()} between views"


def test_bad_inputs_raise():
    faces = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    bad = TriangleMesh(torch.zeros(3, 3), faces, torch.zeros(1, dtype=torch.int32), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="materials"):
        MeshRaycaster([bad])
    rc = MeshRaycaster([_quad_mesh()])
    K = intrinsics_from_fov(W, H, 90.0)
    with pytest.raises(ValueError, match="c2w"):
        rc.render(torch.zeros(1), torch.eye(4), K, H, W)
    with pytest.raises(ValueError, match="K must be"):
        rc.render(torch.zeros(2), torch.eye(4).expand(2, 4, 4), K.expand(3, 3, 3), H, W)


def test_out_of_range_scene_renders_empty():
    rc = MeshRaycaster([_quad_mesh()])
    rgb, depth = rc.render(torch.tensor([1, 0]), torch.eye(4).expand(2, 4, 4), intrinsics_from_fov(W, H, 90.0), H, W)
    assert (depth[0] == 0).all() and (rgb[0] == 0).all()
    assert (depth[1] > 0).any()


def test_make_material_layout():
    row = make_material(
        [0.1, 0.2, 0.3],
        [0.4, 0.5, 0.6],
        PATTERN_TILES,
        scale=0.4,
        noise_amp=0.2,
        noise_scale=0.3,
        param=0.05,
        rotate=True,
    )
    assert row.shape == (MATERIAL_DIM,) and row.dtype == np.float32
    np.testing.assert_allclose(row, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, PATTERN_TILES, 0.4, 0.2, 0.3, 0.05, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="pattern"):
        make_material([0, 0, 0], pattern=99)
