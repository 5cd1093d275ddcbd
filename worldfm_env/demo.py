"""The ``worldfm-env demo`` episode and its pictures: a labelled contact sheet and a video with a top-down map.

:func:`run_demo` steps one PointNav episode with a scripted agent (the shortest path on the navigation grid) in
several renderers at once, all at the same poses: ``anchor`` (the point splat), ``worldfm`` (the frame model,
when weights ship for the resolution) and ``oracle`` (the ray-cast ground truth). :class:`TopDownMap` draws the
scene from above (navigation grid, the scene's point cloud, the agent's path, the goal), and
:func:`contact_sheet` and :func:`video_frame` lay the panels out with labels drawn by Pillow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["DemoEpisode", "TopDownMap", "contact_sheet", "video_frame", "run_demo", "write_demo", "COLUMN_LABELS"]

#: Column titles of the renderers, in the order they are shown.
COLUMN_LABELS = {"anchor": "anchor (point splat)", "worldfm": "generated (worldfm)", "oracle": "ground truth"}

_BACKGROUND = (24, 24, 28)
_TEXT = (235, 235, 235)
_PATH = (255, 170, 30)
_AGENT = (40, 140, 255)
_GOAL = (230, 40, 60)


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels (its fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def _upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-pixel upscaling of an (H, W, 3) frame by an integer ``factor``."""
    return frame.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else frame


def _placeholder(height: int, width: int, text: str) -> np.ndarray:
    """A dark (height, width, 3) panel with ``text`` centred: stands in for a column that was not rendered."""
    img = Image.new("RGB", (width, height), (60, 60, 66))
    draw = ImageDraw.Draw(img)
    font = _font(max(9, height // 14))
    lines = text.split("\n")
    line_h = font.getbbox("Ag")[3] + 2
    y = (height - line_h * len(lines)) // 2
    for line in lines:
        w = draw.textlength(line, font=font)
        draw.text(((width - w) / 2, y), line, fill=_TEXT, font=font)
        y += line_h
    return np.asarray(img)


@dataclass
class DemoEpisode:
    """What the demo recorded, one entry per observation (step 0 is the reset observation).

    Attributes:
        renderers: names of the rendered columns, e.g. ``["anchor", "worldfm", "oracle"]``.
        frames: per step, one (H, W, 3) uint8 frame per renderer.
        positions: per step, the agent's world (x, z) in metres.
        yaws: per step, the agent's heading in radians (left positive).
        distances: per step, the geodesic distance to the goal in metres.
        goal: the goal's world (x, z).
        success, spl, collisions: the episode's final metrics.
        missing: column name -> text for a renderer that could not run (shown as a placeholder panel).
    """

    renderers: list[str]
    frames: list[list[np.ndarray]] = field(default_factory=list)
    positions: list[tuple[float, float]] = field(default_factory=list)
    yaws: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    goal: tuple[float, float] = (0.0, 0.0)
    success: bool = False
    spl: float = 0.0
    collisions: int = 0
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Steps taken (observations recorded minus the reset one)."""
        return len(self.frames) - 1

    def panels(self, step: int) -> list[tuple[str, np.ndarray]]:
        """(label, frame) of every column at ``step``, placeholders included, in display order."""
        h, w = self.frames[step][0].shape[:2]
        shown = dict(zip(self.renderers, self.frames[step], strict=True))
        out = []
        for name in COLUMN_LABELS:
            if name in shown:
                out.append((COLUMN_LABELS[name], shown[name]))
            elif name in self.missing:
                out.append((COLUMN_LABELS[name], _placeholder(h * 4, w * 4, self.missing[name])))
        return out


class TopDownMap:
    """The scene seen from above: navigation grid, point cloud, and per frame the path, agent and goal.

    The base image is built once: blocked navigation cells dark, free cells light, and over them the colour
    of the highest scene point in each pixel among the points below the camera (the ceiling is left out so
    the floor plan shows), blended with the grid. Columns follow world x and rows world -z: the view from
    above (gravity is +y), so a left turn of the agent is a left turn on the map.

    Args:
        scene: a :class:`~worldfm_env.scenes.scene.Scene` (its point cloud and navigation grid are read).
        size: side of the square map image in pixels.
        margin: metres of context kept around the free cells.
    """

    def __init__(self, scene, size: int = 256, margin: float = 0.5) -> None:
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        grid = scene.navigation_grid
        free = grid.free.cpu().numpy()
        cell = float(grid.cell_size)
        rows, cols = np.nonzero(free)
        x0 = grid.origin[0] + cols.min() * cell - margin
        x1 = grid.origin[0] + (cols.max() + 1) * cell + margin
        z0 = grid.origin[1] + rows.min() * cell - margin
        z1 = grid.origin[1] + (rows.max() + 1) * cell + margin
        self.size = int(size)
        self.scale = (self.size - 1) / max(x1 - x0, z1 - z0)  # pixels per metre
        # Centre the used area in the square; row 0 is the largest z.
        self.x0 = x0 - ((self.size - 1) / self.scale - (x1 - x0)) / 2
        self.z_top = z1 + ((self.size - 1) / self.scale - (z1 - z0)) / 2
        # Navigation grid, sampled at pixel centres.
        px = np.arange(self.size) + 0.5
        wx = self.x0 + px / self.scale
        wz = self.z_top - px / self.scale
        ci = np.floor((wx - grid.origin[0]) / cell).astype(int)
        ri = np.floor((wz - grid.origin[1]) / cell).astype(int)
        inside = (ri[:, None] >= 0) & (ri[:, None] < free.shape[0]) & (ci[None] >= 0) & (ci[None] < free.shape[1])
        cell_free = np.zeros((self.size, self.size), dtype=bool)
        cell_free[inside] = free[np.clip(ri, 0, free.shape[0] - 1)[:, None], np.clip(ci, 0, free.shape[1] - 1)[None]][
            inside
        ]
        base = np.where(cell_free[..., None], np.float32(170), np.float32(45)) * np.ones(3, np.float32)
        # Point cloud from above: the highest point below the camera (+ a little) per pixel.
        xyz = scene.points_xyz.detach().cpu().numpy()
        rgb = scene.points_rgb.detach().cpu().numpy().astype(np.float32)
        height = float(grid.floor_y) - xyz[:, 1]  # gravity is +y
        keep = (height > -0.05) & (height < float(scene.camera_height) + 0.3)
        xyz, rgb, height = xyz[keep], rgb[keep], height[keep]
        c = np.floor((xyz[:, 0] - self.x0) * self.scale).astype(int)
        r = np.floor((self.z_top - xyz[:, 2]) * self.scale).astype(int)
        ok = (r >= 0) & (r < self.size) & (c >= 0) & (c < self.size)
        order = np.argsort(height[ok], kind="stable")  # later (higher) points overwrite lower ones
        colour = np.zeros((self.size, self.size, 3), np.float32)
        seen = np.zeros((self.size, self.size), dtype=bool)
        colour[r[ok][order], c[ok][order]] = rgb[ok][order]
        seen[r[ok][order], c[ok][order]] = True
        base = np.where(seen[..., None], 0.75 * colour + 0.25 * base, base)
        self.base = np.clip(base, 0, 255).astype(np.uint8)

    def to_pixel(self, x: float, z: float) -> tuple[float, float]:
        """Image (column, row) of world (x, z)."""
        return (x - self.x0) * self.scale, (self.z_top - z) * self.scale

    def draw(
        self,
        path: Sequence[tuple[float, float]],
        yaw: float,
        goal: tuple[float, float],
        success_radius: float = 0.2,
    ) -> np.ndarray:
        """(size, size, 3) uint8 map with the path so far, the agent (last path point, heading ``yaw``) and goal."""
        img = Image.fromarray(self.base)
        draw = ImageDraw.Draw(img)
        width = max(1, self.size // 128)
        gx, gy = self.to_pixel(*goal)
        radius = max(self.size / 32, success_radius * self.scale)  # the success radius, or visible at least
        goal_width = width + 1
        draw.ellipse([gx - radius, gy - radius, gx + radius, gy + radius], outline=_GOAL, width=goal_width)
        arm = radius + 2 * width
        draw.line([gx - arm, gy, gx + arm, gy], fill=_GOAL, width=goal_width)
        draw.line([gx, gy - arm, gx, gy + arm], fill=_GOAL, width=goal_width)
        points = [self.to_pixel(x, z) for x, z in path]
        if len(points) > 1:
            draw.line(points, fill=_PATH, width=width + 1, joint="curve")
        if points:
            ax, ay = points[-1]
            dot = 2 + 2 * width
            # Forward is world (-sin yaw, cos yaw) in (x, z) (pose_from_yaw_pitch); image rows follow -z.
            fx, fy = -math.sin(yaw), -math.cos(yaw)
            tip = 3 * dot
            draw.line([ax, ay, ax + fx * tip, ay + fy * tip], fill=_AGENT, width=width + 1)
            draw.ellipse([ax - dot, ay - dot, ax + dot, ay + dot], fill=_AGENT, outline=(255, 255, 255))
        return np.asarray(img)


def _label_strip(width: int, height: int, texts: Sequence[tuple[int, int, str]], font) -> np.ndarray:
    """A (height, width, 3) dark strip with ``texts`` = (x, panel width, text), each centred on its panel."""
    img = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(img)
    for x, w, text in texts:
        tw = draw.textlength(text, font=font)
        draw.text((x + max(0.0, (w - tw) / 2), (height - font.getbbox("Ag")[3]) / 2), text, fill=_TEXT, font=font)
    return np.asarray(img)


def _hstack(panels: Sequence[np.ndarray], gutter: int) -> np.ndarray:
    """Panels of one height side by side with ``gutter`` dark pixels between and around them."""
    h = panels[0].shape[0]
    width = sum(p.shape[1] for p in panels) + gutter * (len(panels) + 1)
    out = np.empty((h, width, 3), np.uint8)
    out[:] = _BACKGROUND
    x = gutter
    for p in panels:
        out[:, x : x + p.shape[1]] = p
        x += p.shape[1] + gutter
    return out


def _fit(panel: np.ndarray, size: int) -> np.ndarray:
    """``panel`` resized (nearest pixel) to ``size`` x ``size``."""
    if panel.shape[0] == size and panel.shape[1] == size:
        return panel
    return np.asarray(Image.fromarray(panel).resize((size, size), Image.NEAREST))


def _status(episode: DemoEpisode, step: int) -> str:
    """One line: the step, the goal distance and, on the last step, the outcome."""
    text = f"step {step}/{episode.steps}   goal distance {episode.distances[step]:.2f} m"
    if step == episode.steps:
        text += f"   {'success' if episode.success else 'no success'}, SPL {episode.spl:.2f}"
    return text


def video_frame(episode: DemoEpisode, step: int, topdown: TopDownMap, scale: int = 4) -> np.ndarray:
    """One video frame: a label row, the renderers' panels upscaled by ``scale`` and the map, a status line."""
    size = topdown.size
    labelled = [(label, _fit(_upscale(frame, scale), size)) for label, frame in episode.panels(step)]
    path = episode.positions[: step + 1]
    labelled.append(("top-down map", topdown.draw(path, episode.yaws[step], episode.goal)))
    gutter = max(2, size // 64)
    panels = [p for _, p in labelled]
    row = _hstack(panels, gutter)
    font = _font(max(10, size // 16))
    strip_h = font.getbbox("Ag")[3] + 2 * gutter + 4
    xs, x = [], gutter
    for label, p in labelled:
        xs.append((x, p.shape[1], label))
        x += p.shape[1] + gutter
    header = _label_strip(row.shape[1], strip_h, xs, font)
    footer = _label_strip(row.shape[1], strip_h, [(0, row.shape[1], _status(episode, step))], font)
    frame = np.concatenate([header, row, footer], axis=0)
    # Even sizes for H.264.
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def contact_sheet(episode: DemoEpisode, topdown: TopDownMap, rows: int = 6, scale: int = 2) -> np.ndarray:
    """A labelled grid: one row per chosen step (evenly spaced, first and last included), one column per renderer.

    The left column names the step and the goal distance; the last column is the top-down map up to that step.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    steps = sorted({round(i * episode.steps / max(1, rows - 1)) for i in range(rows)}) if episode.steps else [0]
    h = episode.frames[0][0].shape[0] * scale
    gutter = 4
    font = _font(max(11, h // 9))
    small = _font(max(10, h // 11))
    label_w = int(max(font.getlength("step 000"), small.getlength("00.00 m to goal")) + 2 * gutter)
    lines = []
    for step in steps:
        panels = [_fit(_upscale(frame, scale), h) for _, frame in episode.panels(step)]
        panels.append(_fit(topdown.draw(episode.positions[: step + 1], episode.yaws[step], episode.goal), h))
        text = Image.new("RGB", (label_w, h), _BACKGROUND)
        draw = ImageDraw.Draw(text)
        draw.text((gutter, h / 2 - font.getbbox("Ag")[3] - 2), f"step {step}", fill=_TEXT, font=font)
        draw.text((gutter, h / 2 + 2), f"{episode.distances[step]:.2f} m to goal", fill=_TEXT, font=small)
        lines.append(_hstack([np.asarray(text), *panels], gutter))
    titles = [label for label, _ in episode.panels(0)] + ["top-down map"]
    xs, x = [], gutter + label_w + gutter
    for title in titles:
        xs.append((x, h, title))
        x += h + gutter
    header_font = _font(max(10, h // 11))
    header = _label_strip(lines[0].shape[1], header_font.getbbox("Ag")[3] + 2 * gutter + 2, xs, header_font)
    gap = np.empty((gutter, lines[0].shape[1], 3), np.uint8)
    gap[:] = _BACKGROUND
    parts = [header]
    for line in lines:
        parts += [line, gap]
    return np.concatenate(parts, axis=0)


def run_demo(
    scenes: str = "procedural:test:1",
    resolution: int = 64,
    max_steps: int = 200,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[..., object] | None = None,
) -> tuple[DemoEpisode, object]:
    """Step one scripted PointNav episode in every available renderer; returns (episode, the scene).

    Args:
        scenes: scene spec (the env's ``scenes``).
        resolution: frame size in pixels; the ``worldfm`` column needs frame-model weights shipped for it.
        max_steps: the episode is cut after this many steps (the scripted agent usually stops well before).
        seed: reset seed (picks the start and the goal).
        device: torch device of the envs.
        progress: optional ``tqdm``-like factory ``progress(total=..., desc=...)``; its bar's total is set to the
            steps actually taken when the episode ends.
    """
    from worldfm_env.envs.vector import WorldFMVectorEnv
    from worldfm_env.model.weights import default_weights_path
    from worldfm_env.policies import ShortestPathPolicy

    common = dict(
        task="pointnav",
        scenes=scenes,
        resolution=resolution,
        device=device,
        array_type="torch",
        max_episode_steps=max_steps,
    )
    renderers = ["anchor", "oracle"]
    missing = {}
    if default_weights_path(resolution, resolution, 2) is not None:
        renderers.insert(1, "worldfm")
    else:
        missing["worldfm"] = f"no frame model\nshipped for\n{resolution}x{resolution}"
    envs = [WorldFMVectorEnv(num_envs=1, renderer=name, **common) for name in renderers]
    try:
        lead = envs[0]
        policy = ShortestPathPolicy(lead)
        observations = [env.reset(seed=seed)[0] for env in envs]
        scene = lead.pool.scenes[int(lead.state.scene_index[0])]
        goal = lead.task.goal[0].cpu()
        episode = DemoEpisode(renderers=renderers, goal=(float(goal[0]), float(goal[2])), missing=missing)

        def record() -> None:
            episode.frames.append([obs["rgb"][0].cpu().numpy() for obs in observations])
            pos = lead.state.position[0].cpu()
            episode.positions.append((float(pos[0]), float(pos[2])))
            episode.yaws.append(float(lead.state.yaw[0]))
            episode.distances.append(float(lead.task.distance[0]))

        record()
        bar = progress(total=max_steps, desc="demo episode") if progress is not None else None
        info: dict = {}
        for _ in range(max_steps):
            action = policy()
            results = [env.step(action) for env in envs]
            observations = [r[0] for r in results]
            _, _, term, trunc, info = results[0]
            done = bool(term[0]) or bool(trunc[0])
            record()  # the env resets at the next step (next-step autoreset): this is the final state
            if bar is not None:
                bar.update(1)
            if done:
                break
        if bar is not None:
            bar.total = episode.steps  # the episode ended here: the bar ends with it
            bar.refresh()
            bar.close()
        episode.success = bool(info["success"][0]) if info else False
        episode.spl = float(info["spl"][0]) if info else 0.0
        episode.collisions = int(info["collisions"][0]) if info else 0
        return episode, scene
    finally:
        for env in envs:
            env.close()


def write_demo(
    out: Path,
    episode: DemoEpisode,
    scene,
    scale: int = 4,
    fps: int = 4,
    rows: int = 6,
    progress: Callable[..., object] | None = None,
) -> tuple[Path, Path]:
    """Write ``demo.mp4`` and ``demo_contact_sheet.png`` of ``episode`` under ``out``; returns their paths.

    The video shows every step at ``fps`` frames per second, each renderer's panel upscaled ``scale`` times,
    with the top-down map beside them, and holds the last frame for two seconds.
    """
    import imageio.v2 as imageio

    if scale < 1 or fps < 1:
        raise ValueError(f"scale and fps must be at least 1, got scale={scale}, fps={fps}")
    out.mkdir(parents=True, exist_ok=True)
    size = episode.frames[0][0].shape[0] * scale
    topdown = TopDownMap(scene, size=size)
    video = out / "demo.mp4"
    png = out / "demo_contact_sheet.png"
    writer = imageio.get_writer(str(video), fps=fps, codec="libx264", quality=8, macro_block_size=1)
    try:
        steps = range(episode.steps + 1)
        for step in progress(steps, total=len(steps), desc="demo video") if progress is not None else steps:
            frame = video_frame(episode, step, topdown, scale)
            writer.append_data(frame)
            if step == episode.steps:
                for _ in range(2 * fps - 1):
                    writer.append_data(frame)
    finally:
        writer.close()
    sheet_map = TopDownMap(scene, size=episode.frames[0][0].shape[0] * 2)
    imageio.imwrite(png, contact_sheet(episode, sheet_map, rows=rows, scale=2))
    return video, png
