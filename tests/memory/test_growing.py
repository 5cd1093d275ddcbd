"""memory="grow": generated pixels written back into each env's memory, on every client of the env."""

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import small
from gymnasium.utils.env_checker import check_env

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.geometry import pose_from_yaw_pitch
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.pool import ScenePool

GROW = small(renderer="oracle", memory="grow", memory_capacity=4096)


@pytest.fixture(scope="module")
def pool():
    scenes = resolve_scenes("procedural:train:1", torch.device("cpu"), (32, 32), 90.0)
    return ScenePool(scenes, torch.device("cpu"))


def _poses(pool, n=2, yaw_offset=1.3):
    """Poses at bank capture points turned away from the bank's headings (the anchor has holes there)."""
    rows = torch.arange(n) * 3
    c2w = pool.bank_c2w[rows].clone()
    yaw = torch.atan2(c2w[:, 0, 2], c2w[:, 2, 2]) + yaw_offset
    return pose_from_yaw_pitch(c2w[:, :3, 3], yaw, torch.full((n,), 0.35))


def test_growth_writes_only_empty_pixels_and_never_touches_captured_points(pool):
    points_before = pool.points.points_xyz.clone(), pool.points.points_rgb.clone()
    static = ObservationPipeline(pool, 2, 32, 32, renderer="oracle", with_anchor=True)
    grow = ObservationPipeline(pool, 2, 32, 32, renderer="oracle", memory="grow", memory_capacity=4096)
    scene = torch.zeros(2, dtype=torch.int32)
    c2w = _poses(pool)
    first = static.render(scene, c2w)
    hole = ~first.anchor.mask.clone()
    assert bool(hole.any()), "the test poses must leave empty anchor pixels"
    grow.render(scene, c2w)
    memory = grow.memory
    # One view per env holding exactly the empty pixels (the oracle's depth is known everywhere).
    assert memory.stats()["memory_views"].tolist() == [1, 1]
    assert memory.stats()["memory_points"].tolist() == hole.flatten(1).sum(1).tolist()
    # Its points project back onto exactly those pixels.
    for env in range(2):
        xyz, _ = memory.grown_points(env)
        w2c = torch.linalg.inv(c2w[env])
        cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
        uv = cam @ grow.K[env].T
        px = (uv[:, :2] / uv[:, 2:]).floor().long()
        hit = torch.zeros(32, 32, dtype=torch.bool)
        hit[px[:, 1], px[:, 0]] = True
        assert torch.equal(hit, hole[env])
    # Rendered again at the same poses: captured pixels exactly as before, the holes now filled by grown points
    # that match the ground truth there; the scene's points are untouched.
    again = grow.render(scene, c2w)
    covered = first.anchor.mask
    assert torch.equal(again.anchor.rgb[covered], first.anchor.rgb[covered])
    assert bool(again.anchor.mask.all())
    assert torch.equal(again.anchor.grown, hole)
    assert torch.equal(again.anchor.rgb[hole], again.rgb[hole])
    assert torch.equal(pool.points.points_xyz, points_before[0])
    assert torch.equal(pool.points.points_rgb, points_before[1])
    # Nothing new to write at the same pose (no empty pixel left): still one view each.
    assert memory.stats()["memory_views"].tolist() == [1, 1]


def test_capacity_overwrites_the_oldest_points_and_views_first(pool):
    grow = ObservationPipeline(pool, 1, 32, 32, renderer="oracle", memory="grow", memory_capacity=512)
    memory = grow.memory
    assert memory.capacity == 512 and memory.num_views == 16
    scene = torch.zeros(1, dtype=torch.int32)
    frames = []  # (pose, points written) per frame that wrote
    for k in range(20):
        c2w = _poses(pool, 1, yaw_offset=0.9 + 0.4 * k)
        before = int(memory.next_point[0])
        grow.render(scene, c2w)
        written = int(memory.next_point[0]) - before
        if written:
            frames.append((c2w[0], written, memory.grown_points(0)[0].clone()))
    total = int(memory.next_point[0])
    assert total > 512 + frames[0][1], "the test needs more points written than the capacity"
    assert int(memory.stats()["memory_points"][0]) == 512
    held = {tuple(p) for p in memory.grown_points(0)[0].tolist()}
    # The newest frame's points are all held (unless it alone overflows the ring); the first frame's are gone.
    newest_pose, newest_count, _ = frames[-1]
    ring = memory.views.xyz[:512]
    slots = [(int(memory.next_point[0]) - newest_count + i) % 512 for i in range(min(newest_count, 512))]
    assert all(tuple(ring[i].tolist()) in held for i in slots)
    first_points = frames[0][2]
    assert not any(tuple(p) in held for p in first_points.tolist())
    # Views: the 16 latest frames that wrote, the older replaced.
    assert int(memory.stats()["memory_views"][0]) == min(16, len(frames))
    kept = memory.views.c2w[:16]
    for pose, _, _ in frames[-16:]:
        assert any(torch.allclose(pose, row) for row in kept)
    for pose, _, _ in frames[:-16]:
        assert not any(torch.allclose(pose, row) for row in kept)


def test_grown_view_wins_the_reference_vote_at_a_revisit(pool):
    grow = ObservationPipeline(pool, 1, 32, 32, renderer="oracle", memory="grow", memory_capacity=4096)
    scene = torch.zeros(1, dtype=torch.int32)
    c2w = _poses(pool, 1)
    grow.render(scene, c2w)
    again = grow.render(scene, c2w)
    assert int(again.reference_index[0]) >= pool.bank_c2w.shape[0]  # a grown view of this pose


def _walk_out_and_back(env):
    """Turn in place (new frames) then turn back: the first pose is revisited by the way back."""
    actions = [2] * 6 + [3] * 6
    for a in actions:
        env.step(np.full(env.num_envs, a))


def test_revisit_renders_grown_points_in_the_anchor():
    env = WorldFMVectorEnv(num_envs=2, include_depth=True, **GROW)
    env.reset(seed=3)
    first = env.pipeline.last_request.anchor.mask.clone()
    _walk_out_and_back(env)
    revisit = env.pipeline.last_request.anchor
    assert bool((revisit.grown & ~first).any())
    assert int(revisit.mask.sum()) > int(first.sum())
    env.close()


def test_partial_reset_clears_only_the_chosen_envs_and_info_reports_memory():
    env = WorldFMVectorEnv(num_envs=3, **GROW)
    _, info = env.reset(seed=0)
    assert set(info) >= {"memory_points", "memory_views"}
    for _ in range(4):
        _, _, _, _, info = env.step(np.array([2, 2, 2]))
    held = info["memory_points"].clone()
    assert bool((held > 0).all())
    _, info = env.reset(options={"env_idx": [1]})
    after = env.memory.stats()
    assert after["memory_points"][0] == held[0] and after["memory_points"][2] == held[2]
    # env 1 holds only its new episode's first frame
    assert int(after["memory_views"][1]) <= 1
    env.close()


def test_keep_memory_on_reset_keeps_it_in_the_same_scene():
    env = WorldFMVectorEnv(num_envs=1, keep_memory_on_reset=True, **{**GROW, "memory_capacity": 65536})
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.array([2]))
    held = int(env.memory.stats()["memory_points"][0])
    env.reset()  # one scene: the env stays in it
    assert int(env.memory.stats()["memory_points"][0]) >= held > 0
    env.close()


def test_pettingzoo_agents_share_one_growing_memory():
    from worldfm_env import parallel_env

    penv = parallel_env(num_agents=2, **{k: v for k, v in GROW.items()})
    penv.reset(seed=1)
    venv = penv.vector_env
    for _ in range(3):
        penv.step({"agent_0": 2, "agent_1": 1})
    stats = venv.memory.stats()
    assert stats["memory_points"][0] == stats["memory_points"][1] > 0
    # Put agent 1 where agent 0 stands: its anchor shows what agent 0 generated.
    venv.position[1] = venv.position[0]
    venv.yaw[1] = venv.yaw[0]
    venv.pitch[1] = venv.pitch[0]
    venv._observe(write_mask=torch.zeros(2, dtype=torch.bool))
    anchor = venv.pipeline.last_request.anchor
    assert bool(anchor.grown[1].any())
    assert torch.equal(anchor.rgb[1], anchor.rgb[0])
    penv.close()


def test_check_env_and_sb3_with_growing_memory():
    env = gym.make("WorldFM/PointNav-v0", **GROW)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()
    from worldfm_env import SB3VecEnv

    venv = SB3VecEnv(WorldFMVectorEnv(num_envs=2, autoreset_mode="same_step", max_episode_steps=2, **GROW))
    venv.reset()
    for _ in range(2):  # through a same-step autoreset (max_episode_steps=2)
        venv.step_async(np.array([1, 2]))
        _, _, dones, infos = venv.step_wait()
    assert "memory_points" in infos[0] and bool(dones.all())
    venv.close()


def test_pickle_and_deepcopy_keep_the_memory_and_continue_bit_for_bit():
    env = WorldFMVectorEnv(num_envs=2, **GROW)
    env.reset(seed=5)
    for _ in range(3):
        env.step(np.array([2, 3]))
    twins = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    for twin in twins:
        assert torch.equal(twin.memory.stats()["memory_points"], env.memory.stats()["memory_points"])
    expected = env.step(np.array([3, 2]))[0]["rgb"]
    for twin in twins:
        assert torch.equal(twin.step(np.array([3, 2]))[0]["rgb"], expected)
        assert torch.equal(twin.pipeline.last_request.anchor.rgb, env.pipeline.last_request.anchor.rgb)
        assert torch.equal(twin.pipeline.last_request.anchor.grown, env.pipeline.last_request.anchor.grown)
        twin.close()
    env.close()


def test_growing_memory_is_refused_for_the_anchor_renderer_and_bad_capacity():
    with pytest.raises(ValueError, match="renderer='anchor' generates none"):
        WorldFMVectorEnv(num_envs=1, **small(memory="grow"))
    with pytest.raises(ValueError, match="memory_capacity"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="oracle", memory="grow", memory_capacity=100))
    with pytest.raises(ValueError, match="memory"):
        WorldFMVectorEnv(num_envs=1, **small(memory="sometimes"))
    with pytest.raises(ValueError, match="memory_carve must be True or False"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="oracle", memory="grow", memory_carve="yes"))
    with pytest.raises(ValueError, match=r"memory_carve=True applies to memory='grow' only.*memory is 'static'"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="oracle", memory_carve=True))
    carving = WorldFMVectorEnv(num_envs=1, **small(renderer="oracle", memory="grow", memory_carve=True))
    assert carving.pipeline.memory_carve and carving.pipeline.free_space is not None
    carving.close()


def test_frame_model_reads_a_grown_view_as_its_reference():
    """With the shipped 64x64 model: a revisit's reference is the grown view, and its latents are the frame's."""
    env = WorldFMVectorEnv(num_envs=1, scenes="procedural:train:1", resolution=64, device="cpu", memory="grow")
    env.reset(seed=2)
    env.step(np.array([2]))
    env.step(np.array([3]))  # back to the start pose
    request = env.pipeline.last_request
    B = env.pool.bank_c2w.shape[0]
    ref = int(request.reference_index[0])
    assert ref >= B
    memory = env.memory
    expected = env.renderer.encode_reference(memory.images[ref - B : ref - B + 1])
    assert torch.equal(memory.latents[ref - B], expected[0])
    env.close()


def test_ten_thousand_steps_with_autoresets_do_not_grow_the_process():
    import resource

    env = WorldFMVectorEnv(num_envs=8, max_episode_steps=40, **{**GROW, "resolution": 16})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(250):  # warm-up: every ring full, allocator settled
        env.step(rng.integers(1, 4, size=8))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(1250):  # 10,000 env-steps, ~250 episodes
        env.step(rng.integers(1, 4, size=8))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20 * 1024, f"peak RSS grew by {grown_kib} KiB over 10k steps"
    env.close()


def test_render_cli_grows_the_trajectory_memory(tmp_path, monkeypatch):
    """`worldfm-env render --memory grow`: the trajectory writes its frames back, so later poses see them."""
    from scenes.test_sources import _write_meta

    from worldfm_env.model import build_model, save_checkpoint
    from worldfm_env.renderers import trajectory as trajectory_module
    from worldfm_env.scenes.sources.meta_json import load_meta_json_scene

    meta, *_ = _write_meta(tmp_path)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), weights)
    scene = load_meta_json_scene(str(meta), device="cpu", resolution=(32, 32))
    c2w, K = trajectory_module.trajectory_from_scene(scene, 32, 32)
    grown = []
    original = ObservationPipeline.render

    def recording(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        grown.append((self.memory.stats()["memory_points"].clone(), out.anchor.grown.clone()))
        return out

    monkeypatch.setattr(ObservationPipeline, "render", recording)
    frames = list(trajectory_module.render_trajectory(scene, c2w, K, 32, 32, weights=str(weights), memory="grow"))
    monkeypatch.undo()
    assert len(frames) == c2w.shape[0] == len(grown)
    points = [int(p[0]) for p, _ in grown]
    assert points == sorted(points) and points[-1] > 0  # the memory only grows along the trajectory
    assert any(bool(g.any()) for _, g in grown[1:])  # later frames show what earlier ones generated

    from worldfm_env.cli import main

    out = tmp_path / "grow.mp4"
    args = ["render", "--meta", str(meta), "--weights", str(weights), "--resolution", "32", "--device", "cpu"]
    assert main([*args, "--memory", "grow", "--out", str(out)]) == 0
    assert out.is_file()


def test_rollout_cli_with_growing_memory(capsys):
    from worldfm_env.cli import main

    args = ["rollout", "--renderer", "oracle", "--memory", "grow", "--num-envs", "2", "--steps", "5"]
    assert main([*args, "--scenes", "procedural:train:1", "--resolution", "32", "--device", "cpu"]) == 0
    assert "env-steps/s" in capsys.readouterr().out
