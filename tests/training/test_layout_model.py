"""A frame model that reads the navigation layout (``DiTConfig.refiner_layout``): it starts where the env's depth cap
is, it is fed the layout by the clips and by the env, it trains and resumes exactly, and it refuses to run blind."""

import pytest
import torch
from test_rgbd import TINY_RGBD, _log, _synthetic_anchor, assert_resumes_exactly

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.model import build_model, load_checkpoint, save_checkpoint
from worldfm_env.model.checkpoint import LAYOUT_OBSTACLES_METADATA_KEY, trained_layout_obstacles
from worldfm_env.model.frame_model import FrameModel
from worldfm_env.scenes.navigation import pool_layout_depth
from worldfm_env.scenes.pool import ScenePool
from worldfm_env.training.data import ClipConfig, ClipGenerator
from worldfm_env.training.stages import TrainConfig, extend_model, resolve_scenes, train


def _layout_for(depth: torch.Tensor, seed: int = 4) -> torch.Tensor:
    """A synthetic layout depth: bounded rays at 0.3-3 m, a quarter of them unbounded (0)."""
    g = torch.Generator().manual_seed(seed)
    layout = torch.rand(depth.shape, generator=g) * 2.7 + 0.3
    return torch.where(torch.rand(depth.shape, generator=g) < 0.25, torch.zeros_like(layout), layout)


def test_an_added_layout_input_keeps_the_frame_and_starts_from_the_capped_depth():
    """extend_model(..., refiner_layout=True): the colour is the init's bit for bit; the depth is the init's with
    the depth head's base capped at the layout in the anchor's holes, exactly what the cap does to a fresh head."""
    torch.manual_seed(0)
    model = build_model("tiny", refiner_channels=8, refiner_depth=True, depth_head=True).eval()
    with torch.no_grad():  # a refiner whose features reach the colour (the depth head stays fresh: zero)
        model.refiner.out.weight.normal_(0.0, 0.05)
    extended = extend_model(model, {"refiner_layout": True}).eval()
    assert extended.config.refiner_layout and extended.refiner.layout_in is not None
    rgb, mask, depth, reference = _synthetic_anchor(size=32)
    layout = _layout_for(depth)
    init = FrameModel(model, sampler_steps=1)
    fm = FrameModel(extended, sampler_steps=1)
    assert fm.needs_layout and not init.needs_layout
    seeds = torch.tensor([5, 9])
    frames0, depth0 = init.generate_rgbd(init.conditions(rgb, mask, reference, anchor_depth=depth), noise_seeds=seeds)
    cond = fm.conditions(rgb, mask, reference, anchor_depth=depth, layout_depth=layout)
    frames1, depth1 = fm.generate_rgbd(cond, noise_seeds=seeds)
    assert torch.equal(frames0, frames1)
    # A fresh head predicts its base: the filled anchor depth (init) and that depth capped at the layout (extended).
    capped = (~mask) & (layout > 0) & (depth0 > layout)
    assert capped.float().mean() > 0.05  # the synthetic layout bounds a good share of the holes
    torch.testing.assert_close(depth1, torch.where(capped, layout, depth0), rtol=1e-5, atol=1e-5)
    assert torch.equal(depth1[~capped], depth0[~capped])
    # Once the layout input has trained, the colour reads the layout too.
    with torch.no_grad():
        extended.refiner.layout_in.weight.normal_(0.0, 0.1)
    moved = fm.generate(fm.conditions(rgb, mask, reference, anchor_depth=depth, layout_depth=layout), noise_seeds=seeds)
    assert not torch.equal(moved, frames0)


def test_a_layout_model_refuses_to_run_without_the_layout():
    model = build_model("tiny", refiner_channels=8, refiner_depth=True, depth_head=True, refiner_layout=True).eval()
    rgb, mask, depth, reference = _synthetic_anchor(size=32)
    with pytest.raises(ValueError, match="reads the navigation layout; pass layout_depth"):
        FrameModel(model, sampler_steps=1).conditions(rgb, mask, reference, anchor_depth=depth)
    with pytest.raises(ValueError, match=r"layout_depth must be a \(2, 32, 32\) tensor .*got \(2, 16, 16\)"):
        FrameModel(model, sampler_steps=1).conditions(
            rgb, mask, reference, anchor_depth=depth, layout_depth=torch.ones(2, 16, 16)
        )
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="refiner_layout=True.*pass refiner_inputs"):
        model(x, torch.tensor([999, 999]), x, x, anchor_depth=depth)
    with pytest.raises(ValueError, match="refiner_layout=True needs depth_head=True"):
        build_model("tiny", refiner_channels=8, refiner_depth=True, refiner_layout=True)
    with pytest.raises(ValueError, match="refiner_layout must be True or False"):
        build_model("tiny", refiner_channels=8, refiner_depth=True, depth_head=True, refiner_layout=1)
    with pytest.raises(ValueError, match="layout_depth must be True or False"):
        ClipConfig(layout_depth="yes")


def test_clips_give_each_target_the_layout_of_its_scene():
    """ClipBatch.target_layout is the layout depth of the clip's scene at each target pose (None unless asked)."""
    scenes = resolve_scenes("procedural:train:2", "cpu", (32, 32), 90.0)
    plain = ClipGenerator(scenes, ClipConfig(resolution=(32, 32), sparse_fraction=0.5), "cpu").batch(3, seed=2)
    assert plain.target_layout is None
    clips = ClipGenerator(scenes, ClipConfig(resolution=(32, 32), sparse_fraction=0.5, layout_depth=True), "cpu")
    batch = clips.batch(3, seed=2)
    assert torch.equal(batch.target_rgb, plain.target_rgb)  # the layout adds a field and changes nothing else
    B, T = batch.target_close.shape
    # Independently: the base scenes' pool, each target in the scene its clip was drawn from.
    pool = ScenePool(scenes, "cpu")
    seeds = [int(s.info["seed"]) for s in scenes]
    scene_index = torch.tensor([seeds.index(int(s)) for s in batch.scene_seed], dtype=torch.int32)
    K_inv = torch.linalg.inv(batch.K)
    truth = pool_layout_depth(pool, B * T, 32, 32).render(
        scene_index.repeat_interleave(T), batch.target_c2w.reshape(-1, 4, 4), K_inv
    )
    assert torch.equal(batch.target_layout.reshape(-1, 32, 32), truth)
    assert (batch.target_layout > 0).float().mean() > 0.5  # walls and floor bound most rays
    # Where the truth is a wall or the floor the layout is near it; never much nearer than the true surface
    # except over furniture (a column in the layout), so the median ratio is close to 1.
    seen = (batch.target_layout > 0) & (batch.target_depth > 0)
    ratio = (batch.target_layout[seen] / batch.target_depth[seen]).median()
    assert 0.9 < float(ratio) < 1.1
    # Clips for the layout models trained on the obstacle cores give that layout instead.
    cores = ClipGenerator(
        scenes, ClipConfig(resolution=(32, 32), sparse_fraction=0.5, layout_depth=True, layout_obstacles="cores"), "cpu"
    ).batch(3, seed=2)
    truth = pool_layout_depth(pool, B * T, 32, 32, "cores").render(
        scene_index.repeat_interleave(T), batch.target_c2w.reshape(-1, 4, 4), K_inv
    )
    assert torch.equal(cores.target_layout.reshape(-1, 32, 32), truth)
    assert not torch.equal(cores.target_layout, batch.target_layout)


def test_a_layout_fine_tune_trains_the_layout_input_and_resumes_exactly(tmp_path):
    """model_overrides {"refiner_layout": true} on an RGB-D init: the layout input leaves its zero start, the depth
    loss falls on a fixed batch, and 4 steps equal 2 + 2 resumed (model, EMA). The fit reads the cores' layout: the
    footprints' (with the ceiling and the furniture's heights) already puts the depth head's capped base so near the
    truth on this tiny batch that 50 steps have little left to fit."""
    train(TrainConfig(steps=2, out=str(tmp_path / "init"), **TINY_RGBD))
    kw = {**TINY_RGBD, "model_overrides": {"refiner_layout": True}}
    kw.update(init=str(tmp_path / "init" / "model.safetensors"), depth_weight=1.0, depth_covered_weight=0.0)
    train(TrainConfig(steps=50, fixed_batch=True, out=str(tmp_path / "cores"), layout_obstacles="cores", **kw))
    terms = [e["depth"] for e in _log(tmp_path / "cores")]
    assert sum(terms[-8:]) / 8 < 0.85 * sum(terms[:8]) / 8, terms
    model = load_checkpoint(None, tmp_path / "cores" / "model.safetensors")
    assert model.config.refiner_layout and float(model.refiner.layout_in.weight.detach().abs().sum()) > 0
    assert trained_layout_obstacles(tmp_path / "cores" / "model.safetensors") == "cores"  # the header says so
    # Unset, a fresh layout input trains on the footprints and records them; a fine-tune of a cores model keeps the
    # cores unless told otherwise.
    train(TrainConfig(steps=1, out=str(tmp_path / "fit"), **kw))
    assert trained_layout_obstacles(tmp_path / "fit" / "model.safetensors") == "footprints"
    keep = {**kw, "init": str(tmp_path / "cores" / "model.safetensors")}
    train(TrainConfig(steps=1, out=str(tmp_path / "keep"), **keep))
    assert trained_layout_obstacles(tmp_path / "keep" / "model.safetensors") == "cores"
    assert_resumes_exactly(tmp_path, {**kw, "save_every": 1})


def test_the_env_feeds_a_layout_model_the_layout_without_a_depth_bound(tmp_path):
    """A layout-reading model with a fresh depth head, in the env with depth_bound='none', gives the frames and the
    depth observation its init gives with depth_bound='navigation': the pipeline passes it the same layout."""
    torch.manual_seed(0)
    init = build_model(
        "tiny", input_size=32, refiner_channels=8, refiner_depth=True, depth_head=True, target="anchor_residual"
    )
    with torch.no_grad():
        init.refiner.out.weight.normal_(0.0, 0.05)  # a refiner that does something to the colour
    extended = extend_model(init, {"refiner_layout": True})
    save_checkpoint(init, tmp_path / "init.safetensors")
    save_checkpoint(extended, tmp_path / "layout.safetensors", metadata={LAYOUT_OBSTACLES_METADATA_KEY: "footprints"})
    obs = {}
    for name, bound in (("init", "navigation"), ("layout", "none"), ("init", "none")):
        env = WorldFMVectorEnv(
            num_envs=2,
            scenes="procedural:train:1",
            resolution=32,
            device="cpu",
            renderer="worldfm",
            weights=str(tmp_path / f"{name}.safetensors"),
            include_depth=True,
            capture="panorama",
            depth_bound=bound,
            model_dtype="float32",
        )
        o, _ = env.reset(seed=3)
        for _ in range(3):
            o, *_ = env.step([1, 1])
        obs[name, bound] = o
        if name == "layout":
            request = env.pipeline.last_request
            assert request.layout_depth is not None and (request.layout_depth > 0).any()
        env.close()
    capped, layout, free = obs["init", "navigation"], obs["layout", "none"], obs["init", "none"]
    assert (capped["rgb"] == layout["rgb"]).all()
    torch.testing.assert_close(torch.as_tensor(layout["depth"]), torch.as_tensor(capped["depth"]), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(torch.as_tensor(free["depth"]), torch.as_tensor(capped["depth"]))  # the cap mattered
