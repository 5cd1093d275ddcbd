"""Point clouds packed for the splat kernel: several clouds in one flat, chunked, level-of-detail layout.

Each cloud is sorted along a Morton curve and cut into fixed-size chunks with bounding boxes, so the
splat kernel can skip chunks outside each camera's frustum and read only a coarse prefix of distant chunks.
Pure torch; it knows nothing of scenes (a scene pool hands it tensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["ChunkedPoints", "LOD_LEVELS", "GROUP_SIZE"]


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
