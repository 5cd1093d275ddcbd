"""``benchmarks/ppo_distributed.py`` at a tiny size: both layouts train (one under torchrun), every output is
written, the layouts have the same total batch, and the tables print. The figures need an idle machine and a real
budget; this only checks the pipeline."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import ppo_distributed  # noqa: E402

TINY = [
    *["--num-envs", "4", "--num-steps", "8", "--total-timesteps", "64", "--throughput-steps", "32", "--repeats", "1"],
    *["--seeds", "1", "--snapshots", "2", "--eval-episodes", "2", "--resolution", "16", "--max-episode-steps", "20"],
    *["--hidden-size", "32", "--update-epochs", "1", "--train-scenes", "procedural:train:2"],
    *["--eval-scenes", "procedural:test:1"],
]


@pytest.mark.slow
def test_tiny_benchmark_writes_csvs_figure_and_tables(tmp_path, capsys):
    rows = ppo_distributed.main([*TINY, "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| layout | training env-steps/s (median) | runs |" in printed
    assert "| 1 rank x 4 |" in printed and "| 2 ranks x 2 |" in printed
    for name in ("throughput.csv", "train_curve.csv", "eval_curve.csv", "ppo_distributed.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with open(tmp_path / "throughput.csv") as f:
        throughput = list(csv.DictReader(f))
    assert [(r["layout"], r["env_steps"]) for r in throughput] == [("1 rank x 4", "32"), ("2 ranks x 2", "32")]
    assert all(float(r["env_steps_per_s"]) > 0 for r in throughput)
    # Same total batch: both learning runs log the same env-step counts, 2 updates of 4 envs x 8 steps.
    for world in (1, 2):
        steps = [r["env_steps"] for r in rows["train_curve"] if r["world_size"] == world]
        assert steps == [32, 64], world
    # Two snapshots (at 32 and 64 steps; the last is the final policy, evaluated once) per layout.
    assert sorted((r["world_size"], r["env_steps"]) for r in rows["eval_curve"]) == [(1, 32), (1, 64), (2, 32), (2, 64)]
    assert "global_step=64" in (tmp_path / "logs" / "learn_w2_seed1.log").read_text()


def test_bad_arguments_name_the_option(capsys):
    with pytest.raises(SystemExit):
        ppo_distributed.parse_args(["--num-envs", "5"])
    assert "--num-envs must be even and >= 2" in capsys.readouterr().err
