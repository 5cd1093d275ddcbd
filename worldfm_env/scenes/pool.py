"""A pool of scenes packed into flat device arrays, so one kernel launch serves N envs in any scenes.

Point clouds are chunked for the splat kernel (:class:`~worldfm_env.render.points.ChunkedPoints`).
Reference banks are concatenated
(all scenes of a pool share one bank resolution); navigation grids are padded to one shape with
blocked cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worldfm_env.geometry import invert_pose
from worldfm_env.render.points import ChunkedPoints
from worldfm_env.scenes.scene import Scene

__all__ = ["ScenePool", "occluder_grid"]


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
