"""Geometry: conventions, round trips and action integration."""

import math

import pytest
import torch

from worldfm_env.geometry import (
    integrate_continuous,
    integrate_discrete,
    intrinsics_from_fov,
    invert_pose,
    pose_from_yaw_pitch,
    project_points,
    unproject_depth,
)


def random_poses(n, gen):
    pos = torch.randn(n, 3, generator=gen)
    yaw = (torch.rand(n, generator=gen) * 2 - 1) * math.pi
    pitch = (torch.rand(n, generator=gen) * 2 - 1) * 0.8
    return pose_from_yaw_pitch(pos, yaw, pitch)


def test_intrinsics_from_fov():
    K = intrinsics_from_fov(64, 48, 90.0)
    assert K.shape == (3, 3)
    assert K[0, 0].item() == pytest.approx(32.0)
    assert K[0, 2].item() == pytest.approx(32.0) and K[1, 2].item() == pytest.approx(24.0)
    with pytest.raises(ValueError, match="hfov_deg"):
        intrinsics_from_fov(64, 64, 180.0)


def test_pose_conventions():
    # yaw 0 looks along +z; positive yaw turns left (towards -x); positive pitch looks up (-y).
    z = torch.zeros(1)
    c2w = pose_from_yaw_pitch(torch.zeros(1, 3), z, z)
    assert torch.allclose(c2w[0, :3, :3], torch.eye(3), atol=1e-6)
    left = pose_from_yaw_pitch(torch.zeros(1, 3), torch.tensor([math.pi / 2]), z)
    assert torch.allclose(left[0, :3, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)
    up = pose_from_yaw_pitch(torch.zeros(1, 3), z, torch.tensor([math.pi / 4]))
    assert up[0, 1, 2].item() < 0  # forward has a negative y component: looking up
    R = random_poses(16, torch.Generator().manual_seed(0))[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16), atol=1e-5)


def test_invert_pose():
    c2w = random_poses(8, torch.Generator().manual_seed(1))
    assert torch.allclose(invert_pose(c2w) @ c2w, torch.eye(4).expand(8, 4, 4), atol=1e-5)


def test_project_unproject_round_trip():
    gen = torch.Generator().manual_seed(2)
    H, W = 24, 32
    K = intrinsics_from_fov(W, H, 70.0).expand(4, 3, 3)
    c2w = random_poses(4, gen)
    depth = 0.5 + 4.0 * torch.rand(4, H, W, generator=gen)
    world = unproject_depth(depth, K, c2w)  # (4, H, W, 3)
    uv, z = project_points(world.reshape(4, -1, 3), K, invert_pose(c2w))
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    assert torch.allclose(uv[..., 0], u.reshape(-1).expand(4, -1), atol=1e-3)
    assert torch.allclose(uv[..., 1], v.reshape(-1).expand(4, -1), atol=1e-3)
    assert torch.allclose(z, depth.reshape(4, -1), atol=1e-4)


def test_integrate_discrete():
    pos = torch.zeros(6, 3)
    yaw = torch.zeros(6)
    pitch = torch.zeros(6)
    act = torch.arange(6)
    p, y, t = integrate_discrete(pos, yaw, pitch, act, 0.25, math.radians(15), math.radians(15), math.radians(45))
    assert torch.allclose(p[1], torch.tensor([0.0, 0.0, 0.25]))  # forward along +z
    assert torch.equal(p[[0, 2, 3, 4, 5]], pos[[0, 2, 3, 4, 5]])
    assert y[2].item() == pytest.approx(math.radians(15)) and y[3].item() == pytest.approx(-math.radians(15))
    assert t[4].item() == pytest.approx(math.radians(15)) and t[5].item() == pytest.approx(-math.radians(15))
    # pitch is clamped
    _, _, t2 = integrate_discrete(pos[:1], yaw[:1], torch.tensor([0.7]), torch.tensor([4]), 0.25, 0.2, 0.2, 0.75)
    assert t2.item() == pytest.approx(0.75)


def test_integrate_continuous_moves_along_heading():
    pos = torch.zeros(2, 3)
    yaw = torch.tensor([0.0, math.pi / 2])
    act = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, -1.0]])
    p, y, t = integrate_continuous(pos, yaw, torch.zeros(2), act, 0.25, 0.25, 0.1, 0.1, 1.0)
    assert torch.allclose(p[0], torch.tensor([0.0, 0.0, 0.25]), atol=1e-6)
    # facing -x (yaw +90 deg), strafing right moves towards +z
    assert torch.allclose(p[1], torch.tensor([0.0, 0.0, 0.25]), atol=1e-6)
    assert y[1].item() == pytest.approx(math.pi / 2 + 0.1) and t[1].item() == pytest.approx(-0.1)
