"""The diffusers ``AutoencoderKL`` path (``vae=<folder>``) with tiny random VAEs written by ``save_pretrained``."""

import json
import sys

import pytest
import torch
from conftest import SMALL, small, zero_x0_forward

pytest.importorskip("diffusers", reason='the diffusers VAE path needs the "vae" extra')
from diffusers import AutoencoderKL  # noqa: E402

from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402
from worldfm_env.model import build_model, save_checkpoint  # noqa: E402
from worldfm_env.model.autoencoders import DIFFUSERS_EXTRA_HINT, DiffusersAutoencoderKL  # noqa: E402


def tiny_vae(num_blocks: int = 2, **config) -> AutoencoderKL:
    """A random ``AutoencoderKL`` with ``num_blocks`` blocks: downsample 2 ** (num_blocks - 1), 4 latent channels."""
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16, 16)[:num_blocks],
        down_block_types=("DownEncoderBlock2D",) * num_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_blocks,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        **config,
    )


def save_vae(folder, num_blocks: int = 2, **config) -> str:
    """Write a tiny VAE to ``folder`` (config.json + diffusion_pytorch_model.safetensors) and return its path."""
    tiny_vae(num_blocks, **config).save_pretrained(folder)
    return str(folder)


def smooth_images(batch: int = 2, height: int = 32, width: int = 32) -> torch.Tensor:
    """Smooth (B, 3, H, W) images in [-1, 1]: gradients and low-frequency waves, different per image."""
    y = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    x = torch.linspace(-1, 1, width).view(1, 1, 1, width)
    k = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1)
    channels = [0.8 * x * y.new_ones(1), 0.8 * y * x.new_ones(1), 0.5 * torch.sin(3 * x * k) * torch.cos(2 * y)]
    return torch.cat([c.expand(batch, 1, height, width) for c in channels], dim=1).clamp(-1, 1)


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    return save_vae(tmp_path_factory.mktemp("vae"))


# --------------------------------------------------------------------------------------------- the autoencoder


@pytest.mark.parametrize("num_blocks, downsample", [(2, 2), (3, 4)])
def test_from_folder_loads_and_latent_shape_matches_encode(tmp_path, num_blocks, downsample):
    ae = DiffusersAutoencoderKL.from_folder(save_vae(tmp_path, num_blocks), device="cpu", dtype=torch.float32)
    assert isinstance(ae.vae, AutoencoderKL) and not ae.vae.training
    assert not any(p.requires_grad for p in ae.vae.parameters())
    assert ae.latent_channels == 4 and ae.downsample == downsample
    images = smooth_images(2, 32, 48)  # not square: height and width are kept apart
    latents = ae.encode(images)
    assert latents.shape == (2, *ae.latent_shape(32, 48)) == (2, 4, 32 // downsample, 48 // downsample)
    assert latents.dtype == torch.float32
    with pytest.raises(ValueError, match="divisible"):
        ae.latent_shape(32, 33)


def test_encode_is_the_scaled_posterior_mean_and_decode_inverts_it(vae_folder):
    """Deterministic: latents = posterior mean * scaling_factor; decode(latents) = vae.decode(latents / scale)."""
    ae = DiffusersAutoencoderKL.from_folder(vae_folder)
    images = smooth_images()
    latents = ae.encode(images)
    assert torch.equal(latents, ae.encode(images))  # no posterior sampling: a renderer needs fixed latents
    assert ae.scale == pytest.approx(ae.vae.config.scaling_factor) and ae.shift == 0.0
    with torch.no_grad():
        mean = ae.vae.encode(images).latent_dist.mean
        expected_images = ae.vae.decode(mean).sample
    torch.testing.assert_close(latents, mean * ae.vae.config.scaling_factor)
    decoded = ae.decode(latents)
    assert decoded.shape == images.shape and bool(torch.isfinite(decoded).all())
    torch.testing.assert_close(decoded, expected_images, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="latents must be"):
        ae.decode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="images must be"):
        ae.encode(torch.zeros(1, 4, 32, 32))


def test_sample_posterior_is_seeded(vae_folder):
    """``sample_posterior=True`` (the published inference) draws from the generator it is given."""
    ae = DiffusersAutoencoderKL.from_folder(vae_folder, sample_posterior=True)
    images = smooth_images()
    a = ae.encode(images, generator=torch.Generator().manual_seed(1))
    b = ae.encode(images, generator=torch.Generator().manual_seed(1))
    c = ae.encode(images, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == DiffusersAutoencoderKL.from_folder(vae_folder).encode(images).shape


@pytest.mark.parametrize(
    "config",
    [
        dict(scaling_factor=0.5, shift_factor=0.25),  # SD3 / Flux style
        dict(scaling_factor=0.5, latents_mean=(0.1, -0.2, 0.3, 0.0), latents_std=(1.0, 2.0, 0.5, 4.0)),  # SDXL style
    ],
    ids=["shift_factor", "latents_mean_std"],
)
def test_shift_and_per_channel_statistics(tmp_path, config):
    """latents = (z - shift) * scale, or (z - latents_mean) * scale / latents_std; decode undoes it exactly."""
    ae = DiffusersAutoencoderKL.from_folder(save_vae(tmp_path, **config))
    images = smooth_images()
    with torch.no_grad():
        z = ae.vae.encode(images).latent_dist.mode()
        expected_images = ae.vae.decode(z).sample
    if "shift_factor" in config:
        expected = (z - config["shift_factor"]) * config["scaling_factor"]
    else:
        m = torch.tensor(config["latents_mean"]).view(1, 4, 1, 1)
        s = torch.tensor(config["latents_std"]).view(1, 4, 1, 1)
        expected = (z - m) * config["scaling_factor"] / s
    latents = ae.encode(images)
    torch.testing.assert_close(latents, expected)
    torch.testing.assert_close(ae.decode(latents), expected_images, rtol=1e-4, atol=1e-5)
    if "latents_mean" in config:
        # The statistics are moved to the latents' device and dtype once, then reused (no copy per frame).
        first = ae._stats(latents)
        assert all(a is b for a, b in zip(first, ae._stats(latents), strict=True))
        half = ae._stats(latents.to(torch.bfloat16))
        assert half[0].dtype == torch.bfloat16 and torch.equal(half[0].float(), first[0].bfloat16().float())


def test_force_upcast_keeps_the_callers_dtype(vae_folder):
    """fp16 requested + config force_upcast: the VAE runs in fp32, latents/images come back in the caller's dtype."""
    ae = DiffusersAutoencoderKL.from_folder(vae_folder, dtype=torch.float16)
    assert ae.vae.config.force_upcast and ae.vae.dtype == torch.float32
    images = smooth_images().to(torch.float16)
    latents = ae.encode(images)
    assert latents.dtype == torch.float16 and ae.decode(latents).dtype == torch.float16
    bf16 = DiffusersAutoencoderKL.from_folder(vae_folder, dtype=torch.bfloat16)
    assert bf16.vae.dtype == torch.bfloat16  # force_upcast is about fp16 overflow only
    latents = bf16.encode(smooth_images().to(torch.bfloat16))
    assert latents.dtype == torch.bfloat16 and bool(torch.isfinite(bf16.decode(latents)).all())


def test_bad_folders_name_the_vae_option_and_what_is_valid(tmp_path, vae_folder):
    valid = "diffusers AutoencoderKL folder"
    missing = tmp_path / "no-such-vae"
    with pytest.raises(ValueError, match="no such folder") as err:
        DiffusersAutoencoderKL.from_folder(missing)
    assert f"vae={str(missing)!r}" in str(err.value) and valid in str(err.value)
    a_file = tmp_path / "vae.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(ValueError, match=f"vae=.*is a file, not a folder.*{valid}"):
        DiffusersAutoencoderKL.from_folder(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"vae=.*no config.json.*{valid}"):
        DiffusersAutoencoderKL.from_folder(empty)
    # A model root holding vae/ (the official layout): the message points at the subfolder.
    root = tmp_path / "root"
    save_vae(root / "vae")
    with pytest.raises(ValueError, match="subfolder .*vae.* has one"):
        DiffusersAutoencoderKL.from_folder(root)
    no_weights = tmp_path / "config-only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(dict(tiny_vae().config)))
    with pytest.raises(ValueError, match=f"vae=.*could not load the AutoencoderKL.*{valid}"):
        DiffusersAutoencoderKL.from_folder(no_weights)
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="'UNet2DModel', not an AutoencoderKL"):
        DiffusersAutoencoderKL.from_folder(other)


def test_missing_diffusers_names_the_extra(monkeypatch, vae_folder):
    monkeypatch.setitem(sys.modules, "diffusers.models", None)  # makes the import inside from_folder fail
    with pytest.raises(ImportError, match=r"worldfm-env\[vae\]") as err:
        DiffusersAutoencoderKL.from_folder(vae_folder)
    assert str(err.value) == DIFFUSERS_EXTRA_HINT


# --------------------------------------------------------------------------------------------- through the env


@pytest.fixture(scope="module")
def latent_weights(tmp_path_factory):
    """A tiny latent-space (4-channel, 16x16 latents = 32x32 pixels with the 2x VAE) v-prediction DiT."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny-latent-16.safetensors"
    save_checkpoint(build_model("tiny", input_size=16, in_channels=4, prediction="v"), path)
    return str(path)


def run_env(weights, vae, seed=7, steps=3, num_envs=2, **kwargs):
    env = WorldFMVectorEnv(num_envs=num_envs, **small(renderer="worldfm"), weights=weights, vae=vae, **kwargs)
    obs, _ = env.reset(seed=seed)
    frames = [obs["rgb"].clone()]
    for k in range(steps):
        actions = torch.randint(1, 6, (num_envs,), generator=torch.Generator().manual_seed(k))
        frames.append(env.step(actions)[0]["rgb"].clone())
    return env, frames


def test_env_with_vae_resets_steps_and_is_reproducible(latent_weights, vae_folder):
    env, frames = run_env(latent_weights, vae_folder)
    assert isinstance(env.renderer.autoencoder, DiffusersAutoencoderKL)
    assert env.renderer.bank_latents.shape[1:] == (4, 16, 16)
    res = SMALL["resolution"]
    for rgb in frames:
        assert rgb.shape == (2, res, res, 3) and rgb.dtype == torch.uint8
    assert not torch.equal(
        frames[-1], env.pipeline.last_request.anchor.rgb
    )  # generated through the decoder, not copied
    _, again = run_env(latent_weights, vae_folder)
    for a, b in zip(frames, again, strict=True):
        assert torch.equal(a, b)


def test_env_vae_mismatches_are_explained(tmp_path, latent_weights, vae_folder):
    pixel = tmp_path / "pixel-32.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), pixel)  # pixel space: 3 channels
    with pytest.raises(ValueError, match="3-channel latents but the autoencoder gives 4"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(pixel), vae=vae_folder)
    with pytest.raises(ValueError, match="4-channel latents but the autoencoder gives 3"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=latent_weights)  # latent model, no vae
    with pytest.raises(ValueError, match="use resolution=32"):
        WorldFMVectorEnv(num_envs=1, **small(resolution=64, renderer="worldfm"), weights=latent_weights, vae=vae_folder)
    with pytest.raises(ValueError, match="vae=.*no such folder"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=latent_weights, vae=str(tmp_path / "nope"))


def test_residual_latent_model_decodes_the_encoded_base(tmp_path, vae_folder):
    """target='anchor_residual' with a VAE: the base is encoded like a frame; a zero residual decodes it."""
    from worldfm_env.model.frame_model import images_to_model, model_to_images
    from worldfm_env.model.targets import anchor_base

    path = tmp_path / "tiny-latent-residual.safetensors"
    save_checkpoint(build_model("tiny", input_size=16, in_channels=4, target="anchor_residual"), path)
    env = WorldFMVectorEnv(
        num_envs=2,
        **small(renderer="worldfm"),
        weights=str(path),
        vae=vae_folder,
        sampler_steps=1,
        model_dtype="float32",
    )
    env.reset(seed=2)
    env.renderer.frame_model.forward = zero_x0_forward()
    obs, *_ = env.step(torch.tensor([1, 3]))
    anchor = env.pipeline.last_request.anchor
    ae = env.renderer.autoencoder
    expected = model_to_images(ae.decode(ae.encode(anchor_base(images_to_model(anchor.rgb), anchor.mask))))
    assert (obs["rgb"].int() - expected.int()).abs().max() <= 1
