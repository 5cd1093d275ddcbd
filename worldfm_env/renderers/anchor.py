"""The ``anchor`` backend: the raw point splat (black where no point landed)."""

from __future__ import annotations

from worldfm_env.renderers.base import Renderer, RenderOutput, RenderRequest

__all__ = ["AnchorRenderer"]


class AnchorRenderer(Renderer):
    """The explicit 3-D anchor itself: the scene's point cloud splatted at each pose."""

    name = "anchor"
    needs_anchor = True

    def render(self, request: RenderRequest) -> RenderOutput:
        """The anchor's rgb and depth."""
        assert request.anchor is not None
        return RenderOutput(request.anchor.rgb, request.anchor.depth)
