"""Anchor colours resampled from the captured views (``anchor_colour="bank"``): exact on a linear texture, never
across a depth edge, the finest view wins, grown pixels and the geometry untouched, strict option values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import small

from worldfm_env.envs.config import EnvConfig
from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.render.anchor_config import AnchorConfig
from worldfm_env.render.resample import resample_anchor_colours

S = 32  # image side of the synthetic views
F = 32.0  # focal length (pixels)


def _pose(z: float) -> torch.Tensor:
    """A camera at (0, 0, z) looking down +z."""
    c2w = torch.eye(4)
    c2w[2, 3] = z
    return c2w


def _K() -> torch.Tensor:
    return torch.tensor([[F, 0.0, S / 2], [0.0, F, S / 2], [0.0, 0.0, 1.0]])


def _banks(views: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> SimpleNamespace:
    """One scene whose captured views are (c2w, image (S, S, 3) uint8, depth (S, S))."""
    c2w = torch.stack([v[0] for v in views])
    return SimpleNamespace(
        bank_images=torch.stack([v[1] for v in views]),
        bank_depth=torch.stack([v[2] for v in views]).float(),
        bank_K=_K().expand(len(views), 3, 3).clone(),
        bank_w2c=torch.linalg.inv(c2w),
        scene_bank_start=torch.tensor([0], dtype=torch.int32),
        scene_bank_count=torch.tensor([len(views)], dtype=torch.int32),
        max_bank=len(views),
    )


def _linear_image() -> torch.Tensor:
    """Red rises 4 per pixel to the right, green 3 per pixel down, blue constant."""
    y, x = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    return torch.stack([4 * x + 10, 3 * y + 20, torch.full_like(x, 50)], dim=-1).to(torch.uint8)


def _target():
    """A camera 1 m in front of the bank camera, looking at the wall 2 m from the bank camera (1 m from it)."""
    c2w = _pose(1.0)[None]
    depth = torch.ones(1, S, S)
    return c2w, _K()[None], depth


def test_a_magnified_linear_texture_is_resampled_exactly_from_the_finest_view():
    """The target sees the wall twice as near as the bank view did: every pixel's colour is the bilinear value of the
    captured image, which is exact for a linear texture (a nearest sample is off by up to half a captured pixel).
    A second, coarser view of the same wall (farther, a flat grey) loses to the finer one everywhere."""
    near = (_pose(0.0), _linear_image(), torch.full((S, S), 2.0))
    far = (_pose(-2.0), torch.full((S, S, 3), 200, dtype=torch.uint8), torch.full((S, S), 4.0))
    c2w, K, depth = _target()
    rgb = torch.zeros(1, S, S, 3, dtype=torch.uint8)
    mask = torch.ones(1, S, S, dtype=torch.bool)
    found = resample_anchor_colours(rgb, depth, mask, torch.tensor([0]), c2w, K, _banks([far, near]))
    assert bool(found.all())
    u = torch.arange(S, dtype=torch.float32) + 0.5
    u_bank = (u - S / 2) / 2 + S / 2  # where each target pixel centre lands in the bank view (pixels)
    red = 4 * (u_bank - 0.5) + 10  # the linear texture between pixel centres
    green = 3 * (u_bank - 0.5) + 20
    assert (rgb[0, 0, :, 0].float() - red).abs().max() <= 0.5
    assert (rgb[0, :, 0, 1].float() - green).abs().max() <= 0.5
    assert bool((rgb[..., 2] == 50).all())


def test_no_colour_is_mixed_across_a_depth_edge_and_kept_pixels_stay():
    """The bank's right half is a farther surface: target pixels whose 2x2 captured neighbourhood reaches it keep
    the splat's colour, as do pixels marked ``keep`` (grown points)."""
    depth_edge = torch.full((S, S), 2.0)
    depth_edge[:, S // 2 :] = 3.0
    c2w, K, depth = _target()
    rgb = torch.full((1, S, S, 3), 7, dtype=torch.uint8)
    mask = torch.ones(1, S, S, dtype=torch.bool)
    mask[0, 0, 0] = False  # an uncovered pixel is never written
    keep = torch.zeros(1, S, S, dtype=torch.bool)
    keep[0, 5, 5] = True
    banks = _banks([(_pose(0.0), _linear_image(), depth_edge)])
    found = resample_anchor_colours(rgb, depth, mask, torch.tensor([0]), c2w, K, banks, keep=keep)
    # Target column i lands at bank u = i / 2 + 8.25; its right neighbour centre is at floor(u - 0.5) + 1.5, which
    # stays on the near surface (bank column <= 15) for i <= 14.
    columns = torch.arange(S)
    expect = (columns <= 14)[None, None, :].expand(1, S, S).clone()
    expect[0, 0, 0] = expect[0, 5, 5] = False
    assert torch.equal(found, expect)
    assert bool((rgb[~found] == 7).all())
    assert bool((rgb[found][:, 2] == 50).all())


def test_each_env_uses_only_its_own_views_and_strided_colours_are_written():
    """Two envs in one call: the first may use the fine view only, the second the coarse one only, a third has no
    view to try (-1) and keeps every colour. Colours given as a non-contiguous view are written through it; one
    (3, 3) K serves every env."""
    near = (_pose(0.0), _linear_image(), torch.full((S, S), 2.0))
    far = (_pose(-2.0), torch.full((S, S, 3), 200, dtype=torch.uint8), torch.full((S, S), 4.0))
    c2w, K, depth = _target()
    storage = torch.full((3, S, S, 4), 7, dtype=torch.uint8)
    rgb = storage[..., :3]  # strided: every pixel's fourth byte is skipped
    assert not rgb.is_contiguous()
    mask = torch.ones(3, S, S, dtype=torch.bool)
    views = torch.tensor([[1, -1], [-1, 0], [-1, -1]])
    found = resample_anchor_colours(
        rgb, depth.expand(3, S, S), mask, torch.zeros(3, dtype=torch.long), c2w.expand(3, 4, 4), K[0],
        _banks([far, near]), views=views,
    )  # fmt: skip
    assert bool(found[:2].all()) and not bool(found[2].any())
    assert bool((rgb[0, ..., 2] == 50).all())  # the fine view's blue
    assert bool((rgb[1] == 200).all())  # the coarse view's grey
    assert bool((rgb[2] == 7).all()) and bool((storage[..., 3] == 7).all())


def test_env_anchor_at_a_captured_pose_is_the_captured_image_and_keeps_its_geometry():
    """The env option reaches the anchor: mask and depth stay the splat's, colours change where a view is nearer
    than its capture; resampled at a captured view's own pose from that view, the anchor is the captured image."""
    envs = {c: WorldFMVectorEnv(num_envs=1, **small(), anchor_colour=c) for c in ("splat", "bank")}
    pool = envs["bank"].pool
    b = 0
    at_view = pool.bank_c2w[b : b + 1].clone()
    nearer = at_view.clone()
    nearer[0, :3, 3] += 0.5 * at_view[0, :3, 2]  # half a metre along the view direction
    renders = {}
    for colour, env in envs.items():
        for name, c2w in (("at", at_view), ("nearer", nearer)):
            anchor = env.pipeline.render(torch.tensor([0]), c2w).anchor
            renders[colour, name] = (anchor.rgb.clone(), anchor.depth.clone(), anchor.mask.clone())
        env.close()
    for name in ("at", "nearer"):
        (_, depth_s, mask_s), (rgb_b, depth_b, mask_b) = renders["splat", name], renders["bank", name]
        assert torch.equal(mask_s, mask_b) and torch.equal(depth_s, depth_b)
        assert bool((rgb_b[~mask_b] == 0).all())
    # Resampled from that view alone, at its own pose, a pixel is exactly the view's pixel (bilinear weights 1, 0).
    rgb, depth, mask = (t.clone() for t in renders["splat", "at"])
    K = envs["splat"].K
    found = resample_anchor_colours(rgb, depth, mask, torch.tensor([0]), at_view, K, pool, views=torch.tensor([[b]]))
    assert float(found.sum()) > 0.9 * float(mask.sum())
    assert torch.equal(rgb[0][found[0]], pool.bank_images[b][found[0]])
    # Half a metre nearer, the bilinear colours differ from the splat's nearest samples on many pixels.
    changed = (renders["splat", "nearer"][0] != renders["bank", "nearer"][0]).any(-1)
    assert float(changed.float().mean()) > 0.05


def test_anchor_colour_is_validated_by_name():
    for bad in ("bilinear", None, 1):
        with pytest.raises(ValueError, match="anchor_colour must be one of \\['splat', 'bank'\\]"):
            AnchorConfig(anchor_colour=bad)
        with pytest.raises(ValueError, match="anchor_colour must be one of"):
            EnvConfig(anchor_colour=bad)
    assert EnvConfig(anchor_colour="bank").anchor.anchor_colour == "bank"
    with pytest.raises(ValueError, match="tolerance must be a number in \\(0, 1\\)"):
        c2w, K, depth = _target()
        rgb = torch.zeros(1, S, S, 3, dtype=torch.uint8)
        resample_anchor_colours(
            rgb, depth, depth > 0, torch.tensor([0]), c2w, K, _banks([(_pose(0.0), _linear_image(), depth[0])]), 0
        )


def test_backends_without_an_anchor_do_not_splat_for_it():
    """The oracle shows no anchor: with anchor_colour="bank" it neither splats nor resamples."""
    env = WorldFMVectorEnv(num_envs=1, **small(renderer="oracle"), anchor_colour="bank")
    assert env.pipeline.splatter is None and env.pipeline.selector is None
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (1, 32, 32, 3)
    env.close()
