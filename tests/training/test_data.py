"""Multi-view clip generator for frame-model training."""

import numpy as np
import pytest
import torch

from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.training.data import ClipConfig, ClipGenerator


@pytest.fixture(scope="module")
def generator():
    scenes = resolve_scenes("procedural:train:1", torch.device("cpu"), (32, 32), 90.0)
    return ClipGenerator(scenes, ClipConfig(resolution=(32, 32)))


def test_clip_shapes_and_contents(generator):
    b = generator.batch(3, seed=1)
    T = generator.config.targets
    assert b.anchor_rgb.shape == (3, T, 32, 32, 3) and b.target_rgb.shape == (3, T, 32, 32, 3)
    assert b.reference_c2w.shape == (3, generator.config.references, 4, 4)
    assert int(b.reference_slot.min()) >= 0 and int(b.reference_slot.max()) < generator.config.references
    # The anchor agrees with the ground truth where it is covered (same surface for most pixels).
    m = b.anchor_mask
    assert 0.2 < float(m.float().mean()) < 1.0
    same = m & ((b.anchor_depth - b.target_depth).abs() < 0.05 * b.target_depth.clamp_min(1e-6))
    assert float(same.sum() / m.sum()) > 0.8
    # Consecutive targets move: poses differ along the clip.
    assert float((b.target_c2w[:, 1:, :3, 3] - b.target_c2w[:, :-1, :3, 3]).norm(dim=-1).max()) > 0.1


def test_clips_deterministic_by_seed(generator):
    a, b, c = generator.batch(2, seed=5), generator.batch(2, seed=5), generator.batch(2, seed=6)
    for key in ("anchor_rgb", "target_rgb", "reference_rgb", "target_c2w"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert not torch.equal(a.target_c2w, c.target_c2w)
    # A clip does not depend on the batch it is generated in.
    single = generator.batch(1, seed=5, start_index=1)
    assert torch.equal(single.target_rgb[0], a.target_rgb[1])


def test_clip_config_validation():
    with pytest.raises(ValueError, match="references"):
        ClipConfig(views=4, references=4)
    with pytest.raises(ValueError, match="resolution"):
        ClipConfig(resolution=(4, 64))
    with pytest.raises(ValueError, match="hfov_deg"):
        ClipConfig(hfov_deg=200.0)
    with pytest.raises(ValueError, match="splat_radius"):
        ClipConfig(splat_radius="wide")
    with pytest.raises(ValueError, match="splat_radius"):
        ClipConfig(splat_radius=9)
    assert type(ClipConfig(splat_radius=np.int64(2)).splat_radius) is int  # the values the env config accepts


def test_auto_splats_cover_more_of_the_target_with_the_right_surface(generator):
    # The training clips can carry the env's splat_radius="auto" anchors: each point covers its footprint, so more
    # of the target is covered, and the covered pixels still show the target's own surface.
    auto = ClipGenerator(generator.scenes, ClipConfig(resolution=(32, 32), splat_radius="auto"))
    one_pixel, wide = generator.batch(2, seed=3), auto.batch(2, seed=3)
    assert torch.equal(one_pixel.target_rgb, wide.target_rgb)  # same clips, only the anchor differs
    assert float(wide.anchor_mask.float().mean()) > float(one_pixel.anchor_mask.float().mean()) + 0.05
    m = wide.anchor_mask
    same = m & ((wide.anchor_depth - wide.target_depth).abs() < 0.05 * wide.target_depth.clamp_min(1e-6))
    assert float(same.sum() / m.sum()) > 0.8
