"""Shared test set-up: a per-session scene cache, the gpu marker, small default scenes."""

import os
import tempfile

# Under pytest-xdist (make test: one worker per core) each worker computes on one thread, and so do the processes
# its tests start: two workers with a thread per core each would oversubscribe the cores, and torch's threads then
# wait on each other. Set before torch is imported, so its thread pools start at that size.
_XDIST_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _XDIST_RUN:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if _XDIST_RUN:
    torch.set_num_threads(1)

# One scene cache per test run, shared by its workers: each procedural scene is generated once, then memory-mapped
# (the cache writes each file to a temporary name and renames it, so workers never read a partial file).
if _XDIST_RUN:
    _CACHE = os.path.join(tempfile.gettempdir(), f"worldfm-test-scenes-{_XDIST_RUN}")
    os.makedirs(_CACHE, exist_ok=True)
else:
    _CACHE = tempfile.mkdtemp(prefix="worldfm-test-scenes-")
os.environ.setdefault("WORLDFM_ENV_SCENE_CACHE", _CACHE)

# Small, fast scenes for tests: one procedural training scene at a low resolution, rendered by the raw anchor
# (no frame model ships for 32x32; tests of the frame model pass renderer="worldfm" and their own weights).
SMALL = dict(scenes="procedural:train:1", resolution=32, device="cpu", renderer="anchor")


def small(**overrides):
    """:data:`SMALL` with some keys replaced, e.g. ``small(renderer="worldfm", weights=path)``."""
    return {**SMALL, **overrides}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def small_kwargs():
    """Keyword arguments for a small, fast CPU environment."""
    return dict(SMALL)


def zero_x0_forward():
    """A stand-in frame-model forward whose v prediction makes x0 = a_t z - s_t v exactly 0 at every timestep."""
    from worldfm_env.model.samplers import iddpm_linear_schedule

    abar = iddpm_linear_schedule().alphas_cumprod.float()

    def forward(z, t, anchor, reference, cameras=None):
        rows = abar[t.long().cpu()].to(z.device)[:, None, None, None]
        v = (rows.sqrt() / (1 - rows).sqrt()) * z.float()
        return torch.cat([v, torch.zeros_like(v)], dim=1).to(z.dtype)

    return forward


def record_clip_configs(monkeypatch, module) -> list:
    """Make ``module``'s ``ClipGenerator`` record the ``ClipConfig`` of every generator it builds; returns the list."""
    configs = []

    class Recording(module.ClipGenerator):
        def __init__(self, scenes, config, device="cpu"):
            configs.append(config)
            super().__init__(scenes, config, device)

    monkeypatch.setattr(module, "ClipGenerator", Recording)
    return configs
