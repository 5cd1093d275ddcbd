"""Tests of the environments: Gymnasium API conformance, the native vector env against
SyncVectorEnv, partial resets, determinism, autoreset modes, rewards, collisions, the shortest-path
policy, input validation and pose conventions."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL, small
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import worldfm_env
from worldfm_env import EnvConfig
from worldfm_env.envs.single import WorldFMEnv
from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.policies import ShortestPathPolicy

POINTNAV, EXPLORE = "WorldFM/PointNav-v0", "WorldFM/Explore-v0"
CORE_STATE = (
    "position",
    "yaw",
    "pitch",
    "scene_index",
    "elapsed_steps",
    "collisions",
    "path_length",
    "seeds",
    "episode_count",
)
TASK_STATE = {
    "pointnav": ("goal", "goal_slot", "start_distance", "distance", "success"),
    "explore": ("seen", "seen_count", "coverage", "success"),
}
# Random discrete actions that rarely STOP, so both truncations and terminations happen in a short run.
ACTION_P = [0.05, 0.35, 0.15, 0.15, 0.15, 0.15]

_ENVS: dict = {}


def shared_env(**kwargs) -> WorldFMVectorEnv:
    """A vector env per kwargs, built once per module; tests reset it with a seed before use."""
    key = tuple(sorted(kwargs.items()))
    if key not in _ENVS:
        _ENVS[key] = WorldFMVectorEnv(**{**SMALL, **kwargs})
    return _ENVS[key]


def state(env: WorldFMVectorEnv) -> dict[str, torch.Tensor]:
    """Clones of every batched state tensor of the core env and of its task."""
    out = {k: getattr(env, k).clone() for k in CORE_STATE}
    for k in TASK_STATE[env.config.task]:
        value = getattr(env.task, k)
        assert isinstance(value, torch.Tensor) and value.shape[0] == env.num_envs, k
        out[f"task.{k}"] = value.clone()
    return out


def assert_state_equal(a: dict, b: dict, envs=None) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = (a[k], b[k]) if envs is None else (a[k][envs], b[k][envs])
        assert torch.equal(x, y), f"state {k} changed: {x} vs {y}"


def spec_with(env_id: str, **kwargs) -> gym.envs.registration.EnvSpec:
    """The registered spec with extra env kwargs (``max_episode_steps`` reaches the env, not a TimeLimit)."""
    spec = gym.spec(env_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **kwargs})


def random_actions(steps: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(6, size=(steps, n), p=ACTION_P)


def to_np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ---------------------------------------------------------------------------------------------
# Gymnasium API
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("renderer", ["anchor", "oracle"])
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
@pytest.mark.parametrize("env_id", sorted(worldfm_env.ENV_IDS))
def test_check_env(env_id, action_type, renderer):
    env = gym.make(env_id, **small(renderer=renderer), action_type=action_type)
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", sorted(worldfm_env.ENV_IDS))
def test_plain_gym_make(env_id):
    env = gym.make(env_id, **SMALL)
    assert isinstance(env.unwrapped, WorldFMEnv)
    assert env.unwrapped.config.task == worldfm_env.ENV_IDS[env_id]
    obs, info = env.reset(seed=3)
    assert obs in env.observation_space
    assert obs["rgb"].shape == (32, 32, 3) and obs["rgb"].dtype == np.uint8
    assert obs["rgb"].any(), "the first frame is all black"
    obs, reward, terminated, truncated, info = env.step(1)
    assert obs in env.observation_space
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert "collisions" in info and "success" in info
    env.close()


def test_make_vec_native():
    venv = gym.make_vec(POINTNAV, num_envs=4, vectorization_mode="vector_entry_point", **SMALL)
    assert isinstance(venv, WorldFMVectorEnv) and venv.num_envs == 4
    assert venv.observation_space["rgb"].shape == (4, 32, 32, 3)
    assert venv.observation_space["pointgoal"].shape == (4, 2)
    assert venv.single_observation_space["rgb"].shape == (32, 32, 3)
    assert venv.action_space.shape == (4,) and isinstance(venv.single_action_space, gym.spaces.Discrete)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    obs, _ = venv.reset(seed=0)
    assert tuple(obs["rgb"].shape) == (4, 32, 32, 3)
    same = gym.make_vec(
        EXPLORE,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        autoreset_mode="same_step",
        action_type="continuous",
        **SMALL,
    )
    assert same.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert same.action_space.shape == (2, 4)
    assert "pointgoal" not in same.observation_space.spaces
    # The class-level metadata is not mutated by an instance's autoreset mode.
    assert WorldFMVectorEnv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP


# ---------------------------------------------------------------------------------------------
# Native vector env vs SyncVectorEnv of single envs
# ---------------------------------------------------------------------------------------------


def _compare_infos(native: dict, sync: dict, step: int) -> None:
    for key, value in sync.items():
        if key.startswith("_"):
            continue
        assert key in native, f"step {step}: info key {key} missing from the native env"
        a, b = np.asarray(native[key]), np.asarray(value)
        if a.dtype == bool or b.dtype == bool or np.issubdtype(b.dtype, np.integer):
            np.testing.assert_array_equal(a, b.astype(a.dtype), err_msg=f"step {step} info {key}")
        else:
            np.testing.assert_allclose(a, b.astype(np.float64), atol=1e-5, err_msg=f"step {step} info {key}")


@pytest.mark.parametrize("env_id", [POINTNAV, EXPLORE])
def test_native_matches_sync_vector_env(env_id):
    n, steps, seed = 4, 30, 123
    native = gym.make_vec(
        env_id,
        num_envs=n,
        vectorization_mode="vector_entry_point",
        max_episode_steps=10,
        array_type="numpy",
        **SMALL,
    )
    spec = spec_with(env_id, max_episode_steps=10)
    sync = SyncVectorEnv([lambda: gym.make(spec, **SMALL) for _ in range(n)])
    assert sync.metadata["autoreset_mode"] is native.metadata["autoreset_mode"]
    obs_n, info_n = native.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    assert obs_n.keys() == obs_s.keys()
    for k in obs_s:
        assert isinstance(obs_n[k], np.ndarray)
    np.testing.assert_array_equal(obs_n["rgb"], obs_s["rgb"])
    _compare_infos(info_n, info_s, -1)
    terminations = truncations = autoresets = 0
    done_before = np.zeros(n, dtype=bool)
    for t, action in enumerate(random_actions(steps, n, seed=1)):
        obs_n, rew_n, term_n, trunc_n, info_n = native.step(action)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(action)
        np.testing.assert_array_equal(obs_n["rgb"], obs_s["rgb"], err_msg=f"step {t} rgb")
        if "pointgoal" in obs_s:
            np.testing.assert_allclose(obs_n["pointgoal"], obs_s["pointgoal"], atol=1e-5, err_msg=f"step {t}")
        np.testing.assert_allclose(rew_n, rew_s, atol=1e-5, err_msg=f"step {t} reward")
        np.testing.assert_array_equal(term_n, term_s, err_msg=f"step {t} terminated")
        np.testing.assert_array_equal(trunc_n, trunc_s, err_msg=f"step {t} truncated")
        _compare_infos(info_n, info_s, t)
        terminations += int(term_n.sum())
        truncations += int(trunc_n.sum())
        autoresets += int(done_before.sum())
        done_before = term_n | trunc_n
    assert truncations > 0 and terminations > 0 and autoresets > 0, (truncations, terminations, autoresets)
    native.close()
    sync.close()


# ---------------------------------------------------------------------------------------------
# Partial reset, determinism, autoreset modes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["pointnav", "explore"])
@pytest.mark.parametrize("form", ["list", "mask"])
def test_partial_reset(task, form):
    env = shared_env(num_envs=4, task=task)
    env.reset(seed=5)
    for action in random_actions(7, 4, seed=2):
        env.step(torch.as_tensor(action))
    before = state(env)
    rgb_before = env._last_obs["rgb"].clone()
    env_idx = [1, 3] if form == "list" else np.array([False, True, False, True])
    obs, infos = env.reset(options={"env_idx": env_idx})
    after = state(env)
    keep, fresh = [0, 2], [1, 3]
    assert_state_equal(before, after, envs=keep)
    assert torch.equal(obs["rgb"][keep], rgb_before[keep])
    assert torch.equal(after["episode_count"][fresh], before["episode_count"][fresh] + 1)
    assert (after["elapsed_steps"][fresh] == 0).all() and (after["path_length"][fresh] == 0).all()
    assert (after["collisions"][fresh] == 0).all()
    for i in fresh:  # a new episode: a new start pose
        same_pose = all(torch.equal(after[k][i], before[k][i]) for k in ("position", "yaw"))
        assert not same_pose, i
    assert set(infos) >= {"success", "collisions"}


def test_partial_reset_matches_independent_episode():
    """Env i's second episode after a partial reset equals env i's second episode after an autoreset."""
    a = shared_env(num_envs=4, task="pointnav")
    a.reset(seed=11)
    a.reset(options={"env_idx": [2]})
    snap_a = state(a)
    b = WorldFMVectorEnv(num_envs=4, **SMALL, max_episode_steps=1)
    b.reset(seed=11)
    b.step(torch.ones(4, dtype=torch.long))  # truncates every env
    b.step(torch.ones(4, dtype=torch.long))  # NEXT_STEP: autoreset to episode 1
    snap_b = state(b)
    for k in snap_a:
        assert torch.equal(snap_a[k][2], snap_b[k][2]), k


@pytest.mark.parametrize(
    "env_idx",
    [[4], [-1], [0.0, 1.0], np.array([1.5]), np.array([True, False]), [[0, 7]], torch.tensor([0, 9])],
    ids=["too-big", "negative", "float-list", "float-array", "short-mask", "nested-out-of-range", "tensor"],
)
def test_partial_reset_bad_env_idx(env_idx):
    env = shared_env(num_envs=4, task="pointnav")
    env.reset(seed=1)
    env.step(torch.tensor([1, 2, 3, 4]))
    before = state(env)
    with pytest.raises(ValueError, match="env_idx"):
        env.reset(options={"env_idx": env_idx})
    assert_state_equal(before, state(env))


def test_partial_reset_empty_env_idx_is_a_no_op():
    """``env_idx=[]`` lists no env: nothing is reset (today it raises a ValueError about float dtype)."""
    env = shared_env(num_envs=4, task="pointnav")
    env.reset(seed=1)
    env.step(torch.tensor([1, 2, 3, 4]))
    before = state(env)
    env.reset(options={"env_idx": []})
    assert_state_equal(before, state(env))


def test_unknown_reset_option():
    env = shared_env(num_envs=4, task="pointnav")
    env.reset(seed=1)
    with pytest.raises(ValueError, match="env_ids"):
        env.reset(options={"env_ids": [0]})


def test_first_reset_must_be_full():
    env = WorldFMVectorEnv(num_envs=2, **SMALL)
    with pytest.raises(RuntimeError):
        env.step(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="first reset"):
        env.reset(options={"env_idx": [0]})


def _rollout(env: WorldFMVectorEnv, seed: int, actions: np.ndarray) -> list:
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    for action in actions:
        trace.append(env.step(torch.as_tensor(action)))
    return trace


def _assert_same_tree(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same_tree(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_tree(x, y, f"{path}[{i}]")
    else:
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), path


def test_determinism_same_seed():
    actions = random_actions(50, 2, seed=3)
    env_a = WorldFMVectorEnv(num_envs=2, max_episode_steps=20, **SMALL)
    env_b = WorldFMVectorEnv(num_envs=2, max_episode_steps=20, **SMALL)
    trace_a = _rollout(env_a, 42, actions)
    trace_b = _rollout(env_b, 42, actions)
    _assert_same_tree(trace_a, trace_b)
    # Rewards are not all zero and the episodes moved: the comparison is not vacuous.
    assert any(bool((step[1] != 0).any()) for step in trace_a[1:])
    # A different seed starts elsewhere.
    env_b.reset(seed=43)
    env_a.reset(seed=42)
    differs = ~((env_a.position == env_b.position).all(1) & (env_a.yaw == env_b.yaw))
    assert bool(differs.all())


def test_same_step_autoreset_matches_sync():
    n, seed, steps = 3, 7, 16
    native = WorldFMVectorEnv(num_envs=n, autoreset_mode="same_step", max_episode_steps=6, array_type="numpy", **SMALL)
    spec = spec_with(POINTNAV, max_episode_steps=6)
    sync = SyncVectorEnv([lambda: gym.make(spec, **SMALL) for _ in range(n)], autoreset_mode=AutoresetMode.SAME_STEP)
    obs_n, _ = native.reset(seed=seed)
    obs_s, _ = sync.reset(seed=seed)
    ends = 0
    for t, action in enumerate(random_actions(steps, n, seed=4)):
        obs_n, rew_n, term_n, trunc_n, info_n = native.step(action)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(action)
        done = term_n | trunc_n
        np.testing.assert_array_equal(term_n, term_s)
        np.testing.assert_array_equal(trunc_n, trunc_s)
        np.testing.assert_allclose(rew_n, rew_s, atol=1e-5)
        # The returned observation of a finished env is already the new episode's first one.
        np.testing.assert_array_equal(obs_n["rgb"], obs_s["rgb"], err_msg=f"step {t}")
        np.testing.assert_allclose(obs_n["pointgoal"], obs_s["pointgoal"], atol=1e-5)
        if not done.any():
            assert "final_obs" not in info_n
            continue
        ends += int(done.sum())
        for key in ("final_obs", "_final_obs", "final_info", "_final_info"):
            assert key in info_n, key
        np.testing.assert_array_equal(info_n["_final_obs"], done)
        np.testing.assert_array_equal(info_n["_final_info"], done)
        np.testing.assert_array_equal(info_s["_final_obs"], done)
        assert (native.elapsed_steps[torch.as_tensor(done)] == 0).all()
        for i in np.nonzero(done)[0]:
            final_n, final_s = info_n["final_obs"][i], info_s["final_obs"][i]
            np.testing.assert_array_equal(final_n["rgb"], final_s["rgb"])
            np.testing.assert_allclose(final_n["pointgoal"], final_s["pointgoal"], atol=1e-5)
            assert not np.array_equal(final_n["pointgoal"], obs_n["pointgoal"][i])
            for key in ("success", "distance_to_goal", "spl", "collisions"):
                assert info_n["final_info"][f"_{key}"][i]
                np.testing.assert_allclose(info_n["final_info"][key][i], info_s["final_info"][key][i], atol=1e-5)
            # The current info is the new episode's (distance to goal = its start distance).
            assert info_n["distance_to_goal"][i] == pytest.approx(float(native.task.start_distance[i]), abs=1e-6)
            assert not info_n["success"][i] and info_n["collisions"][i] == 0
    assert ends >= n, ends


def test_single_env_seed_matches_vector_env_slot():
    """``WorldFMEnv.reset(seed=s)`` gives env ``i`` of a vector env reset with ``seed=s - i``."""
    single = gym.make(POINTNAV, **SMALL).unwrapped
    vec = shared_env(num_envs=4, task="pointnav")
    obs_s, info_s = single.reset(seed=10)
    obs_v, info_v = vec.reset(seed=8)
    assert np.array_equal(obs_s["rgb"], to_np(obs_v["rgb"][2]))
    assert np.allclose(obs_s["pointgoal"], to_np(obs_v["pointgoal"][2]), atol=1e-6)
    assert info_s["distance_to_goal"] == pytest.approx(float(info_v["distance_to_goal"][2]), abs=1e-6)
    assert not np.array_equal(obs_s["rgb"], to_np(obs_v["rgb"][1]))


@pytest.mark.parametrize("renderer", ["anchor", "oracle"])
def test_depth_and_pose_observations(renderer):
    env = WorldFMVectorEnv(num_envs=2, **small(renderer=renderer), include_depth=True, include_pose=True)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(torch.tensor([2, 4]))
    assert tuple(obs["depth"].shape) == (2, 32, 32, 1) and obs["depth"].dtype == torch.float32
    depth = obs["depth"][..., 0]
    assert (depth >= 0).all() and torch.isfinite(depth).all()
    if renderer == "oracle":  # closed rooms: every ray hits the mesh
        assert float((depth > 0).float().mean()) > 0.99
    else:  # the anchor's depth: known exactly where a point landed
        anchor = env.pipeline.last_request.anchor
        assert torch.equal(depth > 0, anchor.mask) and torch.equal(depth, anchor.depth)
        assert float(anchor.mask.float().mean()) > 0.5
    expected = torch.cat([env.position, env.yaw[:, None], env.pitch[:, None]], dim=1)
    assert torch.equal(obs["pose"], expected)
    np_obs = {k: to_np(v) for k, v in obs.items()}
    assert np_obs in env.observation_space


# ---------------------------------------------------------------------------------------------
# Infos, rewards, collisions
# ---------------------------------------------------------------------------------------------


def test_pointnav_info_and_reward():
    env = shared_env(num_envs=4, task="pointnav")
    cfg = env.config
    obs, info = env.reset(seed=21)
    keys = {"success", "spl", "soft_spl", "distance_to_goal", "collisions"}
    assert keys <= set(info) and {f"_{k}" for k in keys} <= set(info)
    prev = info["distance_to_goal"].clone()
    resetting = torch.zeros(4, dtype=torch.bool)
    checked = 0
    for action in random_actions(40, 4, seed=5):
        obs, reward, term, trunc, info = env.step(torch.as_tensor(action))
        assert keys <= set(info)
        d = info["distance_to_goal"]
        expected = prev - d - cfg.time_penalty + cfg.success_reward * info["success"].float()
        ok = ~resetting
        assert torch.allclose(reward[ok], expected[ok], atol=1e-5), (reward, expected)
        assert (reward[resetting] == 0).all()
        for key in ("spl", "soft_spl"):
            assert ((info[key] >= 0) & (info[key] <= 1)).all(), key
        assert torch.equal(info["success"], info["success"] & term)  # success only on STOP
        assert torch.isfinite(d).all() and (d >= 0).all()
        checked += int(ok.sum())
        prev = d.clone()
        resetting = term | trunc
    assert checked > 100


def test_pointnav_distance_is_the_straight_line_where_the_goal_is_in_sight():
    # The success test reads the geodesic distance. Where the straight path to the goal is free it must be that
    # path's length (the grid field alone over-estimates near the goal and failed STOPs made inside the radius);
    # where a wall is in the way it stays the grid field, longer than the straight line.
    env = shared_env(num_envs=64, task="pointnav")
    env.reset(seed=3)
    task, nav = env.task, env.navigation
    scene = env.scene_index.long()
    gen = torch.Generator().manual_seed(0)
    fields, rows = task.fields.flatten(0, 1), task.field_rows()
    seen = {"in_sight": 0, "near_radius": 0, "blocked": 0}
    for _ in range(20):
        radius = torch.rand(64, generator=gen) * 1.5
        angle = torch.rand(64, generator=gen) * 2 * math.pi
        position = task.goal.clone()
        position[:, 0] += radius * torch.cos(angle)
        position[:, 2] += radius * torch.sin(angle)
        on_free = nav.is_free(scene, position[:, 0], position[:, 2])
        fine = torch.linspace(0.0, 1.0, 601)  # a finer line-of-sight test than the task's
        in_sight = on_free & nav.segment_free(scene, position, task.goal, fine)
        straight = (task.goal - position)[:, [0, 2]].norm(dim=1)
        distance = task._geodesic(position)
        field = nav.interpolate_field(fields, rows, scene, position)
        assert torch.allclose(distance[in_sight], straight[in_sight], atol=1e-5)
        blocked = on_free & ~in_sight & torch.isfinite(field)
        assert torch.equal(distance[blocked], field[blocked])
        assert (distance[blocked] > straight[blocked]).all()
        seen["in_sight"] += int(in_sight.sum())
        seen["near_radius"] += int((in_sight & (straight > 0.15) & (straight <= 0.2) & (field > 0.2)).sum())
        seen["blocked"] += int(blocked.sum())
    # The sample covers the case the fix is for: in sight, inside the radius, but the field says outside.
    assert seen["in_sight"] > 300 and seen["near_radius"] > 0 and seen["blocked"] > 10, seen


def test_explore_info_coverage_monotone():
    env = shared_env(num_envs=4, task="explore", max_episode_steps=15)
    obs, info = env.reset(seed=8)
    assert {"coverage", "collisions", "success"} <= set(info)
    assert "pointgoal" not in obs
    prev = info["coverage"].clone()
    resetting = torch.zeros(4, dtype=torch.bool)
    grew = False
    for action in random_actions(40, 4, seed=6):
        obs, reward, term, trunc, info = env.step(torch.as_tensor(action))
        cov = info["coverage"]
        assert ((cov >= 0) & (cov <= 1)).all()
        ok = ~resetting
        assert (cov[ok] >= prev[ok]).all(), (cov, prev)
        assert (reward[ok] >= -env.config.time_penalty - 1e-6).all()
        grew |= bool((cov[ok] > prev[ok]).any())
        prev = cov.clone()
        resetting = term | trunc
    assert grew


def test_collisions_and_path_length():
    env = shared_env(num_envs=1, task="pointnav")
    step_len = env.config.forward_step
    env.reset(seed=2)
    total = 0.0
    collided = moved = 0
    for _ in range(60):
        pos, yaw, coll = env.position.clone(), env.yaw.clone(), env.collisions.clone()
        env.step(torch.tensor([1]))
        assert bool(env.navigation.is_free(env.scene_index.long(), env.position[:, 0], env.position[:, 2])[0])
        assert torch.equal(env.yaw, yaw)
        delta = env.position - pos
        if int(env.collisions[0]) == int(coll[0]) + 1:
            collided += 1
            assert torch.equal(env.position, pos)  # a blocked move does not move at all
        else:
            assert int(env.collisions[0]) == int(coll[0])
            moved += 1
            expected = torch.tensor([-math.sin(float(yaw[0])), 0.0, math.cos(float(yaw[0]))]) * step_len
            assert torch.allclose(delta[0], expected, atol=1e-5), (delta, expected)
        total += float(delta[0, [0, 2]].norm())
        assert float(env.path_length[0]) == pytest.approx(total, abs=1e-4)
    assert collided > 0 and moved > 0


def test_sliding_along_obstacles():
    # Walking forward at a slant: without sliding a blocked move does not move; with allow_sliding it keeps
    # the free axis-aligned part of the move (still a collision), so the agent gets farther along the wall.
    travelled = {}
    for sliding in (False, True):
        env = WorldFMVectorEnv(num_envs=1, **SMALL, task="pointnav", allow_sliding=sliding)
        env.reset(seed=2)
        env.yaw.fill_(0.4)  # not a multiple of 90 degrees: moves have both x and z parts
        slid = 0
        for _ in range(60):
            pos, coll = env.position.clone(), int(env.collisions[0])
            length = float(env.path_length[0])
            env.step(torch.tensor([1]))
            assert bool(env.navigation.is_free(env.scene_index.long(), env.position[:, 0], env.position[:, 2])[0])
            delta = (env.position - pos)[0]
            intended = torch.tensor([-math.sin(0.4), 0.0, math.cos(0.4)]) * env.config.forward_step
            if int(env.collisions[0]) == coll + 1 and bool(delta.abs().sum() > 0):
                assert sliding
                slid += 1
                axis = 0 if float(delta[0].abs()) > 0 else 2
                assert float(delta[2 - axis]) == 0.0 and float(delta[1]) == 0.0  # one axis only
                assert float(delta[axis]) == pytest.approx(float(intended[axis]), abs=1e-5)
            assert float(env.path_length[0]) == pytest.approx(length + float(delta[[0, 2]].norm()), abs=1e-5)
        assert (slid > 0) == sliding
        travelled[sliding] = float(env.path_length[0])
        env.close()
    assert travelled[True] > travelled[False]
    with pytest.raises(ValueError, match="allow_sliding"):
        WorldFMVectorEnv(num_envs=1, **SMALL, allow_sliding="yes")


def test_pose_conventions():
    env = shared_env(num_envs=1, task="pointnav")
    cfg = env.config
    env.reset(seed=4)

    def wrap(a: float) -> float:
        return (a + math.pi) % (2 * math.pi) - math.pi

    yaw0, goal0 = float(env.yaw[0]), env._last_obs["pointgoal"][0].clone()
    obs, *_ = env.step(torch.tensor([2]))
    assert wrap(float(env.yaw[0]) - yaw0) == pytest.approx(math.radians(cfg.turn_angle_deg), abs=1e-5)
    # Turning left moves the goal to the right in the agent frame: its angle (left positive) drops.
    assert float(obs["pointgoal"][0, 0]) == pytest.approx(float(goal0[0]), abs=1e-5)
    assert wrap(float(obs["pointgoal"][0, 1] - goal0[1])) == pytest.approx(-math.radians(cfg.turn_angle_deg), abs=1e-4)
    env.step(torch.tensor([3]))
    env.step(torch.tensor([3]))
    assert wrap(float(env.yaw[0]) - yaw0) == pytest.approx(-math.radians(cfg.turn_angle_deg), abs=1e-5)
    pitches = []
    for _ in range(5):
        env.step(torch.tensor([4]))
        pitches.append(math.degrees(float(env.pitch[0])))
    assert pitches == pytest.approx([15, 30, 45, 45, 45], abs=1e-4)
    for _ in range(8):
        env.step(torch.tensor([5]))
    assert math.degrees(float(env.pitch[0])) == pytest.approx(-cfg.max_pitch_deg, abs=1e-4)
    # Looking never moves the agent; the camera pose follows the state (yaw left, pitch down -> +y).
    c2w = env.camera_poses()[0]
    fwd = c2w[:3, 2]
    yaw, pitch = float(env.yaw[0]), float(env.pitch[0])
    expected = torch.tensor([-math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    assert torch.allclose(fwd, expected, atol=1e-5)


def test_shortest_path_policy_succeeds():
    env = WorldFMVectorEnv(num_envs=8, max_episode_steps=300, **small(renderer="oracle"))
    policy = ShortestPathPolicy(env)
    env.reset(seed=0)
    start = env.task.start_distance.clone()
    assert (start >= env.config.min_goal_distance - 1e-3).all()
    first: dict[int, tuple[bool, float]] = {}
    for _ in range(300):
        _, _, term, trunc, info = env.step(policy())
        for i in torch.nonzero(term | trunc).flatten().tolist():
            first.setdefault(i, (bool(info["success"][i]), float(info["spl"][i])))
        if len(first) == env.num_envs:
            break
    assert len(first) == env.num_envs
    success = np.mean([s for s, _ in first.values()])
    spl = np.mean([p for _, p in first.values()])
    assert success >= 0.9, first
    assert spl > 0.5, first


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

BAD_DISCRETE = {
    "six": [6, 0],
    "minus-one": [-1, 0],
    "fraction": [0.5, 1.0],
    "nan": [float("nan"), 1.0],
    "bool": [True, False],
    "shape-2x1": [[1], [2]],
    "shape-3": [1, 2, 3],
    "scalar": 1,
    "string": [1, "forward"],
    "none": [1, None],
}


@pytest.mark.parametrize("actions", list(BAD_DISCRETE.values()), ids=list(BAD_DISCRETE))
def test_bad_discrete_actions(actions):
    env = shared_env(num_envs=2, task="pointnav")
    env.reset(seed=3)
    env.step(torch.tensor([1, 2]))
    before = state(env)
    with pytest.raises(ValueError, match="actions"):
        env.step(actions)
    assert_state_equal(before, state(env))
    env.step(torch.tensor([2, 2]))  # still usable
    assert int(env.elapsed_steps[0]) == int(before["elapsed_steps"][0]) + 1


BAD_CONTINUOUS = {
    "nan": [[float("nan"), 0, 0, 0], [0, 0, 0, 0]],
    "inf": [[0, 0, float("inf"), 0], [0, 0, 0, 0]],
    "above": [[1.5, 0, 0, 0], [0, 0, 0, 0]],
    "below": [[0, 0, 0, 0], [0, -1.01, 0, 0]],
    "shape-2x3": [[0, 0, 0], [0, 0, 0]],
    "shape-4": [0, 0, 0, 0],
}


@pytest.mark.parametrize("actions", list(BAD_CONTINUOUS.values()), ids=list(BAD_CONTINUOUS))
def test_bad_continuous_actions(actions):
    env = shared_env(num_envs=2, task="pointnav", action_type="continuous")
    env.reset(seed=3)
    env.step(torch.full((2, 4), 0.5))
    before = state(env)
    with pytest.raises(ValueError, match="actions"):
        env.step(np.asarray(actions, dtype=np.float32))
    assert_state_equal(before, state(env))


@pytest.mark.parametrize(
    "action_type, action",
    [
        ("discrete", 6),
        ("discrete", -1),
        ("discrete", [1, 2]),
        ("discrete", 2.5),
        ("continuous", [0.0, 0.0, 2.0, 0.0]),
        ("continuous", [float("nan")] * 4),
        ("continuous", [0.0, 0.0]),
    ],
)
def test_bad_action_single_env(action_type, action):
    env = gym.make(POINTNAV, **SMALL, action_type=action_type).unwrapped
    env.reset(seed=0)
    core = env.vector_env
    before = state(core)
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    assert_state_equal(before, state(core))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(renderer="nerf"), "renderer"),
        (dict(task="objectnav"), "task"),
        (dict(action_type="joystick"), "action_type"),
        (dict(resolution=0), "resolution"),
        (dict(resolution=(32,)), "resolution"),
        (dict(resolution="32"), "resolution"),
        (dict(resolution=(32, 32.5)), "resolution"),
        (dict(resolution=True), "resolution"),
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(scenes="procedural:nosuchsplit"), "scenes"),
        (dict(scenes="procedural:train:zero"), "scenes"),
        (dict(scenes=[]), "scenes"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldFMVectorEnv(num_envs=1, **{**SMALL, **kwargs})


def test_bad_config_through_gym_make():
    with pytest.raises(ValueError, match="renderer"):
        gym.make(POINTNAV, **small(renderer="nerf"))
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(POINTNAV, num_envs=0, vectorization_mode="vector_entry_point", **SMALL)


def test_unknown_kwarg_suggests_close_matches():
    with pytest.raises(ValueError) as err:
        WorldFMVectorEnv(num_envs=1, **SMALL, max_episode_step=5)
    msg = str(err.value)
    assert "'max_episode_step'" in msg and "did you mean" in msg and "'max_episode_steps'" in msg
    with pytest.raises(ValueError, match="render_mod"):
        gym.make(POINTNAV, **SMALL, render_mod="rgb_array")


def test_missing_scene_file(tmp_path):
    missing = tmp_path / "no_such_scene.wfscene"
    with pytest.raises(ValueError, match=r"scenes=.*no such file"):
        WorldFMVectorEnv(num_envs=1, **{**SMALL, "scenes": str(missing)})


def _room_ply(path) -> None:
    """A small square room point cloud (floor y = 0, walls 2.5 m high) written as PLY."""
    from worldfm_env.scenes.sources.ply import save_ply

    half, step = 1.5, 0.05
    s = np.arange(-half, half + 1e-6, step)
    fx, fz = np.meshgrid(s, s, indexing="ij")
    floor = np.stack([fx.ravel(), np.zeros(fx.size), fz.ravel()], 1)
    a, y = np.meshgrid(s, -np.arange(0.0, 2.5 + 1e-6, step), indexing="ij")
    a, y = a.ravel(), y.ravel()
    walls = [np.stack([np.full_like(a, c), y, a], 1) for c in (-half, half)]
    walls += [np.stack([a, y, np.full_like(a, c)], 1) for c in (-half, half)]
    xyz = np.concatenate([floor, *walls]).astype(np.float32)
    rgb = np.random.default_rng(0).integers(0, 256, size=xyz.shape, dtype=np.uint8)
    save_ply(path, xyz, rgb)


def test_oracle_needs_a_mesh(tmp_path):
    from worldfm_env.scenes.sources.ply import load_ply_scene

    path = tmp_path / "room.ply"
    _room_ply(path)
    assert load_ply_scene(path, bank_positions=2, bank_yaws=2, bank_resolution=(16, 16)).mesh is None
    with pytest.raises(ValueError, match=r"oracle.*mesh"):
        WorldFMVectorEnv(num_envs=1, **{**SMALL, "scenes": [str(path)], "renderer": "oracle"})
    # The same scene works with the anchor renderer: the error is about the mesh, not the file.
    env = WorldFMVectorEnv(num_envs=1, **{**SMALL, "scenes": [str(path)], "renderer": "anchor", "task": "explore"})
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].any()


def test_worldfm_renderer_without_weights_says_so():
    with pytest.raises(
        ValueError,
        match=r"renderer='worldfm' \(the default renderer\) has no frame model for "
        r"resolution 32x32: this package ships models for \['64x64'\]",
    ) as err:
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"))
    assert "weights=PATH" in str(err.value) and "renderer='anchor'" in str(err.value)
    with pytest.raises(ValueError, match="no frame model for resolution 48x64"):
        WorldFMVectorEnv(
            num_envs=1, **{k: v for k, v in SMALL.items() if k not in ("renderer", "resolution")}, resolution=(48, 64)
        )
    with pytest.raises(ValueError, match="no such checkpoint"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights="missing.safetensors")


def test_unknown_weights_fail_in_the_config_naming_the_shipped_models():
    """The config resolves ``weights=`` itself, so a typo fails before any scene is built or model loaded."""
    with pytest.raises(ValueError, match=r"weights='worldfm-srd-64': no such checkpoint file.*'worldfm-srd-64x64'"):
        EnvConfig(weights="worldfm-srd-64")
    assert EnvConfig(weights="worldfm-srd-64x64").weights == "worldfm-srd-64x64"  # a shipped name is kept as given


def test_stop_on_the_last_step_is_terminated_and_truncated():
    """Like Gymnasium's TimeLimit: the time limit truncates even when the same step terminates."""
    env = WorldFMVectorEnv(num_envs=2, **SMALL, max_episode_steps=3)
    env.reset(seed=0)
    for _ in range(2):
        env.step(torch.tensor([2, 2]))
    _, _, term, trunc, _ = env.step(torch.tensor([0, 2]))
    assert term.tolist() == [True, False] and trunc.tolist() == [True, True]


def test_single_env_rejects_vector_only_options():
    for key, value in (("autoreset_mode", "same_step"), ("array_type", "numpy")):
        with pytest.raises(ValueError, match=key):
            WorldFMEnv(**SMALL, **{key: value})


def test_reset_mask_option_info_masks_and_none_seeds():
    env = WorldFMVectorEnv(num_envs=3, **SMALL)
    env.reset(seed=[5, 6, 7])
    for _ in range(3):
        env.step(torch.tensor([1, 2, 3]))
    before = env.position.clone()
    mask = np.array([False, True, False])
    _, infos = env.reset(seed=[None, 40, None], options={"reset_mask": mask})
    assert infos["_success"].tolist() == [False, True, False]
    assert torch.equal(env.position[[0, 2]], before[[0, 2]])
    assert env.seeds.tolist() == [5, 40, 7] and env.elapsed_steps.tolist()[1] == 0
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": [1, 0, 1]})
    with pytest.raises(ValueError, match="env_idx.*reset_mask|reset_mask.*env_idx"):
        env.reset(options={"env_idx": [0], "reset_mask": mask})


def test_scene_index_reset_option():
    env = WorldFMVectorEnv(num_envs=4, **{**SMALL, "scenes": "procedural:train:2"})
    env.reset(seed=0, options={"scene_index": 1})
    assert env.scene_index.tolist() == [1, 1, 1, 1]
    env.reset(seed=0, options={"scene_index": [0, 1, 0, 1]})
    assert env.scene_index.tolist() == [0, 1, 0, 1]
    free = env.navigation.is_free(env.scene_index.long(), env.position[:, 0:1], env.position[:, 2:3])
    assert bool(free.all())
    with pytest.raises(ValueError, match="scene_index"):
        env.reset(options={"scene_index": 2})


def test_non_finite_actions_without_validation_are_blocked():
    env = WorldFMVectorEnv(num_envs=2, **SMALL, action_type="continuous", validate_actions=False)
    env.reset(seed=0)
    before = env.position.clone()
    env.step(torch.tensor([[float("nan"), 0.0, float("nan"), 0.0], [1.0, 0.0, 0.0, 0.0]]))
    assert torch.isfinite(env.position).all() and torch.isfinite(env.yaw).all()
    assert torch.equal(env.position[0], before[0]) and int(env.collisions[0]) == 1
    sliding = WorldFMVectorEnv(
        num_envs=1, **SMALL, action_type="continuous", validate_actions=False, allow_sliding=True
    )
    sliding.reset(seed=0)
    before = sliding.position.clone()
    sliding.step(torch.tensor([[float("nan"), float("inf"), 0.0, 0.0]]))
    assert torch.equal(sliding.position, before) and int(sliding.collisions[0]) == 1


def test_gym_make_time_limit_above_the_default_is_honoured():
    env = gym.make("WorldFM/Explore-v0", **SMALL, max_episode_steps=520)
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(2)
        steps += 1
        assert not terminated
    assert steps == 520


def test_first_reset_with_none_seeds_draws_fresh_ones():
    env = WorldFMVectorEnv(num_envs=3, **SMALL)
    env.reset(seed=[None, 5, None])
    seeds = env.seeds.tolist()
    assert seeds[1] == 5 and seeds[0] != seeds[2] and 0 not in (seeds[0], seeds[2])
