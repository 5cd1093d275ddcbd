"""``benchmarks/fidelity.py``: the metrics on hand-computed cases, the nearest-pixel fill against brute force, and
tiny end-to-end runs (baselines only, and with random tiny teacher / student checkpoints)."""

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

from benchmarks import fidelity  # noqa: E402
from benchmarks.fidelity import PSNR_CAP_DB, evaluate_fidelity, nearest_fill, psnr, ssim  # noqa: E402

RES = 32
TINY = dict(clips=1, scenes=1, resolution=RES, seed=0, device="cpu", dtype="float32", batch=12, verbose=False)


def _images(seed: int, shape=(3, 24, 24, 3)) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ----------------------------------------------------------------------------------------------------------- psnr


def test_psnr_of_identical_images_is_capped():
    x = _images(0)
    values = psnr(x, x)
    assert values.shape == (3,)
    assert torch.all(values == PSNR_CAP_DB)


def test_psnr_of_a_constant_offset_matches_the_hand_computed_value():
    target = torch.full((2, 8, 8, 3), 100, dtype=torch.uint8)
    pred = target + 10  # MSE = 100
    expected = 10 * math.log10(255**2 / 100)  # 28.1308 dB
    assert psnr(pred, target).tolist() == pytest.approx([expected, expected], abs=1e-9)
    # Offset only in the left half: the masked PSNRs see 100 and 0 MSE, the full one 50.
    half = target.clone()
    half[:, :, :4] += 10
    left = torch.zeros(2, 8, 8, dtype=torch.bool)
    left[:, :, :4] = True
    assert psnr(half, target, left).tolist() == pytest.approx([expected] * 2, abs=1e-9)
    assert psnr(half, target, ~left).tolist() == [PSNR_CAP_DB] * 2
    assert psnr(half, target).tolist() == pytest.approx([10 * math.log10(255**2 / 50)] * 2, abs=1e-9)


def test_psnr_with_an_empty_mask_is_nan():
    x = _images(1)
    assert torch.isnan(psnr(x, x, torch.zeros(x.shape[:-1], dtype=torch.bool))).all()


# ----------------------------------------------------------------------------------------------------------- ssim


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    x = _images(2).float()
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-12)
    smooth = torch.linspace(0, 255, 24).view(1, 1, 24, 1).expand(3, 24, 24, 3)
    noise = torch.randn(smooth.shape, generator=torch.Generator().manual_seed(0))
    light, heavy = (smooth + 10 * noise).clamp(0, 255), (smooth + 60 * noise).clamp(0, 255)
    s_light, s_heavy = ssim(light, smooth), ssim(heavy, smooth)
    assert torch.all(s_light < 0.999) and torch.all(s_heavy < s_light)
    assert torch.all(s_heavy < 0.7)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 100.0, 110.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the contrast-structure term is 1
    value = ssim(torch.full((1, 16, 16, 3), b), torch.full((1, 16, 16, 3), a))
    assert float(value) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_a_direct_windowed_sum():
    """The separable conv against an explicit weighted sum over every valid 11x11 window (one channel)."""
    x = _images(3, (1, 13, 12, 1)).double()
    y = _images(4, (1, 13, 12, 1)).double()
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(13 - 10):
        for j in range(12 - 10):
            px, py = x[0, i : i + 11, j : j + 11, 0], y[0, i : i + 11, j : j + 11, 0]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert float(ssim(x, y)) == pytest.approx(float(torch.stack(values).mean()), abs=1e-9)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 3))


# ----------------------------------------------------------------------------------------------------------- fill


def test_nearest_fill_on_a_hand_made_example():
    # Two covered pixels on a 3x5 image: red at (0, 0), blue at (2, 4); no hole is equidistant from both.
    rgb = torch.zeros(3, 5, 3, dtype=torch.uint8)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    rgb[0, 0], rgb[2, 4] = torch.tensor([255, 0, 0]), torch.tensor([0, 0, 255])
    mask[0, 0] = mask[2, 4] = True
    out = nearest_fill(rgb, mask)
    # 0 = red, 1 = blue, 2 = a tie: the squared distances to (0, 0) and to (2, 4) decide.
    expected = torch.tensor(
        [
            [0, 0, 0, 1, 1],  # (0, 2): 4 vs 8 -> red; (0, 3): 9 vs 5 -> blue
            [0, 0, 2, 1, 1],  # (1, 2): 5 vs 5 -> a tie (checked separately)
            [0, 0, 1, 1, 1],  # (2, 1): 5 vs 9 -> red; (2, 2): 8 vs 4 -> blue
        ]
    )
    colours = {0: [255, 0, 0], 1: [0, 0, 255]}
    for y in range(3):
        for x in range(5):
            if expected[y, x] != 2:
                assert out[y, x].tolist() == colours[int(expected[y, x])], (y, x)
    assert out[1, 2].tolist() in (colours[0], colours[1])  # equidistant: either is a nearest pixel
    assert torch.equal(out[mask], rgb[mask])
    assert torch.equal(rgb[~mask], torch.zeros_like(rgb[~mask]))  # the input is not modified


def test_nearest_fill_matches_brute_force_and_keeps_covered_pixels():
    gen = torch.Generator().manual_seed(0)
    N, H, W = 6, 11, 14
    mask = torch.rand(N, H, W, generator=gen) < 0.08
    mask[0] = False  # nothing covered: the image comes back unchanged
    mask[1] = False
    mask[1, 5, 7] = True  # one covered pixel: everything takes its value
    rgb = torch.arange(N * H * W * 3, dtype=torch.int64).reshape(N, H, W, 3)  # every pixel a unique value
    out = nearest_fill(rgb, mask)
    assert torch.equal(out[mask], rgb[mask])
    assert torch.equal(out[0], rgb[0])
    assert torch.all(out[1] == rgb[1, 5, 7])
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    for n in range(2, N):
        covered = torch.nonzero(mask[n])
        source = out[n, ..., 0] // 3 - n * H * W  # flat index of the pixel each value came from
        sy, sx = source // W, source % W
        assert mask[n][sy, sx].all()  # every value comes from a covered pixel ...
        d2 = (ys[..., None] - covered[:, 0]) ** 2 + (xs[..., None] - covered[:, 1]) ** 2
        assert torch.equal((sy - ys) ** 2 + (sx - xs) ** 2, d2.min(dim=-1).values)  # ... at the smallest distance


def test_nearest_fill_is_independent_of_the_batch_and_keeps_leading_dims():
    rgb = _images(6, (2, 3, 9, 10, 3))
    mask = torch.rand(2, 3, 9, 10, generator=torch.Generator().manual_seed(1)) < 0.3
    out = nearest_fill(rgb, mask)
    assert out.shape == rgb.shape and out.dtype == rgb.dtype
    flat_rgb, flat_mask = rgb.reshape(6, 9, 10, 3), mask.reshape(6, 9, 10)
    for i in range(6):
        assert torch.equal(out.reshape(6, 9, 10, 3)[i], nearest_fill(flat_rgb[i : i + 1], flat_mask[i : i + 1])[0])
    floats = rgb.float() / 255
    assert torch.equal(nearest_fill(floats, mask), out.float() / 255)  # any dtype, the same sources


# ----------------------------------------------------------------------------------------------------------- runs


def _finite(row: dict, keys) -> None:
    for key in keys:
        assert isinstance(row[key], float) and math.isfinite(row[key]), (row["method"], key, row[key])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random tiny checkpoints at 32x32: an eps teacher and a v student."""
    from worldfm_env.model import build_model, save_checkpoint

    folder = tmp_path_factory.mktemp("fidelity-ckpt")
    torch.manual_seed(0)
    paths = {}
    for prediction in ("eps", "v"):
        paths[prediction] = folder / f"tiny-{prediction}.safetensors"
        save_checkpoint(build_model("tiny", input_size=RES, prediction=prediction), paths[prediction])
    return paths


def test_anchor_only_run_and_nearest_fill_beats_the_black_holes():
    rows = evaluate_fidelity(**TINY, default_weights=False)
    assert [r["method"] for r in rows] == ["anchor", "nearest_fill", "pull_push_fill"]
    anchor, filled, smooth = rows
    for r in rows:
        _finite(r, ("psnr", "ssim", "psnr_covered", "psnr_holes", "coverage"))
        assert r["revisit_psnr"] is None
        assert r["frames"] == 12
        assert 0.0 < r["coverage"] < 1.0
        assert -1.0 <= r["ssim"] <= 1.0
    # Covered pixels are identical; the fill can only help in the holes, which are black in the anchor.
    for fill in (filled, smooth):
        assert fill["psnr_covered"] == anchor["psnr_covered"]
        assert fill["psnr_holes"] > anchor["psnr_holes"]
        assert fill["psnr"] >= anchor["psnr"]
    assert anchor["psnr_covered"] > anchor["psnr_holes"]


def test_auto_splat_anchors_cover_more_and_fill_better():
    one_pixel = evaluate_fidelity(**TINY, default_weights=False)
    auto = evaluate_fidelity(**TINY, default_weights=False, splat_radius="auto")
    assert [r["splat_radius"] for r in auto] == ["auto"] * 3 and one_pixel[0]["splat_radius"] == 0
    assert auto[0]["coverage"] > one_pixel[0]["coverage"]
    assert auto[0]["psnr"] > one_pixel[0]["psnr"]  # fewer black holes in the raw anchor


def test_run_with_tiny_models_gives_every_method(checkpoints):
    samples: dict = {}
    rows = evaluate_fidelity(
        **TINY,
        teacher=checkpoints["eps"],
        teacher_steps=2,
        student2=checkpoints["v"],
        student1=checkpoints["v"],
        samples=3,
        samples_out=samples,
    )
    assert [r["method"] for r in rows] == [
        "anchor",
        "nearest_fill",
        "pull_push_fill",
        "teacher",
        "student_2step",
        "student_1step",
    ]
    for r in rows[3:]:
        _finite(r, ("psnr", "ssim", "psnr_covered", "psnr_holes", "revisit_psnr", "seconds"))
        assert r["weights"] in ("tiny-eps.safetensors", "tiny-v.safetensors")
        assert r["dtype"] == "float32"
    assert [r["steps"] for r in rows[3:]] == [2, 2, 1]
    # Random weights: the output depends on the noise, so a revisit is not identical.
    assert all(r["revisit_psnr"] < PSNR_CAP_DB for r in rows[3:])
    names = [
        "anchor",
        "nearest fill",
        "pull-push fill",
        "reference",
        "teacher",
        "student_2step",
        "student_1step",
        "ground truth",
    ]
    assert list(samples) == names
    assert all(v.shape == (3, RES, RES, 3) and v.dtype == torch.uint8 for v in samples.values())


def test_runs_are_reproducible_and_noise_is_per_row(checkpoints):
    """Same seed: same numbers, whatever the batch size (one generator per frame)."""
    kwargs = dict(TINY, student1=checkpoints["v"], samples=12)
    first, second = {}, {}
    rows_a = evaluate_fidelity(**{**kwargs, "batch": 12}, samples_out=first)
    rows_b = evaluate_fidelity(**{**kwargs, "batch": 5}, samples_out=second)
    assert torch.equal(first["student_1step"], second["student_1step"])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows_a]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows_b]


def test_wrong_kind_of_checkpoint_is_refused(checkpoints):
    # A teacher may be eps or v (DDIM in its own parametrisation); students must be v.
    rows = evaluate_fidelity(**TINY, teacher=checkpoints["v"], teacher_steps=2)
    assert rows[-1]["method"] == "teacher" and rows[-1]["psnr"] == rows[-1]["psnr"]
    with pytest.raises(ValueError, match="--student2 needs a v-prediction"):
        evaluate_fidelity(**TINY, student2=checkpoints["eps"])


def test_cli_writes_csv_and_plots(tmp_path, capsys, checkpoints):
    argv = ["--clips", "1", "--scenes", "1", "--resolution", str(RES), "--device", "cpu", "--dtype", "float32"]
    rows = fidelity.main([*argv, "--student1", str(checkpoints["v"]), "--samples", "2", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| method | PSNR dB |" in printed
    with open(tmp_path / "fidelity.csv") as f:
        table = list(csv.DictReader(f))
    assert (
        [r["method"] for r in table]
        == ["anchor", "nearest_fill", "pull_push_fill", "student_1step"]
        == [r["method"] for r in rows]
    )
    columns = {"method", "psnr", "ssim", "psnr_covered", "psnr_holes", "revisit_psnr", "frames", "seconds"}
    assert columns | {"device", "coverage"} <= set(table[0])
    assert table[0]["revisit_psnr"] == "" and table[3]["revisit_psnr"] != ""
    assert str(tmp_path) not in (tmp_path / "fidelity.csv").read_text()  # no machine paths in the CSV
    for name in ("fidelity.png", "fidelity_samples.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_camera_conditioned_models_get_the_clip_cameras(tmp_path):
    """A camera-conditioned student is fed each target's panel cameras (it raises without them)."""
    from worldfm_env.model import build_model, save_checkpoint

    path = tmp_path / "cam.safetensors"
    save_checkpoint(build_model("tiny", input_size=RES, prediction="v", camera_encoding="plucker"), path)
    rows = evaluate_fidelity(**TINY, student1=path)
    assert rows[-1]["method"] == "student_1step" and rows[-1]["psnr"] == rows[-1]["psnr"]


def test_layout_reading_models_get_the_clip_layout(tmp_path):
    """A student that reads the navigation layout (refiner_layout) is fed each target's layout depth (it raises
    without it)."""
    from worldfm_env.model import build_model, save_checkpoint

    path = tmp_path / "layout.safetensors"
    model = build_model(
        "tiny", input_size=RES, prediction="v", refiner_channels=8, refiner_depth=True, depth_head=True,
        refiner_layout=True,
    )  # fmt: skip
    save_checkpoint(model, path)
    rows = evaluate_fidelity(**TINY, student1=path)
    assert rows[-1]["method"] == "student_1step" and math.isfinite(rows[-1]["psnr"])
