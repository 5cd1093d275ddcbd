"""One observation pipeline: the env, the render CLI's code path and the training clips see the same anchors and
frames; the frame-model object computes a frame's conditions once; the import graph has no circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from conftest import small

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.model import FrameModel, build_model, make_generators, save_checkpoint
from worldfm_env.render.anchor_config import AnchorConfig
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.renderers.trajectory import render_trajectory
from worldfm_env.training.data import target_anchors

PACKAGE = Path(__file__).resolve().parents[2] / "worldfm_env"


@pytest.fixture(scope="module")
def refiner_weights(tmp_path_factory):
    """A tiny residual model with a depth-reading pixel refiner: every condition path of the frame model."""
    torch.manual_seed(0)
    model = build_model(
        "tiny", input_size=32, target="anchor_residual", refiner_channels=8, refiner_depth=True, prediction="v"
    )
    path = tmp_path_factory.mktemp("weights") / "tiny-refiner-32.safetensors"
    save_checkpoint(model, path)
    return str(path)


def test_env_cli_and_training_clips_render_identical_anchors_and_frames(refiner_weights):
    env = WorldFMVectorEnv(
        num_envs=2, **small(scenes="procedural:train:2", renderer="worldfm"), weights=refiner_weights
    )
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs, *_ = env.step(torch.tensor([1, 2]))
    request = env.pipeline.last_request
    H, W = env.height, env.width
    for i in range(env.num_envs):
        scene = env.pool.scenes[int(env.scene_index[i])]
        c2w, K = env.camera_poses()[i : i + 1], env.K[i : i + 1]
        seed = int(request.noise_seed[i])
        # The render CLI's code path: a one-pose trajectory of that scene, noise seed = the env's.
        (cli_anchor, cli_frame), *rest = render_trajectory(
            scene, c2w, K, H, W, renderer="worldfm", batch_size=1, seed=seed, weights=refiner_weights
        )
        assert not rest
        assert torch.equal(cli_anchor, request.anchor.rgb[i])
        assert torch.equal(cli_frame, obs["rgb"][i])
        # The training clips' code path over the env's pool, then the frame-model object with the same seed.
        anchor, reference = target_anchors(env.pool, env.scene_index[i : i + 1], c2w, K[0], H, W, env.config.anchor)
        assert torch.equal(anchor.rgb[0], request.anchor.rgb[i])
        assert torch.equal(anchor.depth[0], request.anchor.depth[i])
        assert int(reference) == int(request.reference_index[i])
        frame_model = env.renderer.frame_model
        cond = frame_model.conditions(anchor.rgb, anchor.mask, env.pool.bank_images[reference], anchor.depth)
        frame = frame_model.generate(cond, generators=make_generators([seed]))
        assert torch.equal(frame[0], obs["rgb"][i])


def test_every_path_uses_the_env_anchor_defaults():
    from worldfm_env.envs.config import EnvConfig
    from worldfm_env.training.data import ClipConfig

    assert EnvConfig().anchor == AnchorConfig()
    assert ClipConfig().anchor.splat_radius == AnchorConfig().splat_radius
    assert ClipConfig().anchor.anchor_lod == AnchorConfig().anchor_lod
    assert ClipConfig().anchor.occlusion_culling == AnchorConfig().occlusion_culling
    assert ClipConfig().anchor.anchor_colour == AnchorConfig().anchor_colour


def test_pipeline_inverts_the_intrinsics_once():
    env = WorldFMVectorEnv(num_envs=2, **small(renderer="anchor"))
    pipeline = env.pipeline
    assert torch.allclose(pipeline.K_inv @ pipeline.K, torch.eye(3).expand(2, 3, 3), atol=1e-6)
    env.reset(seed=0)
    calls = []
    original = torch.linalg.inv
    try:
        torch.linalg.inv = lambda *a, **k: calls.append(1) or original(*a, **k)
        env.step(torch.tensor([1, 1]))
    finally:
        torch.linalg.inv = original
    assert calls == []


def test_pipeline_rejects_bad_intrinsics():
    env = WorldFMVectorEnv(num_envs=1, **small(renderer="anchor"))
    with pytest.raises(ValueError, match=r"K must be \(3, 3\) or \(2, 3, 3\)"):
        ObservationPipeline(env.pool, 2, 32, 32, K=torch.eye(4))
    with pytest.raises(ValueError, match="renderer='nope' is not valid"):
        ObservationPipeline(env.pool, 1, 32, 32, renderer="nope")


def test_frame_conditions_are_prepared_once_per_frame(refiner_weights, monkeypatch):
    """The refiner's hole fill and depth feature run once per frame, not once per sampler step."""
    from worldfm_env.model.dit import PixelRefiner

    frame_model = FrameModel.from_checkpoint(refiner_weights, model_dtype="float32", sampler_steps=2)
    calls = []
    original = PixelRefiner.prepare
    monkeypatch.setattr(PixelRefiner, "prepare", lambda self, *a: calls.append(1) or original(self, *a))
    N = 2
    anchor = torch.randint(0, 255, (N, 32, 32, 3), dtype=torch.uint8)
    mask = torch.rand(N, 32, 32) > 0.3
    depth = torch.rand(N, 32, 32) * 3 * mask
    cond = frame_model.conditions(anchor * mask[..., None], mask, anchor.flip(1), depth)
    assert len(calls) == 1
    frames = frame_model.generate(cond, generators=make_generators([0, 1]))
    assert len(calls) == 1 and frames.shape == (N, 32, 32, 3)
    # Without the prepared inputs the model derives the same ones itself: the same frames.
    cond.model_kwargs = {}
    assert torch.equal(frame_model.generate(cond, generators=make_generators([0, 1])), frames)
    assert len(calls) == 3  # now once per step of the 2-step sampler


def _imports(path: Path) -> set[str]:
    """Modules of worldfm_env that ``path`` imports (at any depth of the file, TYPE_CHECKING included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("worldfm_env"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("worldfm_env"))
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_import_graph_has_no_circle_and_no_upward_import():
    modules = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    # No part imports a part above it.
    for name, imported in modules.items():
        if name.startswith("worldfm_env.model"):
            assert not any(m.startswith("worldfm_env.envs") for m in imported), (name, imported)
        if name.startswith("worldfm_env.render."):
            assert not any(m.startswith("worldfm_env.scenes") for m in imported), (name, imported)
        if name.startswith("worldfm_env.memory"):  # the growing memory sits below the pipeline that owns it
            assert not any(m.startswith(("worldfm_env.renderers", "worldfm_env.envs")) for m in imported), name
        if name in ("worldfm_env.rng", "worldfm_env.geometry", "worldfm_env._device"):
            assert not imported - {"worldfm_env._device"}, (name, imported)

    # No circle between modules (an import of a package counts as importing its __init__).
    def targets(imported):
        return {m for m in imported if m in modules}

    graph = {name: targets(imported) - {name} for name, imported in modules.items()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError(f"import circle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
