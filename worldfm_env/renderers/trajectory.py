"""Scripted rollouts: render a camera trajectory (an official ``meta.json``) to frames or a video."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from worldfm_env.render.anchor_config import AnchorConfig
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.scenes.pool import ScenePool
from worldfm_env.scenes.scene import Scene

__all__ = ["trajectory_from_scene", "render_trajectory"]


def trajectory_from_scene(scene: Scene, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The trajectory stored by the meta.json importer: c2w (T, 4, 4) and K (T, 3, 3) scaled to (height, width)."""
    info = scene.info
    if "trajectory_c2w" not in info:
        raise ValueError(f"scene {scene.name!r} has no trajectory (only meta.json imports carry one)")
    c2w = torch.tensor(info["trajectory_c2w"], dtype=torch.float32, device=scene.device).reshape(-1, 4, 4)
    K = torch.tensor(info["trajectory_K"], dtype=torch.float32, device=scene.device).reshape(3, 3).clone()
    img_h, img_w = info.get("trajectory_image_size", scene.bank.resolution)
    K[0] *= width / img_w
    K[1] *= height / img_h
    return c2w, K.expand(c2w.shape[0], 3, 3).contiguous()


def render_trajectory(
    scene: Scene,
    c2w: torch.Tensor,
    K: torch.Tensor,
    height: int,
    width: int,
    renderer: str = "worldfm",
    batch_size: int = 8,
    seed: int = 0,
    anchor: AnchorConfig | None = None,
    memory: str = "static",
    memory_capacity: int = 65536,
    **renderer_options,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (anchor rgb, rendered rgb), each (H, W, 3) uint8, for every pose of a trajectory.

    Poses are rendered ``batch_size`` at a time through the env's observation pipeline (one splat launch, one
    reference vote and one model call per batch), with the env's anchor settings unless ``anchor`` is given.
    Frame ``i`` uses noise seed ``seed + i``, so a rerun reproduces the video. The trajectory's intrinsics must be
    the same for every pose (a meta.json trajectory has one K).

    ``memory="grow"``: the trajectory grows its memory as it goes (each frame's empty pixels are written back, so
    later frames show what earlier ones generated); poses are then rendered one at a time, in order.
    """
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or K.shape != (c2w.shape[0], 3, 3):
        raise ValueError(f"c2w must be (T, 4, 4) and K (T, 3, 3), got {tuple(c2w.shape)} and {tuple(K.shape)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not torch.equal(K, K[:1].expand_as(K)):
        raise ValueError("K must be the same for every pose of the trajectory (one camera)")
    pool = ScenePool([scene], scene.device)
    B = 1 if memory == "grow" else min(batch_size, c2w.shape[0])
    pipeline = ObservationPipeline(
        pool,
        B,
        height,
        width,
        renderer=renderer,
        anchor=anchor,
        K=K[0],
        with_anchor=True,
        memory=memory,
        memory_capacity=memory_capacity,
        **renderer_options,
    )
    scene_index = torch.zeros(B, dtype=torch.int32, device=scene.device)
    for start in range(0, c2w.shape[0], B):
        n = min(B, c2w.shape[0] - start)
        # Pad the last batch by repeating its last pose (buffers are sized for B).
        idx = torch.arange(start, start + B, device=c2w.device).clamp(max=start + n - 1)
        seeds = torch.arange(seed + start, seed + start + B, device=c2w.device)
        frame = pipeline.render(scene_index, c2w[idx].contiguous(), noise_seed=seeds)
        for j in range(n):
            yield frame.anchor.rgb[j].clone(), frame.rgb[j].clone()
