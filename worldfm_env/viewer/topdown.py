"""The viewer's top-down map of one scene: navigation grid, point cloud from above, path, heading, goal, memory.

World axes follow :mod:`worldfm_env.geometry`: x right, y down (the floor has the largest y), z forward. Seen from
above, +x points right and +z points up on the map, so a positive yaw (a left turn) turns the heading arrow
counter-clockwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["TopDownMap", "CEILING_MARGIN"]

CEILING_MARGIN = 0.3
"""Points more than this many metres above the camera are left off the map (ceilings would hide the floor)."""

FREE_SHADE, BLOCKED_SHADE = 215, 45
PATH_COLOUR = (255, 200, 0)
AGENT_COLOUR = (0, 120, 255)
GOAL_COLOUR = (230, 20, 20)
MEMORY_COLOUR = (255, 0, 255)


class TopDownMap:
    """A map of scene ``scene_index`` of ``pool`` (a :class:`~worldfm_env.scenes.pool.ScenePool`).

    The background (computed once) is the scene's navigation grid (free cells light, blocked cells dark) overlaid
    with the highest point of the point cloud in each cell, left out above ``camera height + CEILING_MARGIN``.
    :meth:`draw` adds the path, the agent with its heading, the goal and grown memory points.

    Args:
        pool: the env's scene pool.
        scene_index: which scene of the pool.
        max_size: longest side of the map image in pixels (each grid cell covers an integer number of pixels).
    """

    def __init__(self, pool, scene_index: int, max_size: int = 320) -> None:
        scene = pool.scenes[scene_index]
        grid = scene.navigation_grid
        free = grid.free.cpu().numpy()
        self.rows, self.cols = free.shape
        self.origin = (float(grid.origin[0]), float(grid.origin[1]))
        self.cell_size = float(grid.cell_size)
        self.scale = max(1, max_size // max(self.rows, self.cols))
        shade = np.where(free, FREE_SHADE, BLOCKED_SHADE).astype(np.float32)[..., None].repeat(3, axis=-1)

        xyz = scene.points_xyz.detach().float().cpu().numpy()
        rgb = scene.points_rgb.detach().cpu().numpy().astype(np.float32)
        camera_y = float(grid.floor_y) - float(scene.camera_height)
        keep = xyz[:, 1] >= camera_y - CEILING_MARGIN  # y points down: larger y is lower
        xyz, rgb = xyz[keep], rgb[keep]
        row, col = self._cells(xyz[:, 0], xyz[:, 2])
        inside = (row >= 0) & (row < self.rows) & (col >= 0) & (col < self.cols)
        xyz, rgb, row, col = xyz[inside], rgb[inside], row[inside], col[inside]
        image = shade.copy()
        if len(xyz):
            cell = row * self.cols + col
            order = np.lexsort((xyz[:, 1], cell))  # by cell, then highest point (smallest y) first
            cells, first = np.unique(cell[order], return_index=True)
            top = order[first]
            r, c = cells // self.cols, cells % self.cols
            weight = np.where(free[r, c], 0.6, 0.35)[:, None]
            image[r, c] = weight * rgb[top] + (1.0 - weight) * shade[r, c]
        image = image[::-1]  # +z up on the map
        self.background = image.clip(0, 255).astype(np.uint8).repeat(self.scale, 0).repeat(self.scale, 1)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the map image in pixels."""
        return self.background.shape[0], self.background.shape[1]

    def _cells(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = np.floor((x - self.origin[0]) / self.cell_size).astype(np.int64)
        row = np.floor((z - self.origin[1]) / self.cell_size).astype(np.int64)
        return row, col

    def to_pixel(self, x: float, z: float) -> tuple[float, float]:
        """Map pixel (u right, v down) of world (x, z)."""
        u = (x - self.origin[0]) / self.cell_size * self.scale
        v = (self.rows - (z - self.origin[1]) / self.cell_size) * self.scale
        return u, v

    def draw(
        self,
        path: Sequence[tuple[float, float]],
        position: tuple[float, float],
        yaw: float,
        goal: tuple[float, float] | None = None,
        goal_radius: float = 0.0,
        memory_xyz: torch.Tensor | np.ndarray | None = None,
    ) -> np.ndarray:
        """The map (H, W, 3) uint8 with grown memory points, the path, the goal and the agent.

        ``path``: the episode's (x, z) positions; ``position``: the agent's (x, z); ``yaw`` in radians (0 looks
        along +z, positive turns left); ``goal``: (x, z) or None; ``goal_radius``: the success radius in metres;
        ``memory_xyz``: (P, 3) world points of a growing memory, drawn in magenta, or None.
        """
        image = Image.fromarray(self.background.copy())
        draw = ImageDraw.Draw(image)
        if memory_xyz is not None and len(memory_xyz):
            pts = memory_xyz.detach().float().cpu().numpy() if isinstance(memory_xyz, torch.Tensor) else memory_xyz
            pts = np.asarray(pts, dtype=np.float32).reshape(-1, 3)
            u = ((pts[:, 0] - self.origin[0]) / self.cell_size * self.scale).astype(np.int64)
            v = ((self.rows - (pts[:, 2] - self.origin[1]) / self.cell_size) * self.scale).astype(np.int64)
            h, w = self.size
            inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
            u, v = u[inside], v[inside]
            pixels = np.array(image)
            dot = 2 if self.scale >= 2 else 1  # a point covers dot x dot pixels
            for dv in range(dot):
                for du in range(dot):
                    pixels[np.minimum(v + dv, h - 1), np.minimum(u + du, w - 1)] = MEMORY_COLOUR
            image = Image.fromarray(pixels)
            draw = ImageDraw.Draw(image)
        line_width = max(1, self.scale // 2)
        if len(path) >= 2:
            draw.line([self.to_pixel(x, z) for x, z in path], fill=PATH_COLOUR, width=line_width)
        if goal is not None:
            gu, gv = self.to_pixel(*goal)
            r = max(3.0, goal_radius / self.cell_size * self.scale)
            draw.ellipse([gu - r, gv - r, gu + r, gv + r], outline=GOAL_COLOUR, width=line_width)
            draw.line([gu - r, gv - r, gu + r, gv + r], fill=GOAL_COLOUR, width=line_width)
            draw.line([gu - r, gv + r, gu + r, gv - r], fill=GOAL_COLOUR, width=line_width)
        au, av = self.to_pixel(*position)
        size = max(5.0, 2.5 * self.scale)
        # Forward is (-sin yaw, cos yaw) in (x, z); on the map +z is up, so -v.
        fu, fv = -math.sin(yaw), -math.cos(yaw)
        lu, lv = -fv, fu  # perpendicular
        tip = (au + fu * size * 1.6, av + fv * size * 1.6)
        left = (au - fu * size * 0.6 + lu * size * 0.8, av - fv * size * 0.6 + lv * size * 0.8)
        right = (au - fu * size * 0.6 - lu * size * 0.8, av - fv * size * 0.6 - lv * size * 0.8)
        draw.polygon([tip, left, right], fill=AGENT_COLOUR, outline=(255, 255, 255))
        return np.asarray(image)
