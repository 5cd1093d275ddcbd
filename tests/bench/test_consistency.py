"""Tests of ``benchmarks/consistency.py``: a tiny run of static against growing memory, and its splat option."""

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

from benchmarks import consistency  # noqa: E402
from worldfm_env.model import build_model, save_checkpoint  # noqa: E402

TINY = ["--scenes", "1", "--trajectories", "1", "--time-envs", "2", "--time-steps", "1"]
UNTIMED = ["--scenes", "1", "--trajectories", "1", "--time-envs"]  # no step timing: only the one-pixel run checks it


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """An untrained 64x64 model with 64 tokens a panel: the runs that only check how an option reaches the envs use
    it instead of the shipped model (a third of the time), since nothing they check depends on the frames' quality."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small-model") / "small.safetensors"
    save_checkpoint(build_model("tiny", input_size=64, patch_size=8, target="anchor_residual", prediction="v"), path)
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_model):
    """A tiny run of the shipped model with one-pixel splats, and one of the small model with footprint splats."""
    out = {}
    for radius, size in (("0", TINY), ("auto", [*UNTIMED, "--weights", small_model])):
        folder = tmp_path_factory.mktemp(f"consistency-{radius}")
        out[radius] = (consistency.main([*size, "--splat-radius", radius, "--out", str(folder)]), folder)
    return out


def test_tiny_run_writes_its_outputs_and_scores_the_truth_as_exact(runs):
    rows, folder = runs["0"]
    by = {r["method"]: r for r in rows}
    assert set(by) == {"oracle", "anchor", "nearest_fill", "worldfm_static", "worldfm_static_step", "worldfm_grow"}
    assert by["oracle"]["psnr"] == pytest.approx(100.0)  # the truth against itself: the PSNR cap
    for method in ("worldfm_static", "worldfm_grow"):
        assert 5.0 < by[method]["psnr"] < 60.0
        assert math.isfinite(by[method]["revisit_psnr"])
    # Only the growing memory shows grown points, whose depth is compared with the truth.
    assert math.isnan(by["worldfm_static"]["grown_depth_absrel"])
    assert 0.0 <= by["worldfm_grow"]["grown_depth_absrel"] < 10.0
    with open(folder / "consistency.csv") as f:
        written = list(csv.DictReader(f))
    assert [r["method"] for r in written] == [r["method"] for r in rows]
    assert {r["splat_radius"] for r in written if r["method"] != "oracle"} == {"0"}
    assert {r["depth_bound"] for r in written if r["method"] != "oracle"} == {"none"}
    with open(folder / "consistency_steptime.csv") as f:
        (timing,) = list(csv.DictReader(f))
    assert int(timing["num_envs"]) == 2 and float(timing["ratio"]) > 0
    for name in ("consistency.png", "consistency_strip.png"):
        assert (folder / name).stat().st_size > 1000


def test_splat_radius_reaches_the_worldfm_envs(runs):
    """Footprint splats cover more of each frame than one-pixel ones: fewer uncaptured pixels, same trajectory."""
    one_pixel = {r["method"]: r for r in runs["0"][0]}
    footprint = {r["method"]: r for r in runs["auto"][0]}
    assert footprint["worldfm_static"]["splat_radius"] == "auto"
    assert footprint["worldfm_static"]["uncaptured_fraction"] < one_pixel["worldfm_static"]["uncaptured_fraction"]
    assert footprint["oracle"]["psnr"] == pytest.approx(100.0)


def test_bad_splat_radius_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        consistency.main([*TINY, "--splat-radius", "huge"])
    assert "--splat-radius" in capsys.readouterr().err


def test_depth_bound_reaches_the_worldfm_envs_and_leaves_static_frames_alone(runs, small_model, tmp_path):
    """--depth-bound navigation: recorded on the worldfm rows; with a static memory the frames do not depend on the
    depth, so every static figure is the same as without the bound (the footprint-splat run of the same model)."""
    argv = [*UNTIMED, "--weights", small_model, "--splat-radius", "auto", "--depth-bound", "navigation"]
    bounded = {r["method"]: r for r in consistency.main([*argv, "--out", str(tmp_path)])}
    free = {r["method"]: r for r in runs["auto"][0]}
    assert bounded["worldfm_grow"]["depth_bound"] == "navigation" and bounded["oracle"]["depth_bound"] == ""
    for key in ("psnr", "ssim", "revisit_psnr", "reproj_uncaptured"):
        assert bounded["worldfm_static"][key] == free["worldfm_static"][key]


def test_memory_carve_reaches_the_growing_envs_only(runs, small_model, tmp_path, monkeypatch):
    """--memory-carve: every env built with memory="grow" (the worldfm_grow frames and the step timing) carves, no
    other does; the static methods' frames are those of the same run without it."""
    built = []

    class Recording(consistency.WorldFMVectorEnv):
        def __init__(self, *args, **kwargs):
            built.append((kwargs.get("memory", "static"), kwargs.get("memory_carve", False)))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(consistency, "WorldFMVectorEnv", Recording)
    argv = ["--scenes", "1", "--trajectories", "1", "--time-envs", "2", "--time-steps", "1"]
    argv += ["--weights", small_model, "--splat-radius", "auto", "--memory-carve", "--out", str(tmp_path)]
    carved = {r["method"]: r for r in consistency.main(argv)}
    assert ("grow", True) in built and ("grow", False) not in built
    assert all(carve is False for memory, carve in built if memory != "grow")
    assert carved["worldfm_grow"]["memory_carve"] is True and carved["worldfm_static"]["memory_carve"] == ""
    free = {r["method"]: r for r in runs["auto"][0]}
    for key in ("psnr", "ssim", "revisit_psnr", "reproj_uncaptured"):
        assert carved["worldfm_static"][key] == free["worldfm_static"][key]
