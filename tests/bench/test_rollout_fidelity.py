"""``benchmarks/rollout_fidelity.py``: the sharpness measure on hand-made images, the shipping verdict on made-up rows,
the memory's depth fill, and a tiny end-to-end run that writes the CSV."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

# `benchmarks/` is a top-level folder of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import rollout_fidelity  # noqa: E402
from benchmarks.rollout_fidelity import (  # noqa: E402
    CRITERIA,
    filled_anchor_depth,
    gradient_energy,
    sharpness_ratio,
    shipping_verdict,
)


def _stripes(n: int = 2, size: int = 32) -> torch.Tensor:
    """Sharp vertical stripes, 4 pixels wide, with some random texture: uint8 (n, size, size, 3)."""
    x = torch.arange(size)
    base = torch.where((x // 4) % 2 == 0, 200, 40).float().expand(size, size)
    noise = torch.rand(n, size, size, generator=torch.Generator().manual_seed(0)) * 20
    return (base + noise)[..., None].expand(n, size, size, 3).round().clamp(0, 255).to(torch.uint8).contiguous()


def _blur(images: torch.Tensor, k: int = 5) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float()
    x = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return x.permute(0, 2, 3, 1).round().to(torch.uint8)


# ------------------------------------------------------------------------------------------------------ sharpness


def test_sharpness_of_identical_images_is_one():
    images = _stripes()
    uncaptured = torch.ones(images.shape[:-1], dtype=torch.bool)
    assert sharpness_ratio(images, images, uncaptured).tolist() == [1.0, 1.0]


def test_a_blur_scores_lower_than_the_sharp_image():
    sharp = _stripes()
    blurred = _blur(sharp)
    uncaptured = torch.zeros(sharp.shape[:-1], dtype=torch.bool)
    uncaptured[:, 8:28, 4:30] = True
    ratio = sharpness_ratio(blurred, sharp, uncaptured)
    assert torch.all(ratio < 0.7), ratio  # a 5x5 box blur of 4-pixel stripes loses most of the gradient energy
    assert torch.all(sharpness_ratio(sharp, blurred, uncaptured) > 1.0)
    flat = torch.full_like(sharp, 120)
    assert sharpness_ratio(flat, sharp, uncaptured).tolist() == [0.0, 0.0]


def test_gradient_energy_counts_only_pairs_of_uncaptured_pixels():
    images = torch.zeros(1, 3, 3, 3, dtype=torch.uint8)
    images[0, :, 1] = 100  # luminance 0 | 100 | 0 in every row (0.299 + 0.587 + 0.114 = 1)
    uncaptured = torch.zeros(1, 3, 3, dtype=torch.bool)
    uncaptured[0, 0, :2] = True  # one horizontal pair: dY = 100
    energy, count = gradient_energy(images, uncaptured)
    assert count.tolist() == [1.0] and energy.tolist() == pytest.approx([100.0**2])
    uncaptured[0, 1, 0] = True  # adds a vertical pair (0,0)-(1,0) with dY = 0
    energy, count = gradient_energy(images, uncaptured)
    assert count.tolist() == [2.0] and energy.tolist() == pytest.approx([100.0**2])
    uncaptured[:] = True  # 6 horizontal pairs (dY = 100 each) and 6 vertical ones (dY = 0)
    energy, count = gradient_energy(images, uncaptured)
    assert count.tolist() == [12.0] and energy.tolist() == pytest.approx([6 * 100.0**2])


def test_sharpness_is_nan_without_enough_pairs_or_detail_and_checks_shapes():
    images = _stripes(1)
    none = torch.zeros(images.shape[:-1], dtype=torch.bool)
    assert math.isnan(float(sharpness_ratio(images, images, none)[0]))
    flat = torch.full_like(images, 50)
    assert math.isnan(float(sharpness_ratio(images, flat, ~none)[0]))  # the truth has no detail there
    with pytest.raises(ValueError, match="uncaptured must be"):
        gradient_energy(images, none[..., :-1])
    with pytest.raises(ValueError, match="same shape"):
        sharpness_ratio(images, images[:, :-1], none)


# ------------------------------------------------------------------------------------------------------ verdict


def _rows(candidate: dict, shipped: dict | None = None, fill: dict | None = None, close: dict | None = None) -> list:
    """Made-up benchmark rows: full and panorama capture, subset ``all``, plus the candidate's close-range row."""
    base = dict(psnr=20.0, psnr_p5=14.0, psnr_uncaptured=18.0, sharpness=0.3, depth_absrel=0.5, frames=100)
    fill = {**base, **(fill or {})}
    shipped = {**base, **(shipped or {})}
    cand = {**base, **candidate}
    rows = []
    for capture in ("full", "panorama"):
        for method, values in (("nearest_fill", fill), ("old", shipped), ("new", cand)):
            rows.append({"capture": capture, "subset": "all", "method": method, **values})
    rows.append(
        {"capture": "full", "subset": "close", "method": "new", **base, "below_nearest_fill": 0.0, **(close or {})}
    )
    return rows


GOOD = dict(psnr=22.5, psnr_p5=17.5, psnr_uncaptured=21.5, sharpness=0.8, depth_absrel=0.1)


def test_verdict_passes_a_candidate_that_meets_every_criterion():
    verdict = shipping_verdict(_rows(GOOD), candidate="new", shipped="old")
    assert set(verdict) == {*CRITERIA, "ship"}
    assert all(v["pass"] for v in verdict.values()), verdict
    assert verdict["p5_vs_shipped"]["threshold"] == pytest.approx(17.0)
    assert verdict["mean_vs_nearest"]["threshold"] == pytest.approx(22.0)
    assert verdict["panorama_uncaptured_vs_nearest"]["threshold"] == pytest.approx(21.0)


@pytest.mark.parametrize(
    ("change", "close", "failing"),
    [
        (dict(psnr_p5=16.9), None, "p5_vs_shipped"),
        (dict(psnr=21.9), None, "mean_vs_nearest"),
        ({}, dict(below_nearest_fill=0.01), "close_never_below_nearest"),
        ({}, dict(frames=0), "close_never_below_nearest"),  # no close-range frame: not shown
        (dict(psnr_uncaptured=20.9), None, "panorama_uncaptured_vs_nearest"),
        (dict(sharpness=0.69), None, "panorama_sharpness"),
        (dict(depth_absrel=0.16), None, "panorama_depth_absrel"),
        (dict(depth_absrel=float("nan")), None, "panorama_depth_absrel"),  # no depth: fails
    ],
)
def test_verdict_fails_each_criterion_on_its_own(change, close, failing):
    rows = _rows(GOOD, close=close)
    for r in rows:  # the change applies to the candidate's rows of the capture the criterion reads
        if r["method"] == "new" and r["subset"] == "all":
            r.update(change)
    verdict = shipping_verdict(rows, candidate="new", shipped="old")
    assert [k for k, v in verdict.items() if not v["pass"]] == [failing, "ship"]


def test_verdict_reads_rows_as_strings_from_the_csv_and_names_a_missing_method():
    rows = [{k: str(v) for k, v in r.items()} for r in _rows(GOOD)]
    assert shipping_verdict(rows, candidate="new", shipped="old")["ship"]["pass"]
    with pytest.raises(ValueError, match=r"shipped='older' has no rows; methods in the rows: \['nearest_fill'"):
        shipping_verdict(rows, candidate="new", shipped="older")


# ------------------------------------------------------------------------------------------------------ depth fill


def test_filled_anchor_depth_keeps_covered_pixels_and_stops_at_the_floor():
    H = W = 8
    depth = torch.zeros(2, H, W)
    mask = torch.zeros(2, H, W, dtype=torch.bool)
    depth[0, :, :4], mask[0, :, :4] = 2.0, True  # left half covered at 2 m; image 1 is empty altogether
    c2w = torch.eye(4).expand(2, 4, 4).clone()  # camera at y = 0 looking along +z, +y down
    K = torch.tensor([[4.0, 0.0, 4.0], [0.0, 4.0, 4.0], [0.0, 0.0, 1.0]])
    floor = torch.full((2,), 0.5)
    out = filled_anchor_depth(depth, mask, c2w, K, floor, backdrop=3.0)
    assert torch.equal(out[0][mask[0]], depth[0][mask[0]])
    # Bottom row: ray y / z = (7.5 - 4) / 4 = 0.875 -> the floor 0.5 m down is at z = 0.571 m.
    assert out[0, 7, 6] == pytest.approx(0.5 / 0.875, rel=1e-5)
    assert out[0, 0, 6] == pytest.approx(2.0)  # upper rows (looking up): the nearest covered pixel's depth
    assert out[1, 0, 0] == pytest.approx(3.0) and out[1, 7, 0] == pytest.approx(0.5 / 0.875, rel=1e-5)


# ------------------------------------------------------------------------------------------------------ run


def test_tiny_run_writes_the_csv(tmp_path, capsys):
    model = "worldfm-s-64x64"  # the quickest shipped model (the earlier one)
    assert model in rollout_fidelity.model_methods(64)
    argv = ["--scenes", "1", "--episodes", "1", "--frames", "3", "--captures", "full", "--samples", "2"]
    argv += ["--methods", "anchor", "nearest_fill", model, "--per-frame", "--out", str(tmp_path)]
    rows = rollout_fidelity.main(argv)
    printed = capsys.readouterr().out
    assert "| capture | method | PSNR |" in printed and "wall time" in printed
    with open(tmp_path / "rollout_fidelity.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    methods = ["anchor", "nearest_fill", model, "oracle"]
    assert [r["method"] for r in table if r["subset"] == "all"] == methods
    assert {r["subset"] for r in table} == {"all", "random", "shortest_path", "close_range", "close"}
    by = {r["method"]: r for r in table if r["subset"] == "all"}
    assert all(int(r["frames"]) == 9 for r in by.values())  # 3 policies x 1 rollout x 3 frames
    assert float(by["oracle"]["psnr"]) == 100.0 and float(by["oracle"]["sharpness"]) == 1.0
    assert float(by["oracle"]["depth_absrel"]) == 0.0
    assert float(by["oracle"]["depth_far"]) == float(by["oracle"]["depth_near"]) == 0.0
    assert 0.0 <= float(by["nearest_fill"]["depth_far"]) + float(by["nearest_fill"]["depth_near"]) <= 1.0
    assert {r["depth_bound"] for r in table} == {"none"}
    assert float(by["nearest_fill"]["psnr"]) > float(by["anchor"]["psnr"])
    assert by["nearest_fill"]["psnr_captured"] == by["anchor"]["psnr_captured"]  # a fill keeps covered pixels
    assert by[model]["depth_source"] == "filled anchor" and by["anchor"]["depth_source"] == "none"
    assert float(by["nearest_fill"]["below_nearest_fill"]) == 0.0
    assert {r["splat_radius"] for r in table} == {"0"}  # the env's default splats
    assert rollout_fidelity.parse_args(["--splat-radius", "auto"]).splat_radius == "auto"
    assert {r["capture_resolution"] for r in table} == {"64"}  # the env's: captured views at the frame size
    assert 0.0 < float(by[model]["psnr"]) < 100.0
    assert str(tmp_path) not in (tmp_path / "rollout_fidelity.csv").read_text()
    # --per-frame: one row per frame and method, whose means and extremes are the summary rows'
    with open(tmp_path / "rollout_fidelity_frames.csv") as f:
        frames = list(csv.DictReader(f))
    assert list(frames[0]) == list(rollout_fidelity.FRAME_FIELDS)
    assert len(frames) == 9 * len(methods)
    for method in methods:
        mine = [r for r in frames if r["method"] == method]
        assert sorted((int(r["rollout"]), int(r["frame"])) for r in mine) == [
            (e, t) for e in range(3) for t in range(3)
        ]
        assert sum(float(r["psnr"]) for r in mine) / 9 == pytest.approx(float(by[method]["psnr"]), abs=2e-3)
        worst = min(float(r["vs_nearest_fill"]) for r in mine)
        assert worst == pytest.approx(float(by[method]["worst_vs_nearest_fill"]), abs=2e-3)
    assert {float(r["vs_nearest_fill"]) for r in frames if r["method"] == "nearest_fill"} == {0.0}
    assert [r["policy"] for r in frames if r["method"] == "oracle"] == [
        p for p in rollout_fidelity.POLICIES for _ in range(3)
    ]
    for name in ("rollout_fidelity.png", "rollout_fidelity_samples.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_capture_resolution_sets_the_density_of_the_captured_points(tmp_path):
    """--capture-resolution 32 captures the scenes' views at 32x32: a point cloud a quarter as dense, so one-pixel
    splats leave more of each 64x64 frame uncovered on the same rollouts; the rows record it."""
    argv = ["--scenes", "1", "--episodes", "1", "--frames", "2", "--captures", "full", "--samples", "1"]
    argv += ["--methods", "anchor"]
    dense = rollout_fidelity.main([*argv, "--out", str(tmp_path / "a")])
    sparse = rollout_fidelity.main([*argv, "--capture-resolution", "32", "--out", str(tmp_path / "b")])
    anchor = [next(r for r in rows if r["method"] == "anchor" and r["subset"] == "all") for rows in (dense, sparse)]
    assert [r["capture_resolution"] for r in anchor] == [64, 32]
    assert anchor[1]["uncaptured_fraction"] > anchor[0]["uncaptured_fraction"] + 0.05, anchor
    with pytest.raises(SystemExit):
        rollout_fidelity.parse_args(["--capture-resolution", "0"])


def test_depth_bound_caps_every_methods_depth_alike(tmp_path):
    """--depth-bound navigation: the RGB-D model's depth through the env's bound and the fills' filled depth with the
    same layout; frames are unchanged, and no method's depth is farther from the truth beyond it than without."""
    argv = ["--scenes", "1", "--episodes", "1", "--frames", "4", "--captures", "panorama", "--samples", "1"]
    argv += ["--splat-radius", "auto", "--methods", "nearest_fill", "worldfm-srgbd-auto-64x64"]
    rows = {
        bound: {
            r["method"]: r
            for r in rollout_fidelity.main([*argv, "--depth-bound", bound, "--out", str(tmp_path / bound)])
            if r["subset"] == "all"
        }
        for bound in ("none", "navigation")
    }
    for method in ("nearest_fill", "worldfm-srgbd-auto-64x64"):
        free, bounded = rows["none"][method], rows["navigation"][method]
        assert bounded["depth_bound"] == "navigation"
        assert bounded["psnr"] == free["psnr"] and bounded["ssim"] == free["ssim"]
        assert bounded["depth_far"] <= free["depth_far"]
    assert rows["navigation"]["worldfm-srgbd-auto-64x64"]["depth_source"] == "model"
    assert rows["navigation"]["oracle"]["depth_absrel"] == 0.0  # the truth is never bounded


def test_bad_method_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"methods \['bogus'\] are not valid; valid: \['anchor'"):
        rollout_fidelity.main(["--methods", "bogus", "--out", str(tmp_path)])


def test_candidate_rgbd_model_is_scored_with_its_own_depth(tmp_path, capsys):
    """--candidate: a checkpoint path joins the methods under its file's stem (also when --methods does not list
    it), an RGB-D model is scored with its own depth, and the verdict compares it with the default shipped model."""
    from worldfm_env.model import load_checkpoint, save_checkpoint
    from worldfm_env.model.weights import default_weights_path
    from worldfm_env.training.stages import extend_model

    default = default_weights_path(64, 64)
    rgbd = extend_model(load_checkpoint(None, default), {"depth_head": True})
    path = tmp_path / "rgbd-candidate.safetensors"
    save_checkpoint(rgbd, path)
    argv = ["--scenes", "1", "--episodes", "1", "--frames", "2", "--captures", "full", "panorama", "--samples", "2"]
    argv += ["--methods", "nearest_fill", default.stem, "--candidate", str(path)]
    rows = rollout_fidelity.main([*argv, "--out", str(tmp_path / "out")])
    by = {(r["capture"], r["method"]): r for r in rows if r["subset"] == "all"}
    assert by[("full", "rgbd-candidate")]["depth_source"] == "model"
    assert by[("full", default.stem)]["depth_source"] == "filled anchor"
    for capture in ("full", "panorama"):
        absrel = by[(capture, "rgbd-candidate")]["depth_absrel"]
        assert math.isnan(absrel) or 0.0 <= absrel < 10.0
    # The added head starts from the anchor's depth (pull-push filled), not the nearest fill: other values.
    assert by[("panorama", "rgbd-candidate")]["depth_absrel"] != by[("panorama", default.stem)]["depth_absrel"]
    with open(tmp_path / "out" / "verdict.csv") as f:
        assert {r["criterion"] for r in csv.DictReader(f)} >= {"p5_vs_shipped", "panorama_depth_absrel", "ship"}
    assert "Shipping verdict: candidate rgbd-candidate against shipped " + default.stem in capsys.readouterr().out


def test_anchor_colour_reaches_every_splatting_method(tmp_path):
    """--anchor-colour bank: the anchor's covered pixels take resampled colours (its PSNR changes, its coverage
    does not) and the rows record the option; a bad value is refused by name."""
    argv = ["--scenes", "1", "--episodes", "1", "--frames", "2", "--captures", "full", "--samples", "1"]
    argv += ["--methods", "anchor"]
    rows = {
        colour: next(
            r
            for r in rollout_fidelity.main([*argv, "--anchor-colour", colour, "--out", str(tmp_path / colour)])
            if r["method"] == "anchor" and r["subset"] == "all"
        )
        for colour in ("splat", "bank")
    }
    assert [rows[c]["anchor_colour"] for c in ("splat", "bank")] == ["splat", "bank"]
    assert rows["bank"]["uncaptured_fraction"] == rows["splat"]["uncaptured_fraction"]
    assert rows["bank"]["psnr_captured"] != rows["splat"]["psnr_captured"]
    with pytest.raises(SystemExit):
        rollout_fidelity.parse_args(["--anchor-colour", "nearest"])
