"""Tests of ``benchmarks/policy_eval.py``: the rank and correlation helpers, and a tiny run on two PPO snapshots."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# `benchmarks/` and `agents/` are top-level folders of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import ppo_torch  # noqa: E402
from benchmarks import policy_eval  # noqa: E402


def test_average_ranks_share_ties():
    assert policy_eval.average_ranks([0.5, 0.2, 0.5]) == [2.5, 1.0, 2.5]
    assert policy_eval.average_ranks([3.0, 1.0, 2.0, 1.0, 1.0]) == [5.0, 2.0, 4.0, 2.0, 2.0]
    assert policy_eval.average_ranks([]) == []


def test_pearson_and_spearman_on_known_inputs():
    assert policy_eval.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert policy_eval.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert policy_eval.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # Monotone but not linear: Spearman 1, Pearson below it.
    x, y = [1, 2, 3, 4], [1, 2, 3, 100]
    assert policy_eval.spearman(x, y) == pytest.approx(1.0) and policy_eval.pearson(x, y) < 0.9
    # Ties take their mean rank: ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4].
    assert policy_eval.spearman([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    # Undefined: a constant side, fewer than two pairs, a NaN.
    for x, y in (([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]), ([0.1, 0.2], [0.0, 0.0]), ([0.3], [0.4]), ([1, math.nan], [1, 2])):
        assert math.isnan(policy_eval.pearson(x, y)) and math.isnan(policy_eval.spearman(x, y))
    with pytest.raises(ValueError, match="paired values"):
        policy_eval.pearson([1, 2], [1, 2, 3])


def test_correlations_say_when_a_world_is_constant():
    rows = [
        {"world": world, "success": s, "spl": s / 2, "soft_spl": v}
        for s, v in ((0.0, 0.1), (0.5, 0.3), (1.0, 0.2))
        for world in ("truth", "model")
    ]
    rows[-1]["success"] = 0.5  # the model world: 0.0, 0.5, 0.5 (ranks 1, 2.5, 2.5)
    summary = {r["metric"]: r for r in policy_eval.correlations(rows)}
    assert summary["soft_spl"]["pearson"] == pytest.approx(1.0) and summary["soft_spl"]["note"] == ""
    assert summary["success"]["spearman"] == pytest.approx(math.sqrt(3) / 2, abs=1e-4)
    constant = [{**r, "spl": 0.0} if r["world"] == "truth" else r for r in rows]
    spl = next(r for r in policy_eval.correlations(constant) if r["metric"] == "spl")
    assert math.isnan(spl["pearson"]) and math.isnan(spl["spearman"])
    assert spl["note"] == "spl is constant in the truth world: no correlation"


def test_tiny_run_on_two_snapshots(capsys, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    # 2 updates of 2 envs x 16 steps, a snapshot after each: ppo_step32.pt, ppo_step64.pt and the final ppo.pt.
    ppo_torch.main(
        [
            *["--total-timesteps", "64", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--device", "cpu", "--save-every", "32"],
            *["--save-path", str(checkpoints / "ppo.pt")],
        ]
    )
    assert {p.name for p in checkpoints.glob("*.pt")} == {"ppo.pt", "ppo_step32.pt", "ppo_step64.pt"}
    out = tmp_path / "out"
    rows, summary = policy_eval.main(
        [
            *["--snapshots", str(checkpoints), "--model-renderer", "anchor", "--episodes", "2", "--num-envs", "2"],
            *["--scenes", "procedural:test:1", "--max-episode-steps", "8", "--device", "cpu", "--out", str(out)],
        ]
    )
    printed = capsys.readouterr().out
    # The final checkpoint is its last snapshot: two policies, each in both worlds, sorted by env steps.
    with open(out / "policy_eval.csv") as f:
        written = list(csv.DictReader(f))
    assert [(Path(r["snapshot"]).name, int(r["step"]), r["world"], r["renderer"]) for r in written] == [
        ("ppo_step32.pt", 32, "truth", "oracle"),
        ("ppo_step32.pt", 32, "model", "anchor"),
        ("ppo_step64.pt", 64, "truth", "oracle"),
        ("ppo_step64.pt", 64, "model", "anchor"),
    ]
    for r in written:
        assert r["capture"] == "panorama" and r["memory"] == "static" and int(r["episodes"]) == 2
        assert r["device"] == "cpu" and r["machine"]
        for metric in ("success", "spl", "soft_spl"):
            assert 0.0 <= float(r[metric]) <= 1.0
    with open(out / "policy_eval_summary.csv") as f:
        correlations = list(csv.DictReader(f))
    assert [r["metric"] for r in correlations] == ["success", "spl", "soft_spl"]
    for r in correlations:
        for name in ("pearson", "spearman"):
            value = float(r[name])
            assert math.isnan(value) or -1.0 <= value <= 1.0
        assert int(r["snapshots"]) == 2 and r["model_renderer"] == "anchor"
    assert (out / "policy_eval.png").stat().st_size > 0
    assert "| env steps | snapshot |" in printed and "Pearson" in printed and "0.78" in printed
    assert len(rows) == 4 and len(summary) == 3


def test_bad_arguments_fail_before_evaluating(tmp_path):
    snapshot = tmp_path / "a.pt"
    with pytest.raises(ValueError, match="--snapshots .* does not exist"):
        policy_eval.main(["--snapshots", str(snapshot), "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="--memory grow needs --model-renderer worldfm"):
        policy_eval.main(["--snapshots", str(tmp_path), "--model-renderer", "anchor", "--memory", "grow"])
    with pytest.raises(ValueError, match="--compile-model compiles the worldfm model world's"):
        policy_eval.main(["--snapshots", str(tmp_path), "--model-renderer", "anchor", "--compile-model"])
    with pytest.raises(ValueError, match="--splat-radius: splat_radius must be"):
        policy_eval.main(["--snapshots", str(tmp_path), "--splat-radius", "9"])
    with pytest.raises(SystemExit):  # argparse names the valid choices
        policy_eval.parse_args(["--snapshots", str(tmp_path), "--eval-actions", "greedy"])
    with pytest.raises(ValueError, match="--weights is the worldfm model world's"):
        policy_eval.main(["--snapshots", str(tmp_path), "--model-renderer", "anchor", "--weights", "w.pt"])
    with pytest.raises(ValueError, match="--weights: weights='no-such-model': no such checkpoint file"):
        policy_eval.main(["--snapshots", str(tmp_path), "--weights", "no-such-model"])
    policy_eval._check_arguments(policy_eval.parse_args(["--snapshots", str(tmp_path), "--weights", "worldfm-s-64x64"]))
    with pytest.raises(ValueError, match="--capture: capture must be"):
        policy_eval.main(["--snapshots", str(tmp_path), "--capture", "walk:0"])
    with pytest.raises(ValueError, match="is a folder without"):
        policy_eval.main(["--snapshots", str(tmp_path), "--model-renderer", "anchor"])
    snapshot.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable agents/ppo_torch.py checkpoint"):
        policy_eval.main(["--snapshots", str(snapshot), "--model-renderer", "anchor"])
    assert not (tmp_path / "x").exists()


def test_eval_actions_and_compile_reach_the_evaluator(monkeypatch, tmp_path):
    """--eval-actions sample evaluates with sampled actions in both worlds; --compile-model compiles only the worldfm
    world's frame model; --splat-radius sets the model world's anchors only."""
    seen = []

    def fake_evaluate(eval_args):
        seen.append(eval_args)
        return SimpleNamespace(summary={"steps": 1.0, "collisions": 0.0})

    monkeypatch.setattr(policy_eval.evaluate_script, "evaluate", fake_evaluate)
    monkeypatch.setattr(policy_eval, "summarise", lambda result: {"success": 1.0})
    args = policy_eval.parse_args(
        ["--snapshots", str(tmp_path), "--eval-actions", "sample", "--compile-model", "--splat-radius", "auto"]
    )
    for renderer, memory in (("oracle", "static"), ("worldfm", "grow")):
        policy_eval.evaluate_snapshot(tmp_path / "a.pt", renderer, memory, args)
    assert [a.deterministic for a in seen] == [False, False]
    assert [a.compile_model for a in seen] == [False, True]
    assert [a.renderer for a in seen] == ["oracle", "worldfm"]
    assert [a.splat_radius for a in seen] == [None, "auto"]  # the truth world has no anchor; the policy's own 0 stays
    seen.clear()
    policy_eval.evaluate_snapshot(tmp_path / "a.pt", "oracle", "static", policy_eval.parse_args(["--snapshots", "x"]))
    assert seen[0].deterministic is True and seen[0].compile_model is False and seen[0].splat_radius is None
