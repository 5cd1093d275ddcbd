"""Scene pools shared between environments built with the same scene options.

A ``SyncVectorEnv`` of 64 single envs, or several evaluation envs, would otherwise each load and
pack the same scenes and solve the same geodesic fields. Pools are immutable, so sharing is safe;
entries are weakly referenced and vanish with the last environment that uses them.
"""

from __future__ import annotations

import json
import weakref

import torch

from worldfm_env.envs.config import EnvConfig
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.navigation import NavigationData
from worldfm_env.scenes.pool import ScenePool

__all__ = ["SharedWorld", "shared_world"]


class SharedWorld:
    """A scene pool and its navigation data."""

    def __init__(self, pool: ScenePool, navigation: NavigationData) -> None:
        self.pool = pool
        self.navigation = navigation


_WORLDS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _key(cfg: EnvConfig, device: torch.device, with_goal_fields: bool):
    specs = cfg.scenes if isinstance(cfg.scenes, (list, tuple)) else [cfg.scenes]
    if not all(isinstance(s, str) for s in specs):
        return None  # in-memory Scene objects: no sharing
    options = json.dumps(cfg.scene_options, sort_keys=True, default=str)
    return (
        tuple(specs),
        str(device),
        tuple(cfg.resolution),
        cfg.hfov_deg,
        cfg.num_scenes,
        options,
        cfg.goal_candidates,
        with_goal_fields,
        cfg.capture,
        cfg.goal_outside_capture,
        cfg.min_goal_distance,
        cfg.max_goal_distance,
    )


def shared_world(cfg: EnvConfig, device: torch.device, with_goal_fields: bool) -> SharedWorld:
    """The scene pool and navigation data for ``cfg`` on ``device``, reusing a live one when possible."""
    key = _key(cfg, device, with_goal_fields)
    world = _WORLDS.get(key) if key is not None else None
    if world is None:
        H, W = cfg.resolution
        scenes = resolve_scenes(
            cfg.scenes, device, (H, W), cfg.hfov_deg, cfg.num_scenes, cfg.scene_options, capture=cfg.capture
        )
        pool = ScenePool(scenes, device)
        navigation = NavigationData(
            pool,
            cfg.goal_candidates,
            with_goal_fields=with_goal_fields,
            goal_outside_capture=cfg.goal_outside_capture,
            goal_distance=(cfg.min_goal_distance, cfg.max_goal_distance),
        )
        world = SharedWorld(pool, navigation)
        if key is not None:
            _WORLDS[key] = world
    return world
