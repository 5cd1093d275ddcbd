"""Environments over sparsely captured worlds: ``capture=`` and ``goal_outside_capture=`` (EnvConfig)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL, small
from gymnasium.utils.env_checker import check_env

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.geometry import pose_from_yaw_pitch
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.scenes.capture import capture_scene
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.navigation import NavigationData
from worldfm_env.scenes.pool import ScenePool

POINTNAV = "WorldFM/PointNav-v0"
CPU = torch.device("cpu")


def _cells(env: WorldFMVectorEnv, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scene, row, col) of each env's world point ``xyz`` (N, 3) on its scene's navigation grid."""
    scene = env.scene_index.long()
    cs = env.pool.nav_cell_size[scene]
    row = torch.floor((xyz[:, 2] - env.pool.nav_origin[scene, 1]) / cs).long()
    col = torch.floor((xyz[:, 0] - env.pool.nav_origin[scene, 0]) / cs).long()
    return scene, row, col


@pytest.fixture(scope="module")
def scenes():
    """The full, panorama and walk captures of the small test scene."""
    full = resolve_scenes(SMALL["scenes"], CPU, (32, 32), 90.0)[0]
    return {"full": full, "panorama": capture_scene(full, "panorama"), "walk:8": capture_scene(full, "walk:8")}


def test_check_env_with_a_panorama_capture():
    env = gym.make(POINTNAV, **small(capture="panorama"))
    check_env(env.unwrapped, skip_render_check=False)
    assert env.unwrapped.vector_env.pool.scenes[0].info["capture"]["mode"] == "panorama"
    env.close()


@pytest.mark.parametrize("task", ["pointnav", "explore"])
@pytest.mark.parametrize("capture", ["panorama", "walk:8"])
def test_episodes_start_in_the_captured_region(task, capture):
    env = WorldFMVectorEnv(num_envs=16, **small(task=task, capture=capture))
    nav = env.navigation
    region = nav.start_region
    assert bool((region <= nav.main).all()) and int(region.sum()) < int(nav.main.sum()) // 4
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(seed):
            env.step(np.ones(16, dtype=np.int64))  # starts after steps and resets too
        env.reset(seed=seed + 10)
        scene, row, col = _cells(env, env.position)
        assert bool(region[scene, row, col].all()), "a start outside the captured region"
    # Every start lies within 1 m of a capture camera centre.
    centres = torch.tensor(env.pool.scenes[0].info["capture"]["positions"])[:, [0, 2]]
    distance = torch.cdist(env.position[:, [0, 2]], centres).min(dim=1).values
    assert bool((distance <= 1.0 + 1e-4).all())


def test_full_capture_keeps_todays_starts_and_goals(scenes):
    pool = ScenePool([scenes["full"]], CPU)
    nav = NavigationData(pool, 8)
    assert torch.equal(nav.start_region, nav.main)
    assert torch.equal(nav.start_cells, nav.main_cells) and torch.equal(nav.start_count, nav.main_count)
    gen = torch.Generator().manual_seed(7919)
    expected = nav.main_cells[0, torch.randperm(int(nav.main_count[0]), generator=gen)[:8]]
    assert torch.equal(nav.goal_cells[0], expected)
    # The dense capture saw nearly all the floor; the panorama a small part of it.
    assert float(nav.seen.sum()) > 0.9 * float(nav.main.sum())
    pano = NavigationData(ScenePool([scenes["panorama"]], CPU), 8)
    assert float(pano.seen.sum()) < 0.3 * float(nav.seen.sum())


@pytest.mark.parametrize("capture", ["panorama", "walk:8"])
def test_goals_outside_the_capture(capture):
    env = WorldFMVectorEnv(num_envs=16, **small(capture=capture, goal_outside_capture=True))
    nav = env.navigation
    Gx = nav.shape[1]
    cells = nav.goal_cells[0]
    assert not bool(nav.seen[0].flatten()[cells].any()), "a goal candidate on a cell the capture saw"
    assert bool(nav.main[0].flatten()[cells].all())
    in_range = []
    for seed in range(4):
        env.reset(seed=seed)
        scene, row, col = _cells(env, env.task.goal)
        assert not bool(nav.seen[scene, row, col].any())
        d = env.task.start_distance
        in_range.append((d >= env.config.min_goal_distance) & (d <= env.config.max_goal_distance))
    assert float(torch.cat(in_range).float().mean()) >= 0.9, "start-goal distances should keep their range"
    # Goals stay at least half a metre from every cell the capture saw.
    seen = torch.nonzero(nav.seen[0].flatten()).flatten()
    gap = torch.maximum((cells[:, None] // Gx - seen[None] // Gx).abs(), (cells[:, None] % Gx - seen[None] % Gx).abs())
    assert int(gap.min()) * float(env.pool.nav_cell_size[0]) > 0.5 - 1e-6


def test_goal_outside_capture_falls_back_with_a_warning(scenes):
    # A capture that saw the floor of every main-component cell leaves no cell outside it.
    full = scenes["full"]
    nav = NavigationData(ScenePool([full], CPU), 4, with_goal_fields=False)
    floor = [[x, full.navigation_grid.floor_y, z] for x, z in _main_cell_centres(nav)]
    saw_all = dataclasses.replace(
        full,
        points_xyz=torch.tensor(floor, dtype=torch.float32),
        points_rgb=torch.zeros(len(floor), 3, dtype=torch.uint8),
        points_normal=None,
        points_spacing=None,
    )
    with pytest.warns(UserWarning, match="goal_outside_capture=True: scene 'procedural-0' has no reachable cell"):
        nav = NavigationData(ScenePool([saw_all], CPU), 4, goal_outside_capture=True)
    assert torch.equal(nav.seen[0], nav.main[0])
    assert bool(nav.main[0].flatten()[nav.goal_cells[0]].all())


def _main_cell_centres(nav: NavigationData) -> list[tuple[float, float]]:
    Gx = nav.shape[1]
    cs, (ox, oz) = float(nav.pool.nav_cell_size[0]), nav.pool.nav_origin[0].tolist()
    flat = torch.nonzero(nav.main[0].flatten()).flatten().tolist()
    return [(ox + (f % Gx + 0.5) * cs, oz + (f // Gx + 0.5) * cs) for f in flat]


def _far_poses(scene, count: int = 12) -> torch.Tensor:
    """(count, 4, 4) camera poses on the main component at least 5 m from the capture point, several headings."""
    nav = NavigationData(ScenePool([scene], CPU), 1, with_goal_fields=False)
    centres = torch.tensor(_main_cell_centres(nav))
    capture = torch.tensor(scene.info["capture"]["position"])[[0, 2]]
    far = centres[(centres - capture).norm(dim=1) >= 5.0]
    pick = far[torch.linspace(0, far.shape[0] - 1, count).long()]
    y = scene.navigation_grid.floor_y - scene.camera_height
    position = torch.stack([pick[:, 0], torch.full((count,), y), pick[:, 1]], dim=1)
    yaw = torch.arange(count, dtype=torch.float32) * (2 * math.pi / count) - math.pi
    return pose_from_yaw_pitch(position, yaw, torch.zeros(count))


def test_oracle_frames_do_not_depend_on_the_capture(scenes):
    c2w = _far_poses(scenes["panorama"], 8)
    frames = {}
    for mode in ("full", "panorama"):
        pipeline = ObservationPipeline(ScenePool([scenes[mode]], CPU), 8, 32, 32, renderer="oracle")
        obs = pipeline.render(torch.zeros(8, dtype=torch.int32), c2w)
        frames[mode] = (obs.rgb.clone(), obs.depth.clone())
    assert torch.equal(frames["full"][0], frames["panorama"][0]) and torch.equal(
        frames["full"][1], frames["panorama"][1]
    )
    assert frames["full"][0].float().mean() > 10, "the oracle frames should show the scene"


@pytest.mark.parametrize("capture", ["panorama", "walk:8"])
def test_anchor_covers_less_far_from_the_capture(scenes, capture):
    c2w = _far_poses(scenes["panorama"], 12)
    covered = {}
    for mode in ("full", capture):
        pipeline = ObservationPipeline(ScenePool([scenes[mode]], CPU), 12, 32, 32, renderer="anchor")
        obs = pipeline.render(torch.zeros(12, dtype=torch.int32), c2w)
        covered[mode] = (obs.depth > 0).flatten(1).float().mean(1)  # (12,) fraction of covered pixels
    assert float(covered["full"].mean()) > 0.8, "the dense capture covers most pixels everywhere"
    assert float(covered[capture].mean()) < 0.5 * float(covered["full"].mean())
    assert bool((covered[capture] <= covered["full"] + 0.02).all())


def test_worlds_with_different_captures_are_not_shared():
    a = WorldFMVectorEnv(num_envs=1, **small(capture="panorama"))
    b = WorldFMVectorEnv(num_envs=1, **small(capture="panorama"))
    c = WorldFMVectorEnv(num_envs=1, **small(capture="walk:3"))
    d = WorldFMVectorEnv(num_envs=1, **SMALL)
    assert a.pool is b.pool
    assert len({id(a.pool), id(c.pool), id(d.pool)}) == 3
    assert c.pool.scenes[0].bank.num_views == 3 and "capture" not in d.pool.scenes[0].info


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(capture="walk:0"), "capture must be 'full', 'panorama' or 'walk:K'"),
        (dict(capture="walk:x"), "capture must be"),
        (dict(capture="Panorama"), "capture must be"),
        (dict(capture=8), "capture must be"),
        (dict(goal_outside_capture="yes"), "goal_outside_capture must be True or False"),
        (dict(goal_outside_capture=True, task="explore"), "goal_outside_capture=True applies to task='pointnav'"),
        (dict(capture="panorama", scenes="room.ply"), "capture='panorama' applies to procedural scenes only"),
    ],
)
def test_bad_capture_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldFMVectorEnv(num_envs=1, **{**SMALL, **kwargs})
    with pytest.raises(ValueError, match=match):
        gym.make(POINTNAV, **{**SMALL, **kwargs})


def test_capture_is_deterministic_through_the_env(scenes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # this scene has cells outside the capture: no fallback warning
        env = WorldFMVectorEnv(num_envs=4, **small(capture="walk:5", goal_outside_capture=True))
    assert torch.equal(env.pool.scenes[0].points_xyz, capture_scene(scenes["full"], "walk:5").points_xyz)
    first, _ = env.reset(seed=5)
    first = {k: v.clone() for k, v in first.items()}
    position, goal = env.position.clone(), env.task.goal.clone()
    env.step(np.ones(4, dtype=np.int64))
    again, _ = env.reset(seed=5)
    assert torch.equal(env.position, position) and torch.equal(env.task.goal, goal)
    assert all(torch.equal(first[k], again[k]) for k in first)
