"""Per-pool navigation data the tasks share: main free component, goal candidates, geodesic fields."""

from __future__ import annotations

import torch

from worldfm_env.scenes.navigation import geodesic_distance
from worldfm_env.scenes.pool import ScenePool

__all__ = ["NavigationData"]


class NavigationData:
    """Navigation tensors of every scene of a pool, padded to one grid shape.

    Attributes (S scenes, grid Gz x Gx, G goal candidates):
        free: (S, Gz, Gx) bool.
        main: (S, Gz, Gx) bool, the largest connected free component of each scene.
        main_cells: (S, Fmax) long flat indices of main-component cells (padded by repetition).
        main_count: (S,) long number of main-component cells.
        goal_cells: (S, G) long flat indices of goal candidates (main component).
        goal_fields: (S, G, Gz*Gx) float32 geodesic distance to each candidate, scene units, inf unreachable.
    """

    def __init__(self, pool: ScenePool, goal_candidates: int = 32, with_goal_fields: bool = True) -> None:
        self.pool = pool
        self.device = pool.device
        self.free = pool.nav_free
        S, Gz, Gx = self.free.shape
        self.shape = (Gz, Gx)
        main = torch.zeros_like(self.free)
        for s in range(S):
            main[s] = self._main_component(s)
        self.main = main
        counts = main.flatten(1).sum(1)
        self.main_count = counts.long()
        Fmax = int(counts.max())
        cells = torch.zeros(S, Fmax, dtype=torch.long, device=self.device)
        for s in range(S):
            idx = torch.nonzero(main[s].flatten(), as_tuple=False)[:, 0]
            cells[s, : idx.numel()] = idx
            cells[s, idx.numel() :] = idx[0]
        self.main_cells = cells
        if with_goal_fields:
            goal_cells = torch.zeros(S, goal_candidates, dtype=torch.long, device=self.device)
            fields = torch.zeros(S, goal_candidates, Gz * Gx, dtype=torch.float32, device=self.device)
            for s in range(S):
                # Goal candidates are fixed per scene (not per env seed), spread by a seeded permutation.
                gen = torch.Generator().manual_seed(7919 * (s + 1))
                pick = torch.randperm(int(counts[s]), generator=gen)[:goal_candidates]
                pick = pick.repeat((goal_candidates + pick.numel() - 1) // pick.numel())[:goal_candidates]
                flat = cells[s, pick.to(self.device)]
                goal_cells[s] = flat
                rc = torch.stack([flat // Gx, flat % Gx], dim=-1)
                fields[s] = geodesic_distance(self.free[s], rc, float(pool.nav_cell_size[s])).flatten(1)
            self.goal_cells = goal_cells
            self.goal_fields = fields

    def _main_component(self, s: int) -> torch.Tensor:
        free = self.free[s]
        remaining = free.clone()
        best = torch.zeros_like(free)
        total = int(free.sum())
        # Flood from free cells until the largest component found covers over half of what is left.
        while int(remaining.sum()) > int(best.sum()):
            idx = torch.nonzero(remaining.flatten(), as_tuple=False)[0, 0]
            src = torch.stack([idx // free.shape[1], idx % free.shape[1]])
            component = torch.isfinite(geodesic_distance(free, src))
            if int(component.sum()) > int(best.sum()):
                best = component
            remaining &= ~component
            if int(best.sum()) * 2 >= total:
                break
        return best

    def cell_to_world(self, scene: torch.Tensor, flat_cell: torch.Tensor) -> torch.Tensor:
        """World (x, z) (N, 2) of the centres of flat cell indices in each env's scene."""
        Gx = self.shape[1]
        row = (flat_cell // Gx).float()
        col = (flat_cell % Gx).float()
        cs = self.pool.nav_cell_size[scene]
        origin = self.pool.nav_origin[scene]
        return torch.stack([origin[:, 0] + (col + 0.5) * cs, origin[:, 1] + (row + 0.5) * cs], dim=-1)

    def is_free(self, scene: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Whether world points (x, z) (N, ...) are on free cells of each env's scene (N,)."""
        Gz, Gx = self.shape
        shape = x.shape
        cs = self.pool.nav_cell_size[scene].view(-1, *([1] * (x.ndim - 1)))
        ox = self.pool.nav_origin[scene, 0].view_as(cs)
        oz = self.pool.nav_origin[scene, 1].view_as(cs)
        col = torch.floor((x - ox) / cs).long()
        row = torch.floor((z - oz) / cs).long()
        inside = (row >= 0) & (row < Gz) & (col >= 0) & (col < Gx)
        flat = row.clamp(0, Gz - 1) * Gx + col.clamp(0, Gx - 1) + scene.view_as(cs).long() * (Gz * Gx)
        return self.free.reshape(-1)[flat.reshape(-1)].reshape(shape) & inside

    def segment_free(
        self, scene: torch.Tensor, start: torch.Tensor, end: torch.Tensor, fractions: torch.Tensor
    ) -> torch.Tensor:
        """Whether the straight segments start -> end (N, 3) world points stay on free cells (N,) bool, tested at
        ``fractions`` (K,) of the way along (0 and 1 included for the end points)."""
        xs = start[:, 0, None] + fractions * (end[:, 0] - start[:, 0])[:, None]
        zs = start[:, 2, None] + fractions * (end[:, 2] - start[:, 2])[:, None]
        return self.is_free(scene, xs, zs).all(dim=1)

    def interpolate_field(
        self, fields: torch.Tensor, row: torch.Tensor, scene: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """Geodesic distance (N,) at continuous positions; env i reads field ``fields[row[i]]``.

        ``fields`` is (R, Gz*Gx) (e.g. all goal fields flattened to (S*G, Gz*Gx)); no per-env copy is made.

        The minimum over the 2x2 cell centres around the point of field + straight-line offset,
        which is exact wherever those centres are in line of sight (always locally, on free cells).
        """
        Gz, Gx = self.shape
        cs = self.pool.nav_cell_size[scene]
        fx = (position[:, 0] - self.pool.nav_origin[scene, 0]) / cs - 0.5
        fz = (position[:, 2] - self.pool.nav_origin[scene, 1]) / cs - 0.5
        c0 = torch.floor(fx).long()
        r0 = torch.floor(fz).long()
        best = torch.full_like(fx, float("inf"))
        for dr in (0, 1):
            for dc in (0, 1):
                r = r0 + dr
                c = c0 + dc
                inside = (r >= 0) & (r < Gz) & (c >= 0) & (c < Gx)
                flat = r.clamp(0, Gz - 1) * Gx + c.clamp(0, Gx - 1) + row * (Gz * Gx)
                value = fields.reshape(-1)[flat]
                offset = torch.sqrt((fx - c.float()) ** 2 + (fz - r.float()) ** 2) * cs
                value = torch.where(inside, value + offset, torch.full_like(value, float("inf")))
                best = torch.minimum(best, value)
        return best
