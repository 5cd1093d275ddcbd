"""The learned choice between footprint and one-pixel splats: features, candidates, labels, composite, training."""

import pytest
import torch

from worldfm_env.render.silhouette import (
    CANDIDATE_GAP,
    FEATURES,
    SilhouetteResolver,
    composite,
    silhouette_features,
    silhouette_labels,
    train_resolver,
)


def _splats(n: int = 2, size: int = 8, seed: int = 0):
    """A near square (depth 1) splatted with a footprint that overruns it by one pixel on the right, over a far wall
    (depth 3) that the one-pixel splat keeps there, plus a few far points seen through gaps inside the square."""
    g = torch.Generator().manual_seed(seed)
    depth = torch.full((n, size, size), 3.0)
    depth[:, 2:6, 2:7] = 1.0  # the footprint splat: the square's last column (6) overruns the silhouette
    true_depth = torch.full((n, size, size), 3.0)
    true_depth[:, 2:6, 2:6] = 1.0
    one_depth = true_depth.clone()
    one_depth[:, 3, 3] = 3.0  # a far point seen through a gap of the square: not the visible surface
    rgb = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    one_rgb = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    mask = torch.ones(n, size, size, dtype=torch.bool)
    return rgb, depth, mask, one_rgb, one_depth, mask.clone(), true_depth


def test_features_candidates_and_labels():
    rgb, depth, mask, one_rgb, one_depth, one_mask, true_depth = _splats()
    features, candidates = silhouette_features(rgb, depth, mask, one_rgb, one_depth, one_mask)
    assert features.shape == (2, FEATURES, 8, 8) and features.dtype == torch.float32
    assert features[:, :6].abs().max() <= 1.0  # both colours in [-1, 1]
    # Candidates: the one-pixel point lies more than CANDIDATE_GAP behind the footprint splat's.
    expected = one_depth > depth * (1 + CANDIDATE_GAP)
    assert torch.equal(candidates, expected)
    assert candidates[:, 2:6, 6].all() and candidates[:, 3, 3].all() and int(candidates[0].sum()) == 5
    labels = silhouette_labels(one_depth, one_mask, true_depth)
    assert labels[:, 2:6, 6].all() and not labels[:, 3, 3].any()  # the overrun's wall is right, the gap's is not
    # The depth difference plane is the log of the ratio where both splats cover the pixel.
    assert features[0, 8, 3, 6] == pytest.approx(float(torch.log(torch.tensor(3.0))), abs=1e-6)
    with pytest.raises(ValueError, match=r"one_depth must have shape \(2, 8, 8\)"):
        silhouette_features(rgb, depth, mask, one_rgb, one_depth[:, :4], one_mask)
    with pytest.raises(ValueError, match="mask must be"):
        silhouette_features(rgb, depth, mask[0], one_rgb, one_depth, one_mask)


def test_composite_takes_only_the_chosen_pixels():
    rgb, depth, _, one_rgb, one_depth, _, _ = _splats()
    take = torch.zeros(2, 8, 8, dtype=torch.bool)
    take[:, 2:6, 6] = True
    out_rgb, out_depth = composite(rgb, depth, one_rgb, one_depth, take)
    assert torch.equal(out_rgb[take], one_rgb[take]) and torch.equal(out_rgb[~take], rgb[~take])
    assert torch.equal(out_depth[take], one_depth[take]) and torch.equal(out_depth[~take], depth[~take])
    with pytest.raises(ValueError, match=r"take must have shape \(2, 8, 8\)"):
        composite(rgb, depth, one_rgb, one_depth, take[0])
    with pytest.raises(ValueError, match=r"candidates must have shape \(1, 8, 8\)"):
        SilhouetteResolver(4).take(torch.zeros(1, FEATURES, 8, 8), take)


def test_training_learns_to_tell_a_silhouette_from_a_gap():
    """On frames where a silhouette's overrun and a gap look alike in depth but differ in their surroundings, the
    loss falls and the trained resolver takes the overrun's pixels and leaves the gap's."""
    rgb, depth, mask, one_rgb, one_depth, one_mask, true_depth = _splats(n=16)
    features, candidates = silhouette_features(rgb, depth, mask, one_rgb, one_depth, one_mask)
    labels = silhouette_labels(one_depth, one_mask, true_depth)
    resolver, losses = train_resolver(features, candidates, labels, steps=60, batch=4, lr=1e-2, seed=0, width=8)
    assert len(losses) == 60 and sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10, losses
    take = resolver.take(features, candidates)
    assert take[:, 2:6, 6].all() and not take[:, 3, 3].any()
    assert not (take & ~candidates).any()
    again, _ = train_resolver(features, candidates, labels, steps=60, batch=4, lr=1e-2, seed=0, width=8)
    pairs = zip(resolver.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)  # seeded: the same weights


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="width must be a positive int"):
        SilhouetteResolver(0)
    with pytest.raises(ValueError, match=f"features must be \\(N, {FEATURES}, H, W\\)"):
        SilhouetteResolver(4)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="threshold must be in"):
        SilhouetteResolver(4).take(torch.zeros(1, FEATURES, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool), 1.0)
    features = torch.zeros(1, FEATURES, 4, 4)
    none = torch.zeros(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="candidates has no pixel"):
        train_resolver(features, none, none)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_resolver(features, ~none, none, steps=0)


def _anchor_envs(**settings):
    """Anchor envs of one training scene at 64x64 (the resolver's resolution), footprint splats, by silhouettes."""
    from conftest import small

    from worldfm_env.envs.vector import WorldFMVectorEnv

    kw = small(resolution=(64, 64), **{"splat_radius": "auto", **settings})
    return {s: WorldFMVectorEnv(num_envs=1, silhouettes=s, **kw) for s in ("splat", "learned")}


def test_env_option_takes_the_resolvers_pixels_from_the_one_pixel_splat():
    """silhouettes="learned": the anchor is the footprint splat except at candidate pixels the shipped resolver
    picks, which are the one-pixel splat's; coverage is unchanged, and some pixels are taken along a walk."""
    envs = _anchor_envs()
    one = _anchor_envs(splat_radius=0)["splat"]
    pool = envs["splat"].pool
    taken = 0
    for b in range(0, int(pool.bank_c2w.shape[0]), 7):
        c2w = pool.bank_c2w[b : b + 1].clone()
        c2w[0, :3, 3] += 0.6 * c2w[0, :3, 2]  # closer than the captured view: footprints grow
        scene = torch.tensor([0])
        out = {s: env.pipeline.render(scene, c2w).anchor for s, env in envs.items()}
        a, b_ = out["splat"], out["learned"]
        p = one.pipeline.render(scene, c2w).anchor
        assert torch.equal(a.mask, b_.mask)
        _, candidates = silhouette_features(a.rgb, a.depth, a.mask, p.rgb, p.depth, p.mask)
        changed = (a.depth != b_.depth) | (a.rgb != b_.rgb).any(-1)
        assert not (changed & ~candidates).any()  # only candidates change ...
        assert torch.equal(b_.depth[changed], p.depth[changed])  # ... to the one-pixel splat's point
        assert torch.equal(b_.rgb[changed], p.rgb[changed])
        taken += int(changed.sum())
    assert taken > 0
    assert envs["learned"].pipeline.resolver is not None and envs["splat"].pipeline.resolver is None
    for env in (*envs.values(), one):
        env.close()


def test_the_option_is_validated_and_idle_with_one_pixel_splats():
    from worldfm_env.render.anchor_config import AnchorConfig

    with pytest.raises(ValueError, match=r"silhouettes must be one of \['splat', 'learned'\], got 'maybe'"):
        AnchorConfig(silhouettes="maybe")
    envs = _anchor_envs(splat_radius=0)
    assert envs["learned"].pipeline.resolver is None  # one-pixel splats: nothing to choose between
    for env in envs.values():
        env.close()


def test_a_saved_resolver_loads_with_its_width_and_the_packaged_one_is_shared(tmp_path):
    from worldfm_env.render.silhouette import load_resolver, packaged_resolver, save_resolver

    torch.manual_seed(0)
    resolver = SilhouetteResolver(6).eval()
    save_resolver(resolver, tmp_path / "r.safetensors", {"steps": 1})
    loaded = load_resolver(tmp_path / "r.safetensors")
    x = torch.randn(2, FEATURES, 8, 8)
    assert loaded.width == 6 and torch.equal(loaded(x), resolver(x))
    assert packaged_resolver("cpu") is packaged_resolver(torch.device("cpu"))  # loaded once per device
    assert packaged_resolver().width == 32
    with pytest.raises(FileNotFoundError, match="no silhouette resolver at"):
        load_resolver(tmp_path / "missing.safetensors")
