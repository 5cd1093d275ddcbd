"""Multi-view clip generator for frame-model training."""

import math

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


def test_clips_carry_the_envs_resampled_anchor_colours(generator):
    """anchor_colour="bank" in the clips: the same clips and anchor geometry, the covered colours resampled from the
    clip's reference views (nearer the target's own colours in squared error: a bilinear value splits the difference
    where a nearest sample is all right or all wrong), as the env renders them; bad values named."""
    bank = ClipGenerator(generator.scenes, ClipConfig(resolution=(32, 32), anchor_colour="bank"))
    splat, resampled = generator.batch(2, seed=3), bank.batch(2, seed=3)
    assert torch.equal(splat.target_rgb, resampled.target_rgb)
    assert torch.equal(splat.anchor_mask, resampled.anchor_mask)
    assert torch.equal(splat.anchor_depth, resampled.anchor_depth)
    m = splat.anchor_mask
    assert bool((splat.anchor_rgb[m] != resampled.anchor_rgb[m]).any())

    def error(batch):
        return float((batch.anchor_rgb.float() - batch.target_rgb.float())[m].square().mean())

    assert error(resampled) < error(splat)
    with pytest.raises(ValueError, match="anchor_colour must be one of"):
        ClipConfig(anchor_colour="nearest")
    from worldfm_env.training.stages import TrainConfig

    with pytest.raises(ValueError, match="anchor_colour must be one of"):
        TrainConfig(anchor_colour="nearest")


def test_clips_carry_the_envs_learned_silhouettes(generator):
    """silhouettes="learned" with footprint splats in the clips: the same clips, targets and coverage; only pixels
    where the one-pixel point lies behind the footprint splat's may change (as the env renders them); bad values
    named."""
    from worldfm_env.training.stages import TrainConfig

    configs = {s: ClipConfig(resolution=(32, 32), splat_radius="auto", silhouettes=s) for s in ("splat", "learned")}
    plain, learned = (ClipGenerator(generator.scenes, c).batch(2, seed=3) for c in configs.values())
    assert torch.equal(plain.target_rgb, learned.target_rgb)
    assert torch.equal(plain.anchor_mask, learned.anchor_mask)
    changed = plain.anchor_depth != learned.anchor_depth
    assert bool(changed.any())  # the resolver took some pixels
    assert bool((learned.anchor_depth[changed] > plain.anchor_depth[changed]).all())  # the farther, hidden surface
    with pytest.raises(ValueError, match="silhouettes must be one of"):
        ClipConfig(silhouettes="maybe")
    with pytest.raises(ValueError, match="silhouettes must be one of"):
        TrainConfig(silhouettes="maybe")


def test_denser_captures_cover_more_of_the_target_and_references_keep_the_frame_size(generator):
    # capture_resolution renders the references at 64x64 for 32x32 targets: a point cloud four times as dense, so
    # one-pixel splats cover more of each target; the same clips otherwise, and the references the model reads are
    # the bank's views resized to the frame size as the env's frame model resizes them.
    from worldfm_env.model.frame_model import images_to_model

    dense_gen = ClipGenerator(generator.scenes, ClipConfig(resolution=(32, 32), capture_resolution=(64, 64)))
    sparse, dense = generator.batch(2, seed=3), dense_gen.batch(2, seed=3)
    assert torch.equal(sparse.target_rgb, dense.target_rgb) and torch.equal(sparse.target_c2w, dense.target_c2w)
    assert float(dense.anchor_mask.float().mean()) > float(sparse.anchor_mask.float().mean()) + 0.05
    assert dense.reference_rgb.shape == sparse.reference_rgb.shape == (2, 12, 32, 32, 3)
    assert dense.reference_rgb.dtype == torch.uint8
    # One target's reference, resized here as FrameModel.encode_images resizes a 64x64 bank view: within rounding.
    views, _ = dense_gen.raycaster.render(
        torch.zeros(1, dtype=torch.int32), dense.reference_c2w[0, dense.reference_slot[0, 0]][None],
        dense_gen.capture_K, 64, 64,
    )  # fmt: skip
    resized = torch.nn.functional.interpolate(
        images_to_model(views, torch.float32), size=(32, 32), mode="bilinear", align_corners=False, antialias=True
    )
    reference = images_to_model(dense.reference_rgb[0, :1], torch.float32)
    assert float((resized - reference).abs().max()) <= 1.01 / 127.5
    with pytest.raises(ValueError, match="capture_resolution must be None or .height, width. ints >= 8"):
        ClipConfig(capture_resolution=(4, 4))
    from worldfm_env.training.stages import TrainConfig

    assert TrainConfig(capture_resolution=128)._capture_hw() == (128, 128)
    with pytest.raises(ValueError, match="capture_resolution must be None or .height, width. ints >= 8, got .4, 4."):
        TrainConfig(capture_resolution=4)


# --- Sparse captures and close-range targets (opt-in kinds of clip) ----------------------------------------------

FIELDS = (
    "anchor_rgb",
    "anchor_depth",
    "anchor_mask",
    "reference_rgb",
    "reference_slot",
    "target_rgb",
    "target_depth",
    "target_c2w",
    "reference_c2w",
    "K",
    "scene_seed",
    "target_close",
)


def _yaw_pitch(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw and pitch (radians) of poses (..., 4, 4): forward = (-sin yaw cos pitch, -sin pitch, cos yaw cos pitch)."""
    f = c2w[..., :3, 2]
    return torch.atan2(-f[..., 0], f[..., 2]), torch.asin((-f[..., 1]).clamp(-1, 1))


def _centre_block(depth: torch.Tensor) -> torch.Tensor:
    """The central 2x2 pixels (..., 4) of even-sized depth maps (..., H, W) (benchmarks/rollout_fidelity.py's)."""
    H, W = depth.shape[-2:]
    return depth[..., H // 2 - 1 : H // 2 + 1, W // 2 - 1 : W // 2 + 1].flatten(-2)


def test_default_clips_unchanged(generator):
    # The new fields at their defaults give the same clips, bit for bit, as a config that omits them ...
    explicit = ClipGenerator(
        generator.scenes,
        ClipConfig(resolution=(32, 32), sparse_fraction=0.0, close_fraction=0.0, close_range=(0.2, 0.6)),
    )
    a, b = generator.batch(3, seed=1, start_index=2), explicit.batch(3, seed=1, start_index=2)
    for key in FIELDS:
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.target_close.shape == (3, generator.config.targets) and not bool(a.target_close.any())
    # ... and as the code before they existed: per-clip sums of the poses and means of the ground truth, recorded
    # from it (tolerances far below any change of pose or view, above other CPUs' last-bit arithmetic).
    pose_sums = a.target_c2w[..., :3, :].abs().sum(dim=(1, 2, 3))
    torch.testing.assert_close(pose_sums, torch.tensor([199.5804, 216.1874, 228.8281]), atol=2e-3, rtol=0)
    reference_sums = a.reference_c2w[..., :3, :].abs().sum(dim=(1, 2, 3))
    torch.testing.assert_close(reference_sums, torch.tensor([66.8182, 71.2429, 76.02]), atol=2e-3, rtol=0)
    rgb_means = a.target_rgb.float().mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(rgb_means, torch.tensor([139.279, 122.691, 124.536]), atol=0.05, rtol=0)
    depth_means = a.target_depth.float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(depth_means, torch.tensor([2.06, 1.7544, 2.2651]), atol=2e-3, rtol=0)
    assert a.scene_seed.tolist() == [0, 0, 0]


def test_sparse_clips_capture_one_spot_and_targets_walk_away(generator):
    cfg = generator.config
    R, T = cfg.references, cfg.targets
    sparse_gen = ClipGenerator(generator.scenes, ClipConfig(resolution=(32, 32), sparse_fraction=1.0))
    dense, sparse = generator.batch(6, seed=2), sparse_gen.batch(6, seed=2)
    for key in FIELDS:
        assert getattr(sparse, key).shape == getattr(dense, key).shape, key
    # All references at the walk's first position (the default clips' first reference), level, headings 360/R apart.
    position = sparse.reference_c2w[:, :, :3, 3]
    assert torch.equal(position, position[:, :1].expand_as(position))
    assert torch.equal(position[:, 0], dense.reference_c2w[:, 0, :3, 3])
    yaw, pitch = _yaw_pitch(sparse.reference_c2w)
    assert float(pitch.abs().max()) < 1e-5
    gaps = torch.sort(torch.remainder(yaw, 2 * math.pi), dim=1).values.diff(dim=1)
    assert torch.allclose(gaps, torch.full_like(gaps, 2 * math.pi / R), atol=1e-4)
    assert len({round(float(y), 3) for y in torch.remainder(yaw[:, 0], 2 * math.pi / R)}) > 1  # drawn offsets
    # The targets are the walk's poses 1..T: with 16 views and 4 references (at 0, 5, 10, 15), poses 1-4 are the
    # default clip's first 4 targets and pose 5 its second reference.
    assert T == 12 and torch.equal(sparse.target_c2w[:, :4], dense.target_c2w[:, :4])
    assert torch.equal(sparse.target_c2w[:, 4], dense.reference_c2w[:, 1])
    assert not bool(sparse.target_close.any())
    # The point: the anchor shows less of the targets.
    dense_cover, sparse_cover = float(dense.anchor_mask.float().mean()), float(sparse.anchor_mask.float().mean())
    assert sparse_cover < 0.75 * dense_cover, (sparse_cover, dense_cover)
    # A fraction picks clips: some clips sparse, some not.
    half = ClipGenerator(generator.scenes, ClipConfig(resolution=(32, 32), sparse_fraction=0.5)).batch(16, seed=2)
    ref = half.reference_c2w[:, :, :3, 3]
    n_sparse = int((ref == ref[:, :1]).all(dim=2).all(dim=1).sum())
    assert 3 <= n_sparse <= 13, n_sparse


def test_close_range_targets_end_in_front_of_a_surface(generator):
    lo, hi = 0.2, 0.6
    # 64x64 pixels, 90 degrees: focal 32 px, so a pixel spans depth / 32 (2 cm at 0.6 m). The central 2x2 pixels lie
    # half a pixel off the axis the move aims along, so on a surface inclined by theta to the view their depth
    # differs from the axis depth by up to r tan(theta) / 64: 0.03 m holds up to 70 degrees at r = 0.6 m.
    tol = 0.03
    far = ClipGenerator(generator.scenes, ClipConfig(resolution=(64, 64)))
    close = ClipGenerator(generator.scenes, ClipConfig(resolution=(64, 64), close_fraction=1.0, close_range=(lo, hi)))
    a, b = far.batch(4, seed=4), close.batch(4, seed=4)
    assert bool(b.target_close.all()) and not bool(a.target_close.any())
    # Same clips; each target keeps its rotation (pitch jitter included) and moves forward horizontally only.
    assert torch.equal(a.target_c2w[..., :3, :3], b.target_c2w[..., :3, :3])
    yaw, pitch = _yaw_pitch(b.target_c2w)
    move = b.target_c2w[..., :3, 3] - a.target_c2w[..., :3, 3]
    ahead = torch.stack([-torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)], dim=-1)
    step = (move * ahead).sum(-1)
    assert float((move - step[..., None] * ahead).abs().max()) < 1e-4 and float(step.min()) >= 0
    moved = step > 1e-4
    assert float(moved.float().mean()) > 0.9  # the rest were already nearer than their distance, or faced nothing
    # Moved targets see the surface ahead at their drawn distance (horizontal distance: depth * cos(pitch) on the
    # walls). The nearest of the central 2x2 pixels always; their mean too unless a silhouette edge runs between
    # them (the ray the move aimed along grazed an object's side: a close view all the same).
    block = _centre_block(b.target_depth) * torch.cos(pitch)[..., None]
    nearest = block.min(dim=-1).values[moved]
    assert float(nearest.min()) > lo - tol and float(nearest.max()) < hi + tol, (nearest.min(), nearest.max())
    mean = block.mean(dim=-1)[moved]
    inside = (mean > lo - tol) & (mean < hi + tol)
    one_surface = (block.max(dim=-1).values - block.min(dim=-1).values)[moved] < tol
    assert bool(inside[one_surface].all()) and float(inside.float().mean()) > 0.9
    # Targets that stayed were already within range (or their centre ray hit nothing): no target is left far away.
    stayed = _centre_block(a.target_depth)[~moved].min(dim=-1).values
    assert bool(((stayed < hi + tol) | (stayed == 0)).all())
    # A fraction marks about that share of the targets (96 draws at 0.3: mean 28.8, sd 4.5) and moves only them.
    part = ClipGenerator(generator.scenes, ClipConfig(resolution=(32, 32), close_fraction=0.3)).batch(8, seed=4)
    base = generator.batch(8, seed=4)
    n = int(part.target_close.sum())
    assert 15 <= n <= 43, n
    same = (part.target_c2w == base.target_c2w).flatten(2).all(dim=-1)
    assert bool(same[~part.target_close].all()) and not bool(same[part.target_close].all())


def test_sparse_and_close_clips_deterministic(generator):
    cfg = ClipConfig(resolution=(32, 32), sparse_fraction=0.5, close_fraction=0.5)
    gen = ClipGenerator(generator.scenes, cfg)
    a, b = gen.batch(4, seed=9, start_index=3), gen.batch(4, seed=9, start_index=3)
    for key in FIELDS:
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    # A clip does not depend on the batch it is generated in; another seed gives other clips.
    single = gen.batch(1, seed=9, start_index=5)
    for key in ("target_c2w", "reference_c2w", "target_rgb", "target_close"):
        assert torch.equal(getattr(single, key)[0], getattr(a, key)[2]), key
    assert not torch.equal(gen.batch(4, seed=10, start_index=3).target_close, a.target_close)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sparse_fraction": 1.5}, "sparse_fraction"),
        ({"sparse_fraction": -0.1}, "sparse_fraction"),
        ({"sparse_fraction": float("nan")}, "sparse_fraction"),
        ({"sparse_fraction": "0.5"}, "sparse_fraction"),
        ({"sparse_fraction": True}, "sparse_fraction"),
        ({"close_fraction": 2.0}, "close_fraction"),
        ({"close_fraction": None}, "close_fraction"),
        ({"close_range": (0.0, 0.5)}, "close_range"),
        ({"close_range": (0.6, 0.2)}, "close_range"),
        ({"close_range": (0.2,)}, "close_range"),
        ({"close_range": (0.2, float("inf"))}, "close_range"),
        ({"close_range": "near"}, "close_range"),
    ],
)
def test_sparse_and_close_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ClipConfig(**kwargs)


def test_sparse_and_close_config_values():
    cfg = ClipConfig(sparse_fraction=1, close_fraction=np.float32(0.25), close_range=[0.3, 0.3])
    assert cfg.sparse_fraction == 1.0 and type(cfg.sparse_fraction) is float
    assert cfg.close_fraction == 0.25 and cfg.close_range == (0.3, 0.3) and type(cfg.close_range[0]) is float
