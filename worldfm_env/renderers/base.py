"""Renderer backends behind one interface: ``render(request) -> frames``.

The environment computes what a backend declares it needs (the anchor splat, the reference
choice) once per step for all envs, then calls the backend once. Backends:

* ``anchor``: the raw point splat (black where no point landed).
* ``oracle``: ground truth, ray casting the procedural scene's mesh.
* ``worldfm``: the frame model (:mod:`worldfm_env.model.renderer`), conditioned on the anchor
  render and the selected reference view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldfm_env.render.splat import AnchorRender
from worldfm_env.scenes.pool import ScenePool

__all__ = [
    "RenderRequest",
    "RenderOutput",
    "Renderer",
    "AnchorRenderer",
    "OracleRenderer",
    "make_renderer",
    "RENDERER_BACKENDS",
]


@dataclass
class RenderRequest:
    """Everything a backend may condition on, batched over N envs (all on the env's device).

    Attributes:
        scene_index: (N,) int32 scene of each env in ``pool``.
        c2w: (N, 4, 4) camera poses. K: (N, 3, 3) intrinsics in output pixels.
        anchor: the anchor render, when the backend asked for it.
        reference_index: (N,) int64 rows of ``pool.bank_*`` chosen as reference, when asked for.
        noise_seed: (N,) int64 per-env seeds for stochastic backends (fixed seed + pose -> same frame).
    """

    scene_index: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    anchor: AnchorRender | None = None
    reference_index: torch.Tensor | None = None
    noise_seed: torch.Tensor | None = None


@dataclass
class RenderOutput:
    """Frames of N envs: ``rgb`` (N, H, W, 3) uint8 and ``depth`` (N, H, W) float32 (0 = unknown) or None."""

    rgb: torch.Tensor
    depth: torch.Tensor | None


class Renderer:
    """Base class of renderer backends.

    Subclasses set ``name``, ``needs_anchor`` and ``needs_reference`` and implement :meth:`render`.
    The returned tensors may be the backend's own buffers, valid until the next call.
    """

    name = "base"
    needs_anchor = False
    needs_reference = False

    def __init__(self, pool: ScenePool, num_envs: int, height: int, width: int, **options) -> None:
        self.pool = pool
        self.num_envs, self.height, self.width = num_envs, height, width
        self.device = pool.device

    def render(self, request: RenderRequest) -> RenderOutput:  # pragma: no cover - interface
        """Frames for every env of ``request``."""
        raise NotImplementedError


class AnchorRenderer(Renderer):
    """The explicit 3-D anchor itself: the scene's point cloud splatted at each pose."""

    name = "anchor"
    needs_anchor = True

    def render(self, request: RenderRequest) -> RenderOutput:
        """The anchor's rgb and depth."""
        assert request.anchor is not None
        return RenderOutput(request.anchor.rgb, request.anchor.depth)


class OracleRenderer(Renderer):
    """Ground truth by ray casting each scene's triangle mesh (procedural scenes only)."""

    name = "oracle"

    def __init__(self, pool: ScenePool, num_envs: int, height: int, width: int, **options) -> None:
        super().__init__(pool, num_envs, height, width)
        missing = [s.name for s in pool.scenes if s.mesh is None]
        if missing:
            raise ValueError(
                f"renderer='oracle' needs scenes with a ground-truth mesh (procedural scenes); {missing} have none. "
                "Use renderer='anchor' or 'worldfm' for imported scenes."
            )
        from worldfm_env.render.raycast import MeshRaycaster

        self.raycaster = MeshRaycaster([s.mesh for s in pool.scenes], self.device)
        self.rgb = torch.zeros(num_envs, height, width, 3, dtype=torch.uint8, device=self.device)
        self.depth = torch.zeros(num_envs, height, width, dtype=torch.float32, device=self.device)

    def render(self, request: RenderRequest) -> RenderOutput:
        """Ray-cast rgb and exact depth."""
        rgb, depth = self.raycaster.render(
            request.scene_index, request.c2w, request.K, self.height, self.width, out_rgb=self.rgb, out_depth=self.depth
        )
        return RenderOutput(rgb, depth)


def _worldfm_backend(pool: ScenePool, num_envs: int, height: int, width: int, **options) -> Renderer:
    # Imported lazily: the model package is only needed by this backend.
    from worldfm_env.model.renderer import WorldFMRenderer

    return WorldFMRenderer(pool, num_envs, height, width, **options)


RENDERER_BACKENDS = {"anchor": AnchorRenderer, "oracle": OracleRenderer, "worldfm": _worldfm_backend}


def make_renderer(name: str, pool: ScenePool, num_envs: int, height: int, width: int, **options) -> Renderer:
    """Build the backend called ``name`` (one of :data:`RENDERER_BACKENDS`)."""
    if name not in RENDERER_BACKENDS:
        raise ValueError(f"renderer={name!r} is not valid; choose one of {sorted(RENDERER_BACKENDS)}")
    return RENDERER_BACKENDS[name](pool, num_envs, height, width, **options)
