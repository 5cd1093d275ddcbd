"""Tests of ``benchmarks/discriminator_probe.py``: its scores are right at the two ends, and a tiny run writes them."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import discriminator_probe as dp  # noqa: E402

SMALL = ["--batches", "3", "--held-out", "1", "--clips", "1", "--steps", "2", "--channels", "4"]


def _batches(generated, n: int = 4, seed: int = 0):
    """Synthetic (truth, anchor, coverage, generated) batches: random binary frames, an empty anchor."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        truth = (torch.rand(8, 3, 32, 32, generator=g) > 0.5).float() * 2 - 1
        out.append((truth, torch.full_like(truth, -1.0), torch.zeros(8, 32, 32, dtype=torch.bool), generated(truth)))
    return out


def test_probe_cannot_tell_the_truth_from_itself_and_tells_a_blur():
    args = dp.parse_args(["--steps", "40", "--channels", "8", "--held-out", "1", "--lr", "1e-3"])
    same = dp.probe(_batches(lambda t: t.clone()), dp.DESIGNS["edges"], args)
    assert same["accuracy"] == pytest.approx(0.5) and same["logit_gap"] == pytest.approx(0.0, abs=1e-6)
    blur = dp.probe(_batches(lambda t: F.avg_pool2d(t, 5, stride=1, padding=2)), dp.DESIGNS["edges"], args)
    assert blur["accuracy"] > 0.8 and blur["logit_gap"] > 0.5 and blur["hinge"] < same["hinge"]


def test_tiny_run_writes_csv_and_plot(tmp_path):
    from worldfm_env.model import build_model, save_checkpoint

    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("tiny", input_size=32, prediction="v"), weights)
    argv = [*SMALL, "--resolution", "32", "--scenes", "procedural:test:1", "--weights", str(weights)]
    rows = dp.main([*argv, "--designs", "sn", "plain-r1", "--out", str(tmp_path / "out")])
    assert [r["design"] for r in rows] == ["sn", "plain-r1"]
    for r in rows:
        assert r["frames"] == 3 * 12 and 0.0 < r["uncovered_fraction"] < 1.0
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["hinge"]
    with open(tmp_path / "out" / "discriminator_probe.csv") as f:
        assert [r["design"] for r in csv.DictReader(f)] == ["sn", "plain-r1"]
    assert (tmp_path / "out" / "discriminator_probe.png").stat().st_size > 1000


def test_bad_options_are_refused_by_name():
    with pytest.raises(SystemExit):
        dp.parse_args(["--designs", "nope"])
    with pytest.raises(SystemExit):
        dp.parse_args(["--batches", "2", "--held-out", "2"])
    for bad in (["--lr", "0"], ["--resolution", "0"]):
        with pytest.raises(SystemExit):
            dp.parse_args(bad)
