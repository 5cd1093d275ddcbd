"""The ``oracle`` backend: ground truth by ray casting each procedural scene's mesh."""

from __future__ import annotations

import torch

from worldfm_env.renderers.base import Renderer, RenderOutput, RenderRequest
from worldfm_env.scenes.pool import ScenePool

__all__ = ["OracleRenderer"]


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
