"""The observation pipeline: the one place where a camera pose becomes a frame.

:class:`ObservationPipeline` owns, for N envs at H x W: the cameras (K and its inverse, computed once), the anchor
splat (warp, into preallocated buffers), the reference vote, the renderer backend and its output buffers. The
vector env, the render CLI (:mod:`worldfm_env.renderers.trajectory`), the training clip generator and the
benchmarks all render through it, with one set of anchor settings (:class:`~worldfm_env.render.anchor_config.
AnchorConfig`), so each of them feeds the frame model exactly the anchors the env does.

Backends (:data:`RENDERER_BACKENDS`): ``anchor`` (the raw splat), ``oracle`` (ray-cast ground truth of procedural
scenes) and ``worldfm`` (the frame model).

With ``memory="grow"`` the pipeline also owns each env's :class:`~worldfm_env.memory.GrowingMemory`: its points are
splatted with the scene's, its views vote beside the scene's bank, and every render writes the frame's empty pixels
back into it.

With ``depth_bound="navigation"`` it casts every pixel's ray against the scene's navigation layout
(:class:`~worldfm_env.render.layout.LayoutDepth`) and caps the frame's generated depth (the pixels the anchor left
empty) at the layout's: where the physics has a wall, the depth observation and the grown memory put the generated
surface no farther than that wall. A frame model that reads the layout itself (``DiTConfig.refiner_layout``) gets
the same layout depth in every request (``RenderRequest.layout_depth``), whatever ``depth_bound`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldfm_env.geometry import intrinsics_from_fov
from worldfm_env.memory import GrowingMemory, check_memory_mode
from worldfm_env.render.anchor_config import AnchorConfig
from worldfm_env.render.resample import resample_anchor_colours
from worldfm_env.render.silhouette import composite, packaged_resolver, silhouette_features
from worldfm_env.render.splat import AnchorRender, Occluders, PointSplatter, ReferenceSelector
from worldfm_env.renderers.anchor import AnchorRenderer
from worldfm_env.renderers.base import Renderer, RenderRequest
from worldfm_env.renderers.oracle import OracleRenderer
from worldfm_env.scenes.navigation import FreeSpace, pool_layout_depth
from worldfm_env.scenes.pool import ScenePool

__all__ = [
    "CARVE_HEIGHTS",
    "DEPTH_BOUNDS",
    "Observation",
    "ObservationPipeline",
    "RENDERER_BACKENDS",
    "check_depth_bound",
    "make_renderer",
]

RESAMPLE_VIEWS = 8
"""Captured views a resampled anchor colour (``anchor_colour="bank"``) is looked for in: the env's scene's views with
the most reference-vote hits. All views of a full capture (over 100) cost about 10x as much for 0.4 dB more on the
captured pixels (36 poses of a 64x64 test scene, footprint splats); 4 views 0.2 dB less than 8."""

CARVE_HEIGHTS = (0.25, 1.45)
"""Heights above the floor (scene units) between which ``memory_carve`` finds no surface over a free cell: the
navigation grid blocks every cell holding a point from 0.2 (a step) to 1.5 (the agent's height) above the floor;
0.05 of slack on each side."""

#: How generated depth is bounded: ``"none"`` (as the frame model gives it) or ``"navigation"`` (never beyond the
#: first obstacle of the scene's navigation layout, nor below the floor, along the pixel's ray).
DEPTH_BOUNDS = ("none", "navigation")


def check_depth_bound(depth_bound: str, renderer: str) -> None:
    """Raise ValueError naming ``depth_bound`` unless it is one of :data:`DEPTH_BOUNDS` and fits ``renderer``: only the
    ``worldfm`` backend generates depth (the anchor has none in its holes, the oracle's is the truth)."""
    if depth_bound not in DEPTH_BOUNDS:
        raise ValueError(f"depth_bound={depth_bound!r} is not valid; choose one of {list(DEPTH_BOUNDS)}")
    if depth_bound != "none" and renderer != "worldfm":
        raise ValueError(
            f"depth_bound={depth_bound!r} bounds generated depth, which only renderer='worldfm' gives; renderer is "
            f"{renderer!r} (use depth_bound='none')"
        )


def _worldfm_backend(pool: ScenePool, num_envs: int, height: int, width: int, **options) -> Renderer:
    # Imported lazily: the model package is only needed by this backend.
    from worldfm_env.renderers.worldfm import WorldFMRenderer

    return WorldFMRenderer(pool, num_envs, height, width, **options)


RENDERER_BACKENDS = {"anchor": AnchorRenderer, "oracle": OracleRenderer, "worldfm": _worldfm_backend}


def make_renderer(name: str, pool: ScenePool, num_envs: int, height: int, width: int, **options) -> Renderer:
    """Build the backend called ``name`` (one of :data:`RENDERER_BACKENDS`)."""
    if name not in RENDERER_BACKENDS:
        raise ValueError(f"renderer={name!r} is not valid; choose one of {sorted(RENDERER_BACKENDS)}")
    return RENDERER_BACKENDS[name](pool, num_envs, height, width, **options)


@dataclass
class Observation:
    """One batched render: the frames and what they were made from (views of the pipeline's buffers, valid until
    its next call).

    Attributes:
        rgb: (N, H, W, 3) uint8 frames. depth: (N, H, W) float32 depth of the frames (0 = unknown).
        anchor: the anchor render (rgb, depth, mask), when the pipeline splats (``anchor`` and ``worldfm``
            backends, or ``with_anchor=True``).
        reference_index: (N,) int64 rows of the pool's packed bank chosen as reference, when voted for (``B + row``
            for a view of the growing memory, B = the pool's bank views).
    """

    rgb: torch.Tensor
    depth: torch.Tensor | None
    anchor: AnchorRender | None
    reference_index: torch.Tensor | None


class ObservationPipeline:
    """Pose -> frame for N envs at H x W, over one scene pool.

    Args:
        pool: the scenes (points, banks, meshes, occluders) on the device.
        num_envs, height, width: batch and resolution of every call.
        renderer: backend name (:data:`RENDERER_BACKENDS`).
        anchor: the anchor settings (splat radius, level of detail, occlusion culling, reference vote); the env's
            defaults when None.
        K: intrinsics in output pixels, (3, 3) shared or (N, 3, 3) per env; constant over calls (the inverse is
            computed once). Give ``hfov_deg`` instead for the env's pinhole camera.
        hfov_deg: horizontal field of view of a centred pinhole camera, when ``K`` is None.
        with_anchor: splat and vote even when the backend needs neither (e.g. the oracle frames of training clips
            come with the anchor the model would see).
        memory: ``"static"`` (the scene's captured memory only) or ``"grow"`` (each env's frames are written back
            into its own :class:`~worldfm_env.memory.GrowingMemory`; needs a backend that generates the empty
            pixels: ``worldfm`` or ``oracle``).
        memory_capacity: points per growing memory (the oldest are overwritten when full).
        memory_carve: a growing memory does not write generated points that lie in the space the navigation grid
            lets the agent walk through (:class:`~worldfm_env.scenes.navigation.FreeSpace`, :data:`CARVE_HEIGHTS`
            above the floor): a surface there would float where the physics has none.
        depth_bound: ``"none"`` or ``"navigation"`` (:data:`DEPTH_BOUNDS`; ``worldfm`` backend only): cap the depth
            of the pixels the anchor left empty, in the observation and in what a growing memory writes, at the
            depth of the scene's navigation layout along each pixel's ray.
        **backend_options: passed to the backend (the ``worldfm`` backend's weights, sampler, dtype, noise, ...).
    """

    def __init__(
        self,
        pool: ScenePool,
        num_envs: int,
        height: int,
        width: int,
        renderer: str = "anchor",
        anchor: AnchorConfig | None = None,
        K: torch.Tensor | None = None,
        hfov_deg: float = 90.0,
        with_anchor: bool = False,
        memory: str = "static",
        memory_capacity: int = 65536,
        memory_carve: bool = False,
        depth_bound: str = "none",
        **backend_options,
    ) -> None:
        check_memory_mode(memory, renderer)
        check_depth_bound(depth_bound, renderer)
        self.pool = pool
        self.device = pool.device
        self.num_envs, self.height, self.width = num_envs, height, width
        self.anchor_config = anchor = anchor if anchor is not None else AnchorConfig()
        self.backend = make_renderer(renderer, pool, num_envs, height, width, **backend_options)
        if K is None:
            K = intrinsics_from_fov(width, height, hfov_deg, device=self.device)
        K = K.to(device=self.device, dtype=torch.float32)
        if K.shape not in ((3, 3), (num_envs, 3, 3)):
            raise ValueError(f"K must be (3, 3) or ({num_envs}, 3, 3), got {tuple(K.shape)}")
        self.K = K.expand(num_envs, 3, 3).contiguous()  # (N, 3, 3)
        self.K_inv = torch.linalg.inv(self.K).contiguous()  # constant cameras: inverted once, not every step
        self.memory = (
            GrowingMemory(num_envs, height, width, self.K, capacity=memory_capacity) if memory == "grow" else None
        )
        views = self.memory.views if self.memory is not None else None
        # Resampled anchor colours try the views the reference vote counted most hits in (backends that show an anchor).
        resample = anchor.anchor_colour == "bank" and (self.backend.needs_anchor or with_anchor)
        needs_reference = self.backend.needs_reference or with_anchor or self.memory is not None or resample
        self.splatter = None
        if self.backend.needs_anchor or needs_reference:  # (a growing memory needs both)
            occluders = (
                Occluders(pool.occluders, pool.nav_origin, pool.nav_cell_size) if anchor.occlusion_culling else None
            )
            self.splatter = PointSplatter(
                pool.points,
                num_envs,
                height,
                width,
                radius=anchor.splat_radius,
                lod_scale=anchor.anchor_lod,
                occluders=occluders,
                memory=views,
            )
        # silhouettes="learned": the one-pixel splat of the same points beside the footprint one, and the resolver
        # that picks, where they disagree, the surface the footprint hid (nothing to pick with one-pixel splats).
        self.one_pixel_splatter = self.resolver = None
        if anchor.silhouettes == "learned" and anchor.splat_radius != 0 and self.splatter is not None:
            self.one_pixel_splatter = PointSplatter(
                pool.points,
                num_envs,
                height,
                width,
                radius=0,
                lod_scale=anchor.anchor_lod,
                occluders=occluders,
                memory=views,
            )
            self.resolver = packaged_resolver(self.device)
        self.selector = (
            ReferenceSelector(
                pool, num_envs, height, width, anchor.reference_samples, anchor.reference_tolerance, memory=views
            )
            if needs_reference
            else None
        )
        self.depth_bound = depth_bound
        self.memory_carve = bool(memory_carve) and self.memory is not None
        self.free_space = (
            FreeSpace([scene.navigation_grid for scene in pool.scenes], self.device) if self.memory_carve else None
        )
        needs_layout = depth_bound == "navigation" or self.backend.needs_layout
        # One layout for the model and the depth bound: the one a layout model was trained on (footprints, or the
        # obstacle cores for the models trained before the grids recorded footprints), else the footprints.
        obstacles = self.backend.layout_obstacles if self.backend.needs_layout else "footprints"
        self.layout = pool_layout_depth(pool, num_envs, height, width, obstacles) if needs_layout else None
        self.last_request: RenderRequest | None = None

    @property
    def name(self) -> str:
        """The backend's name (``"anchor"``, ``"oracle"`` or ``"worldfm"``)."""
        return self.backend.name

    @property
    def stochastic(self) -> bool:
        """Whether frames depend on a noise seed (the frame model)."""
        return self.backend.name not in ("anchor", "oracle")

    def _resample_colours(self, anchor, scene_index: torch.Tensor, c2w: torch.Tensor) -> None:
        """``anchor_colour="bank"``: the covered pixels' colours, in place, resampled from the captured views with
        the most reference-vote hits (:data:`RESAMPLE_VIEWS` of them; grown points keep theirs)."""
        selector = self.selector
        hits = selector.hits[:, : selector.max_bank]  # bank slots only: grown views are not resampled from
        k = min(RESAMPLE_VIEWS, selector.max_bank)
        counted, slots = hits.topk(k, dim=1)
        rows = selector.scene_bank_start[scene_index.long()][:, None] + slots
        views = torch.where(counted > 0, rows, torch.full_like(rows, -1))
        resample_anchor_colours(
            anchor.rgb, anchor.depth, anchor.mask, scene_index, c2w, self.K, self.pool,
            tolerance=self.anchor_config.reference_tolerance, keep=anchor.grown, views=views,
        )  # fmt: skip

    def _resolve_silhouettes(self, anchor, scene_index: torch.Tensor, c2w: torch.Tensor) -> None:
        """``silhouettes="learned"``: the pixels the resolver picks, in place, from the one-pixel splat (its colours
        resampled like the anchor's); coverage is unchanged (a picked pixel is covered by both splats)."""
        one = self.one_pixel_splatter.render(scene_index, c2w, self.K)
        if self.anchor_config.anchor_colour == "bank":
            self._resample_colours(one, scene_index, c2w)
        features, candidates = silhouette_features(anchor.rgb, anchor.depth, anchor.mask, one.rgb, one.depth, one.mask)
        take = self.resolver.take(features, candidates)
        rgb, depth = composite(anchor.rgb, anchor.depth, one.rgb, one.depth, take)
        anchor.rgb.copy_(rgb)
        anchor.depth.copy_(depth)
        if anchor.grown is not None and one.grown is not None:
            anchor.grown.copy_(torch.where(take, one.grown, anchor.grown))

    def _carve(self, scene_index: torch.Tensor):
        """The growing memory's ``carve``: world points in the free space of each env's navigation grid."""
        low, high = CARVE_HEIGHTS
        return lambda points: self.free_space.contains(points, scene_index, low, high)

    def render(
        self,
        scene_index: torch.Tensor,
        c2w: torch.Tensor,
        noise_seed: torch.Tensor | None = None,
        write_mask: torch.Tensor | None = None,
    ) -> Observation:
        """Frames of N envs at poses ``c2w`` (N, 4, 4) in scenes ``scene_index`` (N,) of the pool.

        ``noise_seed`` (N,) int64: per-env seeds of a stochastic backend (a fixed seed and pose give the same
        frame whatever the batch). ``write_mask`` (N,) bool: with a growing memory, the envs whose frames are
        written back (None: all). Returns views of the pipeline's buffers, overwritten by the next call.
        """
        request = RenderRequest(scene_index, c2w, self.K, memory=self.memory)
        if self.splatter is not None:
            request.anchor = self.splatter.render(scene_index, c2w, self.K)
        if self.selector is not None:
            request.reference_index = self.selector.select(
                request.anchor.depth, scene_index, c2w, self.K, K_inv=self.K_inv
            )
        if self.anchor_config.anchor_colour == "bank" and request.anchor is not None and self.selector is not None:
            self._resample_colours(request.anchor, scene_index, c2w)
        if self.resolver is not None:
            self._resolve_silhouettes(request.anchor, scene_index, c2w)
        if self.stochastic:
            request.noise_seed = noise_seed
        if self.layout is not None:
            request.layout_depth = self.layout.render(scene_index, c2w, self.K_inv)
        self.last_request = request  # what the backend was given (tests and diagnostics re-render from it)
        frame = self.backend.render(request)
        bound = None
        if self.depth_bound == "navigation":
            bound = request.layout_depth
            if frame.depth is not None:  # generated depth (> 0 in the anchor's holes) no farther than the layout
                capped = (~request.anchor.mask) & (bound > 0) & (frame.depth > bound)
                frame.depth.copy_(torch.where(capped, bound, frame.depth))
        if self.memory is not None:
            self.memory.write(
                frame.rgb,
                frame.depth,
                request.anchor,
                c2w,
                self.pool.floor_y[scene_index.long()],
                write_mask=write_mask,
                encoder=getattr(self.backend, "encode_reference", None),
                depth_bound=bound,
                carve=self._carve(scene_index) if self.memory_carve else None,
            )
        depth = frame.depth if frame.depth is not None else (request.anchor.depth if request.anchor else None)
        return Observation(frame.rgb, depth, request.anchor, request.reference_index)
