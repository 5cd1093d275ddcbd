"""Device-side hashed diffusion noise: ``hash_normal``, the samplers' ``noise_seeds`` and the renderer's ``noise``."""

import pytest
import torch
from conftest import small

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.model import build_model, sample_ddim, sample_distilled, save_checkpoint
from worldfm_env.renderers.worldfm import WorldFMRenderer
from worldfm_env.rng import hash_normal

SEEDS = torch.tensor([5, 123, -7, 2**40 + 3, 0, 2**62 + 11])


def test_hash_normal_is_standard_normal():
    z = hash_normal(torch.arange(64), (4096,))  # 262,144 draws
    assert z.shape == (64, 4096) and z.dtype == torch.float32 and bool(torch.isfinite(z).all())
    # Standard errors: mean 0.002, std 0.0014, tail fraction 0.0004: these bounds are about 5 of them.
    assert abs(z.mean().item()) < 0.01
    assert abs(z.std().item() - 1.0) < 0.01
    assert abs((z.abs() > 2.0).float().mean().item() - 0.0455) < 0.002
    assert abs((z**4).mean().item() - 3.0) < 0.1  # kurtosis of a normal
    # Neighbouring elements (the two halves of a Box-Muller pair, and across pairs) are uncorrelated.
    flat = z.flatten()
    assert abs(torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].item()) < 0.01


def test_hash_normal_is_batch_invariant_and_deterministic():
    shape = (3, 8, 8)
    batch = hash_normal(SEEDS, shape, stream=1)
    assert batch.shape == (len(SEEDS), *shape)
    for i, seed in enumerate(SEEDS):
        alone = hash_normal(seed[None], shape, stream=1)
        assert torch.equal(alone[0], batch[i])
    shuffled = torch.tensor([99, int(SEEDS[3]), 7, 7])
    assert torch.equal(hash_normal(shuffled, shape, stream=1)[1], batch[3])
    assert torch.equal(hash_normal(SEEDS, shape, stream=1), batch)  # same on every call
    # Equal seeds give equal rows; a row's first elements do not depend on the per-row size.
    again = hash_normal(shuffled, shape, stream=1)
    assert torch.equal(again[2], again[3])
    assert torch.equal(hash_normal(SEEDS, (7,))[:, :5], hash_normal(SEEDS, (5,)))


def test_hash_normal_seeds_streams_and_counters_differ():
    z = hash_normal(SEEDS, (256,))
    for i in range(len(SEEDS)):
        for j in range(i + 1, len(SEEDS)):
            assert not torch.equal(z[i], z[j])
            assert abs(torch.corrcoef(torch.stack([z[i], z[j]]))[0, 1].item()) < 0.3
    streams = [hash_normal(SEEDS, (256,), stream=s) for s in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.equal(streams[a], streams[b])
            corr = torch.corrcoef(torch.stack([streams[a].flatten(), streams[b].flatten()]))[0, 1].item()
            assert abs(corr) < 0.05
    counter = torch.arange(len(SEEDS))
    assert not torch.equal(hash_normal(SEEDS, (256,), counter=counter), z)
    assert torch.equal(hash_normal(SEEDS, (256,), counter=0), z)  # None means counter 0


def test_hash_normal_rejects_bad_seeds():
    with pytest.raises(ValueError, match="seed"):
        hash_normal(torch.zeros(2, 2, dtype=torch.long), (4,))
    with pytest.raises(ValueError, match="seed"):
        hash_normal(torch.zeros(2), (4,))


# ----------------------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------------------
def random_tiny(prediction: str, **overrides) -> torch.nn.Module:
    """The tiny config with every weight random (its zero-initialised output layer would hide the model)."""
    model = build_model("tiny", prediction=prediction, **overrides)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, t in sorted(model.state_dict(keep_vars=True).items()):
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype) * 0.1)
    return model.eval()


def conditions(B: int = 4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 3, 16, 16, generator=g), torch.randn(B, 3, 16, 16, generator=g)


@pytest.mark.parametrize("steps", [1, 2])
def test_sample_distilled_noise_seeds_are_batch_invariant(steps):
    model = random_tiny("v")
    anchor, reference = conditions()
    seeds = SEEDS[:4]
    batched = sample_distilled(model, anchor, reference, steps=steps, noise_seeds=seeds)
    for i in range(4):
        alone = sample_distilled(
            model, anchor[i : i + 1], reference[i : i + 1], steps=steps, noise_seeds=seeds[i : i + 1]
        )
        torch.testing.assert_close(alone[0], batched[i], rtol=1e-5, atol=1e-5)
    # The noise is hash_normal's: stream 0 for the initial noise, stream k for the re-noise before step k.
    shape = tuple(anchor.shape[1:])
    renoise = [hash_normal(seeds, shape, stream=k) for k in range(1, steps)]
    explicit = sample_distilled(
        model, anchor, reference, steps=steps, noise=hash_normal(seeds, shape, stream=0), renoise=renoise
    )
    assert torch.equal(batched, explicit)
    other = sample_distilled(model, anchor, reference, steps=steps, noise_seeds=seeds + 1)
    assert not torch.allclose(other, batched)


def test_sample_ddim_noise_seeds_use_the_same_initial_noise():
    model = random_tiny("eps")
    anchor, reference = conditions(3)
    seeds = SEEDS[:3]
    batched = sample_ddim(model, anchor, reference, num_steps=3, noise_seeds=seeds)
    noise = hash_normal(seeds, tuple(anchor.shape[1:]), stream=0)
    assert torch.equal(batched, sample_ddim(model, anchor, reference, num_steps=3, noise=noise))
    alone = sample_ddim(model, anchor[1:2], reference[1:2], num_steps=3, noise_seeds=seeds[1:2])
    # eps -> x0 divides by sqrt(abar_999) = 0.006, which amplifies batch-size rounding differences of the model.
    torch.testing.assert_close(alone[0], batched[1], rtol=1e-3, atol=1e-3)
    assert (alone[0] - batched[0]).abs().max() > 0.1  # another seed's frame is far off


def test_generators_and_noise_seeds_are_exclusive():
    model = random_tiny("v")
    anchor, reference = conditions(2)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    for sampler in (sample_distilled, sample_ddim):
        with pytest.raises(ValueError, match="generators and noise_seeds"):
            sampler(model, anchor, reference, generators=generators, noise_seeds=SEEDS[:2])
        with pytest.raises(ValueError, match="noise_seeds"):
            sampler(model, anchor, reference, noise_seeds=SEEDS[:3])


# ----------------------------------------------------------------------------------------------------------------------
# Renderer and env option
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny-32.safetensors"
    save_checkpoint(random_tiny("v", input_size=32), path)
    return str(path)


class NoSyncTensor(torch.Tensor):
    """A tensor (and everything computed from it) whose host-sync methods raise."""

    def tolist(self):
        raise AssertionError("tolist() called on the noise seeds")

    def item(self):
        raise AssertionError("item() called on the noise seeds")

    def cpu(self, *args, **kwargs):
        raise AssertionError("cpu() called on the noise seeds")


def rollout(env, seed, steps=3):
    obs, _ = env.reset(seed=seed)
    frames = [obs["rgb"].clone()]
    for k in range(steps):
        action = torch.randint(1, 6, (env.num_envs,), generator=torch.Generator().manual_seed(k))
        frames.append(env.step(action)[0]["rgb"].clone())
    return frames


def test_env_with_hash_noise_steps_and_repeats(tiny_weights):
    env = WorldFMVectorEnv(num_envs=3, **small(renderer="worldfm"), weights=tiny_weights, noise="hash")
    assert env.renderer.noise == "hash" and env.renderer.generators is None
    frames = rollout(env, seed=10)
    assert frames[-1].shape == (3, 32, 32, 3) and frames[-1].dtype == torch.uint8
    again = WorldFMVectorEnv(num_envs=3, **small(renderer="worldfm"), weights=tiny_weights, noise="hash")
    for a, b in zip(frames, rollout(again, seed=10), strict=True):
        assert torch.equal(a, b)
    # Env 2 of the batch (seed 12) alone gives its frames, up to one grey level of float slack.
    single = WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights, noise="hash")
    obs, _ = single.reset(seed=12)
    frames_s = [obs["rgb"].clone()]
    for k in range(3):
        action = torch.randint(1, 6, (3,), generator=torch.Generator().manual_seed(k))[2:3]
        frames_s.append(single.step(action)[0]["rgb"].clone())
    for fb, fs in zip(frames, frames_s, strict=True):
        assert torch.allclose(fb[2].float(), fs[0].float(), atol=1.0)
    # render() never syncs on the seeds, and the seeds matter.
    request = env.pipeline.last_request
    first = env.renderer.render(request).rgb.clone()
    request.noise_seed = request.noise_seed.as_subclass(NoSyncTensor)
    assert torch.equal(env.renderer.render(request).rgb, first)
    request.noise_seed = request.noise_seed + 1
    assert not torch.equal(env.renderer.render(request).rgb, first)


def test_noise_auto_is_generator_on_cpu(tiny_weights):
    env = WorldFMVectorEnv(num_envs=2, **small(renderer="worldfm"), weights=tiny_weights)
    assert env.config.noise == "auto" and env.renderer.noise == "generator"
    assert len(env.renderer.generators) == 2


def test_bad_noise_option(tiny_weights):
    with pytest.raises(ValueError, match=r"noise.*'auto', 'generator', 'hash'"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=tiny_weights, noise="philox")
    env = WorldFMVectorEnv(num_envs=1, **small(renderer="anchor"))
    with pytest.raises(ValueError, match=r"noise.*'auto', 'generator', 'hash'"):
        WorldFMRenderer(env.pool, 1, 32, 32, weights=tiny_weights, noise="philox")


def test_hash_combine_is_per_row_and_sensitive_to_every_key():
    from worldfm_env.rng import hash_combine

    seeds = torch.tensor([1, 2, 3], dtype=torch.int64)
    keys = torch.tensor([[5, -7, 9], [5, -7, 9], [0, 0, 0]], dtype=torch.int64)
    h = hash_combine(seeds, keys)
    assert h.shape == (3,) and bool((h >= 0).all() & (h < 2**32).all())
    assert torch.equal(hash_combine(seeds[1:2], keys[1:2]), h[1:2])  # batch independent
    assert h[0] != h[1]  # the seed matters
    for k in range(3):  # and every key column, and the stream
        changed = keys.clone()
        changed[0, k] += 1
        assert hash_combine(seeds, changed)[0] != h[0]
    assert hash_combine(seeds, keys, stream=1)[0] != h[0]
    with pytest.raises(ValueError, match="keys"):
        hash_combine(seeds, keys[:2])
