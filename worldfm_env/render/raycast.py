"""Ground-truth RGB-D of triangle meshes by ray casting (the oracle renderer of procedural scenes).

One warp kernel launch renders N cameras at once, each camera looking at one of S meshes (one per
scene). Every pixel casts one ray through its centre ``(u + 0.5, v + 0.5)`` with
``wp.mesh_query_ray`` and writes:

* ``depth``: the camera-frame z of the hit (not the ray length), 0 where the ray hits nothing;
* ``rgb``: ``albedo(material, world hit point, normal) * shade(normal)``, clamped to [0, 255].

Shading is VIEW-INDEPENDENT on purpose: a scene's point cloud is made from these renders and
re-projected from other poses, so a surface point must get the same colour from every camera.
Hence no specular term and no normal flipped towards the ray: the normal is the face's geometric
normal from its winding, and the scene generator orients every face towards the free space the
camera lives in (outward box normals, floors facing up, ceilings facing down). Lighting is a fixed
ambient term, two fixed directional lights and a bounce term from the floor; textures are
procedural functions of the world hit point, with the two in-plane coordinates picked from the
dominant normal axis.

Material rows (``TriangleMesh.materials``, (M, :data:`MATERIAL_DIM`) float32); colours in [0, 1],
lengths in metres:

====  ==========================  ==========================================================
col   name                        meaning
====  ==========================  ==========================================================
0-2   ``MAT_BASE``                base RGB
3-5   ``MAT_SECONDARY``           secondary RGB (checker/stripe colour, grout, mortar, seams)
6     ``MAT_PATTERN``             pattern id, one of the ``PATTERN_*`` constants
7     ``MAT_SCALE``               pattern period in metres (tile edge, plank width, ...)
8     ``MAT_NOISE_AMP``           value-noise amplitude, relative brightness in [0, 1]
9     ``MAT_NOISE_SCALE``         value-noise feature size in metres
10    ``MAT_PARAM``               pattern parameter: stripe duty / grout, seam, mortar width
                                  as a fraction of ``MAT_SCALE``
11    ``MAT_ROTATE``              > 0.5 swaps the two in-plane axes (turns stripes, planks)
====  ==========================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from worldfm_env._device import init_warp, warp_device
from worldfm_env.render.mesh import TriangleMesh

wp = init_warp()

__all__ = [
    "MATERIAL_DIM",
    "MAT_BASE",
    "MAT_SECONDARY",
    "MAT_PATTERN",
    "MAT_SCALE",
    "MAT_NOISE_AMP",
    "MAT_NOISE_SCALE",
    "MAT_PARAM",
    "MAT_ROTATE",
    "PATTERN_PLAIN",
    "PATTERN_CHECKER",
    "PATTERN_STRIPES",
    "PATTERN_TILES",
    "PATTERN_WOOD",
    "PATTERN_BRICK",
    "NUM_PATTERNS",
    "make_material",
    "MeshRaycaster",
]

# ---- material row layout (see the module docstring) -------------------------------------------
MATERIAL_DIM = 12
MAT_BASE = 0  # 0:3 base rgb in [0, 1]
MAT_SECONDARY = 3  # 3:6 secondary rgb in [0, 1]
MAT_PATTERN = 6  # pattern id (PATTERN_*)
MAT_SCALE = 7  # pattern period in metres
MAT_NOISE_AMP = 8  # relative noise amplitude in [0, 1]
MAT_NOISE_SCALE = 9  # noise feature size in metres
MAT_PARAM = 10  # stripe duty, or grout / seam / mortar width as a fraction of the period
MAT_ROTATE = 11  # > 0.5 swaps the in-plane axes

# ---- pattern ids ---------------------------------------------------------------------------------
PATTERN_PLAIN = 0  # base colour modulated by value noise only
PATTERN_CHECKER = 1  # squares of edge `scale` alternating base / secondary
PATTERN_STRIPES = 2  # stripes of period `scale`; a `param` fraction of each is secondary
PATTERN_TILES = 3  # square tiles of edge `scale` with per-tile tint and secondary-coloured grout
PATTERN_WOOD = 4  # planks of width `scale`, staggered seams, per-plank tone, stretched grain
PATTERN_BRICK = 5  # running-bond bricks `scale` long and 0.4 * `scale` high, secondary mortar
NUM_PATTERNS = 6

# Fixed lights (directions TOWARDS the light, world frame; gravity is +y so "up" is -y). Walls of the
# four orientations get different shades (depth cues at corners), floors are brightest, ceilings
# get a bounce term from below so they are not black.
_KEY_DIR = np.array([0.5, -0.7, 0.3]) / np.linalg.norm([0.5, -0.7, 0.3])
_FILL_DIR = np.array([-0.4, -0.3, -0.85]) / np.linalg.norm([-0.4, -0.3, -0.85])
_AMBIENT = 0.5  # constant term
_KEY = 0.55
_FILL = 0.3
_BOUNCE = 0.25  # light from the floor (direction +y), reaches down-facing surfaces


def make_material(
    base: Sequence[float],
    secondary: Sequence[float] | None = None,
    pattern: int = PATTERN_PLAIN,
    scale: float = 0.5,
    noise_amp: float = 0.1,
    noise_scale: float = 0.25,
    param: float = 0.1,
    rotate: bool = False,
) -> np.ndarray:
    """One material row (:data:`MATERIAL_DIM`,) float32 in the layout of the module docstring.

    Args:
        base: base RGB in [0, 1].
        secondary: secondary RGB in [0, 1]; defaults to ``0.6 * base``.
        pattern: one of the ``PATTERN_*`` ids.
        scale: pattern period in metres (> 0).
        noise_amp: relative value-noise amplitude in [0, 1].
        noise_scale: value-noise feature size in metres (> 0); keep >= ~0.05 so low-res views do not alias.
        param: stripe duty or grout / seam / mortar width as a fraction of ``scale``, in [0, 1].
        rotate: swap the two in-plane axes (turns stripes and planks by 90 degrees).

    Returns:
        (MATERIAL_DIM,) float32 row.
    """
    if not 0 <= int(pattern) < NUM_PATTERNS:
        raise ValueError(f"pattern must be in [0, {NUM_PATTERNS}), got {pattern}")
    if scale <= 0 or noise_scale <= 0:
        raise ValueError(f"scale and noise_scale must be positive, got scale={scale}, noise_scale={noise_scale}")
    base = np.asarray(base, dtype=np.float32)
    sec = 0.6 * base if secondary is None else np.asarray(secondary, dtype=np.float32)
    row = np.zeros(MATERIAL_DIM, dtype=np.float32)
    row[MAT_BASE : MAT_BASE + 3] = base
    row[MAT_SECONDARY : MAT_SECONDARY + 3] = sec
    row[MAT_PATTERN] = int(pattern)
    row[MAT_SCALE] = scale
    row[MAT_NOISE_AMP] = noise_amp
    row[MAT_NOISE_SCALE] = noise_scale
    row[MAT_PARAM] = param
    row[MAT_ROTATE] = 1.0 if rotate else 0.0
    return row


# ---- warp device functions ----------------------------------------------------------------------


@wp.func
def _hash3(x: int, y: int, z: int) -> float:
    """Integer lattice hash -> [0, 1) (murmur-style finaliser, identical on CPU and CUDA)."""
    # Multipliers are odd and < 2**31 so they are exact int32 literals in the generated code.
    h = wp.uint32(x) * wp.uint32(0x27D4EB2F)
    h = h ^ wp.uint32(y) * wp.uint32(0x165667B1)
    h = h ^ wp.uint32(z) * wp.uint32(0x1B873593)
    h = (h ^ (h >> wp.uint32(16))) * wp.uint32(0x7FEB352D)
    h = (h ^ (h >> wp.uint32(15))) * wp.uint32(0x68E31DA5)
    h = h ^ (h >> wp.uint32(16))
    return float(h & wp.uint32(0xFFFFFF)) / 16777216.0


@wp.func
def _value_noise(x: float, y: float, seed: int) -> float:
    """Smooth 2-D value noise in [0, 1] with unit feature size (smoothstep-interpolated lattice)."""
    fx = wp.floor(x)
    fy = wp.floor(y)
    ix = int(fx)
    iy = int(fy)
    tx = x - fx
    ty = y - fy
    sx = tx * tx * (3.0 - 2.0 * tx)
    sy = ty * ty * (3.0 - 2.0 * ty)
    a = _hash3(ix, iy, seed)
    b = _hash3(ix + 1, iy, seed)
    c = _hash3(ix, iy + 1, seed)
    d = _hash3(ix + 1, iy + 1, seed)
    return wp.lerp(wp.lerp(a, b, sx), wp.lerp(c, d, sx), sy)


@wp.func
def _fbm(x: float, y: float, seed: int) -> float:
    """Two octaves of value noise in [0, 1] (the finer octave at half the feature size)."""
    return 0.65 * _value_noise(x, y, seed) + 0.35 * _value_noise(2.0 * x + 17.3, 2.0 * y - 9.1, seed + 101)


@wp.func
def _frac(x: float) -> float:
    return x - wp.floor(x)


@wp.func
def _albedo(materials: wp.array2d(dtype=wp.float32), m: int, p: wp.vec3, n: wp.vec3) -> wp.vec3:
    """Albedo in [0, ~1] of material row ``m`` at world point ``p`` on a surface with normal ``n``."""
    # In-plane coordinates from the dominant normal axis, so the texture lies flat on each wall/floor.
    ax = wp.abs(n[0])
    ay = wp.abs(n[1])
    az = wp.abs(n[2])
    s = p[0]
    t = p[1]
    if ax >= ay and ax >= az:
        s = p[2]
        t = p[1]
    elif ay >= az:
        s = p[0]
        t = p[2]
    if materials[m, MAT_ROTATE] > 0.5:
        tmp = s
        s = t
        t = tmp

    base = wp.vec3(materials[m, 0], materials[m, 1], materials[m, 2])
    sec = wp.vec3(materials[m, 3], materials[m, 4], materials[m, 5])
    pattern = int(materials[m, MAT_PATTERN] + 0.5)
    scale = wp.max(materials[m, MAT_SCALE], 1.0e-3)
    amp = materials[m, MAT_NOISE_AMP]
    nscale = wp.max(materials[m, MAT_NOISE_SCALE], 1.0e-3)
    param = materials[m, MAT_PARAM]
    seed = m * 7919 + 13

    col = base
    if pattern == PATTERN_CHECKER:
        cu = int(wp.floor(s / scale))
        cv = int(wp.floor(t / scale))
        if (cu + cv) % 2 != 0:
            col = sec
    elif pattern == PATTERN_STRIPES:
        if _frac(s / scale) < param:
            col = sec
    elif pattern == PATTERN_TILES:
        cu = int(wp.floor(s / scale))
        cv = int(wp.floor(t / scale))
        tint = 1.0 + 0.24 * (_hash3(cu, cv, seed + 3) - 0.5)
        col = base * tint
        if _frac(s / scale) < param or _frac(t / scale) < param:
            col = sec
    elif pattern == PATTERN_WOOD:
        row = int(wp.floor(t / scale))
        plank_len = 6.0 * scale
        shift = _hash3(row, 0, seed + 5) * plank_len  # staggered seams
        seg = int(wp.floor((s + shift) / plank_len))
        tone = _hash3(seg, row, seed + 7)
        # grain: noise stretched along the plank (features ~scale/2 across, ~1 m along)
        grain = _value_noise(s * 1.3 + float(seg) * 3.7, t * 2.0 / scale, seed + 11)
        col = wp.lerp(base, sec, 0.55 * tone + 0.45 * grain)
        if _frac(t / scale) < param or _frac((s + shift) / plank_len) < param / 6.0:
            col = sec * 0.55
    elif pattern == PATTERN_BRICK:
        bh = 0.4 * scale
        row = int(wp.floor(t / bh))
        off = 0.0
        if row % 2 != 0:
            off = 0.5 * scale
        cu = int(wp.floor((s + off) / scale))
        tint = 1.0 + 0.3 * (_hash3(cu, row, seed + 9) - 0.5)
        col = base * tint
        if _frac(t / bh) < param * 2.5 or _frac((s + off) / scale) < param:
            col = sec

    nval = _fbm(s / nscale, t / nscale, seed)
    return col * (1.0 + amp * 2.0 * (nval - 0.5))


@wp.func
def _shade(n: wp.vec3, key: wp.vec3, fill: wp.vec3) -> float:
    """View-independent irradiance of a surface with normal ``n``: ambient + key + fill + floor bounce."""
    return (
        _AMBIENT
        + _KEY * wp.max(0.0, wp.dot(n, key))
        + _FILL * wp.max(0.0, wp.dot(n, fill))
        + _BOUNCE * wp.max(0.0, n[1])
    )


@wp.kernel
def _raycast_kernel(
    mesh_ids: wp.array(dtype=wp.uint64),  # (S,)
    face_offset: wp.array(dtype=wp.int32),  # (S,) first row of each mesh in face_material
    material_offset: wp.array(dtype=wp.int32),  # (S,) first row of each mesh in materials
    face_material: wp.array(dtype=wp.int32),  # (sum F,) per-mesh material index of each face
    materials: wp.array2d(dtype=wp.float32),  # (sum M, MATERIAL_DIM)
    scene_index: wp.array(dtype=wp.int32),  # (N,)
    c2w: wp.array(dtype=wp.mat44),  # (N,)
    intrinsics: wp.array(dtype=wp.mat33),  # (N,) or (1,) with k_stride = 0
    k_stride: int,
    key: wp.vec3,
    fill: wp.vec3,
    max_depth: float,
    rgb: wp.array4d(dtype=wp.uint8),  # (N, H, W, 3)
    depth: wp.array3d(dtype=wp.float32),  # (N, H, W)
    env_offset: int,
):
    """One thread per pixel: cast the pixel-centre ray, write z-depth and shaded colour (0 on a miss)."""
    i, v, u = wp.tid()
    i = i + env_offset
    s = scene_index[i]
    hit = False
    z = wp.float32(0.0)
    r = wp.float32(0.0)
    g = wp.float32(0.0)
    b = wp.float32(0.0)
    if s >= 0 and s < mesh_ids.shape[0]:  # out-of-range scene ids render as misses
        Km = intrinsics[i * k_stride]
        T = c2w[i]
        # Camera-frame direction with z = 1: the query's t (in units of |dir|) is then the z-depth.
        dc = wp.vec3((float(u) + 0.5 - Km[0, 2]) / Km[0, 0], (float(v) + 0.5 - Km[1, 2]) / Km[1, 1], 1.0)
        d = wp.vec3(
            T[0, 0] * dc[0] + T[0, 1] * dc[1] + T[0, 2] * dc[2],
            T[1, 0] * dc[0] + T[1, 1] * dc[1] + T[1, 2] * dc[2],
            T[2, 0] * dc[0] + T[2, 1] * dc[1] + T[2, 2] * dc[2],
        )
        o = wp.vec3(T[0, 3], T[1, 3], T[2, 3])
        q = wp.mesh_query_ray(mesh_ids[s], o, d, max_depth)
        if q.result:
            hit = True
            z = q.t
            p = o + d * q.t
            n = wp.normalize(q.normal)  # oriented by winding, never flipped towards the ray
            m = face_material[face_offset[s] + q.face] + material_offset[s]
            c = _albedo(materials, m, p, n) * _shade(n, key, fill) * 255.0
            r = wp.clamp(c[0], 0.0, 255.0)
            g = wp.clamp(c[1], 0.0, 255.0)
            b = wp.clamp(c[2], 0.0, 255.0)
    depth[i, v, u] = z
    if hit:
        rgb[i, v, u, 0] = wp.uint8(int(r + 0.5))
        rgb[i, v, u, 1] = wp.uint8(int(g + 0.5))
        rgb[i, v, u, 2] = wp.uint8(int(b + 0.5))
    else:
        rgb[i, v, u, 0] = wp.uint8(0)
        rgb[i, v, u, 1] = wp.uint8(0)
        rgb[i, v, u, 2] = wp.uint8(0)


class MeshRaycaster:
    """Batched ray caster over a fixed set of triangle meshes (one per scene) on one device.

    Builds one ``wp.Mesh`` (BVH) per scene and concatenates the face-material and material tables
    with per-scene offsets, so one kernel launch can render cameras looking at different scenes.

    Args:
        meshes: one :class:`TriangleMesh` per scene; materials must be (M, :data:`MATERIAL_DIM`).
        device: torch device of the renders (the warp device is derived from it).
        max_depth: rays report a miss beyond this z-depth (metres).

    Attributes:
        device: torch device. wp_device: matching warp device string.
        meshes: the ``wp.Mesh`` objects (kept alive: kernels address them by id).
        num_scenes: S.
    """

    def __init__(self, meshes: Sequence[TriangleMesh], device: torch.device | str = "cpu", max_depth: float = 1.0e4):
        if isinstance(meshes, TriangleMesh):
            meshes = [meshes]
        if len(meshes) == 0:
            raise ValueError("MeshRaycaster needs at least one mesh")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.wp_device = warp_device(self.device)
        self.max_depth = float(max_depth)
        self.cpu_threads = min(os.cpu_count() or 1, 8)
        self._executor = (
            ThreadPoolExecutor(self.cpu_threads, thread_name_prefix="raycast") if self.cpu_threads > 1 else None
        )
        if self._executor is not None and self.device.type == "cpu":
            wp.load_module(module=__name__, device="cpu")  # compile before threads may launch concurrently
        self._vertices: list[torch.Tensor] = []  # torch storage shared with the wp.Mesh points
        self._indices: list[torch.Tensor] = []
        self.meshes: list = []
        face_mats, mats, face_off, mat_off = [], [], [], []
        nf = nm = 0
        for k, mesh in enumerate(meshes):
            if not isinstance(mesh, TriangleMesh):
                raise ValueError(f"mesh {k} must be a TriangleMesh, got {type(mesh).__name__}")
            if mesh.materials.shape[1] != MATERIAL_DIM:
                raise ValueError(f"mesh {k}: materials must be (M, {MATERIAL_DIM}), got {tuple(mesh.materials.shape)}")
            if mesh.faces.shape[0] == 0:
                raise ValueError(f"mesh {k} has no faces")
            verts = mesh.vertices.to(self.device, torch.float32).contiguous()  # (V, 3)
            idx = mesh.faces.to(self.device, torch.int32).reshape(-1).contiguous()  # (3F,)
            self._vertices.append(verts)
            self._indices.append(idx)
            # Build the BVH on torch's current stream so it is ordered after the copies above (CUDA).
            with wp.ScopedStream(self._stream()):
                self.meshes.append(
                    wp.Mesh(points=wp.from_torch(verts, dtype=wp.vec3), indices=wp.from_torch(idx, dtype=wp.int32))
                )
            face_mats.append(mesh.face_material.to(self.device, torch.int32))
            mats.append(mesh.materials.to(self.device, torch.float32))
            face_off.append(nf)
            mat_off.append(nm)
            nf += mesh.faces.shape[0]
            nm += mesh.materials.shape[0]
        self.num_scenes = len(self.meshes)
        self._mesh_ids = torch.tensor([m.id for m in self.meshes], dtype=torch.int64).to(self.device)  # (S,)
        self._face_material = torch.cat(face_mats).contiguous()  # (sum F,)
        self._materials = torch.cat(mats).contiguous()  # (sum M, MATERIAL_DIM)
        self._face_offset = torch.tensor(face_off, dtype=torch.int32, device=self.device)  # (S,)
        self._material_offset = torch.tensor(mat_off, dtype=torch.int32, device=self.device)  # (S,)
        self._wp_static = [
            wp.from_torch(self._mesh_ids, dtype=wp.uint64),
            wp.from_torch(self._face_offset),
            wp.from_torch(self._material_offset),
            wp.from_torch(self._face_material),
            wp.from_torch(self._materials),
        ]
        self._key = wp.vec3(*[float(x) for x in _KEY_DIR])
        self._fill = wp.vec3(*[float(x) for x in _FILL_DIR])

    def render(
        self,
        scene_index: torch.Tensor,
        c2w: torch.Tensor,
        K: torch.Tensor,
        height: int,
        width: int,
        out_rgb: torch.Tensor | None = None,
        out_depth: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render N cameras in one kernel launch.

        Args:
            scene_index: (N,) int, which mesh each camera sees (ids outside [0, S) render empty).
            c2w: (N, 4, 4) float camera-to-world poses (OpenCV: x right, y down, z forward).
            K: (3, 3) shared or (N, 3, 3) per-camera intrinsics, in pixels of the output.
            height, width: output size in pixels.
            out_rgb: optional preallocated (N, H, W, 3) uint8 output on the raycaster's device.
            out_depth: optional preallocated (N, H, W) float32 output on the raycaster's device.

        Returns:
            (rgb (N, H, W, 3) uint8, depth (N, H, W) float32 camera z-depth, 0 where nothing is hit);
            these are ``out_rgb`` / ``out_depth`` when given.
        """
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
            raise ValueError(f"c2w must be (N, 4, 4), got {tuple(c2w.shape)}")
        N = c2w.shape[0]
        if scene_index.shape != (N,):
            raise ValueError(f"scene_index must be ({N},) to match c2w, got {tuple(scene_index.shape)}")
        if K.shape == (3, 3):
            K = K.reshape(1, 3, 3)
            k_stride = 0
        elif K.shape == (N, 3, 3):
            k_stride = 1
        else:
            raise ValueError(f"K must be (3, 3) or ({N}, 3, 3), got {tuple(K.shape)}")
        if height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive, got {height}, {width}")
        out_rgb = self._check_out(out_rgb, (N, height, width, 3), torch.uint8, "out_rgb")
        out_depth = self._check_out(out_depth, (N, height, width), torch.float32, "out_depth")
        if N == 0:
            return out_rgb, out_depth
        # Inputs are small (N poses); these conversions are no-ops when already float32/int32 contiguous.
        si = scene_index.to(self.device, torch.int32).contiguous()
        c2w_ = c2w.to(self.device, torch.float32).contiguous()
        K_ = K.to(self.device, torch.float32).contiguous()
        inputs = [
            *self._wp_static,
            wp.from_torch(si),
            wp.from_torch(c2w_, dtype=wp.mat44),
            wp.from_torch(K_, dtype=wp.mat33),
            k_stride,
            self._key,
            self._fill,
            self.max_depth,
            wp.from_torch(out_rgb),
            wp.from_torch(out_depth),
        ]
        stream = self._stream()  # torch's current stream: ordered with the producers and consumers

        def launch(first: int, count: int) -> None:
            wp.launch(
                _raycast_kernel,
                dim=(count, height, width),
                inputs=[*inputs, first],
                device=self.wp_device,
                stream=stream,
            )

        threads = min(self.cpu_threads, N) if self.device.type == "cpu" else 1
        if threads <= 1:
            launch(0, N)
        else:
            # CPU: warp runs a kernel on one thread and releases the GIL; disjoint camera ranges run in
            # parallel threads and write disjoint rows of the outputs.
            bounds = [round(k * N / threads) for k in range(threads + 1)]
            list(self._executor.map(lambda k: launch(bounds[k], bounds[k + 1] - bounds[k]), range(threads)))
        return out_rgb, out_depth

    def _stream(self):
        """Warp view of torch's current CUDA stream (None on CPU)."""
        if self.device.type == "cuda":
            return wp.stream_from_torch(torch.cuda.current_stream(self.device))
        return None

    def _check_out(self, out: torch.Tensor | None, shape: tuple, dtype: torch.dtype, name: str) -> torch.Tensor:
        if out is None:
            return torch.empty(shape, dtype=dtype, device=self.device)
        if tuple(out.shape) != shape or out.dtype != dtype or out.device != self.device or not out.is_contiguous():
            raise ValueError(
                f"{name} must be a contiguous {dtype} tensor of shape {shape} on {self.device}, "
                f"got {out.dtype} {tuple(out.shape)} on {out.device}"
            )
        return out
