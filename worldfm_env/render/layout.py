"""Depth of a navigation layout: where the scene's physics says a pixel's ray must stop.

The env's physics knows a scene as a top-down grid (:class:`~worldfm_env.scenes.scene.NavigationGrid`). Taken as
columns standing on the floor plane, the grid's obstacle cells (the obstacles' own footprints,
:func:`~worldfm_env.scenes.navigation.obstacle_footprints`) give every pixel ray a z-depth at which it meets the floor,
the ceiling plane (where the grid knows one) or an obstacle's side or top face: :class:`LayoutDepth`, one warp launch
for N cameras. A column reaches the ceiling unless the grid records what stands on the cell
(:attr:`~worldfm_env.scenes.scene.NavigationGrid.occupied_height`: furniture its own height), so rays pass over low
furniture. Seen through a camera, nothing of the scene lies beyond that depth except where the ray passes under a
lintel or a table top (a table counts as a solid block) or through a gap narrower than a cell. The pipeline's
``depth_bound="navigation"`` caps generated depth with it, so what the agent sees and what it collides with agree
(:mod:`worldfm_env.renderers.pipeline`).

The walk through the grid visits every cell the ray's top-down trace crosses (a 2-D digital differential analyser),
so a face is found whatever the cell size; cells outside the grid count as obstacles.
"""

from __future__ import annotations

import torch

from worldfm_env._device import init_warp, warp_device

__all__ = ["LayoutDepth"]

wp = init_warp()

_NO_HIT = 1.0e30


@wp.func
def _dda_axis(d: float, g: float, cell: int, cs: float) -> wp.vec3:
    # One axis of the cell walk for a trace moving d per unit of z-depth from grid coordinate g (in cell `cell`):
    # (step, z-depth per cell, z-depth to the first boundary); a still axis never crosses one.
    if d > 1.0e-9:
        return wp.vec3(1.0, cs / d, (float(cell + 1) - g) * cs / d)
    if d < -1.0e-9:
        return wp.vec3(-1.0, -cs / d, (g - float(cell)) * -cs / d)
    return wp.vec3(1.0, _NO_HIT, _NO_HIT)


@wp.kernel
def _layout_depth_kernel(
    top: wp.array3d(dtype=wp.float32),  # (S, Gz, Gx) world y of each obstacle cell's top; _NO_HIT: no obstacle
    origin: wp.array(dtype=wp.vec2),  # (S,) world (x0, z0) of cell (0, 0)
    cell_size: wp.array(dtype=wp.float32),  # (S,)
    floor_y: wp.array(dtype=wp.float32),  # (S,)
    ceiling_y: wp.array(dtype=wp.float32),  # (S,) -inf: no ceiling
    scene_index: wp.array(dtype=wp.int32),  # (N,)
    c2w: wp.array(dtype=wp.mat44),  # (N,)
    K_inv: wp.array(dtype=wp.mat33),  # (N,)
    depth: wp.array3d(dtype=wp.float32),  # (N, H, W) out: z-depth, 0 where nothing bounds the ray
):
    n, v, u = wp.tid()
    s = scene_index[n]
    m = c2w[n]
    p = K_inv[n] * wp.vec3(float(u) + 0.5, float(v) + 0.5, 1.0)  # camera ray with z = 1
    # World direction per unit of z-depth, and the camera centre.
    dx = m[0, 0] * p[0] + m[0, 1] * p[1] + m[0, 2] * p[2]
    dy = m[1, 0] * p[0] + m[1, 1] * p[1] + m[1, 2] * p[2]
    dz = m[2, 0] * p[0] + m[2, 1] * p[1] + m[2, 2] * p[2]
    ox = m[0, 3]
    oy = m[1, 3]
    oz = m[2, 3]
    best = float(_NO_HIT)
    if dy > 1.0e-6:  # +y is down: the ray meets the floor plane
        t_floor = (floor_y[s] - oy) / dy
        if t_floor > 0.0:
            best = t_floor
    if dy < -1.0e-6:  # the ray meets the ceiling plane (never one at -inf)
        t_ceiling = (ceiling_y[s] - oy) / dy
        if t_ceiling > 0.0:
            best = wp.min(best, t_ceiling)
    cs = cell_size[s]
    o = origin[s]
    gx = (ox - o[0]) / cs
    gz = (oz - o[1]) / cs
    col = int(wp.floor(gx))
    row = int(wp.floor(gz))
    rows = top.shape[1]
    cols = top.shape[2]
    axis_c = _dda_axis(dx, gx, col, cs)
    axis_r = _dda_axis(dz, gz, row, cs)
    step_c = int(axis_c[0])
    step_r = int(axis_r[0])
    delta_c = axis_c[1]
    delta_r = axis_r[1]
    next_c = axis_c[2]  # z-depth at which the trace crosses the next column / row boundary
    next_r = axis_r[2]
    t = float(0.0)
    if delta_c < _NO_HIT or delta_r < _NO_HIT:  # a ray with a top-down trace (not straight up or down)
        # Bounded walk: a non-finite pose must not spin forever on the GPU.
        for _ in range(rows + cols + 2):
            if t >= best:
                break
            cell_top = float(-_NO_HIT)  # outside the grid: an obstacle up to any ceiling
            if row >= 0 and col >= 0 and row < rows and col < cols:
                cell_top = top[s, row, col]
            t_exit = wp.min(next_c, next_r)  # z-depth at which the trace leaves this cell
            if cell_top < _NO_HIT:  # an obstacle stands on this cell, from the floor up to cell_top
                if oy + dy * t >= cell_top:  # the ray enters the cell below the top: it meets the side face
                    if t > 0.0:
                        best = wp.min(best, t)
                    break
                if dy > 1.0e-6:  # above the top, going down: it may meet the top face inside the cell
                    t_top = (cell_top - oy) / dy
                    if t_top < t_exit:
                        best = wp.min(best, t_top)
                        break
            if next_c < next_r:
                t = next_c
                next_c = next_c + delta_c
                col = col + step_c
            else:
                t = next_r
                next_r = next_r + delta_r
                row = row + step_r
    if best >= _NO_HIT:
        best = 0.0
    depth[n, v, u] = best


class LayoutDepth:
    """The z-depth at which each pixel ray of N cameras meets a navigation layout (see the module docstring).

    Args:
        obstacles: (S, Gz, Gx) bool obstacle cells of every scene (``pool_obstacles`` of
            :mod:`worldfm_env.scenes.navigation`; cells outside a scene's own grid are obstacles).
        origin: (S, 2) world (x0, z0) of cell (0, 0). cell_size: (S,) cell edges. floor_y: (S,) floor heights.
        num_envs, height, width: the output batch and frame size.
        ceiling_y: (S,) ceiling heights, ``-inf`` for a scene without one; None: no scene has one.
        obstacle_height: (S, Gz, Gx) height above the floor of what stands on each obstacle cell (``inf``: floor to
            ceiling); a ray passes over a lower obstacle or meets its top face. None: every obstacle is a
            floor-to-ceiling column. Read only where ``obstacles`` is True.
    """

    def __init__(
        self,
        obstacles: torch.Tensor,
        origin: torch.Tensor,
        cell_size: torch.Tensor,
        floor_y: torch.Tensor,
        num_envs: int,
        height: int,
        width: int,
        ceiling_y: torch.Tensor | None = None,
        obstacle_height: torch.Tensor | None = None,
    ) -> None:
        if obstacles.ndim != 3 or obstacles.dtype != torch.bool:
            raise ValueError(
                f"obstacles must be an (S, Gz, Gx) bool tensor, got {obstacles.dtype} {tuple(obstacles.shape)}"
            )
        S = obstacles.shape[0]
        if ceiling_y is None:
            ceiling_y = torch.full((S,), -torch.inf, device=obstacles.device)
        named = (("origin", origin, (S, 2)), ("cell_size", cell_size, (S,)), ("floor_y", floor_y, (S,)))
        for name, t, shape in (*named, ("ceiling_y", ceiling_y, (S,))):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (one per scene of obstacles), got {tuple(t.shape)}")
        self.device = obstacles.device
        self.wp_device = warp_device(self.device)
        self.obstacles = obstacles.to(torch.uint8).contiguous()
        self.origin = origin.float().contiguous()
        self.cell_size = cell_size.float().contiguous()
        self.floor_y = floor_y.float().contiguous()
        if obstacle_height is None:
            obstacle_height = torch.full(obstacles.shape, torch.inf, device=self.device)
        if not isinstance(obstacle_height, torch.Tensor):
            raise ValueError(
                f"obstacle_height must be None or an (S, Gz, Gx) tensor, got {type(obstacle_height).__name__}"
            )
        if tuple(obstacle_height.shape) != tuple(obstacles.shape):
            raise ValueError(
                f"obstacle_height must have obstacles' shape {tuple(obstacles.shape)}, "
                f"got {tuple(obstacle_height.shape)}"
            )
        obstacle_height = obstacle_height.to(device=self.device, dtype=torch.float32)
        on = obstacles.to(self.device)
        if bool(torch.isnan(obstacle_height[on]).any()) or bool((obstacle_height[on] < 0).any()):
            raise ValueError(
                "obstacle_height must be >= 0 (or inf: floor to ceiling) on obstacle cells, got NaN or < 0"
            )
        # World y of each obstacle cell's top (+y is down); _NO_HIT marks a cell with no obstacle.
        top = (self.floor_y[:, None, None] - obstacle_height).clamp(min=-_NO_HIT)
        self.top = torch.where(on, top, torch.full_like(top, _NO_HIT)).contiguous()
        self.ceiling_y = ceiling_y.to(device=self.device, dtype=torch.float32).contiguous()
        if bool(torch.isnan(self.ceiling_y).any()) or bool((self.ceiling_y == torch.inf).any()):
            raise ValueError("ceiling_y must hold finite heights or -inf (no ceiling), got NaN or +inf")
        self.num_envs, self.height, self.width = num_envs, height, width
        self.depth = torch.zeros(num_envs, height, width, dtype=torch.float32, device=self.device)
        self._wp = [
            wp.from_torch(self.top),
            wp.from_torch(self.origin, dtype=wp.vec2),
            wp.from_torch(self.cell_size),
            wp.from_torch(self.floor_y),
            wp.from_torch(self.ceiling_y),
        ]
        self._wp_depth = wp.from_torch(self.depth)

    def render(self, scene_index: torch.Tensor, c2w: torch.Tensor, K_inv: torch.Tensor) -> torch.Tensor:
        """(N, H, W) float32 z-depth of the layout at poses ``c2w`` (N, 4, 4) in scenes ``scene_index`` (N,), with
        inverse intrinsics ``K_inv`` (N, 3, 3) or (3, 3); 0 where nothing bounds the ray (straight up, under no
        ceiling). A view of a buffer that the next call overwrites."""
        N = self.num_envs
        if tuple(c2w.shape) != (N, 4, 4) or tuple(scene_index.shape) != (N,):
            raise ValueError(
                f"need scene_index ({N},) and c2w ({N}, 4, 4), got {tuple(scene_index.shape)} and {tuple(c2w.shape)}"
            )
        K_inv = K_inv.float().expand(N, 3, 3).contiguous()
        wp.launch(
            _layout_depth_kernel,
            dim=(N, self.height, self.width),
            inputs=[
                *self._wp,
                wp.from_torch(scene_index.to(device=self.device, dtype=torch.int32).contiguous()),
                wp.from_torch(c2w.to(device=self.device, dtype=torch.float32).contiguous(), dtype=wp.mat44),
                wp.from_torch(K_inv.to(self.device), dtype=wp.mat33),
                self._wp_depth,
            ],
            device=self.wp_device,
        )
        return self.depth
