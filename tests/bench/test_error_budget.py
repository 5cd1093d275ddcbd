"""Tests of ``benchmarks/error_budget.py``: the pixel classes, the budget's sums and bounds, and a tiny run."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch

# `benchmarks/` is a top-level folder of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import error_budget  # noqa: E402


def test_classes_follow_the_depth_tolerance():
    true_depth = torch.full((1, 1, 5), 2.0)
    depth = torch.tensor([[[2.0, 2.09, 1.85, 2.2, 0.0]]])
    mask = torch.tensor([[[True, True, True, True, False]]])
    c = error_budget.classify(mask, depth, true_depth)
    assert c["right surface"].tolist() == [[[True, True, False, False, False]]]  # 2.09 is within 5 % of 2
    assert c["wrong, nearer"].tolist() == [[[False, False, True, False, False]]]
    assert c["wrong, farther"].tolist() == [[[False, False, False, True, False]]]
    assert c["uncaptured"].tolist() == [[[False, False, False, False, True]]]
    with pytest.raises(ValueError, match="mask, depth and true_depth must have one shape"):
        error_budget.classify(mask, depth[..., :4], true_depth)


def test_budget_shares_sum_to_one_and_exact_classes_only_raise_psnr():
    torch.manual_seed(0)
    truth = torch.randint(0, 256, (3, 8, 8, 3)).float()
    img = (truth + torch.randn_like(truth) * 20).clamp(0, 255)
    half = torch.zeros(3, 8, 8, dtype=torch.bool)
    half[:, :4] = True
    rows = error_budget.budget_rows("m", img, truth, {"top": half, "bottom": ~half})
    whole, top, bottom = rows
    assert whole["pixels"] == "all" and whole["error_share"] == 1.0
    assert top["pixel_share"] == bottom["pixel_share"] == 0.5
    assert top["error_share"] + bottom["error_share"] == pytest.approx(1.0)
    for r in (top, bottom):
        assert r["psnr_if_exact"] > whole["psnr"] and r["psnr_p5_if_exact"] >= whole["psnr_p5"]
    # The truth itself: no error anywhere, every frame at the PSNR cap.
    exact = error_budget.budget_rows("truth", truth, truth, {"top": half})
    assert exact[0]["psnr"] == 100.0


def test_tiny_run_writes_the_csv_and_the_plot(tmp_path, capsys):
    argv = ["--scenes", "1", "--episodes", "1", "--frames", "2", "--weights", "worldfm-s-64x64", "--out", str(tmp_path)]
    with pytest.warns(UserWarning, match="anchor_colour='splat'"):  # the model learned from splat colours
        rows = error_budget.main(argv)
    printed = capsys.readouterr().out
    assert "| method | pixels |" in printed and "wall time" in printed
    with open(tmp_path / "error_budget.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    assert methods == ["nearest_fill", "nearest_fill, one-pixel composite", "worldfm-s-64x64"]
    assert {r["frames"] for r in rows} == {6}  # 3 policies x 1 rollout x 2 frames
    for method in ("nearest_fill", "worldfm-s-64x64"):
        by = {r["pixels"]: r for r in rows if r["method"] == method}
        assert list(by) == ["all", *error_budget.CLASSES]
        disjoint = ("uncaptured", "right surface", "wrong, nearer", "wrong, farther")
        assert sum(by[k]["pixel_share"] for k in disjoint) == pytest.approx(1.0)  # every test pixel has a depth
        assert sum(by[k]["error_share"] for k in disjoint) == pytest.approx(1.0)
        split = by["right surface, edge"]["pixel_share"] + by["right surface, flat"]["pixel_share"]
        assert split == pytest.approx(by["right surface"]["pixel_share"])
        wrong = by["wrong, nearer"]["error_share"] + by["wrong, farther"]["error_share"]
        assert wrong == pytest.approx(by["wrong surface"]["error_share"])
        for k in disjoint:
            exact = by[k]["psnr_if_exact"]
            assert math.isnan(exact) or exact >= by["all"]["psnr"] - 1e-9
    assert {r["splat_radius"] for r in rows} == {"auto"} and {r["anchor_colour"] for r in rows} == {"bank"}
    assert (tmp_path / "error_budget.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        error_budget.parse_args(["--frames", "0"])


def test_learned_choice_trains_on_train_scenes_and_adds_its_composite(tmp_path, capsys):
    argv = ["--scenes", "1", "--episodes", "1", "--frames", "2", "--learned-choice", "3", "--out", str(tmp_path)]
    rows = error_budget.main(argv)
    assert [r["method"] for r in rows if r["pixels"] == "all"] == [
        "nearest_fill",
        "nearest_fill, one-pixel composite",
        "nearest_fill, learned composite",
    ]
    with open(tmp_path / "learned_choice.csv") as f:
        (stats,) = list(csv.DictReader(f))
    assert int(stats["steps"]) == 3 and int(stats["train_frames"]) == 6
    assert 0.0 <= float(stats["precision"]) <= 1.0 and 0.0 <= float(stats["recall"]) <= 1.0
    assert float(stats["taken_share"]) <= float(stats["candidate_share"])
    assert "learned choice: 3 steps on 6 train-scene frames" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        error_budget.parse_args(["--learned-choice", "-1"])
