"""Tests of the scripts in ``agents/``: scripted agents, evaluation, and tiny PPO runs (torch and SB3)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# `agents/` is a top-level folder of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conftest import SMALL  # noqa: E402

from agents import evaluate, ppo_sb3, ppo_torch, scripted  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402

# Held-out episodes: a small procedural test split, tiny frames, CPU.
HELD_OUT = ["--scenes", "procedural:test:2", "--resolution", "32", "--device", "cpu"]
FINAL_LINE = re.compile(r"^success=[0-9.]+ spl=[0-9.]+ soft_spl=[0-9.]+$")


def _record_eval_envs(monkeypatch) -> list:
    """Make evaluate record the config of every env it builds; returns the list."""
    configs = []

    def recording_env(**kwargs):
        env = WorldFMVectorEnv(**kwargs)
        configs.append(env.config)
        return env

    monkeypatch.setattr(evaluate, "WorldFMVectorEnv", recording_env)
    return configs


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_shortest_path_solves_held_out_episodes(capsys, tmp_path):
    result = evaluate.main(
        [
            "--agent",
            "shortest-path",
            "--episodes",
            "20",
            "--num-envs",
            "10",
            "--renderer",
            "oracle",
            "--output-dir",
            str(tmp_path),
            "--videos",
            "1",
            *HELD_OUT,
        ]
    )
    line = _last_line(capsys.readouterr().out)
    assert FINAL_LINE.match(line), line
    assert result.summary["success"] >= 0.95, result.summary
    assert float(line.split()[0].split("=")[1]) == pytest.approx(result.summary["success"], abs=1e-4)
    assert 0.0 < result.summary["spl"] <= 1.0 and 0.0 < result.summary["soft_spl"] <= 1.0
    with open(tmp_path / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["episode"]) for r in rows] == list(range(20))
    assert {"success", "spl", "soft_spl", "distance_to_goal", "collisions", "steps"} <= set(rows[0])
    assert (tmp_path / "episode_000.mp4").stat().st_size > 0


def test_episode_set_does_not_depend_on_num_envs():
    def run(num_envs: int) -> list[tuple]:
        args = evaluate.Args(
            agent="shortest-path",
            episodes=5,
            num_envs=num_envs,
            scenes="procedural:test:2",
            resolution=32,
            device="cpu",
            output_dir=None,
        )
        return [(r["seed"], r["scene"], r["steps"], r["success"]) for r in evaluate.evaluate(args).episodes]

    assert run(5) == run(2)


def test_frontier_explores_faster_than_random():
    coverage = {}
    for name in ("frontier", "random"):
        env = WorldFMVectorEnv(num_envs=4, task="explore", **SMALL)
        agent = scripted.make_agent(name, env, seed=0)
        obs, _ = env.reset(seed=0)
        for _ in range(100):
            obs, _, terminated, truncated, info = env.step(agent(obs))
            assert not bool(terminated.any())  # neither agent takes STOP
        coverage[name] = info["coverage"]
    assert bool((coverage["frontier"] > coverage["random"]).all()), coverage
    assert float(coverage["frontier"].mean()) > 2 * float(coverage["random"].mean()), coverage


def test_make_agent_rejects_unknown_names():
    env = WorldFMVectorEnv(num_envs=1, **SMALL)
    with pytest.raises(ValueError, match="frontier"):
        scripted.make_agent("greedy", env)
    with pytest.raises(ValueError, match="explore"):
        scripted.make_agent("frontier", env)  # PointNav env


def test_ppo_torch_tiny_run_then_evaluate(capsys, tmp_path):
    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            "--total-timesteps",
            "128",
            "--num-envs",
            "4",
            "--num-steps",
            "16",
            "--update-epochs",
            "1",
            "--scenes",
            "procedural:train:1",
            "--resolution",
            "32",
            "--device",
            "cpu",
            "--save-path",
            str(checkpoint),
        ]
    )
    out = capsys.readouterr().out
    assert re.search(r"iter=2/2 global_step=128 env-steps/s=[\d,]+", out), out
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["args"]["resolution"] == 32 and "state_dict" in saved
    result = evaluate.main(
        ["--agent", f"ppo:{checkpoint}", "--episodes", "2", "--max-episode-steps", "20", "--output-dir", "", *HELD_OUT]
    )
    assert len(result.episodes) == 2
    assert FINAL_LINE.match(_last_line(capsys.readouterr().out))


def test_ppo_sb3_tiny_run_then_evaluate(capsys, tmp_path):
    policy = tmp_path / "policy.zip"
    ppo_sb3.main(
        [
            "--total-timesteps",
            "128",
            "--num-envs",
            "4",
            "--n-steps",
            "32",
            "--batch-size",
            "64",
            "--n-epochs",
            "1",
            "--scenes",
            "procedural:train:1",
            "--resolution",
            "32",
            "--env-device",
            "cpu",
            "--device",
            "cpu",
            "--verbose",
            "0",
            "--save-path",
            str(policy),
        ]
    )
    assert policy.stat().st_size > 0
    assert "env-steps/s" in capsys.readouterr().out
    result = evaluate.main(
        ["--agent", f"sb3:{policy}", "--episodes", "2", "--max-episode-steps", "20", "--output-dir", "", *HELD_OUT]
    )
    assert len(result.episodes) == 2
    assert FINAL_LINE.match(_last_line(capsys.readouterr().out))


def test_ppo_sb3_depth_is_a_fourth_channel_of_its_cnn(capsys, tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    policy = tmp_path / "policy.zip"
    ppo_sb3.main(
        [
            *["--total-timesteps", "64", "--num-envs", "2", "--n-steps", "32", "--batch-size", "64", "--n-epochs", "1"],
            *["--scenes", "procedural:train:1", "--resolution", "32", "--env-device", "cpu", "--device", "cpu"],
            *["--verbose", "0", "--include-depth", "--splat-radius", "auto", "--save-path", str(policy)],
        ]
    )
    model = PPO.load(policy, device="cpu")
    assert model.worldfm_env_settings == {"allow_sliding": False, "splat_radius": "auto"}  # saved with the zip
    extractor = model.policy.features_extractor
    assert "depth" in model.observation_space.spaces and "depth" not in extractor.extractors
    assert extractor.extractors["rgb"][0].in_channels == 4
    obs = {k: torch.as_tensor(v[None]).float() for k, v in model.observation_space.sample().items()}
    obs["rgb"] = obs["rgb"] / 255.0
    with torch.no_grad():
        near = extractor({**obs, "depth": torch.full_like(obs["depth"], 0.5)})
        far = extractor({**obs, "depth": torch.full_like(obs["depth"], 8.0)})
    assert not torch.allclose(near, far)
    # evaluate observes depth (the policy's observation space has it) and renders the zip's anchors.
    made = _record_eval_envs(monkeypatch)
    result = evaluate.main(
        ["--agent", f"sb3:{policy}", "--episodes", "2", "--max-episode-steps", "10", "--output-dir", "", *HELD_OUT]
    )
    assert len(result.episodes) == 2 and [(c.include_depth, c.splat_radius) for c in made] == [(True, "auto")]
    # Sampled actions repeat for a seed: the wrapper seeds SB3's generators.
    env = WorldFMVectorEnv(
        num_envs=4, scenes="procedural:test:1", resolution=32, device="cpu", include_depth=True, renderer="anchor"
    )
    obs, _ = env.reset(seed=0)

    def draws(seed: int) -> list[list[int]]:
        torch.manual_seed(123)  # whatever the global state was before
        sampler = evaluate.load_agent("sb3:unused", env, seed=seed, deterministic=False, loaded=model)
        return [sampler(obs).tolist() for _ in range(6)]

    first = draws(0)
    assert draws(0) == first and draws(1) != first  # 24 draws from a barely trained policy
    env.close()


def test_scripts_run_from_the_command_line():
    # As a user runs them (not as a package): `python agents/<name>.py --help`.
    for name in ("evaluate", "ppo_torch"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "agents" / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "--total-timesteps" in done.stdout or "--episodes" in done.stdout


@pytest.mark.parametrize("module", [scripted, ppo_sb3])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--seed" in capsys.readouterr().out


def _obs_space(resolution: int = 16):
    import numpy as np
    from gymnasium import spaces

    return spaces.Dict(
        {
            "rgb": spaces.Box(0, 255, (resolution, resolution, 3), dtype=np.uint8),
            "pointgoal": spaces.Box(-np.inf, np.inf, (2,), dtype=np.float32),
        }
    )


def _random_obs(generator: torch.Generator, *batch: int, resolution: int = 16) -> dict[str, torch.Tensor]:
    return {
        "rgb": torch.randint(0, 256, (*batch, resolution, resolution, 3), generator=generator, dtype=torch.uint8),
        "pointgoal": torch.rand(*batch, 2, generator=generator) * torch.tensor([5.0, 6.28]) - torch.tensor([0, 3.14]),
    }


def _rollout_and_replay(agent, obs: dict[str, torch.Tensor], firsts: torch.Tensor):
    """Act step by step over (T, M) observations from a fresh state, then replay the whole sequence with
    ``evaluate_sequence``: ((rollout log-probs, values), (replayed log-probs, values)), each flat (T*M,)."""
    T, M = firsts.shape
    state, prev = agent.initial_state(M), torch.zeros(M, dtype=torch.long)
    actions, prev_actions, logprobs, values = [], [], [], []
    with torch.no_grad():
        for t in range(T):
            prev_actions.append(prev)
            action, logprob, _, value, state = agent.act({k: v[t] for k, v in obs.items()}, state, prev, firsts[t])
            actions.append(action)
            logprobs.append(logprob)
            values.append(value)
            prev = action
        flat = {k: v.flatten(0, 1) for k, v in obs.items()}
        logprob_r, _, value_r = agent.evaluate_sequence(
            flat, agent.initial_state(M), torch.stack(prev_actions), firsts, torch.stack(actions)
        )
    return (torch.stack(logprobs).flatten(), torch.stack(values).flatten()), (logprob_r, value_r)


def test_recurrent_replay_reproduces_the_rollout():
    # The update replays whole sequences from the rollout's start state: before any gradient step the
    # replayed log-probs and values must equal those of the step-by-step rollout (ratio exactly 1),
    # episode boundaries (firsts) included.
    torch.manual_seed(0)
    agent = ppo_torch.Agent(_obs_space(), num_actions=4, hidden_size=32, recurrent=True).eval()
    g = torch.Generator().manual_seed(1)
    T, M = 7, 3
    obs = _random_obs(g, T, M)
    firsts = torch.zeros(T, M, dtype=torch.bool)
    firsts[0, :] = True
    firsts[3, 1] = True  # env 1 starts a new episode mid-rollout
    rollout, replayed = _rollout_and_replay(agent, obs, firsts)
    for step, again in zip(rollout, replayed, strict=True):  # log-probs, then values
        torch.testing.assert_close(again, step, rtol=1e-5, atol=1e-6)


def test_recurrent_state_resets_at_episode_start_and_carries_otherwise():
    torch.manual_seed(0)
    agent = ppo_torch.Agent(_obs_space(), num_actions=4, hidden_size=32, recurrent=True).eval()
    obs = _random_obs(torch.Generator().manual_seed(2), 2)
    stale = torch.randn(2, 32)
    with torch.no_grad():
        first, later = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
        fresh_logits, _ = agent.logits(obs, agent.initial_state(2), torch.tensor([0, 0]), first)
        reset_logits, _ = agent.logits(obs, stale, torch.tensor([1, 2]), first)
        carried_logits, _ = agent.logits(obs, stale, torch.tensor([1, 2]), later)
    torch.testing.assert_close(reset_logits, fresh_logits)  # stale state and previous action ignored
    assert not torch.allclose(carried_logits, fresh_logits)  # ... but used within an episode
    feed_forward = ppo_torch.Agent(_obs_space(), num_actions=4, hidden_size=32, recurrent=False)
    assert feed_forward.initial_state(5).shape == (5, 0)


def test_action_sets():
    assert ppo_torch.action_ids_for("nav", 6) == [0, 1, 2, 3]
    assert ppo_torch.action_ids_for("all", 6) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="actions='walk'.*'all', 'nav'"):
        ppo_torch.action_ids_for("walk", 6)


@pytest.mark.parametrize(
    ("flags", "expected_ids", "recurrent"),
    [(["--actions", "nav"], [0, 1, 2, 3], True), (["--no-recurrent", "--actions", "all"], list(range(6)), False)],
)
def test_ppo_torch_layouts_train_save_and_evaluate(tmp_path, flags, expected_ids, recurrent):
    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            *["--total-timesteps", "96", "--num-envs", "3", "--num-steps", "16", "--num-minibatches", "2"],
            *["--hidden-size", "32", "--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu"],
            *["--max-episode-steps", "10", "--save-path", str(checkpoint), *flags],
        ]
    )
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["action_ids"] == expected_ids and saved["model_kwargs"]["recurrent"] is recurrent
    env = WorldFMVectorEnv(
        num_envs=3, scenes="procedural:test:1", resolution=16, device="cpu", max_episode_steps=8, renderer="anchor"
    )
    agent = evaluate.load_agent(f"ppo:{checkpoint}", env, deterministic=False, loaded=saved)
    obs, _ = env.reset(seed=0)
    agent.reset()
    issued = set()
    for _ in range(8):
        actions = agent(obs)
        issued.update(actions.tolist())
        obs, *_ = env.step(actions)
    assert issued <= set(expected_ids)
    env.close()


def test_goal_encoding_adds_a_near_goal_distance_and_travels_with_the_checkpoint(tmp_path):
    pointgoal = torch.tensor([[0.19, 0.3], [0.22, -1.0], [2.0, 3.0]])
    plain = ppo_torch.Agent(_obs_space(), num_actions=4, hidden_size=32)
    near = ppo_torch.Agent(_obs_space(), num_actions=4, hidden_size=32, goal_encoding="log+near")
    rho, phi = pointgoal[:, 0], pointgoal[:, 1]
    expected = torch.stack([torch.log1p(rho), torch.cos(phi), torch.sin(phi)], dim=-1)
    torch.testing.assert_close(plain.goal_features(pointgoal), expected)
    torch.testing.assert_close(near.goal_features(pointgoal)[:, :3], expected)
    torch.testing.assert_close(near.goal_features(pointgoal)[:, 3], torch.tensor([0.38, 0.44, 1.0]))
    assert (plain.mlp[0].in_features, near.mlp[0].in_features) == (3, 4)
    with pytest.raises(ValueError, match="goal_encoding='exp' is not valid; use one of \\['log', 'log\\+near'\\]"):
        ppo_torch.Agent(_obs_space(), num_actions=4, goal_encoding="exp")
    with pytest.raises(ValueError, match="goal_encoding='exp'"):
        ppo_torch.main(["--goal-encoding", "exp", "--device", "cpu"])
    # The training script's default (the Agent's own stays "log": checkpoints from before the key load as
    # trained); the checkpoint records it and evaluate builds the same network.
    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            *["--total-timesteps", "48", "--num-envs", "3", "--num-steps", "16", "--hidden-size", "32"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu", "--max-episode-steps", "10"],
            *["--save-path", str(checkpoint)],
        ]
    )
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["model_kwargs"]["goal_encoding"] == "log+near"
    env = WorldFMVectorEnv(num_envs=2, scenes="procedural:test:1", resolution=16, device="cpu", renderer="anchor")
    loaded = evaluate.load_agent(f"ppo:{checkpoint}", env, loaded=saved)
    assert loaded.model.goal_encoding == "log+near"
    obs, _ = env.reset(seed=0)
    assert loaded(obs).shape == (2,)
    env.close()


def test_evaluate_reads_checkpoints_without_action_ids(tmp_path):
    # Checkpoints written before action sets existed chose among every env action, feed-forward.
    env = WorldFMVectorEnv(num_envs=2, scenes="procedural:test:1", resolution=16, device="cpu", renderer="anchor")
    agent = ppo_torch.Agent(env.single_observation_space, 6, hidden_size=32)
    old = {"state_dict": agent.state_dict(), "model_kwargs": {"hidden_size": 32}, "args": {}}
    loaded = evaluate.load_agent("ppo:unused", env, loaded=old)
    obs, _ = env.reset(seed=0)
    expected = agent.actor(agent.encode(obs)).argmax(-1)
    assert torch.equal(loaded(obs), expected)
    env.close()


def test_sampled_ppo_actions_repeat_for_a_seed():
    env = WorldFMVectorEnv(num_envs=4, scenes="procedural:test:1", resolution=16, device="cpu", renderer="anchor")
    torch.manual_seed(0)
    agent = ppo_torch.Agent(env.single_observation_space, 6, hidden_size=32)
    saved = {"state_dict": agent.state_dict(), "model_kwargs": {"hidden_size": 32}, "args": {}}
    obs, _ = env.reset(seed=0)

    def draws(seed: int) -> list[list[int]]:
        sampler = evaluate.load_agent("ppo:unused", env, seed=seed, deterministic=False, loaded=saved)
        torch.manual_seed(123)  # the global generator must not matter
        return [sampler(obs).tolist() for _ in range(6)]

    first = draws(0)
    assert draws(0) == first
    assert draws(1) != first  # 24 draws from an untrained policy over 6 actions
    assert len({a for step in first for a in step}) > 1  # it samples: not always the most likely action
    env.close()


def test_encoder_precision_choices():
    from worldfm_env.model.frame_model import auto_model_dtype

    assert ppo_torch.encoder_dtype("float32", "cpu") is None
    assert ppo_torch.encoder_dtype("bfloat16", "cpu") is torch.bfloat16
    fast_bf16 = auto_model_dtype(torch.device("cpu")) == torch.bfloat16
    assert ppo_torch.encoder_dtype("auto", "cpu") is (torch.bfloat16 if fast_bf16 else None)
    with pytest.raises(ValueError, match="precision='half'.*'auto', 'bfloat16', 'float32'"):
        ppo_torch.encoder_dtype("half", "cpu")
    with pytest.raises(ValueError, match="precision='fp8'"):
        ppo_torch.main(["--precision", "fp8", "--device", "cpu"])


def test_bfloat16_encoder_tracks_float32_and_replays_the_rollout():
    # The bf16 encoder returns float32 features close to the float32 ones; the GRU and heads stay float32,
    # and the update's replay still reproduces the rollout (same autocast in both).
    torch.manual_seed(0)
    agent = ppo_torch.Agent(_obs_space(), num_actions=4, hidden_size=32, recurrent=True).eval()
    T, M = 5, 2
    obs = _random_obs(torch.Generator().manual_seed(3), T, M)
    flat = {k: v.flatten(0, 1) for k, v in obs.items()}
    with torch.no_grad():
        reference = agent.encode(flat)
        agent.encoder_dtype = torch.bfloat16
        features = agent.encode(flat)
    assert features.dtype == torch.float32
    assert not torch.equal(features, reference)  # the autocast really ran in bf16
    torch.testing.assert_close(features, reference, rtol=0.05, atol=0.02)
    firsts = torch.zeros(T, M, dtype=torch.bool)
    firsts[0] = True
    rollout, replayed = _rollout_and_replay(agent, obs, firsts)
    for step, again in zip(rollout, replayed, strict=True):
        torch.testing.assert_close(again, step, rtol=1e-5, atol=1e-6)


def test_evaluate_uses_the_checkpoint_precision(tmp_path):
    env = WorldFMVectorEnv(num_envs=2, scenes="procedural:test:1", resolution=16, device="cpu", renderer="anchor")
    agent = ppo_torch.Agent(env.single_observation_space, 4, hidden_size=32, recurrent=True)
    saved = {
        "state_dict": agent.state_dict(),
        "model_kwargs": {"hidden_size": 32, "recurrent": True},
        "action_ids": [0, 1, 2, 3],
        "args": {"precision": "bfloat16"},
    }
    assert evaluate.load_agent("ppo:unused", env, loaded=saved).model.encoder_dtype is torch.bfloat16
    del saved["args"]["precision"]  # checkpoints from before the option trained in float32
    assert evaluate.load_agent("ppo:unused", env, loaded=saved).model.encoder_dtype is None
    env.close()


def test_evaluate_keeps_the_sliding_setting_of_the_checkpoint(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            *["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu", "--allow-sliding"],
            *["--save-path", str(checkpoint)],
        ]
    )
    made = _record_eval_envs(monkeypatch)
    common = dict(agent=f"ppo:{checkpoint}", episodes=2, scenes="procedural:test:1", device="cpu", output_dir=None)
    evaluate.evaluate(evaluate.Args(**common, max_episode_steps=5))
    evaluate.evaluate(evaluate.Args(**common, max_episode_steps=5, allow_sliding=False))
    evaluate.evaluate(evaluate.Args(**{**common, "agent": "random"}, max_episode_steps=5))
    # The checkpoint's setting, an explicit override, the env default.
    assert [c.allow_sliding for c in made] == [True, False, False]


def test_capture_and_memory_travel_with_the_checkpoint(tmp_path, monkeypatch):
    from dataclasses import asdict

    from worldfm_env.model import build_model, save_checkpoint

    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            *["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu", "--renderer", "oracle"],
            *["--capture", "panorama", "--memory", "grow", "--memory-carve", "--save-path", str(checkpoint)],
        ]
    )
    saved = torch.load(checkpoint, weights_only=True)["args"]
    assert (saved["capture"], saved["memory"], saved["memory_carve"]) == ("panorama", "grow", True)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("tiny", input_size=16), weights)
    made = _record_eval_envs(monkeypatch)
    common = dict(episodes=2, scenes="procedural:test:1", device="cpu", output_dir=None, max_episode_steps=3)
    evaluate.evaluate(evaluate.Args(agent=f"ppo:{checkpoint}", renderer="oracle", **common))
    evaluate.evaluate(evaluate.Args(agent=f"ppo:{checkpoint}", renderer="worldfm", weights=str(weights), **common))
    evaluate.evaluate(
        evaluate.Args(
            agent=f"ppo:{checkpoint}", renderer="oracle", capture="full", memory="grow", memory_carve=True, **common
        )
    )
    evaluate.evaluate(
        evaluate.Args(agent=f"ppo:{checkpoint}", renderer="worldfm", weights=str(weights), memory_carve=False, **common)
    )
    evaluate.evaluate(
        evaluate.Args(agent=f"ppo:{checkpoint}", renderer="worldfm", weights=str(weights), memory="static", **common)
    )
    evaluate.evaluate(evaluate.Args(agent="random", **common))
    # The checkpoint's capture everywhere and its memory (and carve) in the worldfm world, explicit overrides (a
    # static memory has nothing to carve), the env defaults.
    assert [(c.renderer, c.capture, c.memory, c.memory_carve) for c in made] == [
        ("oracle", "panorama", "static", False),
        ("worldfm", "panorama", "grow", True),
        ("oracle", "full", "grow", True),
        ("worldfm", "panorama", "grow", False),
        ("worldfm", "panorama", "static", False),
        ("anchor", "full", "static", False),
    ]
    with pytest.raises(ValueError, match="capture must be"):
        evaluate.evaluate(evaluate.Args(agent="random", capture="walk:0", **common))
    # Runs saved before the options had a full capture and a static memory: their resume states still fit.
    older = {k: v for k, v in asdict(ppo_torch.Args()).items() if k not in ("capture", "memory", "memory_carve")}
    assert ppo_torch._differing_args(older, ppo_torch.Args()) == []
    assert ppo_torch._differing_args(older, ppo_torch.Args(memory="grow", memory_carve=True)) == [
        "memory",
        "memory_carve",
    ]
    assert ppo_torch._differing_args(older, ppo_torch.Args(capture="panorama")) == ["capture"]


def _tiny_weights_and_compile_requests(tmp_path, monkeypatch, module) -> tuple:
    """A tiny random frame-model checkpoint, and a list that records (renderer, compile_model) of every env
    ``module`` builds; the envs themselves run eagerly (what is asked is tested, not the compiler)."""
    from worldfm_env.model import build_model, save_checkpoint

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("tiny", input_size=16), weights)
    asked = []

    def recording_env(**kwargs):
        asked.append((kwargs["renderer"], kwargs.get("compile_model")))
        return WorldFMVectorEnv(**{**kwargs, "compile_model": False})

    monkeypatch.setattr(module, "WorldFMVectorEnv", recording_env)
    return weights, asked


def test_ppo_torch_asks_the_worldfm_env_to_compile_its_frame_model(tmp_path, monkeypatch):
    weights, asked = _tiny_weights_and_compile_requests(tmp_path, monkeypatch, ppo_torch)
    train = [
        *["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
        *["--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu", "--compile-model"],
    ]
    ppo_torch.main([*train, "--renderer", "worldfm", "--weights", str(weights), "--save-path", str(tmp_path / "w.pt")])
    ppo_torch.main([*train, "--renderer", "anchor", "--save-path", str(tmp_path / "a.pt")])
    assert asked == [("worldfm", True), ("anchor", None)]  # the other worlds have no frame model to compile
    assert torch.load(tmp_path / "w.pt", weights_only=True)["args"]["compile_model"] is True


def test_evaluate_asks_the_worldfm_env_to_compile_its_frame_model(tmp_path, monkeypatch):
    weights, asked = _tiny_weights_and_compile_requests(tmp_path, monkeypatch, evaluate)
    common = dict(agent="random", episodes=1, scenes="procedural:test:1", resolution=16, device="cpu")
    common.update(output_dir=None, max_episode_steps=3, weights=str(weights))
    evaluate.evaluate(evaluate.Args(**common, renderer="worldfm", compile_model=True))
    evaluate.evaluate(evaluate.Args(**common, renderer="worldfm"))
    evaluate.evaluate(evaluate.Args(**common, renderer="anchor", compile_model=True))
    assert asked == [("worldfm", True), ("worldfm", False), ("anchor", None)]


def test_splat_radius_text_is_parsed_strictly():
    import numpy as np

    from worldfm_env.render.anchor_config import parse_splat_radius

    assert parse_splat_radius("auto") == "auto" and parse_splat_radius(" 2 ") == 2 and parse_splat_radius("08") == 8
    assert parse_splat_radius(3) == 3 and type(parse_splat_radius(np.int64(3))) is int
    for bad in ("--2", "-0", "9", "\u00b2", "\u0663", "", "Auto", True, 1.0):
        with pytest.raises(ValueError, match=r"splat_radius must be an int in \[0, 8\] or 'auto'"):
            parse_splat_radius(bad)


def test_evaluate_renders_the_anchor_the_checkpoint_was_trained_on(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ppo.pt"
    train = [
        *["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
        *["--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu", "--save-path", str(checkpoint)],
    ]
    with pytest.raises(ValueError, match=r"splat_radius must be an int in \[0, 8\] or 'auto', got '9'"):
        ppo_torch.main([*train, "--splat-radius", "9"])
    assert not checkpoint.exists()
    ppo_torch.main([*train, "--splat-radius", "auto"])
    assert torch.load(checkpoint, weights_only=True)["args"]["splat_radius"] == "auto"
    made = _record_eval_envs(monkeypatch)
    common = dict(episodes=2, scenes="procedural:test:1", device="cpu", output_dir=None, max_episode_steps=5)
    evaluate.evaluate(evaluate.Args(agent=f"ppo:{checkpoint}", **common))
    evaluate.evaluate(evaluate.Args(agent=f"ppo:{checkpoint}", **common, splat_radius="2"))
    evaluate.evaluate(evaluate.Args(agent="random", **common))
    # The checkpoint's setting, an explicit override, the env default.
    assert [c.splat_radius for c in made] == ["auto", 2, 0]
    with pytest.raises(ValueError, match="splat_radius must be"):
        evaluate.evaluate(evaluate.Args(agent="random", **common, splat_radius="wide"))


def test_depth_is_a_fourth_cnn_channel_and_evaluate_observes_it(tmp_path):
    import numpy as np
    from gymnasium import spaces

    space = spaces.Dict({**_obs_space().spaces, "depth": spaces.Box(0.0, np.inf, (16, 16, 1), dtype=np.float32)})
    torch.manual_seed(0)
    agent = ppo_torch.Agent(space, num_actions=4, hidden_size=32)
    assert agent.use_depth and agent.cnn[0].in_channels == 4 and agent.vector_keys == ["pointgoal"]
    obs = _random_obs(torch.Generator().manual_seed(4), 2)
    near, far = torch.full((2, 16, 16, 1), 0.5), torch.full((2, 16, 16, 1), 8.0)
    with torch.no_grad():
        assert not torch.allclose(agent.encode({**obs, "depth": near}), agent.encode({**obs, "depth": far}))
        # Beyond DEPTH_RANGE the channel saturates: 20 m and 50 m look the same.
        torch.testing.assert_close(
            agent.encode({**obs, "depth": torch.full_like(near, 20.0)}),
            agent.encode({**obs, "depth": torch.full_like(near, 50.0)}),
        )

    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            *["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu", "--include-depth"],
            *["--save-path", str(checkpoint)],
        ]
    )
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["args"]["include_depth"] is True
    assert saved["state_dict"]["cnn.0.weight"].shape[1] == 4
    # evaluate builds the env with depth from the checkpoint's settings (else the weights would not load).
    result = evaluate.evaluate(
        evaluate.Args(
            agent=f"ppo:{checkpoint}", episodes=2, scenes="procedural:test:1", device="cpu", output_dir=None,
            max_episode_steps=5, renderer="anchor",
        )
    )  # fmt: skip
    assert len(result.episodes) == 2
    # A depth policy on an env without depth is refused with a message naming the setting.
    env = WorldFMVectorEnv(num_envs=2, scenes="procedural:test:1", resolution=16, device="cpu", renderer="anchor")
    with pytest.raises(ValueError, match="include_depth=True"):
        evaluate.load_agent(f"ppo:{checkpoint}", env, loaded=saved)
    env.close()


def test_ppo_torch_resumes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    """A run stopped mid-rollout continues with --resume from its last update: network, optimizer, learning-rate
    schedule, step count and wall time carry over, the envs get fresh seeds, and resuming is reproducible."""
    checkpoint = tmp_path / "ppo.pt"
    train = [
        *["--total-timesteps", "96", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
        *["--update-epochs", "1", "--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu"],
        *["--save-path", str(checkpoint)],
    ]  # 3 updates of 32 env steps; recurrent minibatches of one env each: 2 optimizer steps per update
    resume_file = ppo_torch.resume_path(checkpoint)
    real_step, real_reset, calls, reset_seeds = WorldFMVectorEnv.step, WorldFMVectorEnv.reset, [], []

    def stop_in_second_update(self, actions):
        calls.append(1)
        if len(calls) == 16 + 5:  # 5 steps into the segment's second rollout
            raise KeyboardInterrupt
        return real_step(self, actions)

    def recording_reset(self, *, seed=None, options=None):
        reset_seeds.append(seed)
        return real_reset(self, seed=seed, options=options)

    monkeypatch.setattr(WorldFMVectorEnv, "reset", recording_reset)
    monkeypatch.setattr(WorldFMVectorEnv, "step", stop_in_second_update)
    with pytest.raises(KeyboardInterrupt):
        ppo_torch.main(train)
    monkeypatch.setattr(WorldFMVectorEnv, "step", real_step)
    assert not checkpoint.exists()
    state = torch.load(resume_file, weights_only=True)
    assert state["iteration"] == 1 and state["global_step"] == 32 and 0 < state["wall_s"] < 1000
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {2}
    state["wall_s"] = 1000.0  # as if the first segment had trained for 1000 s
    torch.save(state, resume_file)
    interrupted = resume_file.read_bytes()

    with pytest.raises(ValueError, match=r"learning_rate \(0.00025, not 0.001\)"):
        ppo_torch.main([*train, "--resume", "--learning-rate", "1e-3"])
    capsys.readouterr()
    ppo_torch.main([*train, "--resume"])
    out = capsys.readouterr().out
    assert "resuming from" in out and "global_step=32" in out
    assert "iter=1/3" not in out and re.search(r"iter=2/3 global_step=64 ", out) and "iter=3/3 global_step=96" in out
    assert not resume_file.exists()  # finished
    first = torch.load(checkpoint, weights_only=True)
    assert first["global_step"] == 96 and first["wall_s"] > 1000.0
    assert reset_seeds[0] == 1 and reset_seeds[-1] not in (1, 1 + 2)  # fresh episodes, not --seed 1's or 3's

    # The same interruption resumed again gives the same policy: the segment's seeds follow from the update reached.
    checkpoint.unlink()
    resume_file.write_bytes(interrupted)
    ppo_torch.main([*train, "--resume"])
    again = torch.load(checkpoint, weights_only=True)
    assert reset_seeds[-1] == reset_seeds[-2]
    for name, tensor in first["state_dict"].items():
        torch.testing.assert_close(again["state_dict"][name], tensor, rtol=0, atol=0, msg=name)

    # With the optimizer's steps switched off, the resumed run ends with the saved network: it was loaded.
    checkpoint.unlink()
    resume_file.write_bytes(interrupted)
    real_adam_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: None)
    ppo_torch.main([*train, "--resume"])
    monkeypatch.setattr(torch.optim.Adam, "step", real_adam_step)
    frozen = torch.load(checkpoint, weights_only=True)
    for name, tensor in state["state_dict"].items():
        torch.testing.assert_close(frozen["state_dict"][name], tensor, rtol=0, atol=0, msg=name)

    # Stopped again in the third update, the resume state holds both segments' optimizer steps and the annealed
    # learning rate of update 2 of 3: the second segment continued the first one's Adam moments and schedule.
    checkpoint.unlink()
    resume_file.write_bytes(interrupted)
    calls.clear()
    monkeypatch.setattr(WorldFMVectorEnv, "step", stop_in_second_update)
    with pytest.raises(KeyboardInterrupt):
        ppo_torch.main([*train, "--resume"])
    monkeypatch.setattr(WorldFMVectorEnv, "step", real_step)
    twice = torch.load(resume_file, weights_only=True)
    assert twice["iteration"] == 2 and twice["global_step"] == 64 and twice["wall_s"] > 1000.0
    assert {int(s["step"]) for s in twice["optimizer"]["state"].values()} == {4}
    assert twice["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2.5e-4 * 2 / 3)

    # A stop between the final checkpoint and the state's removal: --resume sees the finished run and keeps it.
    ppo_torch.main([*train, "--resume"])  # finishes the run interrupted just above
    finished = checkpoint.read_bytes()
    resume_file.write_bytes(interrupted)
    ppo_torch.main([*train, "--resume"])
    assert "already holds the finished run" in capsys.readouterr().out
    assert checkpoint.read_bytes() == finished and not resume_file.exists()

    # A fresh run (no --resume) drops an older run's state at once, so a later --resume cannot pick it up.
    resume_file.write_bytes(interrupted)
    monkeypatch.setattr(WorldFMVectorEnv, "step", lambda self, actions: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ppo_torch.main(train)
    assert not resume_file.exists()
