"""Explicit 3-D anchor: batched point splatting with a z-buffer, and reference-view selection.

Both run as warp kernels over all environments at once and share memory with torch.

Splat. Every point is projected into its env's camera and written to the pixel it falls in (or a
(2r+1)^2 square for ``radius=r``) with a 64-bit ``atomic_min`` on a packed key: the high 32 bits
are a quantised *effective depth* ``z * (1 + w * d^2)`` (``d`` = distance in pixels from the
pixel centre, ``w`` = ``center_weight``) and the low 32 bits the point index. The centre weight
makes a point that sits on a pixel's centre win over a point of the same surface that only
clips the pixel's corner, so a bank view re-rendered at its own pose reproduces its own pixels;
real occluders, which are more than ~2.5 % nearer, still win. Ties resolve to the lower point
index, so the result is deterministic on CPU and CUDA alike. A second, per-pixel pass decodes
the key into rgb / depth / mask and clears the buffer for the next frame. Point clouds are
chunked (see :class:`~worldfm_env.render.points.ChunkedPoints`) and chunks outside the camera frustum
are skipped whole.

Reference selection (the published depth-consistency vote). A fixed grid of about 300 target
pixels is back-projected with the anchor depth and projected into every bank view of the env's
scene; a sample is a hit when it lands inside the view, in front of it, and within 2 % of that
view's depth. The view with most hits wins; ties and the no-coverage case fall back to the
nearest view by pose.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from worldfm_env._device import init_warp, warp_device
from worldfm_env.geometry import invert_pose
from worldfm_env.render.points import ChunkedPoints

wp = init_warp()

__all__ = ["AnchorRender", "GrownViews", "PointSplatter", "ReferenceSelector", "splat_points"]

EMPTY_KEY = 0xFFFFFFFFFFFFFFFF
MEMORY_MAX_RADIUS = wp.constant(3)  # largest half-size of a grown point's footprint square
MEMORY_CHUNK_W = wp.constant(256)  # = MEMORY_CHUNK, for the kernels
_DEPTH_QUANT = 1048576.0  # 2**20 steps per scene unit in the key's high word
_MAX_KEY_DEPTH = 4095.0  # keeps depth * 2**20 inside 32 bits


@dataclass
class AnchorRender:
    """The anchor of N cameras.

    Attributes:
        rgb: (N, H, W, 3) uint8, black where no point landed.
        depth: (N, H, W) float32 camera z-depth, 0 where no point landed.
        mask: (N, H, W) bool coverage.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    grown: torch.Tensor | None = None
    """(N, H, W) bool: the pixel shows a grown (generated) point of the env's memory; None without a memory."""


MEMORY_CHUNK = 256
"""Points per chunk of a growing memory's point ring (each chunk has a bounding box the splat culls with)."""


class GrownViews:
    """A growing memory in the layout the splat and the vote read; its owner
    (:class:`~worldfm_env.memory.GrowingMemory`) writes the buffers in place, so the warp views made here stay valid.

    M memories (envs that share one use the same), each with a ring of ``points_per_memory`` points in chunks of
    :data:`MEMORY_CHUNK` (the first ``filled[g]`` slots of memory g are valid) and a ring of ``views_per_memory``
    views (the frames that wrote them, for the reference vote). Env i reads memory ``group[i]``.

    Attributes:
        xyz (M * Pm + 1, 3) float32 world points, rgb (M * Pm + 1, 3) uint8, spacing (M * Pm + 1,) float32 sample
        spacing (the last slot is a write sink nothing reads); filled (M,) int32 valid points per memory;
        chunk_min, chunk_max (M * Cm + 1, 3) float32 chunk bounds (the last row a write sink);
        c2w, w2c (M * V + 1, 4, 4), K (M * V + 1, 3, 3) the views' cameras, depth (M * V + 1, H, W) float32 their
        depth (0 = unknown), valid (M * V + 1,) int32 1 where a view is held (the last row a write sink);
        group (N,) int32, view_row (N,) int32 = group * V.
    """

    def __init__(
        self,
        memories: int,
        points_per_memory: int,
        views_per_memory: int,
        height: int,
        width: int,
        num_envs: int,
        device: torch.device,
    ) -> None:
        if points_per_memory % MEMORY_CHUNK:
            raise ValueError(f"points_per_memory must be a multiple of {MEMORY_CHUNK}, got {points_per_memory}")
        f32 = dict(dtype=torch.float32, device=device)
        self.points_per_memory, self.views_per_memory = points_per_memory, views_per_memory
        self.chunks_per_memory = points_per_memory // MEMORY_CHUNK
        points, views = memories * points_per_memory + 1, memories * views_per_memory + 1
        self.xyz = torch.zeros(points, 3, **f32)
        self.rgb = torch.zeros(points, 3, dtype=torch.uint8, device=device)
        self.spacing = torch.zeros(points, **f32)
        self.filled = torch.zeros(memories, dtype=torch.int32, device=device)
        self.chunk_min = torch.zeros(memories * self.chunks_per_memory + 1, 3, **f32)
        self.chunk_max = torch.zeros(memories * self.chunks_per_memory + 1, 3, **f32)
        self.c2w = torch.eye(4, **f32).repeat(views, 1, 1)
        self.w2c = torch.eye(4, **f32).repeat(views, 1, 1)
        self.K = torch.eye(3, **f32).repeat(views, 1, 1)
        self.depth = torch.zeros(views, height, width, **f32)
        self.valid = torch.zeros(views, dtype=torch.int32, device=device)
        self.group = torch.zeros(num_envs, dtype=torch.int32, device=device)
        self.view_row = torch.zeros(num_envs, dtype=torch.int32, device=device)
        self.wp_points = [
            wp.from_torch(self.xyz, dtype=wp.vec3),
            wp.from_torch(self.spacing),
            wp.from_torch(self.filled),
            wp.from_torch(self.chunk_min, dtype=wp.vec3),
            wp.from_torch(self.chunk_max, dtype=wp.vec3),
            wp.from_torch(self.group),
            self.chunks_per_memory,
        ]
        self.wp_resolve = [wp.from_torch(self.xyz, dtype=wp.vec3), wp.from_torch(self.rgb)]
        self.wp_views = [
            wp.from_torch(self.w2c, dtype=wp.mat44),
            wp.from_torch(self.K, dtype=wp.mat33),
            wp.from_torch(self.depth),
            wp.from_torch(self.valid),
            wp.from_torch(self.view_row),
        ]

    @classmethod
    def empty(cls, num_envs: int, device: torch.device) -> GrownViews:
        """No memory: one memory without chunks or views, that no env reads."""
        return cls(1, 0, 0, 1, 1, num_envs, device)

    @property
    def num_points(self) -> int:
        """Point slots of all memories: the splat's index space above the scene points."""
        return self.xyz.shape[0]


@wp.kernel
def _horizon_kernel(
    occluders: wp.array3d(dtype=wp.uint8),  # (S, Gz, Gx)
    origin: wp.array(dtype=wp.vec2),  # (S,) (x0, z0)
    cell_size: wp.array(dtype=wp.float32),  # (S,)
    scene_index: wp.array(dtype=wp.int32),  # (N,)
    camera_position: wp.array(dtype=wp.vec3),  # (N,)
    horizon: wp.array2d(dtype=wp.float32),  # (N, R) out: distance to the first occluder per azimuth
    env_offset: int,
):
    env, ray = wp.tid()
    env = env + env_offset
    s = scene_index[env]
    cs = cell_size[s]
    o = origin[s]
    cam = camera_position[env]
    rays = horizon.shape[1]
    angle = 2.0 * wp.pi * (float(ray) + 0.5) / float(rays)
    dx = wp.cos(angle)
    dz = wp.sin(angle)
    step = 0.5 * cs
    rows = occluders.shape[1]
    cols = occluders.shape[2]
    t = float(0.0)
    inside = int(0)
    # The horizon is where the ray LEAVES the first band of occluder cells: a wall hides what is
    # behind it, while a ray grazing along a partly filled wall cell still sees the wall's own face.
    # Bounded march (a non-finite camera position must not spin forever on the GPU).
    for _ in range(2 * (rows + cols) + 4):
        col = int(wp.floor((cam[0] + dx * t - o[0]) / cs))
        row = int(wp.floor((cam[2] + dz * t - o[1]) / cs))
        if row < 0 or col < 0 or row >= rows or col >= cols:
            horizon[env, ray] = 1.0e30
            return
        if occluders[s, row, col] != wp.uint8(0):
            inside = 1
        elif inside == 1:
            horizon[env, ray] = t
            return
        t += step
    horizon[env, ray] = 1.0e30


@wp.func
def _tangent_plane(n_cam: wp.vec3, q: wp.vec3, fx: float, fy: float, cx: float, cy: float) -> wp.vec4:
    # A point's tangent plane n . X = plane in camera space, as (a, b, c, plane) such that its z-depth on the
    # ray through pixel (u, v) is plane / (a u + b v + c). plane = 0 means "no usable plane" (unknown normal,
    # or seen edge-on: |cos| < 0.1), and the point's own z is used.
    plane = wp.dot(n_cam, q)
    if wp.length_sq(n_cam) <= 0.25 or plane * plane <= 0.01 * wp.length_sq(q):
        return wp.vec4(0.0, 0.0, 0.0, 0.0)
    a = n_cam[0] / fx
    b = n_cam[1] / fy
    return wp.vec4(a, b, n_cam[2] - a * cx - b * cy, plane)


@wp.func
def _plane_depth(coeffs: wp.vec4, z: float, u: float, v: float) -> float:
    # Depth of the tangent plane at pixel (u, v), clamped to [z/2, 2z] against bad normals; z without a plane.
    if coeffs[3] == 0.0:
        return z
    t = coeffs[3] / (coeffs[0] * u + coeffs[1] * v + coeffs[2])
    if t <= 0.0:
        t = 2.0 * z  # the plane turned away within a wide splat
    return wp.clamp(t, 0.5 * z, 2.0 * z)


@wp.func
def _wrap_angle(a: float) -> float:
    if a > wp.pi:
        return a - 2.0 * wp.pi
    if a < -wp.pi:
        return a + 2.0 * wp.pi
    return a


@wp.func
def _box_visible(
    lo: wp.vec3,
    hi: wp.vec3,
    T: wp.mat44,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    r: float,
    near: float,
    far: float,
    cam: wp.vec3,
    horizon: wp.array2d(dtype=wp.float32),
    env: int,
    occlusion_margin: float,
) -> int:
    # Frustum test: the box is outside when all 8 corners fail one plane.
    n_near = int(0)
    n_far = int(0)
    n_left = int(0)
    n_right = int(0)
    n_top = int(0)
    n_bottom = int(0)
    for k in range(8):
        corner = wp.vec3(lo[0], lo[1], lo[2])
        if k & 1:
            corner[0] = hi[0]
        if k & 2:
            corner[1] = hi[1]
        if k & 4:
            corner[2] = hi[2]
        q = wp.transform_point(T, corner)
        if q[2] < near:
            n_near += 1
        if q[2] > far:
            n_far += 1
        # u >= -r  <=>  fx x + (cx + r) z >= 0 for z > 0
        if fx * q[0] + (cx + r) * q[2] < 0.0:
            n_left += 1
        if (float(width) + r - cx) * q[2] - fx * q[0] < 0.0:
            n_right += 1
        if fy * q[1] + (cy + r) * q[2] < 0.0:
            n_top += 1
        if (float(height) + r - cy) * q[2] - fy * q[1] < 0.0:
            n_bottom += 1
    if n_near == 8 or n_far == 8 or n_left == 8 or n_right == 8 or n_top == 8 or n_bottom == 8:
        return 0
    # 2.5-D occlusion: the box is hidden when, over its whole azimuth range seen from above, a
    # floor-to-ceiling occluder (a wall) is nearer than the box's nearest point.
    rays = horizon.shape[1]
    if rays == 0:
        return 1
    nx = wp.clamp(cam[0], lo[0], hi[0])
    nz = wp.clamp(cam[2], lo[2], hi[2])
    d_min = wp.sqrt((nx - cam[0]) * (nx - cam[0]) + (nz - cam[2]) * (nz - cam[2]))
    if d_min <= occlusion_margin:
        return 1
    center = wp.atan2(0.5 * (lo[2] + hi[2]) - cam[2], 0.5 * (lo[0] + hi[0]) - cam[0])
    a_lo = float(0.0)
    a_hi = float(0.0)
    for k in range(4):
        corner_x = lo[0]
        corner_z = lo[2]
        if k & 1:
            corner_x = hi[0]
        if k & 2:
            corner_z = hi[2]
        a = _wrap_angle(wp.atan2(corner_z - cam[2], corner_x - cam[0]) - center)
        a_lo = wp.min(a_lo, a)
        a_hi = wp.max(a_hi, a)
    scale = float(rays) / (2.0 * wp.pi)
    b0 = int(wp.floor((center + a_lo) * scale - 0.5)) - 1
    b1 = int(wp.floor((center + a_hi) * scale - 0.5)) + 2
    for b in range(b0, b1 + 1):
        bb = ((b % rays) + rays) % rays
        if horizon[env, bb] + occlusion_margin >= d_min:
            return 1
    return 0


@wp.kernel
def _splat_kernel(
    points: wp.array(dtype=wp.vec3),  # (P,)
    points_rank: wp.array(dtype=wp.uint8),  # (P,)
    points_spacing: wp.array(dtype=wp.float32),  # (P,) local sample spacing, for adaptive splats
    points_normal: wp.array(dtype=wp.vec3),  # (P,) unit normals, zero = unknown
    chunk_start: wp.array(dtype=wp.int32),  # (C,)
    chunk_count: wp.array(dtype=wp.int32),  # (C,)
    chunk_min: wp.array(dtype=wp.vec3),  # (C,)
    chunk_max: wp.array(dtype=wp.vec3),  # (C,)
    chunk_prefix: wp.array2d(dtype=wp.int32),  # (C, L)
    group_start: wp.array(dtype=wp.int32),  # (Gc,) first chunk of each chunk group
    group_count: wp.array(dtype=wp.int32),  # (Gc,)
    group_min: wp.array(dtype=wp.vec3),  # (Gc,)
    group_max: wp.array(dtype=wp.vec3),  # (Gc,)
    scene_group_start: wp.array(dtype=wp.int32),  # (S,)
    scene_group_count: wp.array(dtype=wp.int32),  # (S,)
    lod_base: wp.array(dtype=wp.float32),  # (S,)
    scene_index: wp.array(dtype=wp.int32),  # (N,)
    w2c: wp.array(dtype=wp.mat44),  # (N,)
    camera_position: wp.array(dtype=wp.vec3),  # (N,)
    intrinsics: wp.array(dtype=wp.mat33),  # (N,)
    lod_scale: float,
    horizon: wp.array2d(dtype=wp.float32),  # (N, R) occluder distance per azimuth, R = 0 disables
    occlusion_margin: float,
    height: int,
    width: int,
    radius: int,  # >= 0 fixed half-size; -1 adaptive up to max_radius
    max_radius: int,
    center_weight: float,
    near: float,
    far: float,
    lanes: int,
    zbuf: wp.array3d(dtype=wp.uint64),  # (N, H, W)
    env_offset: int,
    max_groups: int,
    memory_xyz: wp.array(dtype=wp.vec3),  # (M * Pm + 1,) grown points (see GrownViews)
    memory_spacing: wp.array(dtype=wp.float32),  # (M * Pm + 1,)
    memory_filled: wp.array(dtype=wp.int32),  # (M,) valid points of each memory
    memory_min: wp.array(dtype=wp.vec3),  # (M * Cm,) chunk bounds
    memory_max: wp.array(dtype=wp.vec3),  # (M * Cm,)
    memory_group: wp.array(dtype=wp.int32),  # (N,) the memory each env reads
    memory_chunks: int,  # Cm, chunks per memory
    memory_base: int,  # point index of the first memory point (= P, after the scene points)
):
    env, slot, lane = wp.tid()
    env = env + env_offset
    T = w2c[env]
    K = intrinsics[env]
    fx = K[0, 0]
    fy = K[1, 1]
    cx = K[0, 2]
    cy = K[1, 2]
    r = float(wp.max(radius, max_radius))
    cam = camera_position[env]
    if slot >= max_groups:
        # A slot past the scene's chunk groups is one chunk of the env's grown memory (memory="grow"): its
        # points go into the same z-buffer, keyed after the scene's points, covering their footprints.
        g = memory_group[env]
        c = slot - max_groups
        row = g * memory_chunks + c
        n = wp.min(memory_filled[g] - c * MEMORY_CHUNK_W, MEMORY_CHUNK_W)
        if n <= 0:
            return
        if (
            _box_visible(
                memory_min[row],
                memory_max[row],
                T,
                fx,
                fy,
                cx,
                cy,
                width,
                height,
                float(MEMORY_MAX_RADIUS),
                near,
                far,
                cam,
                horizon,
                env,
                occlusion_margin,
            )
            == 0
        ):
            return
        first = row * MEMORY_CHUNK_W
        for j in range(lane, n, lanes):
            _splat_point(
                memory_xyz[first + j],
                memory_spacing[first + j],
                wp.vec3(0.0, 0.0, 0.0),
                memory_base + first + j,
                T,
                fx,
                fy,
                cx,
                cy,
                wp.min(fx, fy),
                height,
                width,
                -2,
                MEMORY_MAX_RADIUS,
                center_weight,
                near,
                far,
                env,
                zbuf,
            )
        return
    s = scene_index[env]
    if slot >= scene_group_count[s]:
        return
    g = scene_group_start[s] + slot
    # Two-level culling: a group of chunks first, then each of its chunks.
    if (
        _box_visible(
            group_min[g],
            group_max[g],
            T,
            fx,
            fy,
            cx,
            cy,
            width,
            height,
            r,
            near,
            far,
            cam,
            horizon,
            env,
            occlusion_margin,
        )
        == 0
    ):
        return
    focal = wp.min(fx, fy)
    base = lod_base[s]
    first = group_start[g]
    for c in range(first, first + group_count[g]):
        lo = chunk_min[c]
        hi = chunk_max[c]
        if (
            _box_visible(lo, hi, T, fx, fy, cx, cy, width, height, r, near, far, cam, horizon, env, occlusion_margin)
            == 0
        ):
            continue
        _splat_chunk(
            points,
            points_rank,
            points_spacing,
            points_normal,
            chunk_start[c],
            chunk_count[c],
            chunk_prefix,
            c,
            lo,
            hi,
            base,
            focal,
            lod_scale,
            cam,
            T,
            fx,
            fy,
            cx,
            cy,
            height,
            width,
            radius,
            max_radius,
            center_weight,
            near,
            far,
            lane,
            lanes,
            env,
            zbuf,
        )


@wp.func
def _splat_point(
    p_world: wp.vec3,
    spacing: float,
    normal: wp.vec3,
    index: int,
    T: wp.mat44,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    focal: float,
    height: int,
    width: int,
    radius: int,
    max_radius: int,
    center_weight: float,
    near: float,
    far: float,
    env: int,
    zbuf: wp.array3d(dtype=wp.uint64),
):
    # One point into env's z-buffer: a (2 rad + 1)^2 square keyed by effective depth and the point's index.
    q = wp.transform_point(T, p_world)
    z = q[2]
    if z < near or z > far:
        return
    inv_z = 1.0 / z
    u = fx * q[0] * inv_z + cx
    v = fy * q[1] * inv_z + cy
    ui = int(wp.floor(u))
    vi = int(wp.floor(v))
    rad = radius
    if radius == -1:
        # Adaptive: cover the point's share of the surface, spacing * f / z pixels across.
        rad = wp.clamp(int(0.7 * spacing * focal * inv_z), 0, max_radius)
    elif radius == -2:
        # Footprint: the smallest square that covers the point's whole footprint (grown points: one per pixel of
        # the frame that wrote them, so seen from nearer they would leave cracks); overdraw loses to real cover.
        rad = wp.clamp(int(wp.ceil(0.5 * (spacing * focal * inv_z - 1.0))), 0, max_radius)
    # Penalties in units of the point's own footprint (its sample spacing seen at depth z, pixels):
    # inside the footprint cell only a small centre tie-break; once the pixel centre lies outside
    # the cell (with slack for the spacing estimate) the point only wins when nothing covers it.
    inv_footprint = 1.0 / wp.max(spacing * focal * inv_z, 0.25)
    # With a normal, compare surfaces by their depth where the pixel-centre ray meets the point's
    # tangent plane: samples of one surface then tie exactly and the centre penalty picks the
    # sample nearest the centre, while a nearer surface still wins. The plane depth at pixel
    # (x, y) is plane / (a x + b y + c); planes seen edge-on (|cos| < 0.1) keep the point's z.
    plane = _tangent_plane(wp.transform_vector(T, normal), q, fx, fy, cx, cy)
    for dy in range(-rad, rad + 1):
        py = vi + dy
        if py < 0 or py >= height:
            continue
        for dx in range(-rad, rad + 1):
            px = ui + dx
            if px < 0 or px >= width:
                continue
            du = float(px) + 0.5 - u
            dv = float(py) + 0.5 - v
            t = _plane_depth(plane, z, float(px) + 0.5, float(py) + 0.5)
            r_inf = wp.max(wp.abs(du), wp.abs(dv)) * inv_footprint
            outside = wp.max(r_inf - 0.55, 0.0)
            # Saturating tie-break: it can reorder samples within center_weight of one another in
            # centre-ray depth (one surface, estimated normals), never a real occluder.
            tie = wp.min((du * du + dv * dv) * inv_footprint * inv_footprint * 16.0, 1.0)
            penalty = center_weight * tie
            eff = wp.min(t * (1.0 + penalty + 16.0 * outside * outside), 4095.0)
            key = (wp.uint64(eff * 1048576.0) << wp.uint64(32)) | wp.uint64(index)
            wp.atomic_min(zbuf, env, py, px, key)


@wp.func
def _splat_chunk(
    points: wp.array(dtype=wp.vec3),
    points_rank: wp.array(dtype=wp.uint8),
    points_spacing: wp.array(dtype=wp.float32),
    points_normal: wp.array(dtype=wp.vec3),
    start: int,
    count: int,
    chunk_prefix: wp.array2d(dtype=wp.int32),
    c: int,
    lo: wp.vec3,
    hi: wp.vec3,
    base: float,
    focal: float,
    lod_scale: float,
    cam: wp.vec3,
    T: wp.mat44,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    height: int,
    width: int,
    radius: int,
    max_radius: int,
    center_weight: float,
    near: float,
    far: float,
    lane: int,
    lanes: int,
    env: int,
    zbuf: wp.array3d(dtype=wp.uint64),
):
    # Level of detail: a point of rank l is drawn up to distance base * 2**l * f / lod_scale, where
    # level-l spacing is lod_scale pixels. Points are stored coarse to fine, so the chunk's nearest
    # distance bounds how long a prefix can contain drawable points.
    n = count
    if lod_scale > 0.0:
        nearest = wp.vec3(
            wp.clamp(cam[0], lo[0], hi[0]), wp.clamp(cam[1], lo[1], hi[1]), wp.clamp(cam[2], lo[2], hi[2])
        )
        d_chunk = wp.length(nearest - cam)
        levels = chunk_prefix.shape[1]
        need = int(0)
        if d_chunk > 0.0:
            need = int(wp.ceil(wp.log2(d_chunk * lod_scale / (focal * base))))
        need = wp.clamp(need, 0, levels - 1)
        n = chunk_prefix[c, need]
    # Hoisted divisions: the loop below runs once per point.
    reach0 = float(0.0)
    if lod_scale > 0.0:
        reach0 = base * focal / lod_scale
    top_rank = chunk_prefix.shape[1] - 1
    for j in range(lane, n, lanes):
        index = start + j
        p_world = points[index]
        if lod_scale > 0.0:
            rank = int(points_rank[index])
            if rank < top_rank:
                reach = reach0 * float(1 << rank)
                if wp.length_sq(p_world - cam) > reach * reach:
                    continue
        _splat_point(
            p_world,
            points_spacing[index],
            points_normal[index],
            index,
            T,
            fx,
            fy,
            cx,
            cy,
            focal,
            height,
            width,
            radius,
            max_radius,
            center_weight,
            near,
            far,
            env,
            zbuf,
        )


@wp.kernel
def _resolve_kernel(
    zbuf: wp.array3d(dtype=wp.uint64),  # (N, H, W), cleared to EMPTY on the way out
    points: wp.array(dtype=wp.vec3),  # (P,)
    points_rgb: wp.array2d(dtype=wp.uint8),  # (P, 3)
    points_normal: wp.array(dtype=wp.vec3),  # (P,)
    w2c: wp.array(dtype=wp.mat44),  # (N,)
    intrinsics: wp.array(dtype=wp.mat33),  # (N,)
    out_rgb: wp.array4d(dtype=wp.uint8),  # (N, H, W, 3)
    out_depth: wp.array3d(dtype=wp.float32),  # (N, H, W)
    out_mask: wp.array3d(dtype=wp.bool),  # (N, H, W)
    env_offset: int,
    memory_xyz: wp.array(dtype=wp.vec3),  # (M * Pm + 1,)
    memory_rgb: wp.array2d(dtype=wp.uint8),  # (M * Pm + 1, 3)
    memory_base: int,
    out_grown: wp.array3d(dtype=wp.bool),  # (N, H, W) the pixel shows a grown (generated) point
):
    env, y, x = wp.tid()
    env = env + env_offset
    key = zbuf[env, y, x]
    out_grown[env, y, x] = False
    if key == wp.uint64(0xFFFFFFFFFFFFFFFF):
        out_rgb[env, y, x, 0] = wp.uint8(0)
        out_rgb[env, y, x, 1] = wp.uint8(0)
        out_rgb[env, y, x, 2] = wp.uint8(0)
        out_depth[env, y, x] = 0.0
        out_mask[env, y, x] = False
        return
    index = int(key & wp.uint64(0xFFFFFFFF))
    T = w2c[env]
    K = intrinsics[env]
    if index >= memory_base:
        k = index - memory_base
        qm = wp.transform_point(T, memory_xyz[k])
        out_rgb[env, y, x, 0] = memory_rgb[k, 0]
        out_rgb[env, y, x, 1] = memory_rgb[k, 1]
        out_rgb[env, y, x, 2] = memory_rgb[k, 2]
        out_depth[env, y, x] = qm[2]
        out_mask[env, y, x] = True
        out_grown[env, y, x] = True
        zbuf[env, y, x] = wp.uint64(0xFFFFFFFFFFFFFFFF)
        return
    q = wp.transform_point(T, points[index])
    # The same centre-ray depth the splat compared (tangent plane of the winning point).
    plane = _tangent_plane(wp.transform_vector(T, points_normal[index]), q, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    depth = _plane_depth(plane, q[2], float(x) + 0.5, float(y) + 0.5)
    out_rgb[env, y, x, 0] = points_rgb[index, 0]
    out_rgb[env, y, x, 1] = points_rgb[index, 1]
    out_rgb[env, y, x, 2] = points_rgb[index, 2]
    out_depth[env, y, x] = depth
    out_mask[env, y, x] = True
    zbuf[env, y, x] = wp.uint64(0xFFFFFFFFFFFFFFFF)


@wp.func
def _count_hits(
    anchor_depth: wp.array3d(dtype=wp.float32),
    samples: wp.array(dtype=wp.vec2i),
    env: int,
    T: wp.mat44,
    Kinv: wp.mat33,
    V: wp.mat44,
    Kb: wp.mat33,
    view_depth: wp.array3d(dtype=wp.float32),
    b: int,
    tolerance: float,
) -> int:
    # Samples of env's anchor, back-projected with the anchor depth, that land in view b within tolerance.
    hb = view_depth.shape[1]
    wb = view_depth.shape[2]
    count = int(0)
    for i in range(samples.shape[0]):
        px = samples[i]
        d = anchor_depth[env, px[1], px[0]]
        if d <= 0.0:
            continue
        ray = Kinv * wp.vec3(float(px[0]) + 0.5, float(px[1]) + 0.5, 1.0)
        world = wp.transform_point(T, ray * d)
        q = wp.transform_point(V, world)
        if q[2] <= 0.0:
            continue
        p = Kb * q
        u = p[0] / p[2]
        v = p[1] / p[2]
        if u < 0.0 or v < 0.0 or u >= float(wb) or v >= float(hb):
            continue
        ref = view_depth[b, int(v), int(u)]
        if ref > 0.0 and wp.abs(q[2] - ref) < tolerance * ref:
            count += 1
    return count


@wp.kernel
def _reference_hits_kernel(
    anchor_depth: wp.array3d(dtype=wp.float32),  # (N, H, W)
    samples: wp.array(dtype=wp.vec2i),  # (S,) (x, y) pixels
    c2w: wp.array(dtype=wp.mat44),  # (N,)
    intrinsics_inv: wp.array(dtype=wp.mat33),  # (N,)
    scene_index: wp.array(dtype=wp.int32),  # (N,)
    scene_bank_start: wp.array(dtype=wp.int32),  # (Sc,)
    scene_bank_count: wp.array(dtype=wp.int32),  # (Sc,)
    bank_w2c: wp.array(dtype=wp.mat44),  # (B,)
    bank_K: wp.array(dtype=wp.mat33),  # (B,)
    bank_depth: wp.array3d(dtype=wp.float32),  # (B, Hb, Wb)
    tolerance: float,
    hits: wp.array2d(dtype=wp.int32),  # (N, max_bank + Vm), -1 for slots beyond the scene's bank / empty views
    max_bank: int,
    memory_w2c: wp.array(dtype=wp.mat44),  # (Rv,) grown memory views (memory="grow")
    memory_K: wp.array(dtype=wp.mat33),  # (Rv,)
    memory_depth: wp.array3d(dtype=wp.float32),  # (Rv, H, W)
    memory_valid: wp.array(dtype=wp.int32),  # (Rv,) 1 where the row holds a view
    memory_row: wp.array(dtype=wp.int32),  # (N,) first view row of each env's memory
):
    env, slot = wp.tid()
    T = c2w[env]
    Kinv = intrinsics_inv[env]
    if slot >= max_bank:
        row = memory_row[env] + slot - max_bank
        if memory_valid[row] == 0:
            hits[env, slot] = -1
            return
        hits[env, slot] = _count_hits(
            anchor_depth, samples, env, T, Kinv, memory_w2c[row], memory_K[row], memory_depth, row, tolerance
        )
        return
    s = scene_index[env]
    if slot >= scene_bank_count[s]:
        hits[env, slot] = -1
        return
    b = scene_bank_start[s] + slot
    hits[env, slot] = _count_hits(anchor_depth, samples, env, T, Kinv, bank_w2c[b], bank_K[b], bank_depth, b, tolerance)


def _mat44(t: torch.Tensor):
    return wp.from_torch(t.contiguous(), dtype=wp.mat44)


def _mat33(t: torch.Tensor):
    return wp.from_torch(t.contiguous(), dtype=wp.mat33)


class Occluders:
    """Top-down occluder grids (floor-to-ceiling walls) of a pool's scenes, for occlusion culling.

    Args:
        grid: (S, Gz, Gx) bool occluder cells (``ScenePool.occluders``).
        origin: (S, 2) world (x0, z0) of cell (0, 0). cell_size: (S,) cell edges.
        rays: azimuth resolution of the per-env horizon (rays over 360 degrees).
        margin: distance slack in scene units (a chunk is kept unless it is this much behind the wall).
    """

    def __init__(
        self,
        grid: torch.Tensor,
        origin: torch.Tensor,
        cell_size: torch.Tensor,
        rays: int = 256,
        margin: float | None = None,
    ) -> None:
        self.grid = grid.to(torch.uint8).contiguous()
        self.origin = origin.float().contiguous()
        self.cell_size = cell_size.float().contiguous()
        self.rays = rays
        self.margin = float(2.0 * cell_size.max()) if margin is None else margin
        self.wp_grid = wp.from_torch(self.grid)
        self.wp_origin = wp.from_torch(self.origin, dtype=wp.vec2)
        self.wp_cell_size = wp.from_torch(self.cell_size)


class PointSplatter:
    """Renders the anchor of N envs from chunked point clouds in one launch, into preallocated buffers.

    Args:
        points: the point clouds (``ScenePool.points``); env i sees cloud ``scene_index[i]``.
        num_envs, height, width: output batch and resolution.
        radius: splat half-size in pixels (0 = one pixel per point, as published), or ``"auto"``: each point
            covers its local sample spacing in pixels (``spacing * f / z``), up to ``max_radius``.
        center_weight: effective-depth penalty per squared pixel of offset from the pixel centre.
        near, far: depth range kept (scene units).
        lod_scale: level of detail; a point of LOD rank l (spacing ``base * 2**l``) is drawn while that
            spacing covers at least ``lod_scale`` pixels. 0 draws every point (exact, as published).
        occluders: optional ``Occluders`` grids for 2.5-D occlusion culling (see :class:`Occluders`).
        max_radius: largest adaptive splat half-size (``radius="auto"``).
        cpu_threads: on CPU, render disjoint env ranges in this many threads (default: the core count).
        memory: a growing memory (:class:`GrownViews`): its points are splatted in the same launch and z-buffer as
            the scene's, and :attr:`AnchorRender.grown` marks the pixels they won.
    """

    def __init__(
        self,
        points: ChunkedPoints,
        num_envs: int,
        height: int,
        width: int,
        radius: int | str = 0,
        center_weight: float = 0.03,
        near: float = 0.01,
        far: float = 1000.0,
        lod_scale: float = 0.0,
        occluders: Occluders | None = None,
        max_radius: int = 4,
        cpu_threads: int | None = None,
        memory: GrownViews | None = None,
    ) -> None:
        if lod_scale < 0:
            raise ValueError(f"lod_scale must be >= 0 (0 disables level of detail), got {lod_scale}")
        if radius == "auto":
            radius = -1
        elif not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
            raise ValueError(f"splat radius must be an int >= 0 or 'auto', got {radius!r}")
        self.max_radius = max_radius
        self.points = points
        self.device = points.device
        self.wp_device = warp_device(self.device)
        self.num_envs, self.height, self.width = num_envs, height, width
        self.radius, self.center_weight, self.near, self.far = radius, center_weight, near, far
        self.lod_scale = lod_scale
        # One thread per chunk on CPU (serial anyway), 32 lanes per chunk on CUDA for parallelism.
        self.lanes = 32 if self.device.type == "cuda" else 1
        self.zbuf = torch.full((num_envs, height, width), -1, dtype=torch.int64, device=self.device)
        self.rgb = torch.zeros(num_envs, height, width, 3, dtype=torch.uint8, device=self.device)
        self.depth = torch.zeros(num_envs, height, width, dtype=torch.float32, device=self.device)
        self.mask = torch.zeros(num_envs, height, width, dtype=torch.bool, device=self.device)
        self.grown = torch.zeros(num_envs, height, width, dtype=torch.bool, device=self.device)
        self.memory = memory
        memory = memory if memory is not None else GrownViews.empty(num_envs, self.device)
        if self.points.points_xyz.shape[0] + memory.num_points >= 2**31:
            raise ValueError(
                f"scene points ({self.points.points_xyz.shape[0]}) plus memory point slots ({memory.num_points}) "
                "must stay below 2**31; lower memory_capacity or the number of envs"
            )
        self._memory_chunks = memory.chunks_per_memory
        self._wp_memory = [*memory.wp_points, int(self.points.points_xyz.shape[0])]
        self._wp_memory_resolve = [*memory.wp_resolve, int(self.points.points_xyz.shape[0]), wp.from_torch(self.grown)]
        self._wp_zbuf = wp.array(
            ptr=self.zbuf.data_ptr(), dtype=wp.uint64, shape=tuple(self.zbuf.shape), device=self.wp_device
        )
        self._wp_points = wp.from_torch(self.points.points_xyz, dtype=wp.vec3)
        self._wp_points_rgb = wp.from_torch(self.points.points_rgb)
        self._wp_normals = wp.from_torch(self.points.points_normal, dtype=wp.vec3)
        self._wp_chunk = [
            wp.from_torch(self.points.points_rank),
            wp.from_torch(self.points.points_spacing),
            wp.from_torch(self.points.points_normal, dtype=wp.vec3),
            wp.from_torch(self.points.chunk_start),
            wp.from_torch(self.points.chunk_count),
            wp.from_torch(self.points.chunk_min, dtype=wp.vec3),
            wp.from_torch(self.points.chunk_max, dtype=wp.vec3),
            wp.from_torch(self.points.chunk_prefix),
            wp.from_torch(self.points.group_start),
            wp.from_torch(self.points.group_count),
            wp.from_torch(self.points.group_min, dtype=wp.vec3),
            wp.from_torch(self.points.group_max, dtype=wp.vec3),
            wp.from_torch(self.points.scene_group_start),
            wp.from_torch(self.points.scene_group_count),
            wp.from_torch(self.points.lod_base),
        ]
        self._wp_out = [wp.from_torch(self.rgb), wp.from_torch(self.depth), wp.from_torch(self.mask, dtype=wp.bool)]
        self.occluders = occluders
        rays = occluders.rays if occluders is not None else 0
        self.horizon = torch.zeros(num_envs, rays, dtype=torch.float32, device=self.device)
        self._wp_horizon = (
            wp.from_torch(self.horizon) if rays else wp.zeros((num_envs, 0), dtype=wp.float32, device=self.wp_device)
        )
        self.occlusion_margin = occluders.margin if occluders is not None else 0.0
        threads = cpu_threads if cpu_threads is not None else min(os.cpu_count() or 1, 8)
        threads = max(1, min(threads, num_envs)) if self.device.type == "cpu" else 1
        bounds = [round(k * num_envs / threads) for k in range(threads + 1)]
        self._env_ranges = [(bounds[k], bounds[k + 1] - bounds[k]) for k in range(threads)]
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="splat") if threads > 1 else None
        if self._pool is not None:
            # Load (compile) the kernels once here: warp's module loading is not meant to race.
            wp.load_module(module=__name__, device=self.wp_device)

    def render(self, scene_index: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> AnchorRender:
        """Anchor of every env. ``scene_index`` (N,) int32, ``c2w`` (N, 4, 4), ``K`` (N, 3, 3).

        Returns views of the splatter's own buffers: they are overwritten by the next call.
        """
        w2c = _mat44(invert_pose(c2w.float()))
        camera_position = wp.from_torch(c2w[:, :3, 3].float().contiguous(), dtype=wp.vec3)
        Ks = _mat33(K.float())
        n = scene_index.shape[0]
        if n != self.num_envs:
            raise ValueError(f"scene_index has {n} entries but the splatter was built for num_envs={self.num_envs}")
        scene_index = wp.from_torch(scene_index.to(torch.int32).contiguous())
        args = (scene_index, w2c, camera_position, Ks)
        if len(self._env_ranges) == 1:
            self._render_range(*args, *self._env_ranges[0])
        else:
            # CPU: warp runs a kernel on one thread and releases the GIL, so disjoint env ranges render
            # in parallel threads; each range writes only its own rows of the buffers.
            list(self._pool.map(lambda r: self._render_range(*args, *r), self._env_ranges))
        return AnchorRender(self.rgb, self.depth, self.mask, self.grown if self.memory is not None else None)

    def _render_range(self, scene_index, w2c, camera_position, Ks, first: int, count: int) -> None:
        if self.occluders is not None:
            occ = self.occluders
            wp.launch(
                _horizon_kernel,
                dim=(count, occ.rays),
                inputs=[
                    occ.wp_grid,
                    occ.wp_origin,
                    occ.wp_cell_size,
                    scene_index,
                    camera_position,
                    self._wp_horizon,
                    first,
                ],
                device=self.wp_device,
            )
        wp.launch(
            _splat_kernel,
            dim=(count, self.points.max_groups + self._memory_chunks, self.lanes),
            inputs=[
                self._wp_points,
                *self._wp_chunk,
                scene_index,
                w2c,
                camera_position,
                Ks,
                self.lod_scale,
                self._wp_horizon,
                self.occlusion_margin,
                self.height,
                self.width,
                self.radius,
                self.max_radius if self.radius < 0 else 0,
                self.center_weight,
                self.near,
                self.far,
                self.lanes,
                self._wp_zbuf,
                first,
                self.points.max_groups,
                *self._wp_memory,
            ],
            device=self.wp_device,
        )
        wp.launch(
            _resolve_kernel,
            dim=(count, self.height, self.width),
            inputs=[
                self._wp_zbuf,
                self._wp_points,
                self._wp_points_rgb,
                self._wp_normals,
                w2c,
                Ks,
                *self._wp_out,
                first,
                *self._wp_memory_resolve,
            ],
            device=self.wp_device,
        )


def reference_sample_pixels(height: int, width: int, count: int = 300, device=None) -> torch.Tensor:
    """A fixed, evenly spread grid of about ``count`` (x, y) pixel positions, (S, 2) int32."""
    side = max(1, math.ceil(math.sqrt(count)))
    ys = ((torch.arange(side, dtype=torch.float32) + 0.5) * height / side).long().clamp(0, height - 1)
    xs = ((torch.arange(side, dtype=torch.float32) + 0.5) * width / side).long().clamp(0, width - 1)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    return grid.unique(dim=0).to(torch.int32).to(device)


class ReferenceSelector:
    """Picks each env's reference view from its scene's bank by the depth-consistency vote.

    Args:
        banks: the packed reference banks of S scenes, any object with these tensors on one device (a
            :class:`~worldfm_env.scenes.pool.ScenePool` has them): ``bank_c2w``, ``bank_w2c`` (B, 4, 4),
            ``bank_K`` (B, 3, 3), ``bank_depth`` (B, Hb, Wb), ``scene_bank_start``, ``scene_bank_count`` (S,)
            int32, and ``max_bank`` (most views of any scene).
        num_envs, height, width: the anchor batch and resolution.
        num_samples: about how many target pixels vote (published: ~300).
        tolerance: relative depth tolerance of a hit (published: 2 %).
        memory: a growing memory's views (:class:`GrownViews`): each env's grown views vote beside its scene's
            bank, and a winning grown view is returned as index ``B + row`` (B = views in the packed banks).
    """

    def __init__(
        self,
        banks,
        num_envs: int,
        height: int,
        width: int,
        num_samples: int = 300,
        tolerance: float = 0.02,
        memory: GrownViews | None = None,
    ) -> None:
        self.device = banks.bank_c2w.device
        self.wp_device = warp_device(self.device)
        self.num_envs = num_envs
        self.max_bank = int(banks.max_bank)
        self.tolerance = tolerance
        self.samples = reference_sample_pixels(height, width, num_samples, self.device)
        self.memory = memory
        self.num_bank_views = int(banks.bank_c2w.shape[0])
        memory = memory if memory is not None else GrownViews.empty(num_envs, self.device)
        self._memory_views = memory.views_per_memory
        self._wp_memory = memory.wp_views
        self._memory_slots = torch.arange(memory.views_per_memory, device=self.device, dtype=torch.int32)
        self.hits = torch.zeros(num_envs, self.max_bank + self._memory_views, dtype=torch.int32, device=self.device)
        self.scene_bank_start = banks.scene_bank_start.long()
        # Each scene's view positions and viewing directions, padded to max_bank slots: the banks never
        # change, so the tie-break gathers these small rows by scene instead of (N, Bm, 4, 4) poses.
        slots = torch.arange(self.max_bank, device=self.device)
        rows = (self.scene_bank_start[:, None] + slots[None, :]).clamp(max=banks.bank_c2w.shape[0] - 1)  # (S, Bm)
        self.scene_view_position = banks.bank_c2w[rows, :3, 3].contiguous()  # (S, Bm, 3)
        self.scene_view_forward = banks.bank_c2w[rows, :3, 2].contiguous()  # (S, Bm, 3)
        self._wp_static = [
            wp.from_torch(self.samples, dtype=wp.vec2i),
        ]
        self._wp_bank = [
            wp.from_torch(banks.scene_bank_start),
            wp.from_torch(banks.scene_bank_count),
            _mat44(banks.bank_w2c),
            _mat33(banks.bank_K),
            wp.from_torch(banks.bank_depth),
        ]
        self._wp_hits = wp.from_torch(self.hits)

    def select(
        self,
        anchor_depth: torch.Tensor,
        scene_index: torch.Tensor,
        c2w: torch.Tensor,
        K: torch.Tensor,
        K_inv: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Global bank index (N,) int64 of each env's reference view (rows of the packed ``bank_*`` tensors, or
        ``B + row`` for a view of the growing memory, see :class:`GrownViews`).

        ``K_inv``: the inverse intrinsics (N, 3, 3), when the caller keeps them (constant cameras); else computed.
        """
        scene_index = scene_index.to(torch.int32).contiguous()
        if K_inv is None:
            K_inv = torch.linalg.inv(K.float())
        wp.launch(
            _reference_hits_kernel,
            dim=(self.num_envs, self.max_bank + self._memory_views),
            inputs=[
                wp.from_torch(anchor_depth.contiguous()),
                *self._wp_static,
                _mat44(c2w.float()),
                _mat33(K_inv.float()),
                wp.from_torch(scene_index),
                self._wp_bank[0],
                self._wp_bank[1],
                self._wp_bank[2],
                self._wp_bank[3],
                self._wp_bank[4],
                self.tolerance,
                self._wp_hits,
                self.max_bank,
                *self._wp_memory,
            ],
            device=self.wp_device,
        )
        sidx = scene_index.long()
        start = self.scene_bank_start[sidx]  # (N,)
        # Tie-break (and no-coverage fallback): prefer the nearest view by position and viewing direction.
        position, forward = self.scene_view_position[sidx], self.scene_view_forward[sidx]  # (N, Bm, 3)
        if self.memory is not None:
            rows = (self.memory.view_row[:, None] + self._memory_slots[None, :]).long()  # (N, Vm)
            position = torch.cat([position, self.memory.c2w[rows, :3, 3]], dim=1)
            forward = torch.cat([forward, self.memory.c2w[rows, :3, 2]], dim=1)
        dist = (position - c2w[:, None, :3, 3]).norm(dim=-1)  # (N, Bm + Vm)
        cos = (forward * c2w[:, None, :3, 2]).sum(-1)
        closeness = 1.0 / (1.0 + dist + (1.0 - cos))  # in (0, 1]
        score = self.hits.float() + 0.5 * closeness
        score = torch.where(self.hits >= 0, score, torch.full_like(score, -1.0))
        best = score.argmax(dim=1)
        if self.memory is None:
            return start + best
        grown_row = self.memory.view_row.long() + best - self.max_bank
        return torch.where(best < self.max_bank, start + best, self.num_bank_views + grown_row)


def splat_points(
    xyz: torch.Tensor,
    rgb: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    height: int,
    width: int,
    radius: int | str = 0,
    lod_scale: float = 0.0,
    normals: torch.Tensor | None = None,
    spacing: torch.Tensor | None = None,
) -> AnchorRender:
    """Splat one point cloud into N cameras (a convenience wrapper around :class:`PointSplatter`).

    Args:
        xyz: (P, 3) float32 world points. rgb: (P, 3) uint8 colours.
        c2w: (N, 4, 4) camera poses. K: (3, 3) or (N, 3, 3) intrinsics in output pixels.
        height, width: output size. radius: splat half-size in pixels, or ``"auto"`` (adaptive).
        lod_scale: level-of-detail spacing in pixels (0 draws every point).
        normals: optional (P, 3) unit normals (zero rows = unknown) for centre-ray depth tests.
        spacing: optional (P,) sample spacing per point (estimated from the density when absent).

    Returns:
        A fresh :class:`AnchorRender` (tensors owned by the caller).
    """
    points = ChunkedPoints([xyz], [rgb], normals=[normals], spacings=[spacing])
    n = c2w.shape[0]
    if K.ndim == 2:
        K = K.expand(n, 3, 3)
    splatter = PointSplatter(points, n, height, width, radius=radius, lod_scale=lod_scale)
    out = splatter.render(torch.zeros(n, dtype=torch.int32, device=xyz.device), c2w, K)
    return AnchorRender(out.rgb.clone(), out.depth.clone(), out.mask.clone())
