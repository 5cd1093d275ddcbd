"""Tests of ``benchmarks/sharpness_cost.py``: the high-pass, the derangement, what each layer does, and a tiny run."""

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

from benchmarks import sharpness_cost  # noqa: E402


def test_highpass_removes_flat_colour_and_keeps_detail():
    flat = torch.full((2, 8, 8, 3), 117.0)
    assert torch.equal(sharpness_cost.highpass(flat), torch.zeros_like(flat))
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()[None, ..., None].expand(1, 8, 8, 3)
    detail = sharpness_cost.highpass(255 * checker)
    assert detail.abs().min() > 75 and detail.abs().mean() > 110  # a one-pixel checker is nearly all detail
    with pytest.raises(ValueError, match=r"images must be \(F, H, W, 3\)"):
        sharpness_cost.highpass(flat[..., 0])
    with pytest.raises(ValueError, match="radius must be a positive integer"):
        sharpness_cost.highpass(flat, radius=0)


@pytest.mark.parametrize("n", [2, 3, 17])
def test_derangement_is_a_seeded_permutation_without_fixed_points(n):
    p = sharpness_cost.derangement(n, seed=5)
    assert sorted(p.tolist()) == list(range(n))
    assert (p != torch.arange(n)).all()
    assert torch.equal(p, sharpness_cost.derangement(n, seed=5))
    with pytest.raises(ValueError, match="n must be at least 2"):
        sharpness_cost.derangement(1, seed=0)


def test_aligned_detail_restores_a_blur_and_independent_detail_costs_psnr():
    # A "model" that paints the blur of the truth everywhere: aligned detail at gain 1 gives the truth back (sharpness
    # 1, the PSNR cap); the same amount of detail taken from other frames raises the sharpness but lowers the PSNR.
    torch.manual_seed(0)
    truth = torch.randint(0, 256, (6, 16, 16, 3)).float()
    model = truth - sharpness_cost.highpass(truth)
    uncaptured = torch.ones(6, 16, 16, dtype=torch.bool)
    fill = model.clone()
    rows = sharpness_cost.cost_rows(model, truth, fill, uncaptured, gains=[1.0])
    base = rows[1]
    by_layer = {r["layer"]: r for r in rows[2:]}
    assert list(by_layer) == list(sharpness_cost.LAYERS)
    aligned = by_layer["aligned truth detail"]
    assert aligned["sharpness"] == pytest.approx(1.0, abs=0.02) and aligned["psnr"] > base["psnr"] + 20
    independent = by_layer["independent texture"]
    assert independent["sharpness"] > base["sharpness"] + 0.3
    assert independent["psnr_uncaptured"] < base["psnr_uncaptured"] - 1.5  # close to the 3 dB of a doubled MSE
    noise = by_layer["grain"]  # matched energy: sharpness near 1, and a PSNR cost
    assert noise["sharpness"] == pytest.approx(1.0, abs=0.15) and noise["psnr_uncaptured"] < base["psnr_uncaptured"]
    with pytest.raises(ValueError, match="uncaptured must be"):
        sharpness_cost.cost_rows(model, truth, fill, uncaptured[:, :8], gains=[1.0])
    with pytest.raises(ValueError, match="model, truth and fill must be one"):
        sharpness_cost.detail_layers(model, truth, fill[:3], uncaptured)


def test_detail_only_touches_uncaptured_pixels():
    torch.manual_seed(1)
    truth = torch.randint(0, 256, (4, 8, 8, 3)).float()
    model = torch.full_like(truth, 128.0)
    uncaptured = torch.zeros(4, 8, 8, dtype=torch.bool)
    rows = sharpness_cost.cost_rows(model, truth, model, uncaptured, gains=[0.5, 1.0])
    for r in rows[1:]:  # nothing uncaptured: every layer leaves the model's frames as they are
        assert r["psnr"] == rows[1]["psnr"]


def test_tiny_run_writes_the_csv_and_the_plot(tmp_path, capsys):
    argv = [
        "--scenes", "1", "--episodes", "1", "--frames", "2", "--weights", "worldfm-s-64x64",
        "--splat-radius", "0", "--anchor-colour", "splat", "--gains", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    rows = sharpness_cost.main(argv)
    printed = capsys.readouterr().out
    assert "| frames | gain |" in printed and "wall time" in printed
    with open(tmp_path / "sharpness_cost.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 2 + len(sharpness_cost.LAYERS)
    assert {r["frames"] for r in rows} == {6}  # 3 policies x 1 rollout x 2 frames
    assert {r["weights"] for r in rows} == {"worldfm-s-64x64"} and {r["capture"] for r in rows} == {"panorama"}
    assert (tmp_path / "sharpness_cost.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        sharpness_cost.parse_args(["--gains", "0"])
    with pytest.raises(SystemExit):
        sharpness_cost.parse_args(["--frames", "0"])
