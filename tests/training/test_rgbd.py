"""The RGB-D frame model: the depth head, its loss, the adversarial term, resume, the env's depth, old checkpoints."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_stages import TINY

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.model import build_model, load_checkpoint, sample_distilled, split_depth, split_prediction
from worldfm_env.model.dit import PixelRefiner
from worldfm_env.model.frame_model import FrameModel
from worldfm_env.model.weights import resolve_weights
from worldfm_env.training.adversarial import (
    PatchDiscriminator,
    discriminator_loss,
    generator_loss,
    patch_weights,
    r1_penalty,
)
from worldfm_env.training.stages import (
    TrainConfig,
    detail_loss,
    extend_model,
    fill_margin_loss,
    log_depth_error,
    regression_loss,
    train,
)

# Shipped models' frames for a fixed synthetic input (float32, hash noise 5 and 9), 16x16 average-pooled, as
# rendered by the code before the RGB-D model existed.
PREVIOUS_FRAMES = {
    "worldfm-srd-64x64": [
        120.125,
        113.5,
        120.977,
        131.211,
        131.09,
        129.535,
        120.59,
        137.918,
        133.941,
        120.629,
        119.711,
        124.941,
        123.188,
        125.992,
        124.996,
        125.266,
        134.43,
        126.914,
        130.254,
        132.148,
        125.184,
        132.32,
        122.984,
        128.336,
        119.684,
        127.828,
        132.137,
        133.363,
        114.516,
        124.164,
        129.68,
        133.531,
        128.75,
        128.059,
        132.406,
        116.965,
        123.871,
        128.617,
        138.328,
        121.492,
        123.977,
        129.773,
        131.555,
        131.016,
        130.938,
        124.535,
        125.742,
        128.754,
        135.812,
        118.02,
        121.828,
        119.152,
        130.301,
        122.465,
        126.828,
        125.793,
        129.363,
        118.59,
        122.367,
        127.691,
        124.879,
        118.812,
        128.953,
        131.469,
        134.23,
        121.699,
        119.93,
        125.945,
        127.57,
        129.887,
        121.52,
        131.781,
        117.66,
        130.227,
        123.098,
        127.539,
        128.934,
        126.516,
        122.273,
        126.879,
        131.586,
        116.879,
        124.332,
        130.25,
        123.57,
        123.59,
        128.98,
        132.902,
        133.746,
        122.168,
        125.16,
        127.129,
        122.906,
        130.707,
        118.73,
        129.727,
    ],
    "worldfm-s-64x64": [
        118.926,
        114.449,
        124.348,
        133.934,
        134.914,
        130.316,
        121.758,
        141.922,
        138.848,
        124.098,
        122.391,
        128.703,
        130.074,
        128.355,
        126.359,
        128.336,
        135.656,
        128.504,
        132.355,
        132.164,
        126.035,
        132.152,
        122.93,
        128.254,
        121.426,
        130.219,
        135.398,
        137.129,
        114.551,
        125.113,
        130.988,
        138.672,
        125.715,
        126.055,
        132.578,
        112.289,
        121.711,
        123.996,
        137.223,
        117.316,
        124.426,
        129.477,
        132.598,
        132.984,
        137.371,
        123.25,
        124.148,
        130.277,
        141.094,
        121.871,
        123.816,
        120.637,
        134.312,
        127.293,
        130.75,
        129.129,
        136.602,
        121.645,
        127.035,
        131.027,
        129.77,
        120.898,
        129.031,
        132.781,
        138.93,
        125.434,
        119.801,
        128.0,
        129.383,
        135.984,
        123.477,
        133.938,
        120.723,
        133.59,
        126.531,
        129.238,
        130.953,
        128.633,
        117.879,
        124.566,
        132.066,
        117.555,
        123.961,
        132.727,
        121.578,
        128.363,
        130.602,
        135.543,
        138.004,
        121.582,
        128.094,
        128.953,
        124.441,
        132.164,
        111.801,
        127.562,
    ],
}

TINY_RGBD = dict(
    TINY,  # the tiny model of the stage tests (patch 4: a quarter of the tokens), a depth-reading refiner, the head
    model_overrides={"patch_size": 4, "refiner_channels": 8, "refiner_depth": True, "depth_head": True},
    stage="stage2",
    prediction="v",
    target="anchor_residual",
    anchor_start=0.0,
    anchor_full=0.0,
    anchor_drop=0.0,
    anchor_hole_prob=0.0,
)


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def assert_resumes_exactly(tmp_path, kw: dict, parts=("model", "ema")) -> None:
    """4 steps of ``TrainConfig(**kw)`` at once equal 2 + 2 resumed: every tensor of the state's ``parts`` is
    bit-exact (``kw`` needs ``save_every=1``)."""
    train(TrainConfig(steps=4, out=str(tmp_path / "a"), **kw))
    train(TrainConfig(steps=2, out=str(tmp_path / "b"), **kw))
    train(TrainConfig(steps=4, out=str(tmp_path / "b"), **kw))
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    for part in parts:
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def _synthetic_anchor(n: int = 2, size: int = 64, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    mask = torch.rand(n, size, size, generator=g) > 0.4
    rgb[~mask] = 0
    depth = torch.where(mask, torch.rand(n, size, size, generator=g) * 4 + 0.5, torch.zeros(n, size, size))
    reference = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    return rgb, mask, depth, reference


@pytest.mark.parametrize("name", sorted(PREVIOUS_FRAMES))
def test_shipped_models_render_as_before(name):
    """The depth head changed the model's output layout; the shipped RGB checkpoints still load and give the frames
    the code before it gave (float32; a tolerance of one grey level for other CPUs' arithmetic)."""
    rgb, mask, depth, reference = _synthetic_anchor()
    fm = FrameModel.from_checkpoint(resolve_weights(name), model_dtype="float32")
    assert not fm.has_depth
    cond = fm.conditions(rgb, mask, reference, anchor_depth=depth if fm.needs_depth else None)
    frames, model_depth = fm.generate_rgbd(cond, noise_seeds=torch.tensor([5, 9]))
    assert model_depth is None
    pooled = F.avg_pool2d(frames.permute(0, 3, 1, 2).float(), 16).flatten()
    torch.testing.assert_close(pooled, torch.tensor(PREVIOUS_FRAMES[name]), atol=1.0, rtol=0.0)
    torch.testing.assert_close(fm.generate(cond, noise_seeds=torch.tensor([5, 9])), frames, atol=0, rtol=0)


def test_added_depth_head_starts_from_the_anchor_depth_and_keeps_the_frame():
    """extend_model(..., depth_head=True) on the shipped model: the same RGB (the head only adds a channel), and the
    zero-initialised head predicts the anchor's own depth where the anchor has a point."""
    rgb, mask, depth, reference = _synthetic_anchor()
    base = FrameModel.from_checkpoint(resolve_weights("worldfm-srd-64x64"), model_dtype="float32")
    rgbd = FrameModel(extend_model(base.model, {"depth_head": True}).eval(), sampler_steps=base.steps)
    assert rgbd.has_depth and rgbd.config.output_channels == 4
    seeds = torch.tensor([5, 9])
    frames = base.generate(base.conditions(rgb, mask, reference, anchor_depth=depth), noise_seeds=seeds)
    frames2, model_depth = rgbd.generate_rgbd(
        rgbd.conditions(rgb, mask, reference, anchor_depth=depth), noise_seeds=seeds
    )
    assert torch.equal(frames, frames2)
    assert model_depth.shape == (2, 64, 64) and model_depth.dtype == torch.float32
    torch.testing.assert_close(model_depth[mask], depth[mask], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(model_depth).all() and (model_depth > 0).all()


def test_depth_channel_layout_and_validation():
    model = build_model("tiny", refiner_channels=8, refiner_depth=True, depth_head=True).eval()
    x = torch.randn(2, 3, 16, 16)
    depth = torch.rand(2, 16, 16) + 0.5
    out = model(x, torch.tensor([999, 999]), x, x, anchor_depth=depth)
    assert out.shape == (2, 7, 16, 16)  # 3 prediction + 3 learned sigma + 1 depth
    assert torch.equal(split_prediction(out, 3), out[:, :3])
    assert torch.equal(split_depth(out, 3), out[:, 6:])
    assert split_depth(out[:, :6], 3) is None and split_depth(out[:, :3], 3) is None
    x0, d = sample_distilled(model, x, x, steps=2, anchor_depth=depth, return_depth=True)
    assert x0.shape == (2, 3, 16, 16) and d.shape == (2, 1, 16, 16)
    assert sample_distilled(build_model("tiny").eval(), x, x, steps=1, return_depth=True)[1] is None
    with pytest.raises(ValueError, match="depth_head=True needs a refiner that reads the anchor depth"):
        build_model("tiny", refiner_channels=8, depth_head=True)
    with pytest.raises(ValueError, match="depth_head must be True or False"):
        build_model("tiny", refiner_channels=8, refiner_depth=True, depth_head=1)
    # absolute depth inverts the relative log depth
    mean = torch.tensor([0.3, -0.2])
    rel = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(PixelRefiner.absolute_depth(rel, mean).log(), rel[:, 0] + mean[:, None, None])


def test_log_depth_error_ignores_pixels_without_truth():
    rel = torch.zeros(1, 1, 2, 2)
    truth = torch.tensor([[[1.0, float("inf")], [0.0, 2.718281828]]])
    err = log_depth_error(rel, truth, torch.zeros(1))
    assert float(err) == pytest.approx(0.5, abs=1e-6)  # |0 - 0| and |0 - 1| over the two valid pixels
    with pytest.raises(ValueError, match="depth_head=True"):
        log_depth_error(None, truth, torch.zeros(1))


def test_depth_head_is_supervised_and_the_env_gives_its_depth(tmp_path):
    """On a fixed batch the depth loss falls and the head leaves its zero start; the env's depth observation is then
    the anchor's where it has a point and the model's elsewhere, and the growing memory lifts pixels with it."""
    # The head starts at zero and the anchor's own depth is already right where it has points, so the depth term
    # starts small and falls slowly at first (measured, one clip a step: means of the first and last 8 of 80 steps
    # 0.096 -> 0.059).
    train(TrainConfig(steps=80, fixed_batch=True, depth_weight=1.0, out=str(tmp_path), **TINY_RGBD))
    entries = _log(tmp_path)
    depth_terms = [e["depth"] for e in entries]
    assert sum(depth_terms[-8:]) / 8 < 0.85 * sum(depth_terms[:8]) / 8, depth_terms
    regression = [e["regression"] for e in entries]
    assert sum(regression[-8:]) / 8 < 0.8 * sum(regression[:8]) / 8
    model = load_checkpoint(None, tmp_path / "model.safetensors")
    assert model.config.depth_head and float(model.refiner.depth_out.weight.detach().abs().sum()) > 0
    env = WorldFMVectorEnv(
        num_envs=2,
        scenes="procedural:train:1",
        resolution=32,
        device="cpu",
        renderer="worldfm",
        weights=str(tmp_path / "model.safetensors"),
        include_depth=True,
        memory="grow",
    )
    obs, _ = env.reset(seed=0)
    anchor = env.pipeline.last_request.anchor
    depth = torch.as_tensor(obs["depth"]).reshape(2, 32, 32)
    assert torch.equal(depth[anchor.mask], anchor.depth[anchor.mask])
    holes = ~anchor.mask
    if holes.any():
        assert torch.isfinite(depth[holes]).all() and (depth[holes] > 0).all()
    env.close()


def test_rgbd_options_need_the_right_model_and_sampler(tmp_path):
    no_head = {**TINY_RGBD, "model_overrides": {"refiner_channels": 8, "refiner_depth": True}}
    with pytest.raises(ValueError, match="depth_weight > 0 needs an RGB-D model"):
        train(TrainConfig(steps=1, depth_weight=1.0, out=str(tmp_path), **no_head))
    with pytest.raises(ValueError, match="adversarial_weight > 0 needs sampler_unroll"):
        TrainConfig(adversarial_weight=0.1, prediction="v")
    for name in ("depth_weight", "adversarial_weight"):
        with pytest.raises(ValueError, match=f"{name} must be a number >= 0"):
            TrainConfig(**{name: -1.0})
    with pytest.raises(ValueError, match="disc_channels must be a positive int"):
        TrainConfig(disc_channels=0)
    with pytest.raises(ValueError, match="adversarial_start must be an int >= 0"):
        TrainConfig(adversarial_start=-1)


@pytest.mark.parametrize(
    "design", [dict(), dict(spectral_norm=False, edges=True)], ids=["spectral-norm", "plain-edges"]
)
def test_patch_discriminator_learns_to_tell_blur_from_detail(design):
    """The adversarial term's premise: a few steps teach the discriminator to score sharp frames above their blur."""
    torch.manual_seed(0)
    disc = PatchDiscriminator(16, **design)
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    sharp = (torch.rand(8, 3, 32, 32) > 0.5).float() * 2 - 1
    blur = F.avg_pool2d(sharp, 5, stride=1, padding=2)
    anchor = torch.full_like(sharp, -1.0)
    covered = torch.zeros(8, 32, 32, dtype=torch.bool)
    for _ in range(30):
        loss = discriminator_loss(disc(sharp, anchor, covered), disc(blur, anchor, covered))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert disc(sharp, anchor, covered).mean() > disc(blur, anchor, covered).mean() + 0.5
        assert float(generator_loss(disc(blur, anchor, covered))) > float(generator_loss(disc(sharp, anchor, covered)))
    with pytest.raises(ValueError, match="need frame and anchor"):
        disc(sharp, anchor[:, :, :16], covered)


def test_patch_weights_focus_on_uncovered_patches_and_weight_the_losses():
    covered = torch.ones(2, 16, 16, dtype=torch.bool)
    covered[0, :8, :8] = False  # one logit cell of sample 0 (2 x 2 logits) is wholly uncovered
    weights = patch_weights(covered, (2, 2), 1.0)
    assert weights.shape == (2, 1, 2, 2)
    assert weights[0, 0, 0, 0] == 1.0 and weights.sum() == 1.0
    assert torch.equal(patch_weights(covered, (2, 2), 0.0), torch.ones(2, 1, 2, 2))
    assert torch.allclose(patch_weights(covered, (2, 2), 0.5).sum(), torch.tensor(4.5))
    logits = torch.zeros(2, 1, 2, 2)
    logits[0, 0, 0, 0] = 3.0  # the only uncovered patch: a weighted mean sees nothing else
    assert float(generator_loss(logits, weights)) == -3.0
    assert float(generator_loss(logits)) == -3.0 / 8
    assert float(discriminator_loss(logits, -logits, weights)) == 0.0  # real 3 and fake -3 beyond both margins
    with pytest.raises(ValueError, match="focus must be in"):
        patch_weights(covered, (2, 2), 1.5)


def test_r1_penalty_is_the_squared_input_gradient_and_trains():
    torch.manual_seed(0)
    disc = PatchDiscriminator(4, spectral_norm=False, edges=True)
    frame, anchor = torch.rand(2, 3, 16, 16) * 2 - 1, torch.zeros(2, 3, 16, 16)
    covered = torch.zeros(2, 16, 16, dtype=torch.bool)
    penalty = r1_penalty(disc, frame, anchor, covered)
    x = frame.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x, anchor, covered).sum(), x)
    assert torch.allclose(penalty, grad.pow(2).flatten(1).sum(1).mean())
    penalty.backward()  # differentiable in the discriminator's weights (it is added to its loss; biases drop out)
    assert all(p.grad is not None for name, p in disc.named_parameters() if name.endswith("weight"))
    with pytest.raises(ValueError, match="edges must be a bool"):
        PatchDiscriminator(4, edges=1)


def test_regression_loss_weights_uncovered_pixels():
    torch.manual_seed(0)
    prediction, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    covered = torch.rand(2, 4, 4) > 0.5
    assert torch.equal(regression_loss(prediction, target, covered), F.mse_loss(prediction, target))
    squared = (prediction - target).pow(2)
    only_covered = regression_loss(prediction, target, covered, 0.0)
    assert torch.allclose(only_covered, (squared * covered[:, None]).mean())
    half = regression_loss(prediction, target, covered, 0.5)
    assert torch.allclose(half, (squared * torch.where(covered, 1.0, 0.5)[:, None]).mean())


def test_detail_loss_pays_for_the_truths_detail_where_it_is_and_for_flatness_where_it_is_flat():
    torch.manual_seed(0)
    truth = torch.full((2, 3, 16, 16), -0.2)
    truth[:, :, :8] = (torch.rand(2, 3, 8, 16) > 0.5).float() - 0.5  # detail in the top half, flat below
    uncovered = torch.zeros(2, 16, 16, dtype=torch.bool)
    assert float(detail_loss(truth, truth, uncovered)) == 0.0
    blur = F.avg_pool2d(truth, 5, stride=1, padding=2, count_include_pad=False)
    grain = truth + 0.3 * (torch.rand_like(truth) - 0.5)  # the truth plus grain on the flat half too
    shifted = torch.roll(truth, 1, dims=3)  # the same detail, one pixel off: the MSE's worst case, not this loss's
    assert float(detail_loss(blur, truth, uncovered)) > 0.5
    assert float(detail_loss(grain, truth, uncovered)) > 0.5
    assert float(detail_loss(shifted, truth, uncovered)) < 0.1 < F.mse_loss(shifted, truth)
    assert float(detail_loss(blur, truth, torch.ones_like(uncovered))) == 0.0  # covered cells do not count
    with pytest.raises(ValueError, match="need frame and truth"):
        detail_loss(truth, truth[:, :2], uncovered)


def test_fill_margin_loss_pays_per_frame_for_losing_to_the_nearest_fill():
    """0 for a frame at least as good as the nearest fill of its anchor, the log MSE ratio for one worse (the same
    for a 1 dB loss at any level), frames without anchor pixels not counted; gradient into the frame only."""
    from worldfm_env.render.fill import nearest_fill

    torch.manual_seed(0)
    truth = torch.rand(3, 3, 8, 8) * 2 - 1
    covered = torch.rand(3, 8, 8) > 0.4
    covered[2] = False  # no anchor pixel: not counted
    anchor = torch.where(covered[:, None], truth + 0.05 * torch.randn_like(truth), torch.full_like(truth, -1.0))
    fill = nearest_fill(anchor.permute(0, 2, 3, 1), covered).permute(0, 3, 1, 2)
    assert float(fill_margin_loss(fill, truth, anchor, covered)) == 0.0
    assert float(fill_margin_loss(truth, truth, anchor, covered)) == 0.0  # better than the fill: free
    fill_error = (fill - truth).square().mean((1, 2, 3))
    # Frames whose error is 10x the fill's (10 dB worse) cost log(10) each, however good the fill is.
    worse = (truth + (fill - truth) * 10**0.5).requires_grad_(True)
    margin = fill_margin_loss(worse, truth, anchor, covered)
    expected = torch.log((worse.detach() - truth).square().mean((1, 2, 3)) + 1e-6) - torch.log(fill_error + 1e-6)
    assert abs(float(margin.detach()) - float(expected[:2].mean())) < 1e-5
    assert abs(float(margin.detach()) - math.log(10.0)) < 0.05
    margin.backward()
    assert worse.grad is not None and float(worse.grad[:2].abs().sum()) > 0 and float(worse.grad[2].abs().sum()) == 0
    with pytest.raises(ValueError, match="need frame, truth and anchor"):
        fill_margin_loss(truth, truth, anchor[:, :2], covered)


def test_fill_margin_falls_on_a_fixed_batch(tmp_path):
    """An untrained frame model (target "image": it draws the whole frame) loses to the nearest fill on every frame;
    trained with the fill margin on one batch, the term falls towards 0. (Measured: 1.19 at step 1, at most 0.01 in
    the last 5 of 40 steps.)"""
    kw = dict(TINY_RGBD, target="image")
    train(TrainConfig(steps=40, fixed_batch=True, sampler_unroll=1, fill_margin_weight=1.0, out=str(tmp_path), **kw))
    margins = [e["fill_margin"] for e in _log(tmp_path)]
    assert margins[0] > 0.5
    assert sum(margins[-5:]) / 5 < 0.2 * margins[0]


def test_new_adversarial_options_are_validated():
    with pytest.raises(ValueError, match="detail_weight > 0 needs sampler_unroll"):
        TrainConfig(detail_weight=0.1, prediction="v")
    with pytest.raises(ValueError, match="adversarial_focus must be a number in"):
        TrainConfig(adversarial_focus=2.0)
    with pytest.raises(ValueError, match="disc_spectral_norm must be true or false"):
        TrainConfig(disc_spectral_norm="no")
    with pytest.raises(ValueError, match="fill_margin_weight > 0 needs sampler_unroll"):
        TrainConfig(fill_margin_weight=0.1, prediction="v")
    for name in ("disc_r1", "uncaptured_regression_weight", "detail_weight", "fill_margin_weight"):
        with pytest.raises(ValueError, match=f"{name} must be a number >= 0"):
            TrainConfig(**{name: -1.0})


@pytest.mark.parametrize(
    "design",
    [
        dict(),
        dict(
            disc_spectral_norm=False, disc_edges=True, disc_r1=1.0, adversarial_focus=0.8,
            uncaptured_regression_weight=0.5, detail_weight=0.5, fill_margin_weight=0.1,
        ),
    ],
    ids=["first-design", "plain-r1-focus"],
)  # fmt: skip
def test_adversarial_run_resumes_exactly(tmp_path, design):
    """sampler_unroll + adversarial term + depth: 4 steps at once equal 2 + 2 resumed (generator, EMA and
    discriminator), the discriminator trains from step 0 and the generator's term starts at adversarial_start."""
    kw = dict(
        sampler_unroll=1,
        adversarial_weight=0.1,
        adversarial_start=2,
        depth_weight=0.5,
        save_every=1,
        disc_channels=8,
        **design,
        **TINY_RGBD,
    )
    assert_resumes_exactly(tmp_path, kw, parts=("model", "ema", "disc"))
    entries = _log(tmp_path / "a")
    assert all("discriminator" in e for e in entries)
    assert ["adversarial" in e for e in entries] == [False, False, True, True]
    assert all(("r1" in e) == ("detail" in e) == ("fill_margin" in e) == bool(design) for e in entries)
    train(TrainConfig(steps=1, out=str(tmp_path / "c"), **{**kw, "adversarial_weight": 0.0}))
    with pytest.raises(ValueError, match="written without a discriminator"):
        train(TrainConfig(steps=2, out=str(tmp_path / "c"), **kw))


@pytest.mark.parametrize(
    "name, radius",
    [
        ("worldfm-srgbd-64x64", 0),
        ("worldfm-srgbd-auto-64x64", "auto"),
        ("worldfm-srgbd-auto-detail-64x64", "auto"),
        ("worldfm-srgbd-layout-64x64", "auto"),
        ("worldfm-srgbd-layout-footprints-64x64", "auto"),
    ],
)
def test_the_shipped_rgbd_models_load_by_name_and_are_not_the_default(name, radius):
    """The RGB-D models ship in weights/other/: loadable by name, RGB-D, never picked as a default; each header
    names the anchor splats it was trained on, and the env given those splats does not warn."""
    import warnings

    from worldfm_env.model.checkpoint import trained_splat_radius
    from worldfm_env.model.weights import default_weights_path, shipped_resolutions, shipped_weights

    path = shipped_weights()[name]
    assert path.parent.name == "other"
    assert trained_splat_radius(path) == radius
    assert default_weights_path(64, 64).stem == "worldfm-srd-64x64"
    assert shipped_resolutions() == ["64x64"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*trained on anchors with splat_radius")
        env = WorldFMVectorEnv(
            num_envs=2,
            scenes="procedural:test:1",
            capture="panorama",
            device="cpu",
            weights=name,
            splat_radius=radius,
            include_depth=True,
        )
    assert env.pipeline.backend.frame_model.has_depth
    obs, _ = env.reset(seed=3)
    anchor = env.pipeline.last_request.anchor
    depth = torch.as_tensor(obs["depth"])[..., 0]
    assert torch.equal(depth[anchor.mask], anchor.depth[anchor.mask])
    holes = ~anchor.mask
    assert holes.any()  # panorama capture leaves holes to generate
    assert torch.isfinite(depth[holes]).all() and float(depth[holes].min()) > 0
    env.close()


def test_an_eps_rgbd_model_read_with_ddim_gives_the_anchor_depth(tmp_path):
    """DDIM returns no depth channel: the env then gives the anchor's depth, as for an RGB model."""
    from worldfm_env.model import save_checkpoint

    model = build_model(
        "tiny", input_size=32, prediction="eps", refiner_channels=8, refiner_depth=True, depth_head=True
    )
    save_checkpoint(model, tmp_path / "eps-rgbd.safetensors")
    env = WorldFMVectorEnv(
        num_envs=1,
        scenes="procedural:train:1",
        resolution=32,
        device="cpu",
        weights=str(tmp_path / "eps-rgbd.safetensors"),
        teacher_steps=2,
        include_depth=True,
    )
    obs, _ = env.reset(seed=0)
    anchor = env.pipeline.last_request.anchor
    assert torch.equal(torch.as_tensor(obs["depth"])[..., 0], anchor.depth)
    env.close()


def test_depth_decoder_starts_as_a_no_op_and_validates():
    """extend_model(..., depth_decoder=8) on an RGB-D model: the same frame and depth until it trains."""
    torch.manual_seed(0)
    model = build_model("tiny", refiner_channels=8, refiner_depth=True, depth_head=True).eval()
    with torch.no_grad():  # a trained-looking head: the decoder must add nothing to it
        model.refiner.depth_out.weight.normal_(0.0, 0.1)
    extended = extend_model(model, {"depth_decoder": 8}).eval()
    assert extended.config.depth_decoder == 8 and extended.refiner.depth_decoder is not None
    x = torch.randn(2, 3, 16, 16)
    depth = torch.rand(2, 16, 16) + 0.5
    t = torch.tensor([999, 999])
    with torch.no_grad():
        assert torch.equal(model(x, t, x, x, anchor_depth=depth), extended(x, t, x, x, anchor_depth=depth))
        extended.refiner.depth_decoder.out.weight.normal_(0.0, 0.1)  # once trained it changes the depth alone
        moved = extended(x, t, x, x, anchor_depth=depth)
    before = model(x, t, x, x, anchor_depth=depth)
    assert torch.equal(moved[:, :6], before[:, :6]) and not torch.equal(moved[:, 6:], before[:, 6:])
    with pytest.raises(ValueError, match="depth_decoder > 0 needs depth_head=True"):
        build_model("tiny", refiner_channels=8, refiner_depth=True, depth_decoder=8)
    with pytest.raises(ValueError, match="depth_decoder must be 0 .off. or a positive multiple of 8"):
        build_model("tiny", refiner_channels=8, refiner_depth=True, depth_head=True, depth_decoder=12)


def test_log_depth_error_weights_covered_pixels():
    rel = torch.zeros(1, 1, 1, 3)
    truth = torch.tensor([[[1.0, 2.718281828, 7.389056099]]])  # log depths 0, 1, 2
    covered = torch.tensor([[[True, False, False]]])
    assert float(log_depth_error(rel, truth, torch.zeros(1), covered, 1.0)) == pytest.approx(1.0, abs=1e-6)
    assert float(log_depth_error(rel, truth, torch.zeros(1), covered, 0.0)) == pytest.approx(1.5, abs=1e-6)
    assert float(log_depth_error(rel, truth, torch.zeros(1), covered, 0.5)) == pytest.approx(3.0 / 2.5, abs=1e-6)
    with pytest.raises(ValueError, match="depth_covered_weight must be a number >= 0"):
        TrainConfig(depth_covered_weight=-0.5)


def test_train_only_depth_keeps_the_frame_trains_the_depth_and_resumes_exactly(tmp_path):
    """train_only='depth' with an added depth decoder: every parameter outside the depth branch stays bit-exact (so
    do the frames), the depth loss on uncovered pixels falls on a fixed batch, and 4 steps equal 2 + 2 resumed."""
    train(TrainConfig(steps=3, out=str(tmp_path / "init"), **TINY_RGBD))
    init = tmp_path / "init" / "model.safetensors"
    kw = {**TINY_RGBD, "model_overrides": {"depth_decoder": 8}}
    kw.update(init=str(init), train_only="depth", depth_weight=1.0, depth_covered_weight=0.0, lr=3e-3)
    train(TrainConfig(steps=60, fixed_batch=True, out=str(tmp_path / "depth"), **kw))
    depth_terms = [e["depth"] for e in _log(tmp_path / "depth")]
    assert sum(depth_terms[-8:]) / 8 < 0.85 * sum(depth_terms[:8]) / 8, depth_terms
    before = load_checkpoint(None, init).state_dict()
    after = load_checkpoint(None, tmp_path / "depth" / "model.safetensors").state_dict()
    moved = {k for k in after if k not in before or not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("refiner.depth_out.", "refiner.depth_decoder.")) for k in moved), moved
    assert any(k.startswith("refiner.depth_out.") for k in moved)
    assert float(after["refiner.depth_decoder.out.weight"].abs().sum()) > 0  # the decoder left its zero start
    rgb, mask, depth, reference = _synthetic_anchor(size=32)
    frames = []
    for path in (init, tmp_path / "depth" / "model.safetensors"):
        fm = FrameModel.from_checkpoint(path, model_dtype="float32")
        cond = fm.conditions(rgb, mask, reference, anchor_depth=depth)
        frames.append(fm.generate_rgbd(cond, noise_seeds=torch.tensor([5, 9])))
    assert torch.equal(frames[0][0], frames[1][0]) and not torch.equal(frames[0][1], frames[1][1])
    assert_resumes_exactly(tmp_path, {**kw, "save_every": 1})


def test_train_only_validation(tmp_path):
    with pytest.raises(ValueError, match="train_only='bogus' is not valid; choose one of"):
        TrainConfig(train_only="bogus")
    with pytest.raises(ValueError, match="train_only='depth' .* needs init"):
        TrainConfig(train_only="depth", depth_weight=1.0)
    with pytest.raises(ValueError, match="depth_weight > 0"):
        TrainConfig(train_only="depth", init="x.safetensors")
    for name in ("adversarial_weight", "detail_weight"):
        with pytest.raises(ValueError, match="frame terms cannot train anything"):
            kw = dict(train_only="depth", init="x.safetensors", depth_weight=1.0, prediction="v", sampler_unroll=1)
            TrainConfig(**kw, **{name: 0.1})
    rgb_only = {**TINY_RGBD, "model_overrides": {"refiner_channels": 8, "refiner_depth": True}}
    train(TrainConfig(steps=1, out=str(tmp_path / "rgb"), **rgb_only))
    with pytest.raises(ValueError, match="depth_weight > 0 needs an RGB-D model"):
        train(
            TrainConfig(
                steps=1, init=str(tmp_path / "rgb" / "model.safetensors"), train_only="depth", depth_weight=1.0,
                out=str(tmp_path / "d"), **{k: v for k, v in TINY_RGBD.items() if k != "model_overrides"},
            )
        )  # fmt: skip
