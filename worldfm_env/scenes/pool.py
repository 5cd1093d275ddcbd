"""A pool of scenes packed into flat device arrays, so one kernel launch serves N envs in any scenes.

Point clouds are sorted along a Morton curve and cut into fixed-size chunks with bounding boxes, so
the splat kernel can skip chunks outside each camera's frustum. Reference banks are concatenated
(all scenes of a pool share one bank resolution); navigation grids are padded to one shape with
blocked cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worldfm_env.geometry import invert_pose
from worldfm_env.scenes.scene import Scene

__all__ = ["ChunkedPoints", "ScenePool", "LOD_LEVELS"]


def _morton_order(xyz: torch.Tensor) -> torch.Tensor:
    """Permutation sorting points along a 3-D Morton (Z-order) curve at 10 bits per axis."""
    lo = xyz.min(0).values
    span = (xyz.max(0).values - lo).clamp_min(1e-6)
    q = ((xyz - lo) / span * 1023.0).long().clamp(0, 1023)

    def spread(v: torch.Tensor) -> torch.Tensor:
        # Insert two zero bits between each of the 10 bits.
        v = (v | (v << 16)) & 0x030000FF
        v = (v | (v << 8)) & 0x0300F00F
        v = (v | (v << 4)) & 0x030C30C3
        v = (v | (v << 2)) & 0x09249249
        return v

    code = spread(q[:, 0]) | (spread(q[:, 1]) << 1) | (spread(q[:, 2]) << 2)
    return torch.argsort(code, stable=True)


LOD_LEVELS = 10
GROUP_SIZE = 16


def _lod_ranks(xyz: torch.Tensor, base: float, levels: int) -> torch.Tensor:
    """Level of detail of each point: the coarsest level at which it represents its voxel.

    Level ``l`` uses cubic voxels of edge ``base * 2**l``; in each occupied voxel the earliest point
    (input order) represents it. A point's rank is the largest ``l`` at which it is a representative,
    so the points of rank >= l hold at least one point of every occupied level-``l`` voxel.
    """
    rank = torch.zeros(xyz.shape[0], dtype=torch.uint8, device=xyz.device)
    lo = xyz.min(0).values
    order = torch.arange(xyz.shape[0], device=xyz.device)
    for level in range(1, levels):
        cells = torch.floor((xyz - lo) / (base * 2**level)).long()
        dims = cells.max(0).values + 1
        key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        sorted_key, perm = torch.sort(key, stable=True)
        first = torch.ones_like(sorted_key, dtype=torch.bool)
        first[1:] = sorted_key[1:] != sorted_key[:-1]
        reps = order[perm[first]]
        rank[reps] = level
    return rank


def _local_spacing(xyz: torch.Tensor, voxel: float) -> torch.Tensor:
    """Approximate distance between neighbouring samples around each point.

    Points are surface samples, so a voxel of edge ``voxel`` crossed by a surface holds about
    ``(voxel / spacing)**2`` of them: spacing ~ voxel / sqrt(count). Corners and edges (two
    surfaces in one voxel) read a little denser, which only makes adaptive splats smaller.
    """
    cells = torch.floor((xyz - xyz.min(0).values) / voxel).long()
    dims = cells.max(0).values + 1
    key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return (voxel / counts.float().sqrt())[inverse].contiguous()


class ChunkedPoints:
    """Several point clouds in one flat, chunked layout for the splat kernel.

    Each cloud is sorted along a Morton curve and cut into chunks of ``chunk_size`` points, so a
    chunk is spatially compact and its bounding box can be frustum-culled. Every point also has a
    level-of-detail rank (see :func:`_lod_ranks`, base spacing = cloud extent / 2048); inside a
    chunk points are ordered coarse to fine, so a distant chunk only reads a prefix of its points.

    Attributes (S clouds, C chunks, P points, L levels):
        points_xyz (P, 3) float32, points_rgb (P, 3) uint8, points_rank (P,) uint8: chunk-contiguous.
        points_spacing (P,) float32: local sample spacing (for adaptive splat sizes).
        points_normal (P, 3) float32: unit normals, zero where unknown.
        chunk_start, chunk_count (C,) int32; chunk_min, chunk_max (C, 3) float32 bounding boxes.
        chunk_prefix (C, L) int32: number of points of rank >= l at the start of each chunk.
        scene_chunk_start, scene_chunk_count (S,) int32; max_chunks: most chunks of any cloud.
        group_start, group_count (Gc,) int32; group_min, group_max (Gc, 3): groups of GROUP_SIZE chunks.
        scene_group_start, scene_group_count (S,) int32; max_groups: most groups of any cloud.
        lod_base (S,) float32: spacing of level 0 of each cloud.
    """

    def __init__(
        self,
        xyz: Sequence[torch.Tensor],
        rgb: Sequence[torch.Tensor],
        chunk_size: int = 512,
        normals: Sequence[torch.Tensor | None] | None = None,
        spacings: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if len(xyz) == 0 or len(xyz) != len(rgb):
            raise ValueError(
                f"need one rgb per xyz cloud and at least one cloud, got {len(xyz)} xyz and {len(rgb)} rgb"
            )
        self.device = xyz[0].device
        self.chunk_size = chunk_size
        self.levels = LOD_LEVELS
        xyz_parts, rgb_parts, rank_parts, prefix_parts, lod_base, spacing_parts = [], [], [], [], [], []
        normal_parts = []
        normals = list(normals) if normals is not None else [None] * len(xyz)
        spacings = list(spacings) if spacings is not None else [None] * len(xyz)
        if len(normals) != len(xyz):
            raise ValueError(f"need one normals entry (or None) per cloud, got {len(normals)} for {len(xyz)} clouds")
        chunk_start, chunk_count, scene_chunk_start, scene_chunk_count = [], [], [], []
        offset = 0
        num_chunks = 0
        for cloud_xyz, cloud_rgb, cloud_normal, cloud_spacing in zip(xyz, rgb, normals, spacings, strict=True):
            if cloud_xyz.ndim != 2 or cloud_xyz.shape[1] != 3 or cloud_xyz.shape[0] == 0:
                raise ValueError(f"point cloud xyz must be a non-empty (P, 3) tensor, got {tuple(cloud_xyz.shape)}")
            if cloud_rgb.shape != cloud_xyz.shape or cloud_rgb.dtype != torch.uint8:
                raise ValueError(
                    f"point cloud rgb must be uint8 {tuple(cloud_xyz.shape)}, "
                    f"got {cloud_rgb.dtype} {tuple(cloud_rgb.shape)}"
                )
            cloud_xyz = cloud_xyz.float()
            extent = float((cloud_xyz.max(0).values - cloud_xyz.min(0).values).max().clamp_min(1e-6))
            base = extent / 2048.0
            rank = _lod_ranks(cloud_xyz, base, self.levels)
            if cloud_spacing is None:
                spacing = _local_spacing(cloud_xyz, base * 16.0)
            elif cloud_spacing.shape != cloud_xyz.shape[:1]:
                raise ValueError(f"spacing must be ({cloud_xyz.shape[0]},), got {tuple(cloud_spacing.shape)}")
            else:
                spacing = cloud_spacing.float()
            order = _morton_order(cloud_xyz)
            P = cloud_xyz.shape[0]
            starts = torch.arange(0, P, chunk_size, device=self.device)
            # Within each chunk: coarse ranks first (stable, so Morton order is kept per rank).
            chunk_id = torch.arange(P, device=self.device) // chunk_size
            sort_key = chunk_id * 256 + (255 - rank[order].long())
            order = order[torch.argsort(sort_key, stable=True)]
            rank = rank[order]
            counts = torch.zeros(len(starts), self.levels, dtype=torch.int32, device=self.device)
            for level in range(self.levels):
                counts[:, level] = torch.zeros(len(starts), dtype=torch.int32, device=self.device).index_add_(
                    0, chunk_id, (rank >= level).to(torch.int32)
                )
            scene_chunk_start.append(num_chunks)
            scene_chunk_count.append(len(starts))
            num_chunks += len(starts)
            chunk_start.append(starts + offset)
            chunk_count.append(torch.clamp(P - starts, max=chunk_size))
            xyz_parts.append(cloud_xyz[order])
            rgb_parts.append(cloud_rgb[order])
            rank_parts.append(rank)
            spacing_parts.append(spacing[order])
            if cloud_normal is None:
                cloud_normal = torch.zeros_like(cloud_xyz)
            elif cloud_normal.shape != cloud_xyz.shape:
                raise ValueError(f"normals must be {tuple(cloud_xyz.shape)}, got {tuple(cloud_normal.shape)}")
            normal_parts.append(cloud_normal.float()[order])
            prefix_parts.append(counts)
            lod_base.append(base)
            offset += P
        if offset >= 2**31:
            raise ValueError(f"the scenes hold {offset} points in total; at most 2**31 - 1 are supported")
        self.points_xyz = torch.cat(xyz_parts).contiguous()
        self.points_rgb = torch.cat(rgb_parts).contiguous()
        self.points_rank = torch.cat(rank_parts).contiguous()
        self.points_spacing = torch.cat(spacing_parts).contiguous()
        self.points_normal = torch.cat(normal_parts).contiguous()
        self.chunk_start = torch.cat(chunk_start).to(torch.int32)
        self.chunk_count = torch.cat(chunk_count).to(torch.int32)
        self.chunk_prefix = torch.cat(prefix_parts).contiguous()
        # Bounding boxes: pad each chunk to chunk_size by repeating its first point.
        C = self.chunk_start.shape[0]
        lane = torch.arange(chunk_size, device=self.device)
        idx = self.chunk_start.long()[:, None] + lane[None, :]
        idx = torch.where(lane[None, :] < self.chunk_count.long()[:, None], idx, self.chunk_start.long()[:, None])
        pts = self.points_xyz[idx.reshape(-1)].reshape(C, chunk_size, 3)
        self.chunk_min = pts.min(1).values.contiguous()
        self.chunk_max = pts.max(1).values.contiguous()
        self.scene_chunk_start = torch.tensor(scene_chunk_start, dtype=torch.int32, device=self.device)
        self.scene_chunk_count = torch.tensor(scene_chunk_count, dtype=torch.int32, device=self.device)
        self.lod_base = torch.tensor(lod_base, dtype=torch.float32, device=self.device)
        self.max_chunks = int(max(scene_chunk_count))
        self._build_groups(scene_chunk_start, scene_chunk_count)

    def _build_groups(self, scene_chunk_start: list[int], scene_chunk_count: list[int]) -> None:
        # Groups of GROUP_SIZE consecutive chunks (Morton neighbours) with their own boxes, so the
        # splat culls whole groups before testing their chunks.
        group_start, group_count, scene_group_start, scene_group_count = [], [], [], []
        for first, count in zip(scene_chunk_start, scene_chunk_count, strict=True):
            scene_group_start.append(len(group_start))
            for g in range(first, first + count, GROUP_SIZE):
                group_start.append(g)
                group_count.append(min(GROUP_SIZE, first + count - g))
            scene_group_count.append(len(group_start) - scene_group_start[-1])
        i32 = dict(dtype=torch.int32, device=self.device)
        self.group_start = torch.tensor(group_start, **i32)
        self.group_count = torch.tensor(group_count, **i32)
        owner = torch.repeat_interleave(torch.arange(len(group_start), device=self.device), self.group_count.long())
        G = len(group_start)
        self.group_min = torch.full((G, 3), float("inf"), device=self.device).scatter_reduce(
            0, owner[:, None].expand(-1, 3), self.chunk_min, "amin"
        )
        self.group_max = torch.full((G, 3), float("-inf"), device=self.device).scatter_reduce(
            0, owner[:, None].expand(-1, 3), self.chunk_max, "amax"
        )
        self.scene_group_start = torch.tensor(scene_group_start, **i32)
        self.scene_group_count = torch.tensor(scene_group_count, **i32)
        self.max_groups = int(max(scene_group_count))


def occluder_grid(
    xyz: torch.Tensor, shape: tuple[int, int], grid, bin_height: float = 0.25, fill: float = 0.85
) -> torch.Tensor:
    """Cells of a navigation-grid layout that hold a floor-to-ceiling column of points.

    The vertical span between the floor (``grid.floor_y``) and the ceiling (the 1st percentile of
    point y) is cut into bins of ``bin_height``; a cell is an occluder when points fill at least
    ``fill`` of its bins, and lies inside a run of such cells (the two end cells of every run are
    dropped: a sight line may clip the empty part of a wall's end cell or a door jamb). Such cells
    hide everything behind them at every height, so a chunk of points entirely behind them (seen
    from above) cannot be visible. Door openings, furniture and low walls never qualify.
    """
    Gz, Gx = shape
    out = torch.zeros(Gz, Gx, dtype=torch.bool, device=xyz.device)
    floor = grid.floor_y
    sample = xyz[:: max(1, xyz.shape[0] // 200000), 1]
    ceiling = float(torch.quantile(sample, 0.01))
    span = floor - ceiling
    bins = int(span / bin_height) - 1
    if bins < 2:
        return out
    height = floor - 0.5 * bin_height - xyz[:, 1]  # metres above the floor, minus half a bin margin
    b = torch.floor(height / ((span - bin_height) / bins)).long()
    col = torch.floor((xyz[:, 0] - grid.origin[0]) / grid.cell_size).long()
    row = torch.floor((xyz[:, 2] - grid.origin[1]) / grid.cell_size).long()
    ok = (b >= 0) & (b < bins) & (row >= 0) & (row < Gz) & (col >= 0) & (col < Gx)
    occupancy = torch.zeros(Gz * Gx * bins, dtype=torch.bool, device=xyz.device)
    occupancy[((row * Gx + col) * bins + b)[ok]] = True
    filled = occupancy.view(Gz, Gx, bins).float().mean(-1) >= fill
    # A cell is treated as solid although the wall may fill only part of it. Inside a wall run that
    # is harmless (the run blocks sight anyway), but at a wall's end or a door jamb a sight line can
    # clip the empty part of the cell. So keep only cells with occluders on both sides along a row
    # or a column (interior of a run), twice: the two outermost cells of every run are dropped.
    for _ in range(2):
        padded = torch.nn.functional.pad(filled[None, None].float(), (1, 1, 1, 1))[0, 0] > 0
        along_x = padded[1:-1, :-2] & padded[1:-1, 2:]
        along_z = padded[:-2, 1:-1] & padded[2:, 1:-1]
        filled = filled & (along_x | along_z)
    return filled


class ScenePool:
    """Scenes packed for batched rendering on one device.

    Attributes (S scenes, B bank views in total):
        scenes: the source scenes (on ``device``).
        points: all point clouds, chunked (:class:`ChunkedPoints`).
        bank_images (B, Hb, Wb, 3) uint8, bank_depth (B, Hb, Wb), bank_K (B, 3, 3), bank_c2w, bank_w2c (B, 4, 4).
        scene_bank_start, scene_bank_count (S,) int32; max_bank: most views of any scene.
        nav_free (S, Gz, Gx) bool padded with False; nav_origin (S, 2) (x0, z0); nav_cell_size (S,);
        floor_y (S,), camera_height (S,) float32.
        occluders (S, Gz, Gx) bool: navigation cells filled by a floor-to-ceiling column of points (walls),
            which the splat uses for 2.5-D occlusion culling.
    """

    def __init__(self, scenes: Sequence[Scene], device: torch.device, chunk_size: int = 512) -> None:
        if len(scenes) == 0:
            raise ValueError("scenes must hold at least one scene")
        self.device = torch.device(device)
        self.scenes = [s.to(self.device) for s in scenes]
        self.chunk_size = chunk_size
        resolutions = {s.bank.resolution for s in self.scenes}
        if len(resolutions) != 1:
            raise ValueError(
                f"all scenes of one environment must share one reference-bank resolution, got {sorted(resolutions)}"
            )
        self.bank_resolution = resolutions.pop()
        self.points = ChunkedPoints(
            [s.points_xyz for s in self.scenes],
            [s.points_rgb for s in self.scenes],
            chunk_size,
            normals=[s.points_normal for s in self.scenes],
            spacings=[s.points_spacing for s in self.scenes],
        )
        self._pack_banks()
        self._pack_navigation()
        self.occluders = torch.stack(
            [occluder_grid(sc.points_xyz, self.nav_free.shape[1:], sc.navigation_grid) for sc in self.scenes]
        )

    @property
    def num_scenes(self) -> int:
        """Number of scenes S."""
        return len(self.scenes)

    @property
    def has_meshes(self) -> bool:
        """True when every scene has a ground-truth mesh (needed by the oracle renderer)."""
        return all(s.mesh is not None for s in self.scenes)

    def _pack_banks(self) -> None:
        banks = [s.bank for s in self.scenes]
        self.bank_images = torch.cat([b.images for b in banks]).contiguous()
        self.bank_depth = torch.cat([b.depth.float() for b in banks]).contiguous()
        self.bank_K = torch.cat([b.K.float() for b in banks]).contiguous()
        self.bank_c2w = torch.cat([b.c2w.float() for b in banks]).contiguous()
        self.bank_w2c = invert_pose(self.bank_c2w).contiguous()
        counts = [b.num_views for b in banks]
        starts = [sum(counts[:i]) for i in range(len(counts))]
        self.scene_bank_start = torch.tensor(starts, dtype=torch.int32, device=self.device)
        self.scene_bank_count = torch.tensor(counts, dtype=torch.int32, device=self.device)
        self.max_bank = int(max(counts))

    def _pack_navigation(self) -> None:
        grids = [s.navigation_grid for s in self.scenes]
        Gz = max(g.shape[0] for g in grids)
        Gx = max(g.shape[1] for g in grids)
        free = torch.zeros(len(grids), Gz, Gx, dtype=torch.bool, device=self.device)
        for i, g in enumerate(grids):
            free[i, : g.shape[0], : g.shape[1]] = g.free
        self.nav_free = free
        f32 = dict(dtype=torch.float32, device=self.device)
        self.nav_origin = torch.tensor([list(g.origin) for g in grids], **f32)
        self.nav_cell_size = torch.tensor([g.cell_size for g in grids], **f32)
        self.floor_y = torch.tensor([g.floor_y for g in grids], **f32)
        self.camera_height = torch.tensor([s.camera_height for s in self.scenes], **f32)
