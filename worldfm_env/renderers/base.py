"""The interface every renderer backend implements: ``render(request) -> RenderOutput``.

The observation pipeline (:mod:`worldfm_env.renderers.pipeline`) computes what a backend declares it needs (the
anchor splat, the reference choice) once per step for all envs, then calls the backend once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldfm_env.memory import GrowingMemory
from worldfm_env.render.splat import AnchorRender
from worldfm_env.scenes.pool import ScenePool

__all__ = ["RenderRequest", "RenderOutput", "Renderer"]


@dataclass
class RenderRequest:
    """Everything a backend may condition on, batched over N envs (all on the env's device).

    Attributes:
        scene_index: (N,) int32 scene of each env in ``pool``.
        c2w: (N, 4, 4) camera poses. K: (N, 3, 3) intrinsics in output pixels.
        anchor: the anchor render, when the backend asked for it.
        reference_index: (N,) int64 rows of ``pool.bank_*`` chosen as reference, when asked for.
        noise_seed: (N,) int64 per-env seeds for stochastic backends (fixed seed + pose -> same frame).
        memory: the envs' growing memory (``memory="grow"``): a ``reference_index`` from ``B`` on (B = the pool's
            bank views) names its view ``reference_index - B``
            (:func:`~worldfm_env.memory.growing.select_reference` gathers either).
        layout_depth: (N, H, W) depth of the scene's navigation layout along each pixel's ray (0 where unbounded),
            when the backend reads it (``needs_layout``) or the pipeline bounds depth with it.
    """

    scene_index: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    anchor: AnchorRender | None = None
    reference_index: torch.Tensor | None = None
    noise_seed: torch.Tensor | None = None
    memory: GrowingMemory | None = None
    layout_depth: torch.Tensor | None = None


@dataclass
class RenderOutput:
    """Frames of N envs: ``rgb`` (N, H, W, 3) uint8 and ``depth`` (N, H, W) float32 (0 = unknown) or None."""

    rgb: torch.Tensor
    depth: torch.Tensor | None


class Renderer:
    """Base class of renderer backends.

    Subclasses set ``name``, ``needs_anchor`` and ``needs_reference`` (and ``needs_layout`` when they read the
    navigation layout's depth, ``RenderRequest.layout_depth``, with ``layout_obstacles`` naming what that layout is
    cast against: :data:`~worldfm_env.scenes.navigation.LAYOUT_OBSTACLES_VALUES`) and implement :meth:`render`.
    The returned tensors may be the backend's own buffers, valid until the next call.
    """

    name = "base"
    needs_anchor = False
    needs_reference = False
    needs_layout = False
    layout_obstacles = "footprints"

    def __init__(self, pool: ScenePool, num_envs: int, height: int, width: int, **options) -> None:
        self.pool = pool
        self.num_envs, self.height, self.width = num_envs, height, width
        self.device = pool.device

    def render(self, request: RenderRequest) -> RenderOutput:  # pragma: no cover - interface
        """Frames for every env of ``request``."""
        raise NotImplementedError
