"""Tests of the point splat (anchor) and the reference-view selection on a small procedural scene."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from worldfm_env.geometry import pose_from_yaw_pitch
from worldfm_env.render.points import ChunkedPoints
from worldfm_env.render.splat import PointSplatter, ReferenceSelector, splat_points
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.pointcloud import points_from_views
from worldfm_env.scenes.pool import ScenePool
from worldfm_env.scenes.scene import ReferenceBank

DEVICE = torch.device("cpu")
RES = (32, 32)


@pytest.fixture(scope="module")
def scene():
    (s,) = resolve_scenes("procedural:train:1", DEVICE, RES, 90.0)
    assert s.bank.resolution == RES and s.mesh is not None
    return s


@pytest.fixture(scope="module")
def pool(scene):
    return ScenePool([scene], DEVICE)


@pytest.fixture(scope="module")
def full_cloud(scene):
    """One point per bank pixel with depth: no voxel downsampling."""
    bank = scene.bank
    return points_from_views(bank.images, bank.depth, bank.K, bank.c2w, with_normals=True, with_spacing=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float() - b.float()) ** 2).mean()
    return float(10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10)))


def spread_views(num_views: int, count: int) -> list[int]:
    """``count`` bank views spread over the bank (always including view 0)."""
    return sorted({int(round(k * (num_views - 1) / (count - 1))) for k in range(count)})


@pytest.fixture(scope="module")
def view0(scene):
    bank = scene.bank
    H, W = bank.resolution
    out = splat_points(
        scene.points_xyz,
        scene.points_rgb,
        bank.c2w[0:1],
        bank.K[0],
        H,
        W,
        normals=scene.points_normal,
        spacing=scene.points_spacing,
    )
    valid = bank.depth[0] > 0
    return out, valid


def test_bank_view0_coverage(scene, view0):
    out, valid = view0
    assert out.rgb.shape == (1, *RES, 3) and out.rgb.dtype == torch.uint8
    assert out.depth.shape == (1, *RES) and out.mask.dtype == torch.bool
    assert float(valid.float().mean()) > 0.5
    coverage = float((out.mask[0] & valid).sum() / valid.sum())
    assert coverage > 0.95, coverage
    # Where nothing landed: black and zero depth.
    assert (out.rgb[0][~out.mask[0]] == 0).all() and (out.depth[0][~out.mask[0]] == 0).all()


@pytest.fixture(scope="module")
def capture_views(scene):
    """The bank views taken from bank view 0's capture position (the published setting: one panorama)."""
    bank = scene.bank
    same = (bank.c2w[:, :3, 3] - bank.c2w[0, :3, 3]).norm(dim=1) < 1e-6
    views = torch.nonzero(same).flatten()
    assert len(views) >= 8
    return views


def _same_surface(out, j, bank, i):
    valid = bank.depth[i] > 0
    same = out.mask[j] & valid & ((out.depth[j] - bank.depth[i]).abs() < 0.01 * bank.depth[i])
    return valid, same


def test_bank_view0_reproduced_by_scene_cloud(scene, view0):
    """The scene cloud splatted at bank view 0's pose reproduces view 0 (> 40 dB) wherever the same
    surface wins the pixel, and the same surface wins at least 95 % of the pixels.

    View 0's points all survive the voxel downsampling (it is first in bank order). The pixels the
    test leaves out are occlusion edges where a point of another capture position, on a nearer
    surface, covers the pixel centre by its footprint: a point splat's known edge behaviour.
    """
    out, _ = view0
    bank = scene.bank
    valid, same = _same_surface(out, 0, bank, 0)
    value = psnr(out.rgb[0][same], bank.images[0][same])
    fraction = float(same.sum() / valid.sum())
    print(f"view 0 (scene cloud): same-surface pixels {fraction:.3f}, PSNR there {value:.1f} dB")
    assert fraction > 0.95
    assert value > 40.0
    rel = (out.depth[0][same] - bank.depth[0][same]).abs() / bank.depth[0][same]
    # Plane depth at the pixel centre: exact for the view's own points (a poster 5 mm in front of its
    # wall falls inside the 1 % band, hence the quantile).
    assert float(rel.quantile(0.99)) < 1e-4, f"depth on the same surface off: {float(rel.quantile(0.99)):.2e}"


def test_bank_views_from_one_capture_position(scene, capture_views):
    """The cloud of one capture position (one point per pixel, like the published panorama) at each
    of its views: the view's surface wins >= 90 % of pixels; PSNR there is reported and must be high."""
    bank = scene.bank
    H, W = bank.resolution
    v = capture_views
    xyz, rgb, normals, spacing = points_from_views(
        bank.images[v], bank.depth[v], bank.K[v], bank.c2w[v], with_normals=True, with_spacing=True
    )
    out = splat_points(xyz, rgb, bank.c2w[v], bank.K[v], H, W, normals=normals, spacing=spacing)
    values = []
    for j, i in enumerate(v.tolist()):
        valid, same = _same_surface(out, j, bank, i)
        assert float(same.sum() / valid.sum()) > 0.9, f"view {i}"
        values.append(psnr(out.rgb[j][same], bank.images[i][same]))
    print("PSNR per view (same-surface pixels):", [round(x, 1) for x in values])
    assert sorted(values)[len(values) // 2] > 35.0


def test_splat_batched_equals_single(pool, scene):
    bank = scene.bank
    H, W = bank.resolution
    views = spread_views(bank.num_views, 4)
    assert len(views) == 4
    c2w, K = bank.c2w[views], bank.K[views]
    batched = PointSplatter(pool.points, 4, H, W).render(torch.zeros(4, dtype=torch.int32), c2w, K)
    batched = [t.clone() for t in (batched.rgb, batched.depth, batched.mask)]
    single = PointSplatter(pool.points, 1, H, W)
    for j in range(4):
        out = single.render(torch.zeros(1, dtype=torch.int32), c2w[j : j + 1], K[j : j + 1])
        assert torch.equal(out.rgb[0], batched[0][j]), j
        assert torch.equal(out.depth[0], batched[1][j]), j
        assert torch.equal(out.mask[0], batched[2][j]), j
    # Different poses give different images (the comparison is not vacuous).
    assert not torch.equal(batched[0][0], batched[0][1])


def test_splat_repeatable_and_buffers_cleared(pool, scene):
    """A second render of another pose, then the first again, gives the first result bit-exactly."""
    bank = scene.bank
    H, W = bank.resolution
    sp = PointSplatter(pool.points, 1, H, W)
    idx = torch.zeros(1, dtype=torch.int32)
    first = [t.clone() for t in vars(sp.render(idx, bank.c2w[:1], bank.K[:1])).values() if t is not None]
    sp.render(idx, bank.c2w[5:6], bank.K[5:6])
    again = [t for t in vars(sp.render(idx, bank.c2w[:1], bank.K[:1])).values() if t is not None]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_splat_radius_and_lod(scene):
    bank = scene.bank
    H, W = bank.resolution
    views = spread_views(bank.num_views, 4)
    c2w, K = bank.c2w[views], bank.K[views]
    # A sparse cloud leaves holes at radius 0, which radius 1 fills.
    xyz, rgb = scene.points_xyz[::16], scene.points_rgb[::16]
    r0 = splat_points(xyz, rgb, c2w, K, H, W, radius=0)
    r1 = splat_points(xyz, rgb, c2w, K, H, W, radius=1)
    assert (r1.mask | ~r0.mask).all(), "radius 1 lost pixels that radius 0 covered"
    assert int(r1.mask.sum()) > int(r0.mask.sum())
    assert int(r0.mask.sum()) < r0.mask.numel() * 0.95  # the sparse cloud does leave holes
    full0 = splat_points(scene.points_xyz, scene.points_rgb, c2w, K, H, W)
    lod = splat_points(scene.points_xyz, scene.points_rgb, c2w, K, H, W, lod_scale=0.25)
    cov0 = full0.mask.float().mean(dim=(1, 2))
    cov_lod = lod.mask.float().mean(dim=(1, 2))
    print(f"coverage lod 0: {cov0.tolist()}  lod 0.25: {cov_lod.tolist()}")
    assert ((cov_lod - cov0).abs() < 0.03).all(), (cov0, cov_lod)
    with pytest.raises(ValueError, match="lod_scale"):
        splat_points(xyz, rgb, c2w, K, H, W, lod_scale=-1.0)


def _perturb(c2w: torch.Tensor, shift: float, angle_deg: float) -> torch.Tensor:
    """``c2w`` moved ``shift`` along its own x axis and turned ``angle_deg`` about its own y axis."""
    local = pose_from_yaw_pitch(
        torch.tensor([[shift, 0.0, 0.0]]), torch.tensor([math.radians(angle_deg)]), torch.tensor([0.0])
    )
    return c2w @ local


@pytest.mark.parametrize("shift, angle", [(0.0, 0.0), (0.02, 1.0), (-0.02, -1.0)])
def test_reference_selection_picks_the_view_at_the_pose(pool, scene, shift, angle):
    bank = scene.bank
    H, W = bank.resolution
    views = spread_views(bank.num_views, 6)
    N = len(views)
    c2w = _perturb(bank.c2w[views], shift, angle)
    K = bank.K[views]
    scene_index = torch.zeros(N, dtype=torch.int32)
    anchor = PointSplatter(pool.points, N, H, W).render(scene_index, c2w, K)
    selector = ReferenceSelector(pool, N, H, W)
    picked = selector.select(anchor.depth, scene_index, c2w, K)
    assert picked.dtype == torch.int64 and picked.shape == (N,)
    for j, i in enumerate(views):
        k = int(picked[j])
        ok = k == i or torch.equal(pool.bank_c2w[k], pool.bank_c2w[i])
        hits = selector.hits[j, [i, k]].tolist()
        assert ok, f"pose at view {i} ({shift} m, {angle} deg) selected view {k}; hits {hits}"


def test_scene_pool_rejects_mixed_bank_resolutions(scene):
    bank = scene.bank
    half = ReferenceBank(
        bank.images[:, ::2, ::2].contiguous(), bank.depth[:, ::2, ::2].contiguous(), bank.K.clone(), bank.c2w.clone()
    )
    other = dataclasses.replace(scene, bank=half, name="half-resolution")
    with pytest.raises(ValueError, match="resolution"):
        ScenePool([scene, other], DEVICE)
    with pytest.raises(ValueError):
        ScenePool([], DEVICE)


def test_chunked_points_rejects_empty_cloud():
    with pytest.raises(ValueError, match="empty|non-empty"):
        ChunkedPoints([torch.zeros(0, 3)], [torch.zeros(0, 3, dtype=torch.uint8)])
    with pytest.raises(ValueError):
        ChunkedPoints([], [])
    with pytest.raises(ValueError, match="rgb"):
        ChunkedPoints([torch.zeros(4, 3)], [torch.zeros(4, 3)])  # float colours


def test_occlusion_culling_never_hides_visible_surfaces():
    """Culling chunks behind walls removes see-through points, and (almost) no pixel the mesh says is visible."""
    from worldfm_env.render.raycast import MeshRaycaster
    from worldfm_env.render.splat import Occluders

    H = W = 64
    pool = ScenePool(resolve_scenes("procedural:train:2", DEVICE, (H, W), 90.0)[1:], DEVICE)
    gen = torch.Generator().manual_seed(0)
    N = 256
    nav = pool.nav_free[0]
    cells = torch.nonzero(nav)
    pick = cells[torch.randint(0, len(cells), (N,), generator=gen)]
    cs, (x0, z0) = float(pool.nav_cell_size[0]), pool.nav_origin[0].tolist()
    y = float(pool.floor_y[0] - pool.camera_height[0])
    pos = torch.stack([x0 + (pick[:, 1] + 0.5) * cs, torch.full((N,), y), z0 + (pick[:, 0] + 0.5) * cs], -1)
    yaw = (torch.rand(N, generator=gen) * 2 - 1) * math.pi
    pitch = (torch.rand(N, generator=gen) - 0.5) * math.radians(90)
    c2w = pose_from_yaw_pitch(pos, yaw, pitch)
    K = pool.bank_K[:1].expand(N, 3, 3).contiguous()
    scene_index = torch.zeros(N, dtype=torch.int32)
    assert bool(pool.occluders.any())
    plain = PointSplatter(pool.points, N, H, W).render(scene_index, c2w, K)
    plain = [t.clone() for t in (plain.depth, plain.mask)]
    culled = PointSplatter(
        pool.points, N, H, W, occluders=Occluders(pool.occluders, pool.nav_origin, pool.nav_cell_size)
    ).render(scene_index, c2w, K)
    _, gt_depth = MeshRaycaster([pool.scenes[0].mesh]).render(scene_index, c2w, K, H, W)
    correct_plain = plain[1] & ((plain[0] - gt_depth).abs() < 0.05 * gt_depth)
    correct_culled = culled.mask & ((culled.depth - gt_depth).abs() < 0.05 * gt_depth)
    lost = int((correct_plain & ~correct_culled).sum())
    removed_wrong = int((plain[1] & ~correct_plain & ~culled.mask).sum())
    print(f"culling: lost {lost} correct pixels, removed {removed_wrong} see-through pixels of {N * H * W}")
    # Occluder cells are coarse (a wall may fill part of a cell), so a ray grazing a wall junction can
    # very rarely be cut; measured: 0 of 1M pixels in one scene, 36 in the other. Culling must stay a
    # net gain against ground truth and lose at most 1e-4 of the pixels.
    assert lost <= 1e-4 * N * H * W
    assert removed_wrong > 20 * max(lost, 1)
