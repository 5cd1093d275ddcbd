"""Tests of ``benchmarks/world_swap.py``: the swapped worlds show the truth's half and the model's other half, and a
tiny run writes its table."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

# `benchmarks/` is a top-level folder of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import ppo_torch  # noqa: E402
from benchmarks import world_swap  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402

ENV = dict(scenes="procedural:test:1", include_depth=True, device="cpu", capture="panorama")


def _first_obs(env_class, renderer: str) -> dict:
    env = env_class(num_envs=2, renderer=renderer, **ENV)
    obs, _ = env.reset(seed=[3, 4])
    out = {k: v.clone() for k, v in obs.items() if k in ("rgb", "depth")}
    env.close()
    return out


@pytest.mark.parametrize("swap", world_swap.SWAPS)
def test_a_swapped_world_shows_the_truths_half_and_the_models_other_half(swap):
    model = _first_obs(WorldFMVectorEnv, "worldfm")
    truth = _first_obs(WorldFMVectorEnv, "oracle")
    swapped = _first_obs(world_swap.swapped_env_class(swap), "worldfm")
    taken, kept = ("depth", "rgb") if swap == "depth" else ("rgb", "depth")
    assert torch.equal(swapped[taken], truth[taken])
    assert torch.equal(swapped[kept], model[kept])
    assert not torch.equal(model[taken], truth[taken])  # the swap changed something
    with pytest.raises(ValueError, match="swap='colour' is not valid"):
        world_swap.swapped_env_class("colour")


def test_tiny_run_evaluates_every_world(tmp_path, capsys):
    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            *["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
            *["--scenes", "procedural:train:1", "--device", "cpu", "--include-depth", "--capture", "panorama"],
            *["--save-path", str(checkpoint)],
        ]
    )
    out = tmp_path / "out"
    rows = world_swap.main(
        [
            *["--checkpoint", str(checkpoint), "--episodes", "2", "--num-envs", "2", "--max-episode-steps", "4"],
            *["--scenes", "procedural:test:1", "--device", "cpu", "--out", str(out)],
        ]
    )
    printed = capsys.readouterr().out
    with open(out / "world_swap.csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["world"], r["renderer"], r["swap"]) for r in written] == [
        ("truth", "oracle", ""),
        ("model", "worldfm", ""),
        ("model rgb + true depth", "worldfm", "depth"),
        ("true rgb + model depth", "worldfm", "rgb"),
    ]
    for r in written:
        assert int(r["episodes"]) == 2 and 0.0 <= float(r["success"]) <= 1.0 and r["machine"]
    assert (out / "world_swap.png").stat().st_size > 1000
    assert "| world | success |" in printed and len(rows) == 4
    with pytest.raises(SystemExit):
        world_swap.parse_args(["--checkpoint", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit):
        world_swap.parse_args(["--checkpoint", str(checkpoint), "--episodes", "0"])
