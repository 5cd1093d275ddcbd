"""CUDA code paths (run with `make test-gpu` on a machine with a GPU; skipped elsewhere)."""

import pytest
import torch

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.scenes.navigation import geodesic_distance

pytestmark = pytest.mark.gpu

KW = dict(scenes="procedural:train:1", resolution=32)


@pytest.mark.parametrize("renderer", ["anchor", "oracle"])
def test_cuda_env_matches_cpu(renderer):
    cpu = WorldFMVectorEnv(num_envs=8, renderer=renderer, device="cpu", **KW)
    gpu = WorldFMVectorEnv(num_envs=8, renderer=renderer, device="cuda", **KW)
    obs_c, _ = cpu.reset(seed=5)
    obs_g, _ = gpu.reset(seed=5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        action = torch.randint(1, 6, (8,), generator=gen)
        obs_c, r_c, *_ = cpu.step(action)
        obs_g, r_g, *_ = gpu.step(action.cuda())
        assert obs_g["rgb"].device.type == "cuda"
        # Same episodes (counter-based sampling) and the same pixels up to float rounding in projection.
        assert torch.allclose(obs_c["pointgoal"], obs_g["pointgoal"].cpu(), atol=1e-4)
        same = (obs_c["rgb"] == obs_g["rgb"].cpu()).all(-1).float().mean()
        assert same > 0.98
        assert torch.allclose(r_c, r_g.cpu(), atol=1e-4)


def test_cuda_resampled_anchor_colours_match_cpu():
    """anchor_colour="bank": the resample kernel on CUDA gives the CPU's colours on the same splat, up to float
    rounding in projection."""
    kw = dict(KW, renderer="anchor", anchor_colour="bank", splat_radius="auto")
    envs = {d: WorldFMVectorEnv(num_envs=8, device=d, **kw) for d in ("cpu", "cuda")}
    obs = {d: env.reset(seed=5)[0] for d, env in envs.items()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        action = torch.randint(1, 4, (8,), generator=gen)
        obs = {d: env.step(action.to(d))[0] for d, env in envs.items()}
        same = (obs["cpu"]["rgb"] == obs["cuda"]["rgb"].cpu()).all(-1).float().mean()
        assert same > 0.98


def test_cuda_geodesic_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    free = torch.rand(64, 64, generator=gen) > 0.25
    free[0, 0] = True
    src = torch.tensor([0, 0])
    cpu = geodesic_distance(free, src)
    gpu = geodesic_distance(free.cuda(), src.cuda()).cpu()
    assert torch.equal(torch.isinf(cpu), torch.isinf(gpu))
    assert torch.allclose(cpu[torch.isfinite(cpu)], gpu[torch.isfinite(gpu)], atol=1e-4)


def test_cuda_many_envs_step():
    env = WorldFMVectorEnv(num_envs=1024, renderer="anchor", device="cuda", **KW)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(torch.randint(0, 6, (1024,), device="cuda"))
    assert obs["rgb"].shape == (1024, 32, 32, 3)


def test_cuda_nearest_fill_matches_cpu():
    """The Warp fill kernels give the same distances on CUDA (torch's stream) as on the CPU."""
    from worldfm_env.render.fill import nearest_fill

    g = torch.Generator().manual_seed(0)
    mask = torch.rand(8, 48, 64, generator=g) < 0.2
    index = torch.arange(8 * 48 * 64).reshape(8, 48, 64, 1)
    cpu = nearest_fill(index, mask)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # the kernels must run on torch's current stream, ordered with the copies
        cuda = nearest_fill(index.cuda(), mask.cuda())
    side.synchronize()
    cuda = cuda.cpu()
    ys, xs = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")

    def dist(out):
        src = out[..., 0] % (48 * 64)
        return (src // 64 - ys) ** 2 + (src % 64 - xs) ** 2

    assert torch.equal(dist(cpu), dist(cuda))


def test_cuda_layout_depth_matches_cpu():
    """The navigation layout's depth (``depth_bound="navigation"``) on CUDA: the same cell walk as on the CPU."""
    from worldfm_env.geometry import intrinsics_from_fov, pose_from_yaw_pitch
    from worldfm_env.scenes.catalog import resolve_scenes
    from worldfm_env.scenes.navigation import pool_layout_depth
    from worldfm_env.scenes.pool import ScenePool

    out = {}
    for device in ("cpu", "cuda"):
        pool = ScenePool(resolve_scenes("procedural:train:1", torch.device(device), (32, 32), 90.0), device)
        c2w = pool.bank_c2w[:8].clone()
        c2w = pose_from_yaw_pitch(c2w[:, :3, 3], torch.linspace(0, 6, 8, device=device), torch.zeros(8, device=device))
        layout = pool_layout_depth(pool, 8, 32, 32)
        K_inv = torch.linalg.inv(intrinsics_from_fov(32, 32, 90.0, device=device))
        out[device] = layout.render(torch.zeros(8, dtype=torch.long, device=device), c2w, K_inv).cpu()
    assert (out["cpu"] > 0).all()
    assert torch.allclose(out["cpu"], out["cuda"], rtol=1e-4, atol=1e-4)
