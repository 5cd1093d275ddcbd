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
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conftest import SMALL  # noqa: E402

from agents import evaluate, ppo_sb3, ppo_torch, scripted  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402

# Held-out episodes: a small procedural test split, tiny frames, CPU.
HELD_OUT = ["--scenes", "procedural:test:2", "--resolution", "32", "--device", "cpu"]
FINAL_LINE = re.compile(r"^success=[0-9.]+ spl=[0-9.]+ soft_spl=[0-9.]+$")


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
