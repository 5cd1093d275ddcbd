"""Multi-view training clips for the frame model, generated on the device from procedural scenes.

A clip is ``views`` camera poses along a plausible agent trajectory in one scene (a walk down the
geodesic field towards a random goal, with heading and pitch jitter). ``references`` of the views
are ray cast with the ground-truth renderer and unprojected into the clip's own point cloud and
reference bank, exactly as a scene's anchor and memory are built; every other view is a *target*:
its anchor render (rgb, depth, coverage) is splatted from the clip's cloud with the env's splat settings
(level of detail and occlusion culling, so the model trains on the anchor it will see), its reference is the
one the env's depth-consistency vote picks among the clip's references, and its ground truth
(rgb, depth) is ray cast. All clips of a batch render in one splat launch, one vote and one ray
cast (plus one 1-pixel ray cast of the close-range targets, below). Everything is deterministic given the seed
(counter-based draws per clip).

By default the references are spread along the walk (the first view and others up to the last), so a
target's anchor usually already shows most of what the target sees. Two opt-in kinds of clip ask the
model to generate instead (both off by default, which leaves every clip exactly as before):

* *Sparse captures* (``ClipConfig.sparse_fraction``): the share of clips whose references all sit at
  the walk's first position, like the env's ``capture="panorama"``: ``references`` headings evenly
  spread over 360 degrees from a drawn offset, at pitch 0 and the camera height. The targets are the
  walk's poses 1..T (T = views - references), walking out of the captured spot, so they see much
  that the anchor does not.
* *Close-range targets* (``ClipConfig.close_fraction``): the share of targets (of every clip) moved
  up to a surface: each chosen target's camera moves along its horizontal forward direction until the
  surface its level centre ray hits is a drawn distance (``ClipConfig.close_range``, 0.2-0.6 m by
  default) ahead, keeping its pitch. ``ClipBatch.target_close`` marks the chosen targets.

Which clips are sparse and which targets are close are counter-based draws of the clip (their own
streams, so the other draws of a clip are unchanged by them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
from worldfm_env.model.dit import PanelCameras
from worldfm_env.render.anchor_config import AnchorConfig
from worldfm_env.render.layout import LayoutDepth
from worldfm_env.render.raycast import MeshRaycaster
from worldfm_env.render.splat import AnchorRender
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.rng import hash_uniform
from worldfm_env.scenes.navigation import LAYOUT_OBSTACLES_VALUES, geodesic_distance, grid_layout_depth
from worldfm_env.scenes.pointcloud import points_from_views
from worldfm_env.scenes.pool import ScenePool
from worldfm_env.scenes.scene import ReferenceBank, Scene

__all__ = ["ClipConfig", "ClipBatch", "ClipGenerator", "target_anchors"]

#: Draw streams of :func:`~worldfm_env.rng.hash_uniform` per clip (0: the trajectory, 7: the scene).
_SPARSE_STREAM = 11
_CLOSE_STREAM = 12


def target_anchors(
    pool: ScenePool,
    scene_index: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    height: int,
    width: int,
    anchor: AnchorConfig,
) -> tuple[AnchorRender, torch.Tensor]:
    """The anchor render and the voted reference (global bank row) of N target poses: the env's observation pipeline
    (its splat and vote with the same anchor settings), so training clips show the model what the env will."""
    pipeline = ObservationPipeline(
        pool, c2w.shape[0], height, width, renderer="anchor", anchor=anchor, K=K, with_anchor=True
    )
    frame = pipeline.render(scene_index, c2w)
    return frame.anchor, frame.reference_index


def _resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images (N, h, w, 3) at ``size`` (H, W): bilinear and antialiased, as the frame model resizes a bank,
    rounded back to uint8; unchanged when they already have that size."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    x = F.interpolate(
        images.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _is_image_size(value) -> bool:
    """Whether ``value`` is an image size ``(height, width)``: a pair of ints >= 8."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and v >= 8 for v in value)


def _is_real(value) -> bool:
    """Whether ``value`` is a real number (int, float or a numpy scalar of one; not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class ClipConfig:
    """How clips are made."""

    views: int = 16
    """Poses per clip (the paper: 16)."""
    references: int = 4
    """Views per clip that build the point cloud and reference bank (the paper: 4); the rest are targets."""
    resolution: tuple[int, int] = (64, 64)
    """(height, width) of every image."""
    hfov_deg: float = 90.0
    """Horizontal field of view."""
    step: float = 0.3
    """Distance between consecutive poses along the trajectory (metres)."""
    yaw_jitter_deg: float = 35.0
    """Heading noise around the direction of travel."""
    pitch_jitter_deg: float = 12.0
    """Pitch noise around level."""
    anchor_lod: float = AnchorConfig.anchor_lod
    """Level of detail of the anchor splat (the env's ``anchor_lod``; 0 draws every point, as published)."""
    occlusion_culling: bool = AnchorConfig.occlusion_culling
    """2.5-D occlusion culling of the anchor splat (the env's ``occlusion_culling``)."""
    splat_radius: int | str = AnchorConfig.splat_radius
    """Anchor splat half-size (the env's ``splat_radius``): 0 = one pixel per point, as published, or ``"auto"``."""
    anchor_colour: str = AnchorConfig.anchor_colour
    """Colour of covered anchor pixels (the env's ``anchor_colour``): ``"splat"`` or ``"bank"`` (resampled from the
    clip's reference views)."""
    silhouettes: str = AnchorConfig.silhouettes
    """The env's ``silhouettes``: ``"splat"`` or ``"learned"`` (the shipped resolver's choice between footprint and
    one-pixel splats; needs footprint splats to change anything)."""
    sparse_fraction: float = 0.0
    """Share of clips (in [0, 1]) that are sparse captures: all references at the walk's first position, spread over
    360 degrees, and the targets walk away from it (0 = none, the published clips)."""
    close_fraction: float = 0.0
    """Share of targets (in [0, 1], 0 = none) moved to close range: ``close_range`` metres before the surface ahead."""
    close_range: tuple[float, float] = (0.2, 0.6)
    """(lo, hi) metres, 0 < lo <= hi: a close-range target's distance to the surface ahead is drawn uniformly in it."""
    capture_resolution: tuple[int, int] | None = None
    """(height, width) of the reference views, which build each clip's point cloud (one point per pixel, so this sets
    its density) and bank: the env's ``scene_options={"resolution": ...}``. None: ``resolution``. The references the
    model reads are resized to ``resolution`` as the env's frame model resizes its bank (bilinear, antialiased)."""
    layout_depth: bool = False
    """Also give each target the depth of its scene's navigation layout along every pixel's ray
    (``ClipBatch.target_layout``), for frame models that read it (``DiTConfig.refiner_layout``)."""
    layout_obstacles: str = "footprints"
    """What that layout is cast against (:data:`~worldfm_env.scenes.navigation.LAYOUT_OBSTACLES_VALUES`): the
    obstacles' own ``"footprints"`` or the grid's obstacle ``"cores"``; train on the layout the env will give."""

    def __post_init__(self) -> None:
        if not (isinstance(self.views, int) and isinstance(self.references, int) and 1 <= self.references < self.views):
            raise ValueError(f"need ints 1 <= references < views, got references={self.references}, views={self.views}")
        if self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step}")
        if not _is_image_size(self.resolution):
            raise ValueError(f"resolution must be (height, width) ints >= 8, got {self.resolution!r}")
        cap = self.capture_resolution
        if cap is not None:
            if not _is_image_size(cap):
                raise ValueError(f"capture_resolution must be None or (height, width) ints >= 8, got {cap!r}")
            object.__setattr__(self, "capture_resolution", (int(cap[0]), int(cap[1])))
        if not 0.0 < self.hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180), got {self.hfov_deg!r}")
        # The anchor fields are validated (and a numpy splat_radius made an int) by the render side's config.
        object.__setattr__(self, "splat_radius", self.anchor.splat_radius)
        if self.yaw_jitter_deg < 0 or self.pitch_jitter_deg < 0:
            raise ValueError(
                f"yaw_jitter_deg and pitch_jitter_deg must be >= 0, got {self.yaw_jitter_deg}, {self.pitch_jitter_deg}"
            )
        for name in ("sparse_fraction", "close_fraction"):
            value = getattr(self, name)
            if not (_is_real(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a float in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        lohi = self.close_range
        if not (
            isinstance(lohi, (tuple, list))
            and len(lohi) == 2
            and all(_is_real(v) for v in lohi)
            and 0.0 < lohi[0] <= lohi[1] < math.inf
        ):
            raise ValueError(f"close_range must be two floats (lo, hi) with 0 < lo <= hi (metres), got {lohi!r}")
        object.__setattr__(self, "close_range", (float(lohi[0]), float(lohi[1])))
        if not isinstance(self.layout_depth, bool):
            raise ValueError(f"layout_depth must be True or False, got {self.layout_depth!r}")
        if self.layout_obstacles not in LAYOUT_OBSTACLES_VALUES:
            valid = list(LAYOUT_OBSTACLES_VALUES)
            raise ValueError(f"layout_obstacles={self.layout_obstacles!r} is not valid; choose one of {valid}")

    @property
    def anchor(self) -> AnchorConfig:
        """The anchor settings of the clips' targets (the env's reference vote, this config's splat)."""
        return AnchorConfig(
            splat_radius=self.splat_radius,
            anchor_lod=self.anchor_lod,
            occlusion_culling=self.occlusion_culling,
            anchor_colour=self.anchor_colour,
            silhouettes=self.silhouettes,
        )

    @property
    def targets(self) -> int:
        """Target views per clip."""
        return self.views - self.references


@dataclass
class ClipBatch:
    """A batch of B clips with T = views - references targets each (tensors on the generator's device).

    Attributes:
        anchor_rgb (B, T, H, W, 3) uint8, anchor_depth (B, T, H, W) float32, anchor_mask (B, T, H, W) bool.
        reference_rgb (B, T, H, W, 3) uint8: the reference view the vote picked for each target.
        reference_slot (B, T) int64: which of the clip's references (0..references-1) it is.
        target_rgb (B, T, H, W, 3) uint8, target_depth (B, T, H, W) float32: ground truth.
        target_c2w (B, T, 4, 4), reference_c2w (B, R, 4, 4), K (3, 3).
        scene_seed (B,) int64: the procedural seed of each clip's scene.
        target_close (B, T) bool: the targets drawn for close range (``ClipConfig.close_fraction``; all False when
            it is 0). Each was moved forward (keeping its heading and pitch) to its drawn distance from the surface
            its level centre ray hits; one that was already nearer than that distance, or whose level centre ray hit
            nothing, stayed where it was and is marked all the same.
        target_layout (B, T, H, W) float32: with ``ClipConfig.layout_depth``, the depth of the scene's navigation
            layout along each target pixel's ray (0 where nothing bounds it); else None.

    A sparse-capture clip (``ClipConfig.sparse_fraction``) has the same shapes: its ``reference_c2w`` are the R
    panorama poses at the walk's first position and its targets are the walk's poses 1..T.
    """

    anchor_rgb: torch.Tensor
    anchor_depth: torch.Tensor
    anchor_mask: torch.Tensor
    reference_rgb: torch.Tensor
    reference_slot: torch.Tensor
    target_rgb: torch.Tensor
    target_depth: torch.Tensor
    target_c2w: torch.Tensor
    reference_c2w: torch.Tensor
    K: torch.Tensor
    scene_seed: torch.Tensor
    target_close: torch.Tensor
    target_layout: torch.Tensor | None = None

    def panel_cameras(self) -> PanelCameras:
        """Cameras of the B*T targets (flattened clip-major, as the training batches are) for camera-conditioned
        models: panel 0 the target, panel 1 the anchor (rendered at the target pose), panel 2 the selected reference."""
        B, T = self.reference_slot.shape
        H, W = self.target_rgb.shape[2:4]
        slot = self.reference_slot[..., None, None].expand(B, T, 4, 4)
        reference = torch.gather(self.reference_c2w, 1, slot)  # (B, T, 4, 4)
        c2w = torch.stack([self.target_c2w, self.target_c2w, reference], dim=2).reshape(B * T, 3, 4, 4).float()
        K = self.K.float().expand(B * T, 3, 3, 3).contiguous()
        return PanelCameras(c2w, K, (H, W))


class ClipGenerator:
    """Makes :class:`ClipBatch` es from a set of procedural scenes (train seeds only, by convention).

    Args:
        scenes: the scenes clips are drawn from (each needs a mesh and a navigation grid).
        config: clip parameters.
        device: where everything is rendered.
        goals_per_scene: trajectory goals per scene whose geodesic fields are solved up front.
    """

    def __init__(
        self,
        scenes: list[Scene],
        config: ClipConfig | None = None,
        device: str | torch.device = "cpu",
        goals_per_scene: int = 64,
    ) -> None:
        if not scenes:
            raise ValueError("scenes must hold at least one procedural scene")
        missing = [s.name for s in scenes if s.mesh is None]
        if missing:
            raise ValueError(f"clips need ground truth: scenes {missing} have no mesh (use procedural scenes)")
        self.config = config or ClipConfig()
        self.device = torch.device(device)
        self.scenes = [s.to(self.device) for s in scenes]
        self.raycaster = MeshRaycaster([s.mesh for s in self.scenes], self.device)
        H, W = self.config.resolution
        self.K = intrinsics_from_fov(W, H, self.config.hfov_deg, device=self.device)
        self.K_inv = torch.linalg.inv(self.K)  # the targets' cameras are constant
        self.capture_hw = self.config.capture_resolution or (H, W)
        Hc, Wc = self.capture_hw
        self.capture_K = intrinsics_from_fov(Wc, Hc, self.config.hfov_deg, device=self.device)
        self._layouts: dict[int, LayoutDepth] = {}  # ClipConfig.layout_depth: one per target count, built once
        # One free-cell list per scene for start draws, and a fixed set of goals per scene with their
        # geodesic fields solved once (a clip walks towards one of them).
        self.free_cells = [torch.nonzero(s.navigation_grid.free.flatten()).flatten() for s in self.scenes]
        self.goal_fields = []
        for scene, cells in zip(self.scenes, self.free_cells, strict=True):
            grid = scene.navigation_grid
            pick = cells[torch.randperm(len(cells), generator=torch.Generator().manual_seed(17))[:goals_per_scene]]
            rc = torch.stack([pick // grid.shape[1], pick % grid.shape[1]], dim=-1)
            self.goal_fields.append(geodesic_distance(grid.free, rc, grid.cell_size).cpu().numpy())  # (G, Gz, Gx)

    def _trajectory(self, scene_id: int, seed: int, index: int) -> torch.Tensor:
        """Poses (views, 4, 4) of one clip: a walk along the geodesic towards a random goal."""
        cfg = self.config
        scene = self.scenes[scene_id]
        grid = scene.navigation_grid
        Gz, Gx = grid.shape
        cells = self.free_cells[scene_id]
        u = hash_uniform(
            torch.tensor([seed], device=self.device), torch.tensor([index], device=self.device), 8 + 3 * cfg.views
        )[0]
        fields = self.goal_fields[scene_id]  # (G, Gz, Gx) numpy
        field = fields[min(int(float(u[0]) * len(fields)), len(fields) - 1)]
        cells_np = cells.cpu().numpy()
        flat = field.reshape(-1)[cells_np]
        reach = np.isfinite(flat)
        far = cells_np[reach & (flat > cfg.step * cfg.views * 0.5)]
        pool = far if len(far) else cells_np[reach]
        start = int(pool[min(int(float(u[1]) * len(pool)), len(pool) - 1)])
        # Walk downhill on the field, cell by cell (numpy scalars: cheap), until the goal.
        r, c = start // Gx, start % Gx
        path = [(r, c)]
        limit = 10 * cfg.views * max(1, int(cfg.step / grid.cell_size) + 1)
        while field[r, c] > 0 and len(path) < limit:
            window = field[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
            k = int(np.argmin(window))
            nr, nc = max(r - 1, 0) + k // window.shape[1], max(c - 1, 0) + k % window.shape[1]
            if not window.flat[k] < field[r, c]:
                break
            r, c = nr, nc
            path.append((r, c))
        xz = torch.tensor(
            [
                [grid.origin[0] + (cc + 0.5) * grid.cell_size, grid.origin[1] + (rr + 0.5) * grid.cell_size]
                for rr, cc in path
            ],
            device=self.device,
        )
        seg = (xz[1:] - xz[:-1]).norm(dim=1)
        arclen = torch.cat([torch.zeros(1, device=self.device), seg.cumsum(0)])
        wanted = torch.arange(cfg.views, device=self.device, dtype=torch.float32) * cfg.step
        # Short paths (goal close by) stop at the goal and turn in place there.
        idx = torch.searchsorted(arclen, wanted.clamp(max=float(arclen[-1]))).clamp(max=len(path) - 1)
        points = xz[idx]
        ahead = xz[(idx + 2).clamp(max=len(path) - 1)] - xz[(idx - 2).clamp(min=0)]
        heading = torch.atan2(-ahead[:, 0], ahead[:, 1])  # yaw whose forward (-sin, cos) follows the path
        noise = u[8:].reshape(3, cfg.views) * 2 - 1
        yaw = heading + noise[0] * math.radians(cfg.yaw_jitter_deg) + noise[2] * math.pi * (len(path) < 3)
        pitch = noise[1] * math.radians(cfg.pitch_jitter_deg)
        y = torch.full((cfg.views,), grid.floor_y - scene.camera_height, device=self.device)
        position = torch.stack([points[:, 0], y, points[:, 1]], dim=-1)
        return pose_from_yaw_pitch(position, yaw.float(), pitch.float())

    def _panorama_poses(self, position: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """(N, R, 4, 4) poses of N sparse captures: R level views at ``position`` (N, 3), headings 360 / R degrees
        apart starting at ``offset`` (N,) in [0, 1) of a full turn."""
        R = self.config.references
        turn = torch.arange(R, device=self.device, dtype=torch.float32) / R
        yaw = ((offset[:, None].float() + turn[None, :]) % 1.0) * (2 * math.pi) - math.pi  # (N, R) in [-pi, pi)
        return pose_from_yaw_pitch(position[:, None, :].expand(-1, R, 3), yaw, torch.zeros_like(yaw))

    def _close_range_poses(
        self, scene_index: torch.Tensor, c2w: torch.Tensor, chosen: torch.Tensor, distance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target poses with the ``chosen`` ones moved to close range.

        Each chosen target is ray cast once (all in one call), level (pitch 0, same position and heading), for the
        true depth d of the surface on its optical axis, then moved along its horizontal forward direction by
        ``d - distance`` (its rotation, pitch included, is kept). Where that ray hits nothing (or d is not finite)
        or d <= ``distance``, the target stays.

        d is the depth of the one ray through the image centre (a 1x1 render with the clip's focal length), the ray
        the central 2x2 pixels surround, not their mean: where a silhouette edge runs between those pixels (about
        15% of the targets of the procedural scenes at 64x64) their mean is no surface's depth, and moving by it
        would pass through the nearer object or stop far from both. On one surface the two agree within the
        half-pixel offset, and after the move the central 2x2 pixels of the target see the surface at ``distance``.
        The move is not checked against the navigation grid: the camera may end nearer a wall than the agent's
        radius lets the agent stand.

        Args:
            scene_index: (B,) int32 scene of each clip.
            c2w: (B, T, 4, 4) target poses.
            chosen: (B, T) bool, the targets to move.
            distance: (B, T) metres from the surface ahead each chosen target should end at.

        Returns:
            (c2w (B, T, 4, 4), moved (B, T) bool: the targets that did move).
        """
        B, T = chosen.shape
        idx = torch.nonzero(chosen.flatten()).flatten()
        flat = c2w.reshape(B * T, 4, 4).clone()
        forward = flat[idx, :3, 2]  # (-sin yaw cos pitch, -sin pitch, cos yaw cos pitch)
        yaw = torch.atan2(-forward[:, 0], forward[:, 2])
        level = pose_from_yaw_pitch(flat[idx, :3, 3], yaw, torch.zeros_like(yaw))
        axis_K = self.K.clone()
        axis_K[:2, 2] = 0.5  # the one pixel's centre (0.5, 0.5) is the principal point: its ray is the optical axis
        _, depth = self.raycaster.render(scene_index.repeat_interleave(T)[idx], level, axis_K, 1, 1)
        d = depth[:, 0, 0]
        r = distance.flatten()[idx]
        go = (d > 0) & torch.isfinite(d) & (d > r)
        step = torch.where(go, d - r, torch.zeros_like(d))
        flat[idx, :3, 3] = flat[idx, :3, 3] + step[:, None] * level[:, :3, 2]
        moved = torch.zeros(B * T, dtype=torch.bool, device=self.device)
        moved[idx] = go
        return flat.reshape(B, T, 4, 4), moved.reshape(B, T)

    def _layout(self, num_targets: int) -> LayoutDepth:
        """The navigation layouts of the generator's scenes for ``num_targets`` cameras (built on first use)."""
        if num_targets not in self._layouts:
            grids = [scene.navigation_grid for scene in self.scenes]
            H, W = self.config.resolution
            obstacles = self.config.layout_obstacles
            self._layouts[num_targets] = grid_layout_depth(grids, self.device, num_targets, H, W, obstacles)
        return self._layouts[num_targets]

    @torch.no_grad()
    def batch(self, batch_size: int, seed: int, start_index: int = 0) -> ClipBatch:
        """Clips ``start_index .. start_index + batch_size - 1`` of the stream seeded by ``seed``."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        cfg = self.config
        H, W = cfg.resolution
        B, R, T = batch_size, cfg.references, cfg.targets
        clip_ids = range(start_index, start_index + B)
        scene_ids = [
            int(hash_uniform(torch.tensor([seed]), torch.tensor([i]), 1, stream=7)[0, 0] * len(self.scenes))
            for i in clip_ids
        ]
        poses = torch.stack(
            [self._trajectory(s, seed, i) for s, i in zip(scene_ids, clip_ids, strict=True)]
        )  # (B, V, 4, 4)
        # References: the first view and R-1 more spread over the clip; targets: the rest.
        ref_slots = torch.linspace(0, cfg.views - 1, R).round().long().tolist()
        tgt_slots = [v for v in range(cfg.views) if v not in ref_slots]
        si = torch.tensor(scene_ids, dtype=torch.int32, device=self.device)
        ref_c2w = poses[:, ref_slots]  # (B, R, 4, 4)
        tgt_c2w = poses[:, tgt_slots]  # (B, T, 4, 4)
        # Sparse captures: a panorama of R views at the walk's first position; the targets walk away from it.
        seeds, counters = torch.full((B,), seed, dtype=torch.long), torch.tensor(list(clip_ids), dtype=torch.long)
        u = hash_uniform(seeds, counters, 2, stream=_SPARSE_STREAM).to(self.device)  # (B, 2)
        sparse = u[:, 0] < cfg.sparse_fraction
        if bool(sparse.any()):
            ref_c2w[sparse] = self._panorama_poses(poses[sparse, 0, :3, 3], u[sparse, 1])
            tgt_c2w[sparse] = poses[sparse, 1 : T + 1]
        # Close range: the chosen targets move up to a drawn distance from the surface ahead.
        u = hash_uniform(seeds, counters, 2 * T, stream=_CLOSE_STREAM).to(self.device)  # (B, 2T)
        target_close = u[:, :T] < cfg.close_fraction
        if bool(target_close.any()):
            lo, hi = cfg.close_range
            tgt_c2w, _ = self._close_range_poses(si, tgt_c2w, target_close, lo + (hi - lo) * u[:, T:])
        Hc, Wc = self.capture_hw
        refs = si.repeat_interleave(R), ref_c2w.reshape(-1, 4, 4)
        ref_rgb, ref_depth = self.raycaster.render(*refs, self.capture_K, Hc, Wc)
        tgt_rgb, tgt_depth = self.raycaster.render(si.repeat_interleave(T), tgt_c2w.reshape(-1, 4, 4), self.K, H, W)
        ref_rgb, ref_depth = ref_rgb.reshape(B, R, Hc, Wc, 3), ref_depth.reshape(B, R, Hc, Wc)
        # One "scene" per clip: its references are the bank and their points the anchor.
        Ks = self.capture_K.expand(R, 3, 3).contiguous()
        clip_scenes = []
        for b in range(B):
            xyz, rgb, normals, spacing = points_from_views(
                ref_rgb[b], ref_depth[b], Ks, ref_c2w[b], with_normals=True, with_spacing=True
            )
            if xyz.shape[0] == 0:  # all references stare into the void: give the clip one dummy point
                xyz, rgb = (
                    torch.zeros(1, 3, device=self.device),
                    torch.zeros(1, 3, dtype=torch.uint8, device=self.device),
                )
                normals, spacing = torch.zeros(1, 3, device=self.device), torch.ones(1, device=self.device)
            base = self.scenes[scene_ids[b]]
            clip_scenes.append(
                replace(
                    base,
                    name=f"clip-{seed}-{clip_ids[b]}",
                    points_xyz=xyz,
                    points_rgb=rgb,
                    points_normal=normals,
                    points_spacing=spacing,
                    bank=ReferenceBank(ref_rgb[b], ref_depth[b], Ks, ref_c2w[b].contiguous()),
                    mesh=None,
                )
            )
        pool = ScenePool(clip_scenes, self.device)
        N = B * T
        clip_index = torch.arange(B, dtype=torch.int32, device=self.device).repeat_interleave(T)
        anchor, ref_global = target_anchors(pool, clip_index, tgt_c2w.reshape(N, 4, 4), self.K, H, W, cfg.anchor)
        slot = ref_global - pool.scene_bank_start.long()[clip_index.long()]
        layout = None
        if cfg.layout_depth:  # each target in its clip's base scene, whose navigation grid the clip keeps
            layout = self._layout(N).render(si.repeat_interleave(T), tgt_c2w.reshape(N, 4, 4), self.K_inv)
            layout = layout.reshape(B, T, H, W).clone()
        return ClipBatch(
            anchor_rgb=anchor.rgb.reshape(B, T, H, W, 3).clone(),
            anchor_depth=anchor.depth.reshape(B, T, H, W).clone(),
            anchor_mask=anchor.mask.reshape(B, T, H, W).clone(),
            reference_rgb=_resize_images(pool.bank_images[ref_global], (H, W)).reshape(B, T, H, W, 3),
            reference_slot=slot.reshape(B, T),
            target_rgb=tgt_rgb.reshape(B, T, H, W, 3),
            target_depth=tgt_depth.reshape(B, T, H, W),
            target_c2w=tgt_c2w,
            reference_c2w=ref_c2w,
            K=self.K,
            scene_seed=torch.tensor([int(self.scenes[s].info.get("seed", -1)) for s in scene_ids], device=self.device),
            target_close=target_close,
            target_layout=layout,
        )
