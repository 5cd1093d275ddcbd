"""The ``worldfm`` renderer backend with a small random checkpoint (untrained: tests the plumbing)."""

import warnings

import gymnasium as gym
import pytest
import torch
from conftest import SMALL, small
from gymnasium.utils.env_checker import check_env

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.model import build_model, save_checkpoint


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("tiny", input_size=32)
    path = tmp_path_factory.mktemp("weights") / "tiny-32.safetensors"
    save_checkpoint(model, path)
    return str(path)


@pytest.mark.parametrize("env_id", ["WorldFM/PointNav-v0", "WorldFM/Explore-v0"])
def test_check_env_worldfm(env_id, tiny_weights):
    env = gym.make(env_id, **small(renderer="worldfm"), weights=tiny_weights)
    check_env(env.unwrapped, skip_render_check=True)


def test_vector_env_steps_and_frames_are_model_outputs(tiny_weights):
    env = WorldFMVectorEnv(num_envs=4, **small(renderer="worldfm"), weights=tiny_weights)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs, reward, term, trunc, info = env.step(torch.randint(1, 6, (4,)))
    assert obs["rgb"].shape == (4, 32, 32, 3) and obs["rgb"].dtype == torch.uint8
    # A random network does not reproduce the anchor: the frame is generated, not copied.
    anchor = env.pipeline.last_request.anchor.rgb
    assert not torch.equal(obs["rgb"], anchor)
    # The reference index of every env lies inside its own scene's bank.
    ref = env.pipeline.last_request.reference_index
    start = env.pool.scene_bank_start.long()[env.scene_index.long()]
    count = env.pool.scene_bank_count.long()[env.scene_index.long()]
    assert bool(((ref >= start) & (ref < start + count)).all())


def test_same_seed_same_frames_and_batch_independent(tiny_weights):
    """Fixed seed and pose give the same frame, whatever the batch the env runs in."""
    batched = WorldFMVectorEnv(num_envs=3, **small(renderer="worldfm"), weights=tiny_weights)
    obs_b, _ = batched.reset(seed=10)
    actions = [torch.randint(1, 6, (3,), generator=torch.Generator().manual_seed(k)) for k in range(4)]
    frames_b = [obs_b["rgb"].clone()]
    for a in actions:
        frames_b.append(batched.step(a)[0]["rgb"].clone())
    single = WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights)
    obs_s, _ = single.reset(seed=12)  # env 2 of the batch has seed 10 + 2
    frames_s = [obs_s["rgb"].clone()]
    for a in actions:
        frames_s.append(single.step(a[2:3])[0]["rgb"].clone())
    for fb, fs in zip(frames_b, frames_s, strict=True):
        assert torch.allclose(fb[2].float(), fs[0].float(), atol=1.0)  # one grey level of float slack
    # And the noise matters: the same request with other per-env seeds gives other frames.
    request = single.pipeline.last_request
    first = single.renderer.render(request).rgb.clone()
    request.noise_seed = request.noise_seed + 1
    assert not torch.equal(first, single.renderer.render(request).rgb)


def test_bad_model_options(tiny_weights):
    with pytest.raises(ValueError, match="sampler_steps"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights, sampler_steps=3)
    with pytest.raises(ValueError, match="model_dtype"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights, model_dtype="int8")
    with pytest.raises(ValueError, match="resolution"):
        WorldFMVectorEnv(num_envs=1, **small(resolution=64, renderer="worldfm"), weights=tiny_weights)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, torch.float32)],
)
def test_auto_model_dtype_takes_bf16_on_cpus_with_native_bf16(monkeypatch, amx, avx512_bf16, expected):
    from worldfm_env.model import frame_model as renderer

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert renderer.auto_model_dtype(torch.device("cpu")) == expected
    # A torch build without the probes counts as no native bf16.
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert renderer.auto_model_dtype(torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("encoding", ["plucker", "prope"])
def test_camera_conditioned_checkpoints_get_panel_cameras(tmp_path, encoding):
    """Checkpoints with camera encodings receive target/anchor/reference cameras from the env."""
    torch.manual_seed(0)
    path = tmp_path / f"{encoding}.safetensors"
    save_checkpoint(build_model("tiny", input_size=32, camera_encoding=encoding), path)
    env = WorldFMVectorEnv(num_envs=2, **small(renderer="worldfm"), weights=str(path))
    env.reset(seed=0)
    obs, *_ = env.step(torch.tensor([1, 2]))
    cameras = env.renderer._cameras(env.pipeline.last_request)
    assert cameras.c2w.shape == (2, 3, 4, 4) and torch.equal(cameras.c2w[:, 0], cameras.c2w[:, 1])
    assert obs["rgb"].shape == (2, 32, 32, 3)


def test_eps_teacher_checkpoints_are_sampled_with_ddim(tmp_path):
    """A stage II (eps) checkpoint is not read in the distilled v form: the renderer uses DDIM for it."""
    path = tmp_path / "eps.safetensors"
    save_checkpoint(build_model("tiny", input_size=32, prediction="eps"), path)
    env = WorldFMVectorEnv(num_envs=2, **small(renderer="worldfm"), weights=str(path), teacher_steps=3)
    obs, _ = env.reset(seed=0)
    assert env.renderer.frame_model.config.prediction == "eps" and obs["rgb"].shape == (2, 32, 32, 3)


def test_default_weights_path_prefers_the_student_for_the_sampler(tmp_path, monkeypatch):
    from worldfm_env.model import weights as renderer

    monkeypatch.setattr(renderer, "WEIGHTS_DIR", tmp_path)
    assert renderer.default_weights_path(64, 64, 2) is None
    for name in ("worldfm-s-1step-64x64.safetensors", "worldfm-s-2step-64x64.safetensors"):
        (tmp_path / name).write_bytes(b"")
    assert renderer.default_weights_path(64, 64, 1).name == "worldfm-s-1step-64x64.safetensors"
    assert renderer.default_weights_path(64, 64, 2).name == "worldfm-s-2step-64x64.safetensors"
    assert renderer.default_weights_path(64, 64).name == "worldfm-s-2step-64x64.safetensors"
    assert renderer.default_weights_path(32, 32, 2) is None


@pytest.mark.parametrize("noise_key", ["pose", "step"])
def test_revisited_pose_gives_the_same_frame_with_pose_keyed_noise(tiny_weights, noise_key):
    """Turning away and back returns to the same pose: the same frame with noise_key="pose", a new draw with
    "step" (the anchor and reference are the same both times, only the noise differs)."""
    env = WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights, noise_key=noise_key)
    obs, _ = env.reset(seed=4)
    first, pose = obs["rgb"].clone(), env.camera_poses().clone()
    anchor = env.pipeline.last_request.anchor.rgb.clone()
    for action in (2, 2, 2, 3, 3, 3):  # three turns left, three right
        obs = env.step(torch.tensor([action]))[0]
    assert torch.allclose(env.camera_poses(), pose, atol=1e-5)
    assert torch.equal(env.pipeline.last_request.anchor.rgb, anchor)
    assert torch.equal(obs["rgb"], first) == (noise_key == "pose")


def test_noise_key_is_validated():
    with pytest.raises(ValueError, match="noise_key"):
        WorldFMVectorEnv(num_envs=1, **SMALL, noise_key="time")


def test_env_warns_when_its_anchors_differ_from_the_frame_models(tmp_path, tiny_weights):
    import numpy as np

    from worldfm_env.model.checkpoint import SPLAT_RADIUS_METADATA_KEY, trained_splat_radius
    from worldfm_env.model.weights import WEIGHTS_DIR

    torch.manual_seed(0)
    auto = tmp_path / "auto.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), auto, metadata={SPLAT_RADIUS_METADATA_KEY: "auto"})
    assert trained_splat_radius(auto) == "auto" and trained_splat_radius(tiny_weights) is None
    with pytest.warns(UserWarning, match=r"trained on anchors with splat_radius='auto' but this env renders splat_r"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(auto))
    two = tmp_path / "two.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), two, metadata={SPLAT_RADIUS_METADATA_KEY: "2"})
    with pytest.warns(UserWarning, match=r"splat_radius=2 but this env renders splat_radius=1"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(two), splat_radius=1)
    with warnings.catch_warnings():
        # The same anchors (a numpy int too), or a checkpoint that names none: no warning.
        warnings.filterwarnings("error", message="the frame model")
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(auto), splat_radius="auto")
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(two), splat_radius=np.int64(2))
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights, splat_radius=2)
    # The shipped models (the default and the earlier one) say they learned from one-pixel splats, the env's default.
    assert trained_splat_radius(WEIGHTS_DIR / "worldfm-srd-64x64.safetensors") == 0
    assert trained_splat_radius(WEIGHTS_DIR / "earlier" / "worldfm-s-64x64.safetensors") == 0
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), bad, metadata={SPLAT_RADIUS_METADATA_KEY: "wide"})
    with pytest.raises(ValueError, match="worldfm_env.splat_radius: splat_radius must be"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(bad))


def test_env_warns_when_the_model_learned_from_other_silhouettes(tmp_path):
    """The header's worldfm_env.silhouettes against the env's; headers with a splat_radius but no such entry were
    written before the option and mean "splat"; a bad value is named."""
    from worldfm_env.model.checkpoint import SILHOUETTES_METADATA_KEY, SPLAT_RADIUS_METADATA_KEY, trained_silhouettes
    from worldfm_env.model.weights import WEIGHTS_DIR

    torch.manual_seed(0)
    learned = tmp_path / "learned.safetensors"
    header = {SPLAT_RADIUS_METADATA_KEY: "1", SILHOUETTES_METADATA_KEY: "learned"}
    save_checkpoint(build_model("tiny", input_size=32), learned, metadata=header)
    assert trained_silhouettes(learned) == "learned"
    with pytest.warns(UserWarning, match=r"silhouettes='learned' but this env renders silhouettes='splat'"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(learned), splat_radius=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the frame model")
        WorldFMVectorEnv(
            num_envs=1, **small(renderer="worldfm"), weights=str(learned), splat_radius=1, silhouettes="learned"
        )
    shipped = sorted(WEIGHTS_DIR.rglob("*.safetensors"))
    assert {trained_silhouettes(p) for p in shipped} == {"splat"}  # every shipped model: plain splats
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), wrong, metadata={SILHOUETTES_METADATA_KEY: "maybe"})
    with pytest.raises(ValueError, match=r"header worldfm_env.silhouettes='maybe'; valid values are 'splat', 'l"):
        trained_silhouettes(wrong)


def test_env_warns_when_the_model_learned_from_other_anchor_colours(tmp_path, tiny_weights):
    """The header's worldfm_env.anchor_colour (a header with a splat_radius but no colour: "splat", written before
    colours could be resampled) against the env's anchor_colour; a bad value is named."""
    from worldfm_env.model.checkpoint import (
        ANCHOR_COLOUR_METADATA_KEY,
        SPLAT_RADIUS_METADATA_KEY,
        trained_anchor_colour,
    )
    from worldfm_env.model.weights import WEIGHTS_DIR

    torch.manual_seed(0)
    bank = tmp_path / "bank.safetensors"
    header = {SPLAT_RADIUS_METADATA_KEY: "1", ANCHOR_COLOUR_METADATA_KEY: "bank"}
    save_checkpoint(build_model("tiny", input_size=32), bank, metadata=header)
    older = tmp_path / "older.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), older, metadata={SPLAT_RADIUS_METADATA_KEY: "1"})
    assert trained_anchor_colour(bank) == "bank" and trained_anchor_colour(older) == "splat"
    assert trained_anchor_colour(tiny_weights) is None
    with pytest.warns(UserWarning, match=r"anchor_colour='bank' but this env renders anchor_colour='splat'"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(bank), splat_radius=1)
    with pytest.warns(UserWarning, match=r"anchor_colour='splat' but this env renders anchor_colour='bank'"):
        WorldFMVectorEnv(
            num_envs=1, **small(renderer="worldfm"), weights=str(older), splat_radius=1, anchor_colour="bank"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the frame model")
        WorldFMVectorEnv(
            num_envs=1, **small(renderer="worldfm"), weights=str(bank), splat_radius=1, anchor_colour="bank"
        )
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(older), splat_radius=1)
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights, anchor_colour="bank")
    # Every shipped model learned from the splat's colours, the env's default.
    shipped = sorted(WEIGHTS_DIR.rglob("*.safetensors"))
    assert len(shipped) >= 2 and {trained_anchor_colour(p) for p in shipped} == {"splat"}
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), wrong, metadata={ANCHOR_COLOUR_METADATA_KEY: "mean"})
    with pytest.raises(ValueError, match=r"worldfm_env.anchor_colour='mean'; valid values are 'splat', 'bank'"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(wrong))


def test_sampler_steps_default_to_the_checkpoints_recommendation(tmp_path, tiny_weights):
    """sampler_steps=None: the header's worldfm_env.sampler_steps, else the published 2; an explicit value wins."""
    from worldfm_env.model.checkpoint import SAMPLER_STEPS_METADATA_KEY, recommended_sampler_steps

    torch.manual_seed(0)
    one = tmp_path / "one-step.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), one, metadata={SAMPLER_STEPS_METADATA_KEY: "1"})
    assert recommended_sampler_steps(one) == 1 and recommended_sampler_steps(tiny_weights) is None
    assert WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(one)).renderer.steps == 1
    assert WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights).renderer.steps == 2
    forced = WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(one), sampler_steps=2)
    assert forced.renderer.steps == 2
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), bad, metadata={SAMPLER_STEPS_METADATA_KEY: "4"})
    with pytest.raises(ValueError, match="sampler_steps"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(bad))


def test_depth_refiner_checkpoints_get_the_anchor_depth(tmp_path):
    """A model with ``refiner_depth`` receives each env's anchor depth, as rendered, with its anchor."""
    torch.manual_seed(0)
    model = build_model("tiny", input_size=32, refiner_channels=8, refiner_depth=True)
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.normal_(0.0, 0.05)  # zero-initialised convolutions would hide the depth path
    path = tmp_path / "depth.safetensors"
    save_checkpoint(model, path)
    env = WorldFMVectorEnv(num_envs=2, **small(renderer="worldfm"), weights=str(path))
    seen = []
    forward = env.renderer.frame_model.forward

    def recording(*args, **kwargs):
        seen.append(kwargs["anchor_depth"])
        return forward(*args, **kwargs)

    env.renderer.frame_model.forward = recording
    env.reset(seed=0)
    obs, *_ = env.step(torch.tensor([1, 2]))
    assert obs["rgb"].shape == (2, 32, 32, 3)
    assert torch.equal(seen[-1], env.pipeline.last_request.anchor.depth)


def test_panel_depth_keeps_the_nearest_covered_depth_of_each_block():
    from worldfm_env.model.frame_model import panel_depth

    depth = torch.tensor([[[0.0, 3.0, 0.0, 0.0], [2.0, 5.0, 0.0, 0.0], [1.0, 1.0, 4.0, 0.5], [1.0, 1.0, 9.0, 8.0]]])
    assert panel_depth(depth, (4, 4)) is depth
    torch.testing.assert_close(panel_depth(depth, (2, 2)), torch.tensor([[[2.0, 0.0], [1.0, 0.5]]]))
    with pytest.raises(ValueError, match="sizes must divide"):
        panel_depth(depth, (3, 3))


def test_weights_take_the_name_of_a_shipped_model(tmp_path):
    from worldfm_env.model.weights import WEIGHTS_DIR, resolve_weights, shipped_weights

    assert {"worldfm-srd-64x64", "worldfm-s-64x64"} <= set(shipped_weights())
    env = WorldFMVectorEnv(
        num_envs=1,
        scenes="procedural:train:1",
        resolution=64,
        device="cpu",
        renderer="worldfm",
        weights="worldfm-s-64x64",
    )
    assert env.renderer.weights_path == WEIGHTS_DIR / "earlier" / "worldfm-s-64x64.safetensors"
    assert env.renderer.model.config.refiner_channels == 0  # the earlier model, not the default one
    assert resolve_weights("worldfm-srd-64x64") == WEIGHTS_DIR / "worldfm-srd-64x64.safetensors"
    local = tmp_path / "worldfm-s-64x64"  # a file of that name wins over the shipped model
    local.write_bytes(b"")
    assert resolve_weights(local) == local
    with pytest.raises(ValueError, match=r"weights='worldfm-xyz': .*shipped: \[.*'worldfm-srd-64x64'"):
        resolve_weights("worldfm-xyz")
