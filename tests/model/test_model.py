"""Tests for worldfm_env.model: layout of the published network, checkpoints, samplers, forward equivalence.

The reference forward pass at the bottom of this file is written independently from the module (explicit token
loops, einsum attention, numpy positions) following the published source of ``inspatio/worldfm``:
``worldfm/diffusion/model/nets/PixArtWorldFMMS.py``, ``worldfm/diffusion/model/nets/PixArtWorldFM.py``,
``worldfm/diffusion/model/nets/PixArtWorldFM_blocks.py`` and ``modules/worldfm_infer.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldfm_env.model import (
    MODEL_CONFIGS,
    IdentityAutoencoder,
    PanelCameras,
    build_model,
    iddpm_linear_schedule,
    load_checkpoint,
    make_generators,
    predict_x0,
    sample_ddim,
    sample_distilled,
    save_checkpoint,
)

# ----------------------------------------------------------------------------------------------------------------------
# The published key table (PixArtWorldFMMS_XL_2 as built by modules/worldfm_infer.py: sigma, 300 caption tokens,
# caption_channels 4096, in_channels 4, learned sigma -> 8 output channels, patch 2). ``pos_embed`` (1, 1024, 1152)
# is also in the published state dict; the loader drops it (positions are recomputed).
# ----------------------------------------------------------------------------------------------------------------------
D = 1152
XL_TOP = {
    "x_embedder.proj.weight": (D, 4, 2, 2),
    "x_embedder.proj.bias": (D,),
    "t_embedder.mlp.0.weight": (D, 256),
    "t_embedder.mlp.0.bias": (D,),
    "t_embedder.mlp.2.weight": (D, D),
    "t_embedder.mlp.2.bias": (D,),
    "t_block.1.weight": (6 * D, D),
    "t_block.1.bias": (6 * D,),
    "y_embedder.y_embedding": (300, 4096),  # a persistent buffer, not a parameter
    "y_embedder.y_proj.fc1.weight": (D, 4096),
    "y_embedder.y_proj.fc1.bias": (D,),
    "y_embedder.y_proj.fc2.weight": (D, D),
    "y_embedder.y_proj.fc2.bias": (D,),
    "final_layer.scale_shift_table": (2, D),
    "final_layer.linear.weight": (2 * 2 * 8, D),
    "final_layer.linear.bias": (2 * 2 * 8,),
    "plucker_proj.0.weight": (D, 6),
    "plucker_proj.0.bias": (D,),
    "plucker_proj.2.weight": (D, D),
    "plucker_proj.2.bias": (D,),
}
XL_BLOCK = {
    "scale_shift_table": (6, D),
    "attn.qkv.weight": (3 * D, D),
    "attn.qkv.bias": (3 * D,),
    "attn.proj.weight": (D, D),
    "attn.proj.bias": (D,),
    "cross_attn.q_linear.weight": (D, D),
    "cross_attn.q_linear.bias": (D,),
    "cross_attn.kv_linear.weight": (2 * D, D),
    "cross_attn.kv_linear.bias": (2 * D,),
    "cross_attn.proj.weight": (D, D),
    "cross_attn.proj.bias": (D,),
    "mlp.fc1.weight": (4 * D, D),
    "mlp.fc1.bias": (4 * D,),
    "mlp.fc2.weight": (D, 4 * D),
    "mlp.fc2.bias": (D,),
}


def xl_expected_table() -> dict[str, tuple[int, ...]]:
    table = dict(XL_TOP)
    for i in range(28):
        table.update({f"blocks.{i}.{k}": v for k, v in XL_BLOCK.items()})
    return table


def test_xl_layout_and_parameter_count():
    with torch.device("meta"):
        model = build_model("xl")
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params / 1e6 - 612.19) <= 0.01, n_params
    assert n_params == 612_192_416
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == xl_expected_table()
    assert "y_embedder.y_embedding" in dict(model.named_buffers())
    # Parameters the published inference actually uses (no text branch): ~456M, as DESIGN.md states.
    unused = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith(("y_embedder.", "plucker_proj.")) or ".cross_attn." in n
    )
    assert abs((n_params - unused) / 1e6 - 456.0) < 0.1


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Fill every parameter and buffer with random values (zero-initialised paths too), so tests are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in sorted(model.state_dict(keep_vars=True).items()):
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype) * scale)
    return model


def inputs(B=2, C=3, H=16, W=16, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    noisy, anchor, reference = (torch.randn(B, C, H, W, generator=g, dtype=dtype) for _ in range(3))
    t = torch.tensor([999, 200, 500, 0, 17][:B])
    return noisy, t, anchor, reference


def random_cameras(B: int, seed: int = 3, image_hw=(64, 64), dtype=torch.float64) -> PanelCameras:
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4, dtype=dtype).repeat(B, 3, 1, 1)
    for b in range(B):
        for p in range(3):
            q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=dtype))
            c2w[b, p, :3, :3] = q * torch.sign(torch.det(q))
            c2w[b, p, :3, 3] = torch.randn(3, generator=g, dtype=dtype)
    K = torch.tensor([[50.0, 0, 32], [0, 55.0, 30], [0, 0, 1]], dtype=dtype).repeat(B, 3, 1, 1)
    return PanelCameras(c2w=c2w, K=K, image_hw=image_hw)


# ----------------------------------------------------------------------------------------------------------------------
# Configs, shapes, errors
# ----------------------------------------------------------------------------------------------------------------------
def test_output_shape_learned_sigma_and_config():
    model = build_model("tiny", in_channels=4, learn_sigma=True)
    noisy, t, anchor, reference = inputs(C=4, H=8, W=12)
    out = model(noisy, t, anchor, reference)
    assert out.shape == (2, 8, 8, 12)
    assert model.config.out_channels == 8 and model.config.in_channels == 4
    assert build_model("tiny", learn_sigma=False)(*inputs()).shape == (2, 3, 16, 16)
    assert set(MODEL_CONFIGS) >= {"xl", "s", "tiny"}
    s = build_model("s")
    assert s(*inputs(C=3, H=64, W=64)).shape == (2, 3, 64, 64)


def test_bad_names_and_overrides():
    with pytest.raises(ValueError, match="valid names"):
        build_model("huge")
    with pytest.raises(ValueError, match="valid overrides.*depth"):
        build_model("tiny", dpeth=3)
    with pytest.raises(ValueError, match="num_heads"):
        build_model("tiny", hidden_size=64, num_heads=3)
    with pytest.raises(ValueError, match="camera_encoding"):
        build_model("tiny", camera_encoding="euler")


def test_input_shape_errors_name_the_argument():
    model = build_model("tiny")
    noisy, t, anchor, reference = inputs()
    with pytest.raises(ValueError, match="anchor"):
        model(noisy, t, anchor[:, :, :8], reference)
    with pytest.raises(ValueError, match="reference"):
        model(noisy, t, anchor, reference[:1])
    with pytest.raises(ValueError, match="noisy.*channels"):
        model(noisy[:, :2], t, anchor[:, :2], reference[:, :2])
    with pytest.raises(ValueError, match="patch_size"):
        model(noisy[..., :15], t, anchor[..., :15], reference[..., :15])
    with pytest.raises(ValueError, match="timesteps"):
        model(noisy, torch.tensor([1, 2, 3]), anchor, reference)
    with pytest.raises(ValueError, match="cameras"):
        build_model("tiny", camera_encoding="prope")(noisy, t, anchor, reference)


def test_batched_forward_equals_per_sample():
    model = randomize(build_model("tiny"), scale=0.1).eval()
    noisy, _, anchor, reference = inputs(B=3)
    t = torch.tensor([999, 200, 31])
    with torch.no_grad():
        batched = model(noisy, t, anchor, reference)
        for i in range(3):
            single = model(noisy[i : i + 1], t[i : i + 1], anchor[i : i + 1], reference[i : i + 1])
            # float32 with outputs of magnitude ~5: differences come only from batched matmul blocking.
            torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-4)


def test_gradient_checkpointing_matches():
    model = randomize(build_model("tiny"), scale=0.1).train()
    data = inputs()
    model(*data).square().mean().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(*data).square().mean().backward()
    for a, b in zip(ref, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------------------------------
# Camera extensions
# ----------------------------------------------------------------------------------------------------------------------
def test_prope_is_invariant_to_the_world_frame():
    model = randomize(build_model("tiny", camera_encoding="prope"), scale=0.1).double().eval()
    noisy, t, anchor, reference = (x.double() if x.is_floating_point() else x for x in inputs())
    cams = random_cameras(2)
    g = torch.eye(4, dtype=torch.float64)
    g[:3, :3] = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64))[0]
    g[:3, 3] = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    moved = PanelCameras(c2w=g @ cams.c2w, K=cams.K, image_hw=cams.image_hw)
    with torch.no_grad():
        out = model(noisy, t, anchor, reference, cameras=cams)
        out_moved = model(noisy, t, anchor, reference, cameras=moved)
        other = random_cameras(2, seed=11)
        out_other = model(noisy, t, anchor, reference, cameras=other)
    torch.testing.assert_close(out, out_moved, rtol=1e-9, atol=1e-9)
    assert (out - out_other).abs().max() > 1e-4  # the cameras do matter


def test_plucker_extension_runs_and_starts_as_identity():
    base = randomize(build_model("tiny"))
    model = build_model("tiny", camera_encoding="plucker")
    missing = model.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [
        "plucker_proj.0.bias",
        "plucker_proj.0.weight",
        "plucker_proj.2.bias",
        "plucker_proj.2.weight",
    ]
    data = inputs()
    with torch.no_grad():  # zero-initialised last layer: adding the extension does not change the output
        torch.testing.assert_close(model(*data, cameras=random_cameras(2)), base(*data))


def test_pixel_refiner_starts_as_identity_and_changes_the_output_once_trained():
    base = randomize(build_model("tiny")).eval()
    model = build_model("tiny", refiner_channels=8).eval()
    missing = model.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("refiner.") for k in missing)
    assert MODEL_CONFIGS["xl"].refiner_channels == 0 and MODEL_CONFIGS["sr"].refiner_channels == 32
    data = inputs()
    with torch.no_grad():  # zero-initialised output convolution: adding the refiner does not change the output
        torch.testing.assert_close(model(*data), base(*data))
        randomize(model.refiner, seed=5, scale=0.05)
        out = model(*data)
        ref = base(*data)
    assert out.shape == ref.shape == (2, 6, 16, 16)
    assert not torch.allclose(out[:, :3], ref[:, :3])  # the prediction half is corrected ...
    torch.testing.assert_close(out[:, 3:], ref[:, 3:])  # ... the learned-sigma half passes through
    # Batched equals per-sample (convolutions and group norms are per sample).
    with torch.no_grad():
        single = torch.cat([model(*(x[i : i + 1] for x in data)) for i in range(2)])
    torch.testing.assert_close(out, single, rtol=1e-5, atol=1e-4)  # float32 blocking differences only


def test_pixel_refiner_reads_black_pixels_as_anchor_holes():
    """The refiner's hole mask and fill come from the anchor alone: pixels that are -1 in every channel."""
    model = randomize(build_model("tiny", refiner_channels=8), seed=2, scale=0.05).eval()
    noisy, t, anchor, reference = inputs()
    anchor = anchor.clamp(-0.9, 1.0)
    holed = anchor.clone()
    holed[:, :, 4:9, 4:9] = -1.0
    recorded = []
    hook = model.refiner.inp.register_forward_hook(lambda m, args, out: recorded.append(args[0]))
    with torch.no_grad():
        model(noisy, t, holed, reference)
    hook.remove()
    x = recorded[0]  # (B, 5C + 1, H, W): prediction, noisy, anchor, filled anchor, reference, coverage
    coverage = x[:, 15]
    assert torch.equal(coverage[:, 4:9, 4:9], torch.zeros(2, 5, 5)) and float(coverage.sum()) == 2 * (256 - 25)
    filled = x[:, 9:12]
    assert torch.equal(filled[:, :, 0, 0], holed[:, :, 0, 0])  # covered pixels kept
    assert (filled[:, :, 4:9, 4:9] > -0.95).all()  # holes filled from around them
    with pytest.raises(ValueError, match="refiner_channels"):
        build_model("tiny", refiner_channels=12)
    with pytest.raises(ValueError, match=r"refiner_channels=8 needs a pixel-space model \(in_channels=3, got 4\)"):
        build_model("tiny", refiner_channels=8, in_channels=4)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(*inputs(H=12, W=12))


def test_depth_refiner_starts_as_the_rgb_refiner_and_then_reads_the_depth():
    rgb = randomize(build_model("tiny", refiner_channels=8), seed=4, scale=0.05).eval()
    model = build_model("tiny", refiner_channels=8, refiner_depth=True).eval()
    missing = model.load_state_dict(rgb.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["refiner.depth_in.bias", "refiner.depth_in.weight"]
    noisy, t, anchor, reference = inputs()
    anchor[:, :, :4] = -1.0  # a hole band
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 16, 16, generator=g) * 4 + 1
    depth[:, :4] = 0.0
    with torch.no_grad():  # zero-initialised depth convolution: the depth refiner starts as the RGB one
        torch.testing.assert_close(
            model(noisy, t, anchor, reference, anchor_depth=depth), rgb(noisy, t, anchor, reference)
        )
        randomize(model.refiner.depth_in, seed=6, scale=0.05)
        near = model(noisy, t, anchor, reference, anchor_depth=depth)
        far = depth.clone()
        far[:, 8:, 8:] *= 5.0  # a patch seen far behind its surroundings
        assert not torch.allclose(model(noisy, t, anchor, reference, anchor_depth=far), near)
        # Only depth ratios count: the same scene in other units gives the same frame.
        torch.testing.assert_close(model(noisy, t, anchor, reference, anchor_depth=depth * 3.7), near)
        # Uncovered pixels' depth values are not read (the anchor's black pixels say where the holes are).
        junk = depth.clone()
        junk[:, :4] = 123.0
        torch.testing.assert_close(model(noisy, t, anchor, reference, anchor_depth=junk), near)
    with pytest.raises(ValueError, match="anchor_depth"):
        model(noisy, t, anchor, reference)
    with pytest.raises(ValueError, match="anchor_depth must be a \\(2, 16, 16\\)"):
        model(noisy, t, anchor, reference, anchor_depth=depth[:, :8])
    with pytest.raises(ValueError, match="anchor_depth is None but this refiner reads"):
        model.refiner(noisy, noisy, anchor, reference, model.t_embedder(t))  # the public module called directly
    with pytest.raises(ValueError, match="refiner_depth=True needs a refiner"):
        build_model("tiny", refiner_depth=True)
    with pytest.raises(ValueError, match="refiner_depth must be True or False"):
        build_model("tiny", refiner_channels=8, refiner_depth=1)


def test_depth_feature_marks_surfaces_seen_through_gaps():
    from worldfm_env.model.dit import PixelRefiner

    depth = torch.full((1, 16, 16), 2.0)
    depth[0, 5:11, 5:11] = 1.0  # a near square
    depth[0, 8, 8] = 6.0  # a far point showing through it
    covered = torch.ones(1, 16, 16, dtype=torch.bool)
    covered[0, 0, :] = False
    feature = PixelRefiner.depth_feature(depth, covered)[0, 0]
    assert feature.shape == (16, 16)
    # log depth relative to the image's mean: the far point stands far above its near surroundings.
    assert feature[8, 8] - feature[7, 8] == pytest.approx(math.log(6.0), abs=1e-5)
    mean = torch.log(depth[0][covered[0]]).mean()
    assert feature[2, 2] == pytest.approx(float(math.log(2.0) - mean), abs=1e-5)
    assert torch.isfinite(feature).all() and feature[0].abs().max() < 1.0  # the hole row is filled smoothly
    empty = PixelRefiner.depth_feature(depth, torch.zeros_like(covered))
    assert torch.equal(empty, torch.zeros_like(empty))  # a dropped anchor reads as flat


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def tiny_with_text():
    return randomize(build_model("tiny", with_text_branch=True, caption_channels=16, caption_tokens=5)).eval()


@pytest.mark.parametrize("refiner", [0, 8])
def test_safetensors_round_trip_is_bit_exact(tmp_path, refiner):
    model = randomize(
        build_model("tiny", with_text_branch=True, caption_channels=16, caption_tokens=5, refiner_channels=refiner)
    ).eval()
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, path)
    loaded = load_checkpoint(None, path)
    assert loaded.config == model.config
    data = inputs()
    with torch.no_grad():
        assert torch.equal(model(*data), loaded(*data))
    fresh = build_model("tiny", with_text_branch=True, caption_channels=16, caption_tokens=5, refiner_channels=refiner)
    into = load_checkpoint(fresh, path)
    with torch.no_grad():
        assert torch.equal(model(*data), into(*data))
    half = load_checkpoint(None, path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


@pytest.mark.parametrize("wrapped", [False, True])
def test_official_pth_layouts_round_trip(tmp_path, wrapped):
    model = tiny_with_text()
    state = dict(model.state_dict())
    state["pos_embed"] = torch.zeros(1, 64, 64)  # published buffer, dropped on load
    path = tmp_path / "worldfm_2-step.pth"
    torch.save({"state_dict": state} if wrapped else state, path)
    loaded = load_checkpoint(None, path, config=model.config)
    data = inputs()
    with torch.no_grad():
        assert torch.equal(model(*data), loaded(*data))
    # The unused text branch can be skipped explicitly for an inference-only model.
    with pytest.raises(ValueError, match="cross_attn"):
        load_checkpoint(build_model("tiny"), path)
    lean = load_checkpoint(build_model("tiny"), path, skip_text_branch=True)
    with torch.no_grad():
        assert torch.equal(model(*data), lean(*data))


def test_checkpoint_errors_name_the_keys(tmp_path):
    model = tiny_with_text()
    base = model.state_dict()
    cases = {
        "missing": ({k: v for k, v in base.items() if k != "blocks.1.mlp.fc2.bias"}, "blocks.1.mlp.fc2.bias"),
        "unexpected": ({**base, "extra_head.weight": torch.zeros(3)}, "extra_head.weight"),
        "misshaped": ({**base, "blocks.0.attn.qkv.weight": torch.zeros(5, 64)}, "blocks.0.attn.qkv.weight"),
    }
    for kind, (state, key) in cases.items():
        path = tmp_path / f"{kind}.pth"
        torch.save(state, path)
        with pytest.raises(ValueError, match=kind.replace("misshaped", "mis-shaped")) as err:
            load_checkpoint(None, path, config=model.config)
        assert key in str(err.value)


# ----------------------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------------------
def test_schedule_values():
    abar = iddpm_linear_schedule().alphas_cumprod
    assert abar.dtype == torch.float64 and abar.shape == (1000,)
    assert f"{abar[999].item():.4e}" == "4.0358e-05"
    assert f"{abar[200].item():.6f}" == "0.656347"


class StubModel:
    """out = 0.5 * z_t in the first C channels, garbage in the learned-sigma half; records timesteps."""

    dtype = torch.float32

    def __init__(self):
        self.seen = []

    def __call__(self, z, t, anchor, reference, cameras=None):
        self.seen.append(t.tolist())
        return torch.cat([0.5 * z, torch.full_like(z, 1e6)], dim=1)


def test_two_step_sampler_hand_computed():
    stub = StubModel()
    shape = (2, 3, 4, 4)
    cond = torch.zeros(shape)
    x0 = sample_distilled(stub, cond, cond, steps=2, noise=torch.ones(shape), renoise=[torch.ones(shape)])
    assert stub.seen == [[999, 999], [200, 200]]
    # By hand: a1 = sqrt(4.0358e-5) = 0.0063528, s1 = 0.9999798, a2 = sqrt(0.656347) = 0.8101525, s2 = 0.5862192.
    # x0_1 = a1 * 1 - s1 * 0.5 = -0.4936371; z_200 = a2 * x0_1 + s2 * 1 = 0.1862979;
    # x0 = a2 * z_200 - s2 * 0.5 * z_200 = 0.0963240.
    torch.testing.assert_close(x0, torch.full(shape, 0.0963240), rtol=0, atol=2e-7)
    one = sample_distilled(StubModel(), cond, cond, steps=1, noise=torch.ones(shape))
    torch.testing.assert_close(one, torch.full(shape, -0.4936371), rtol=0, atol=2e-7)
    # predict_x0 drops the sigma half and uses the v form.
    z = torch.ones(shape)
    torch.testing.assert_close(
        predict_x0(stub(z, torch.tensor([999, 999]), cond, cond), z, 999),
        torch.full(shape, -0.4936371),
        rtol=0,
        atol=2e-7,
    )


def test_batched_sampling_with_generators_equals_per_sample():
    model = randomize(build_model("tiny"), scale=0.1).eval()
    _, _, anchor, reference = inputs(B=3)
    seeds = [5, 6, 7]
    batched = sample_distilled(model, anchor, reference, steps=2, generators=make_generators(seeds))
    for i, seed in enumerate(seeds):
        single = sample_distilled(
            model, anchor[i : i + 1], reference[i : i + 1], steps=2, generators=make_generators([seed])
        )
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-5)
    # A row's frame does not depend on its neighbours.
    swapped = sample_distilled(model, anchor[[0, 2]], reference[[0, 2]], steps=2, generators=make_generators([5, 7]))
    torch.testing.assert_close(swapped[1], batched[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["distilled", "ddim"])
def test_samplers_pass_the_anchor_depth_to_every_model_call(sampler):
    seen = []

    def model(z, t, anchor, reference, cameras=None, anchor_depth=None):
        seen.append(anchor_depth)
        return torch.zeros_like(z)

    cond = torch.zeros(2, 3, 4, 4)
    depth = torch.rand(2, 4, 4)
    gens = make_generators([1, 2])
    if sampler == "distilled":
        sample_distilled(model, cond, cond, steps=2, generators=gens, anchor_depth=depth)
    else:
        sample_ddim(model, cond, cond, num_steps=3, generators=gens, anchor_depth=depth)
    assert len(seen) == (2 if sampler == "distilled" else 3) and all(d is depth for d in seen)


@pytest.mark.parametrize("steps", [1, 2])
def test_distilled_trajectory_is_the_sampler_with_gradients(steps):
    from worldfm_env.model.samplers import distilled_trajectory

    model = randomize(build_model("tiny"), scale=0.1).eval()
    _, _, anchor, reference = inputs(B=2)
    g = torch.Generator().manual_seed(3)
    noise, renoise = torch.randn(anchor.shape, generator=g), [torch.randn(anchor.shape, generator=g)][: steps - 1]
    noise.requires_grad_(True)
    abar = iddpm_linear_schedule().alphas_cumprod.float()
    estimates = distilled_trajectory(model, anchor, reference, noise, renoise, steps, abar)
    assert len(estimates) == steps and estimates[-1].requires_grad
    expected = sample_distilled(model, anchor, reference, steps=steps, noise=noise.detach(), renoise=renoise)
    torch.testing.assert_close(estimates[-1].detach(), expected, rtol=1e-5, atol=1e-5)
    first = sample_distilled(model, anchor, reference, steps=1, noise=noise.detach())
    torch.testing.assert_close(estimates[0].detach(), first, rtol=1e-5, atol=1e-5)  # step 1 is the 1-step sampler
    if steps == 2:
        # The last estimate reaches the initial noise only through step 1's x0: nothing is detached between steps.
        (grad,) = torch.autograd.grad(estimates[-1].square().mean(), noise, retain_graph=True)
        assert grad.abs().sum() > 0
    estimates[-1].square().mean().backward()
    assert model.x_embedder.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="renoise needs"):
        distilled_trajectory(model, anchor, reference, noise, [], 2, abar)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_recovers_a_point_mass(prediction):
    """With the exact denoiser of a point-mass data distribution, DDIM (eta=0) returns that point."""
    schedule = iddpm_linear_schedule()
    target = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)

    def ideal(z, t, anchor, reference, cameras=None):
        a, s = schedule.coefficients(t, z.shape[0], z.device)
        eps = (z - a * target) / s
        return eps if prediction == "eps" else a * eps - s * target

    cond = torch.zeros(2, 3, 4, 4)
    out = sample_ddim(ideal, cond, cond, num_steps=10, prediction=prediction, generators=make_generators([1, 2]))
    torch.testing.assert_close(out, target, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Autoencoders
# ----------------------------------------------------------------------------------------------------------------------
def test_identity_autoencoder():
    ae = IdentityAutoencoder()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(ae.decode(ae.encode(x)), x)
    assert (ae.latent_channels, ae.downsample) == (3, 1)
    with pytest.raises(ValueError, match="images"):
        ae.encode(torch.zeros(2, 4, 8, 8))


# ----------------------------------------------------------------------------------------------------------------------
# Independent re-implementation of the published forward pass (PixArtWorldFMMS.forward, tri_condition=True,
# cross-attention disabled unless `cross`), written as plain loops/einsum over a state dict.
# ----------------------------------------------------------------------------------------------------------------------
def ref_pos_embed(dim, gh, gw, base_size, pe_interp):
    """Published get_2d_sincos_pos_embed, one token at a time: float32 grid, float64 frequencies; first half of the
    channels encodes the column (width) coordinate, second half the row coordinate."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    out = np.zeros((gh * gw, dim))
    for r in range(gh):
        for c in range(gw):
            xw = np.float32(c) / np.float32(gw / base_size) / np.float32(pe_interp)
            yh = np.float32(r) / np.float32(gh / base_size) / np.float32(pe_interp)
            ax, ay = float(xw) * omega, float(yh) * omega
            out[r * gw + c] = np.concatenate([np.sin(ax), np.cos(ax), np.sin(ay), np.cos(ay)])
    return torch.from_numpy(out)


def ref_layer_norm(x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6)


def ref_gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def ref_linear(sd, name, x):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def ref_attention(q, k, v, heads):
    """q (B, N, D), k/v (B, L, D): per-head softmax(q k^T / sqrt(hd)) v, heads are contiguous channel slices."""
    B, N, Dm = q.shape
    hd = Dm // heads
    out = torch.zeros_like(q)
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        scores = torch.einsum("bnd,bld->bnl", q[..., sl], k[..., sl]) / math.sqrt(hd)
        out[..., sl] = torch.einsum("bnl,bld->bnd", scores.softmax(-1), v[..., sl])
    return out


def ref_forward(sd, cfg, noisy, t, anchor, reference, cross=False, caption=None):
    p, Dm, heads, cout = cfg.patch_size, cfg.hidden_size, cfg.num_heads, cfg.out_channels
    x = torch.cat([noisy, anchor, reference], dim=3)  # tri-condition: concat on width
    B, C, H, Wt = x.shape
    gh, gw = H // p, Wt // p
    # Patch embedding as a dot product per token (row-major over the merged grid).
    w = sd["x_embedder.proj.weight"].reshape(Dm, -1)
    tokens = torch.zeros(B, gh * gw, Dm, dtype=x.dtype)
    for r in range(gh):
        for c in range(gw):
            patch = x[:, :, r * p : (r + 1) * p, c * p : (c + 1) * p].reshape(B, -1)
            tokens[:, r * gw + c] = patch @ w.T + sd["x_embedder.proj.bias"]
    tokens = tokens + ref_pos_embed(Dm, gh, gw, cfg.input_size // p, cfg.pe_interpolation).to(x.dtype)
    # Timestep: cos then sin, float32 frequencies.
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t.float()[:, None] * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], -1).to(x.dtype)
    temb = ref_linear(sd, "t_embedder.mlp.2", torch.nn.functional.silu(ref_linear(sd, "t_embedder.mlp.0", temb)))
    t0 = ref_linear(sd, "t_block.1", torch.nn.functional.silu(temb))  # (B, 6D)
    y = None
    if cross:
        y = ref_linear(sd, "y_embedder.y_proj.fc2", ref_gelu_tanh(ref_linear(sd, "y_embedder.y_proj.fc1", caption)))
    for i in range(cfg.depth):
        pre = f"blocks.{i}."
        mod = sd[pre + "scale_shift_table"][None] + t0.reshape(B, 6, Dm)
        sh1, sc1, g1, sh2, sc2, g2 = (mod[:, j : j + 1] for j in range(6))
        hmod = ref_layer_norm(tokens) * (1 + sc1) + sh1
        qkv = ref_linear(sd, pre + "attn.qkv", hmod)
        q, k, v = qkv[..., :Dm], qkv[..., Dm : 2 * Dm], qkv[..., 2 * Dm :]
        tokens = tokens + g1 * ref_linear(sd, pre + "attn.proj", ref_attention(q, k, v, heads))
        if cross:
            q = ref_linear(sd, pre + "cross_attn.q_linear", tokens)
            kv = ref_linear(sd, pre + "cross_attn.kv_linear", y)
            attn = ref_attention(q, kv[..., :Dm], kv[..., Dm:], heads)
            tokens = tokens + ref_linear(sd, pre + "cross_attn.proj", attn)
        hmod = ref_layer_norm(tokens) * (1 + sc2) + sh2
        tokens = tokens + g2 * ref_linear(sd, pre + "mlp.fc2", ref_gelu_tanh(ref_linear(sd, pre + "mlp.fc1", hmod)))
    fmod = sd["final_layer.scale_shift_table"][None] + temb[:, None]
    shift, scale = fmod[:, 0:1], fmod[:, 1:2]
    feats = ref_linear(sd, "final_layer.linear", ref_layer_norm(tokens) * (1 + scale) + shift)  # all panels
    # Unpatchify the whole merged image (token features are (p_row, p_col, channel)), then keep the first panel.
    img = torch.zeros(B, cout, H, Wt, dtype=x.dtype)
    for r in range(gh):
        for c in range(gw):
            f = feats[:, r * gw + c].reshape(B, p, p, cout)
            for pi in range(p):
                for qi in range(p):
                    img[:, :, r * p + pi, c * p + qi] = f[:, pi, qi]
    return img[..., : Wt // 3]


@pytest.mark.parametrize("size, cross, pe_interp", [((8, 8), False, 1.0), ((6, 10), True, 2.0)])
def test_matches_independent_reimplementation_of_published_forward(size, cross, pe_interp):
    model = build_model(
        "tiny",
        in_channels=4,
        hidden_size=64,
        num_heads=4,
        depth=2,
        patch_size=2,
        input_size=8,
        learn_sigma=True,
        with_text_branch=True,
        caption_channels=16,
        caption_tokens=5,
        use_cross_attention=cross,
        pe_interpolation=pe_interp,
    )
    model = randomize(model, seed=4).double().eval()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    H, W = size
    noisy, t, anchor, reference = (x.double() if x.is_floating_point() else x for x in inputs(C=4, H=H, W=W))
    caption = torch.randn(2, 5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ours = model(noisy, t, anchor, reference, caption=caption if cross else None)
        ref = ref_forward(sd, model.config, noisy, t, anchor, reference, cross=cross, caption=caption)
    assert ours.shape == (2, 8, H, W)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
