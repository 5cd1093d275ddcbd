"""Pose -> frame: the observation pipeline and its renderer backends (``anchor``, ``oracle``, ``worldfm``).

:class:`ObservationPipeline` is the only place where a camera pose becomes a frame; the env, the render CLI, the
training clips and the benchmarks all use it. The ``worldfm`` backend (:mod:`worldfm_env.renderers.worldfm`) loads
the model package lazily.
"""

from worldfm_env.renderers.anchor import AnchorRenderer
from worldfm_env.renderers.base import Renderer, RenderOutput, RenderRequest
from worldfm_env.renderers.oracle import OracleRenderer
from worldfm_env.renderers.pipeline import RENDERER_BACKENDS, Observation, ObservationPipeline, make_renderer

__all__ = [
    "AnchorRenderer",
    "Observation",
    "ObservationPipeline",
    "OracleRenderer",
    "RENDERER_BACKENDS",
    "Renderer",
    "RenderOutput",
    "RenderRequest",
    "make_renderer",
]
