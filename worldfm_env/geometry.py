"""Batched camera geometry in the OpenCV convention (x right, y down, z forward).

Every function takes and returns ``torch`` tensors, works on any device, and is batched over
leading dimensions. Poses are camera-to-world 4x4 matrices (``c2w``); intrinsics are 3x3 in
pixels of the image they describe. The world has gravity along +y: the agent moves in the x-z
plane and yaws about the world y axis. ``yaw = 0`` looks along +z; a positive yaw turns the
camera to its left (towards -x when facing +z), a positive pitch looks up (towards -y).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "intrinsics_from_fov",
    "invert_pose",
    "pose_from_yaw_pitch",
    "unproject_depth",
    "project_points",
    "transform_points",
    "integrate_discrete",
    "integrate_continuous",
    "pixel_grid",
]


def intrinsics_from_fov(
    width: int, height: int, hfov_deg: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Pinhole intrinsics (3, 3) for an image of ``width`` x ``height`` pixels.

    ``hfov_deg`` is the horizontal field of view in degrees (0, 180). Pixels are square and the
    principal point is the image centre (pixel centres at integer + 0.5, as in OpenCV).
    """
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg must be in (0, 180) degrees, got {hfov_deg}")
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got width={width}, height={height}")
    focal = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
    K = torch.tensor(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
        device=device,
    )
    return K


def invert_pose(c2w: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid 4x4 poses (..., 4, 4): c2w -> w2c (exact for rotation + translation)."""
    R = c2w[..., :3, :3]
    t = c2w[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(c2w)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def pose_from_yaw_pitch(position: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Camera-to-world poses (..., 4, 4) from positions (..., 3), yaw (...) and pitch (...) in radians.

    R = R_y(-yaw) @ R_x(pitch): yaw turns left about world y (which points down), pitch looks up.
    """
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    zero = torch.zeros_like(yaw)
    one = torch.ones_like(yaw)
    # R_y(-yaw): forward (0,0,1) -> (-sin yaw, 0, cos yaw), i.e. positive yaw turns towards -x (left).
    Ry = torch.stack(
        [
            torch.stack([cy, zero, -sy], -1),
            torch.stack([zero, one, zero], -1),
            torch.stack([sy, zero, cy], -1),
        ],
        -2,
    )
    # R_x(pitch): forward (0,0,1) -> (0, -sin pitch, cos pitch), i.e. positive pitch looks up (-y).
    Rx = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cp, -sp], -1),
            torch.stack([zero, sp, cp], -1),
        ],
        -2,
    )
    R = Ry @ Rx
    c2w = torch.zeros(*yaw.shape, 4, 4, dtype=position.dtype, device=position.device)
    c2w[..., :3, :3] = R
    c2w[..., :3, 3] = position
    c2w[..., 3, 3] = 1.0
    return c2w


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel-centre coordinates (H, W, 2) as (u, v) = (column + 0.5, row + 0.5)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device) + 0.5,
        torch.arange(width, dtype=torch.float32, device=device) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 transforms (..., 4, 4) to points (..., P, 3); returns (..., P, 3)."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def unproject_depth(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """World points (..., H, W, 3) of every pixel centre of z-depth maps (..., H, W).

    ``depth`` is the z coordinate in the camera frame (OpenCV), ``K`` (..., 3, 3), ``c2w`` (..., 4, 4).
    """
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, device=depth.device)  # (H, W, 2)
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    cam = torch.stack([x, y, depth], dim=-1)  # (..., H, W, 3)
    flat = cam.reshape(*cam.shape[:-3], H * W, 3)
    world = transform_points(c2w, flat)
    return world.reshape(cam.shape)


def project_points(points: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points (..., P, 3) with intrinsics (..., 3, 3) and w2c (..., 4, 4).

    Returns pixel coordinates (..., P, 2) as (u, v) (pixel centres at integer + 0.5) and camera-frame
    depth z (..., P). Points with z <= 0 get non-finite or meaningless (u, v); callers mask on z.
    """
    cam = transform_points(w2c, points)
    z = cam[..., 2]
    safe_z = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    u = K[..., 0, 0, None] * cam[..., 0] / safe_z + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * cam[..., 1] / safe_z + K[..., 1, 2, None]
    return torch.stack([u, v], dim=-1), z


def integrate_discrete(
    position: torch.Tensor,
    yaw: torch.Tensor,
    pitch: torch.Tensor,
    action: torch.Tensor,
    forward_step: float,
    turn_angle: float,
    tilt_angle: float,
    max_pitch: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next (position, yaw, pitch) for discrete actions (N,) int.

    0 stop, 1 forward by ``forward_step`` metres in the x-z plane, 2 turn left / 3 turn right by
    ``turn_angle`` radians, 4 look up / 5 look down by ``tilt_angle`` radians, pitch clamped to
    [-max_pitch, max_pitch]. Position moves along the heading only (pitch never lifts the agent).
    """
    forward = (action == 1).to(position.dtype) * forward_step
    d_yaw = ((action == 2).to(yaw.dtype) - (action == 3).to(yaw.dtype)) * turn_angle
    d_pitch = ((action == 4).to(pitch.dtype) - (action == 5).to(pitch.dtype)) * tilt_angle
    return _integrate(position, yaw, pitch, forward, torch.zeros_like(forward), d_yaw, d_pitch, max_pitch)


def integrate_continuous(
    position: torch.Tensor,
    yaw: torch.Tensor,
    pitch: torch.Tensor,
    action: torch.Tensor,
    max_forward: float,
    max_strafe: float,
    max_yaw: float,
    max_tilt: float,
    max_pitch: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next (position, yaw, pitch) for continuous actions (N, 4) in [-1, 1].

    Columns: forward (metres x ``max_forward``), strafe right (x ``max_strafe``), yaw rate (left
    positive, x ``max_yaw`` radians), pitch rate (up positive, x ``max_tilt`` radians).
    """
    a = action.to(position.dtype)
    return _integrate(
        position,
        yaw,
        pitch,
        a[:, 0] * max_forward,
        a[:, 1] * max_strafe,
        a[:, 2] * max_yaw,
        a[:, 3] * max_tilt,
        max_pitch,
    )


def _integrate(position, yaw, pitch, forward, strafe, d_yaw, d_pitch, max_pitch):
    # Translate along the current heading first, then rotate (the habitat convention for discrete moves).
    sin_y, cos_y = torch.sin(yaw), torch.cos(yaw)
    # Heading in world x-z: forward = (-sin yaw, cos yaw); right = (cos yaw, sin yaw).
    dx = -sin_y * forward + cos_y * strafe
    dz = cos_y * forward + sin_y * strafe
    new_position = position.clone()
    new_position[:, 0] += dx
    new_position[:, 2] += dz
    new_yaw = torch.remainder(yaw + d_yaw + math.pi, 2.0 * math.pi) - math.pi
    new_pitch = torch.clamp(pitch + d_pitch, -max_pitch, max_pitch)
    return new_position, new_yaw, new_pitch
