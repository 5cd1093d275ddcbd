"""``target="anchor_residual"`` frame models: the base, the config, training, the renderer and the fidelity run."""

import json

import pytest
import torch
from conftest import small, zero_x0_forward

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.model import DiTConfig, build_model, load_checkpoint, save_checkpoint
from worldfm_env.model.checkpoint import CONFIG_METADATA_KEY
from worldfm_env.model.targets import anchor_base, clip_scale, from_target, residual_base, to_target
from worldfm_env.render.fill import nearest_fill, pull_push_fill


def _holey(n=3, h=9, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, h, w, generator=g) * 2 - 1
    mask = torch.rand(n, h, w, generator=g) < 0.4
    return images, mask


def test_anchor_base_is_the_pull_push_fill_and_keeps_covered_pixels():
    images, mask = _holey()
    base = anchor_base(images, mask)
    assert base.shape == images.shape and base.dtype == torch.float32
    assert torch.equal(base, pull_push_fill(images.permute(0, 2, 3, 1), mask).permute(0, 3, 1, 2))
    covered = mask[:, None].expand_as(images)
    assert torch.equal(base[covered], images[covered])


def test_anchor_base_of_an_empty_anchor_is_zero_so_the_residual_is_the_frame():
    images, mask = _holey()
    mask[1] = False
    base = anchor_base(images, mask)
    assert bool((base[1] == 0).all())
    assert not bool((base[0] == 0).all())
    frame = torch.rand(3, 3, 9, 7) * 2 - 1
    assert torch.equal(to_target(frame, base, "anchor_residual")[1], frame[1])


def test_anchor_base_checks_shapes():
    with pytest.raises(ValueError, match="anchor"):
        anchor_base(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 7, dtype=torch.bool))


def test_to_and_from_target_invert_each_other():
    images, mask = _holey()
    frame = torch.rand(images.shape) * 2 - 1
    base = anchor_base(images, mask)
    residual = to_target(frame, base, "anchor_residual")
    assert torch.allclose(residual, frame - base)
    assert torch.allclose(from_target(residual, base, "anchor_residual"), frame, atol=1e-6)
    assert to_target(frame, None, "image") is frame and from_target(frame, None, "image") is frame
    with pytest.raises(ValueError, match="anchor base"):
        from_target(residual, None, "anchor_residual")
    with pytest.raises(ValueError, match="target must be one of"):
        to_target(frame, base, "depth")
    assert residual_base("image", images, mask) is None
    assert torch.equal(residual_base("anchor_residual", images, mask), base)
    assert (clip_scale("image"), clip_scale("anchor_residual")) == (1.0, 2.0)
    with pytest.raises(ValueError, match="target must be one of"):
        clip_scale("depth")


def test_config_target_is_validated_stored_and_defaults_to_image(tmp_path):
    with pytest.raises(ValueError, match="target must be one of"):
        DiTConfig(target="residual")
    assert build_model("tiny").config.target == "image"
    model = build_model("tiny", input_size=16, target="anchor_residual")
    path = tmp_path / "residual.safetensors"
    save_checkpoint(model, path)
    assert load_checkpoint(None, path).config.target == "anchor_residual"
    # A header written before the field existed (no "target" key) loads as an image model.
    from safetensors.torch import load_file, save_file

    config = model.config.to_dict()
    del config["target"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(path), old, metadata={"format": "pt", CONFIG_METADATA_KEY: json.dumps(config)})
    assert load_checkpoint(None, old).config.target == "image"


# ----------------------------------------------------------------------------------------------------------- env


@pytest.mark.parametrize("steps", [1, 2])
def test_residual_model_adds_the_filled_anchor_back(tmp_path, steps):
    """A network predicting a zero residual renders exactly the hole-filled anchor; an image model renders grey."""
    frames = {}
    for target in ("anchor_residual", "image"):
        path = tmp_path / f"{target}.safetensors"
        save_checkpoint(build_model("tiny", input_size=32, target=target), path)
        env = WorldFMVectorEnv(
            num_envs=3, **small(renderer="worldfm"), weights=str(path), sampler_steps=steps, model_dtype="float32"
        )
        env.reset(seed=4)
        env.renderer.frame_model.forward = zero_x0_forward()
        obs, *_ = env.step(torch.tensor([1, 2, 3]))
        frames[target] = (obs["rgb"], env.pipeline.last_request.anchor)
    rgb, anchor = frames["anchor_residual"]
    assert bool(anchor.mask.any()) and not bool(anchor.mask.all())
    expected = pull_push_fill(anchor.rgb, anchor.mask)
    assert (rgb.int() - expected.int()).abs().max() <= 1  # uint8 -> [-1, 1] -> uint8 rounding
    grey, _ = frames["image"]
    assert bool(((grey == 127) | (grey == 128)).all())  # x0 = 0 (to float rounding) is mid grey


def test_fidelity_runs_residual_checkpoints(tmp_path):
    """The benchmark adds the base back: a freshly built residual model (zero output layer, so x0 = a_999 z, tiny)
    scores about like the pull-push fill, an image model with the same weights far below it."""
    from benchmarks.fidelity import evaluate_fidelity

    rows = {}
    for target in ("anchor_residual", "image"):
        torch.manual_seed(0)
        path = tmp_path / f"{target}.safetensors"
        save_checkpoint(build_model("tiny", input_size=32, target=target), path)
        rows[target] = {
            r["method"]: r
            for r in evaluate_fidelity(
                clips=1, scenes=1, resolution=32, device="cpu", student1=str(path), samples=0, verbose=False
            )
        }
    fill = rows["anchor_residual"]["pull_push_fill"]["psnr"]
    assert abs(rows["anchor_residual"]["student_1step"]["psnr"] - fill) < 0.5
    assert rows["image"]["student_1step"]["psnr"] < fill - 3.0


# ----------------------------------------------------------------------------------------------------------- fill


def test_pull_push_keeps_covered_pixels_and_interpolates_holes_smoothly():
    # Left half red, right half blue, a 6-pixel-wide uncovered band between them.
    rgb = torch.zeros(1, 8, 20, 3, dtype=torch.uint8)
    rgb[..., :7, 0] = 200
    rgb[..., 13:, 2] = 200
    mask = torch.ones(1, 8, 20, dtype=torch.bool)
    mask[..., 7:13] = False
    out = pull_push_fill(rgb, mask)
    assert out.dtype == torch.uint8 and torch.equal(out[mask], rgb[mask])
    red, blue = out[0, 4, 7:13, 0].int(), out[0, 4, 7:13, 2].int()
    assert bool((red[:-1] >= red[1:]).all()) and bool((blue[:-1] <= blue[1:]).all())  # a ramp from red to blue
    assert 0 < int(red[3]) < 200 and 0 < int(blue[2]) < 200  # blended, not copied
    assert nearest_fill(rgb, mask)[0, 4, 7:13, 0].tolist() == [200, 200, 200, 0, 0, 0]  # the nearest fill jumps


def test_pull_push_of_a_constant_stays_constant_at_odd_sizes_and_empty_images_stay():
    images = torch.full((3, 13, 9, 2), 0.25)
    mask = torch.rand(3, 13, 9, generator=torch.Generator().manual_seed(0)) < 0.1
    mask[2] = False
    out = pull_push_fill(images, mask)
    assert out.shape == images.shape
    assert torch.allclose(out[:2], images[:2], atol=1e-6)
    assert torch.equal(out[2], images[2])
    with pytest.raises(ValueError, match="mask"):
        pull_push_fill(images, mask[..., :5])


@pytest.mark.parametrize("height", [17, 64, 96, 100])
def test_pull_push_is_not_shifted_at_sizes_that_are_not_powers_of_two(height):
    """A vertical ramp covered in a top and a bottom band: the middle of the hole gets the ramp's middle."""
    ramp = torch.linspace(0, 1, height).view(1, height, 1, 1).expand(1, height, 8, 1).contiguous()
    band = max(2, height // 5)
    mask = torch.zeros(1, height, 8, dtype=torch.bool)
    mask[:, :band] = mask[:, height - band :] = True
    mid = pull_push_fill(ramp, mask)[0, height // 2, :, 0]
    # The fill blends the two bands' values symmetrically: about the ramp's mean at the middle row.
    assert torch.allclose(mid, torch.full_like(mid, 0.5), atol=0.08), (height, mid)
