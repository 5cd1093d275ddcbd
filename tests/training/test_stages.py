"""Training stages I and II: losses fall on a fixed batch, resume, torchrun with gloo, env loads the result."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import record_clip_configs

from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.model import load_checkpoint
from worldfm_env.training.stages import TrainConfig, condition_batch, extend_model, sample_timesteps, train

TINY = dict(
    model="tiny",
    resolution=32,
    scenes="procedural:train:1",
    clips_per_step=1,
    device="cpu",
    sample_every=0,
    warmup=1,
    lr=2e-3,
)


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "stage,prediction,target",
    [("stage1", "eps", None), ("stage2", "eps", None), ("stage2", "v", None), ("stage2", "v", "anchor_residual")],
)
def test_loss_falls_on_a_fixed_batch(tmp_path, stage, prediction, target):
    train(_fixed_batch_config(tmp_path, stage=stage, prediction=prediction, target=target))
    _assert_loss_falls(tmp_path)


def _fixed_batch_config(tmp_path, steps: int = 40, **fields) -> TrainConfig:
    """``steps`` steps of the tiny model (patch 4: 64 tokens a panel) on one fixed batch, anchor always on."""
    return TrainConfig(
        steps=steps,
        out=str(tmp_path),
        fixed_batch=True,
        anchor_start=0.0,
        anchor_full=0.0,
        model_overrides={"patch_size": 4},
        **TINY,
        **fields,
    )


def _assert_loss_falls(tmp_path, steps: int = 40) -> None:
    losses = _losses(tmp_path)
    assert len(losses) == steps
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)


def test_sampler_unroll_trains_the_two_step_sampler(tmp_path, monkeypatch):
    """sampler_unroll=2: every update runs the model at 999 then at 200 and the loss on both estimates falls."""
    from worldfm_env.training import stages

    seen = []
    build = stages.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: seen.append(sorted(set(inputs[1].tolist()))))
        return model

    monkeypatch.setattr(stages, "build_model", recording_build)
    # 24 steps (two forwards each): the last 8 steps' mean loss was measured at 0.47 of the first 8's.
    config = _fixed_batch_config(
        tmp_path, steps=24, stage="stage2", prediction="v", target="anchor_residual", sampler_unroll=2
    )
    train(config)
    assert seen == [[999], [200]] * 24
    _assert_loss_falls(tmp_path, steps=24)
    for bad in (3, 2.0, True):
        with pytest.raises(ValueError, match="sampler_unroll must be 0"):
            TrainConfig(prediction="v", sampler_unroll=bad)
    with pytest.raises(ValueError, match="sampler_unroll needs prediction='v'"):
        TrainConfig(prediction="eps", sampler_unroll=1)
    with pytest.raises(ValueError, match="leave timesteps=None"):
        TrainConfig(prediction="v", sampler_unroll=2, timesteps=[999])


def test_resume_and_the_env_loads_the_checkpoint(tmp_path):
    train(TrainConfig(stage="stage2", steps=3, out=str(tmp_path), **TINY))
    train(TrainConfig(stage="stage2", steps=5, out=str(tmp_path), **TINY))
    assert len(_losses(tmp_path)) == 5  # resumed at step 3, not restarted
    env = WorldFMVectorEnv(
        num_envs=2,
        scenes="procedural:train:1",
        resolution=32,
        device="cpu",
        renderer="worldfm",
        weights=str(tmp_path / "model.safetensors"),
    )
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (2, 32, 32, 3)


def test_target_switch_on_init_and_bad_target(tmp_path):
    """An image checkpoint fine-tunes into an anchor_residual one; target=None keeps the init's."""
    train(TrainConfig(stage="stage2", prediction="v", steps=2, out=str(tmp_path / "a"), **TINY))
    first = str(tmp_path / "a" / "model.safetensors")
    train(
        TrainConfig(
            stage="stage2",
            prediction="v",
            init=first,
            target="anchor_residual",
            steps=2,
            out=str(tmp_path / "b"),
            **{k: v for k, v in TINY.items() if k != "model"},
        )
    )
    second = str(tmp_path / "b" / "model.safetensors")
    assert load_checkpoint(None, second).config.target == "anchor_residual"
    train(
        TrainConfig(
            stage="stage2",
            prediction="v",
            init=second,
            steps=1,
            out=str(tmp_path / "c"),
            **{k: v for k, v in TINY.items() if k != "model"},
        )
    )
    assert load_checkpoint(None, tmp_path / "c" / "model.safetensors").config.target == "anchor_residual"
    with pytest.raises(ValueError, match="target"):
        TrainConfig(target="depth")


def test_fine_tune_adds_a_pixel_refiner_to_the_init(tmp_path):
    """init + model_overrides that only add parameters: the init's weights are kept, the refiner is trained on."""
    no_model = {k: v for k, v in TINY.items() if k != "model"}
    train(
        TrainConfig(stage="stage2", prediction="v", target="anchor_residual", steps=2, out=str(tmp_path / "a"), **TINY)
    )
    first = load_checkpoint(None, tmp_path / "a" / "model.safetensors")
    train(
        TrainConfig(
            stage="stage2",
            prediction="v",
            init=str(tmp_path / "a" / "model.safetensors"),
            model_overrides={"refiner_channels": 8},
            steps=3,
            lr=1e-3,
            ema=0.0,
            out=str(tmp_path / "b"),
            **{k: v for k, v in no_model.items() if k != "lr"},
        )
    )
    second = load_checkpoint(None, tmp_path / "b" / "model.safetensors")
    assert second.config.refiner_channels == 8 and second.config.target == "anchor_residual"
    assert float(second.refiner.out.weight.detach().abs().sum()) > 0  # trained away from its zero start
    assert not torch.equal(second.x_embedder.proj.weight, first.x_embedder.proj.weight)  # fine-tuned jointly
    extended = extend_model(first, {"refiner_channels": 8})
    assert torch.equal(extended.x_embedder.proj.weight, first.x_embedder.proj.weight)
    # The RGB refiner then learns to read the anchor depth: its depth input starts at zero and trains.
    with_depth = extend_model(second, {"refiner_depth": True})
    assert torch.equal(with_depth.refiner.inp.weight, second.refiner.inp.weight)
    assert float(with_depth.refiner.depth_in.weight.detach().abs().sum()) == 0.0
    train(
        TrainConfig(
            stage="stage2",
            prediction="v",
            init=str(tmp_path / "b" / "model.safetensors"),
            model_overrides={"refiner_depth": True},
            steps=2,
            lr=1e-3,
            ema=0.0,
            out=str(tmp_path / "c"),
            **{k: v for k, v in no_model.items() if k != "lr"},
        )
    )
    third = load_checkpoint(None, tmp_path / "c" / "model.safetensors")
    assert third.config.refiner_depth and float(third.refiner.depth_in.weight.detach().abs().sum()) > 0
    with pytest.raises(ValueError, match=r"model_overrides \['hidden_size', 'num_heads'\] cannot be added"):
        extend_model(first, {"hidden_size": 32, "num_heads": 2})
    with pytest.raises(ValueError, match=r"drop \[\] and reshape \[.*'refiner\.inp\.weight'"):
        extend_model(second, {"refiner_channels": 16})
    with pytest.raises(ValueError, match=r"drop \[.*'refiner\.out\.weight'.*\] and reshape \[\]"):
        extend_model(second, {"refiner_channels": 0})


def test_training_clips_use_the_configured_splat_radius(tmp_path, monkeypatch):
    from worldfm_env.training import stages

    used = record_clip_configs(monkeypatch, stages)
    train(TrainConfig(stage="stage2", steps=1, out=str(tmp_path), splat_radius="auto", **TINY))
    assert [c.splat_radius for c in used] == ["auto"]
    with pytest.raises(ValueError, match="splat_radius"):
        TrainConfig(splat_radius="big")


def test_condition_mask_matches_what_the_model_sees():
    from worldfm_env.scenes.catalog import resolve_scenes
    from worldfm_env.training.data import ClipConfig, ClipGenerator

    gen = ClipGenerator(
        resolve_scenes("procedural:train:1", torch.device("cpu"), (32, 32), 90.0), ClipConfig(resolution=(32, 32))
    )
    batch = gen.batch(2, seed=0)
    cfg = TrainConfig(stage="stage2", anchor_start=0.0, anchor_full=0.0, anchor_drop=0.3, anchor_hole_prob=0.7)
    _, anchor, _, mask = condition_batch(batch, cfg, 0.5, torch.Generator().manual_seed(1), return_mask=True)
    raw = batch.anchor_mask.flatten(0, 1)
    assert mask.shape == raw.shape and bool((mask <= raw).all())  # never more than the render covers
    assert 0 < int(mask.sum()) < int(raw.sum())  # drops and holes removed some coverage
    removed = raw & ~mask
    assert bool((anchor.permute(0, 2, 3, 1)[removed] == -1).all())  # what was removed is blank to the model
    _, _, _, s1_mask = condition_batch(batch, TrainConfig(stage="stage1"), 0.5, torch.Generator(), return_mask=True)
    assert not bool(s1_mask.any())


def test_conditioning_schedule():
    from worldfm_env.scenes.catalog import resolve_scenes
    from worldfm_env.training.data import ClipConfig, ClipGenerator

    gen = ClipGenerator(
        resolve_scenes("procedural:train:1", torch.device("cpu"), (32, 32), 90.0), ClipConfig(resolution=(32, 32))
    )
    batch = gen.batch(2, seed=0)
    cfg = TrainConfig(stage="stage2", anchor_start=0.3, anchor_full=0.6, anchor_drop=0.0, anchor_hole_prob=0.0)
    g = torch.Generator().manual_seed(0)
    _, early, ref = condition_batch(batch, cfg, 0.1, g)
    assert bool((early == -1).all())  # reference first: no anchor yet
    assert not bool((ref == -1).all())
    _, late, _ = condition_batch(batch, cfg, 0.9, g)
    assert torch.allclose(late, batch.anchor_rgb.flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1, atol=1e-5)
    _, s1_anchor, s1_ref = condition_batch(batch, TrainConfig(stage="stage1"), 0.9, g)
    assert bool((s1_anchor == -1).all()) and bool((s1_ref == -1).all())
    t = sample_timesteps(20000, 1.0, torch.Generator().manual_seed(0), "cpu")
    assert 0 <= int(t.min()) and int(t.max()) <= 999 and float(t.float().mean()) > 600  # biased to high noise


def test_training_at_given_timesteps(tmp_path, monkeypatch):
    """``timesteps`` replaces the biased draw: every training forward sees only those timesteps, both of them."""
    from worldfm_env.training import stages

    seen = []
    build = stages.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: seen.extend(inputs[1].tolist()))
        return model

    monkeypatch.setattr(stages, "build_model", recording_build)
    train(TrainConfig(stage="stage2", prediction="v", timesteps=[999, 200], steps=2, out=str(tmp_path), **TINY))
    assert len(seen) == 2 * TINY["clips_per_step"] * 12 and set(seen) == {999, 200}  # steps x clips x targets
    for bad in ([], [1000], [200.0], "999"):
        with pytest.raises(ValueError, match="timesteps must be None or a non-empty list"):
            TrainConfig(timesteps=bad)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--prediction", "v", "--sampler-unroll", "2"],
        ["--prediction", "v", "--sampler-unroll", "1", "--adversarial-weight", "0.1", "--disc-channels", "4"]
        + ["--disc-edges", "--no-disc-spectral-norm", "--disc-r1", "1.0", "--detail-weight", "0.1"],
    ],
    ids=["denoise", "unroll-2", "adversarial-r1"],
)
def test_torchrun_two_process_gloo(tmp_path, extra):
    """DDP over two gloo ranks, also with two model calls per update (the unrolled 2-step sampler), and with the
    discriminator, whose gradients (R1 included) the ranks average by hand."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "worldfm_env.training.stages",
        "--stage",
        "stage2",
        "--steps",
        "2",
        "--model",
        "tiny",
        "--resolution",
        "32",
        "--scenes",
        "procedural:train:1",
        "--clips-per-step",
        "1",
        "--device",
        "cpu",
        "--sample-every",
        "0",
        "--out",
        str(tmp_path),
        *extra,
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ranks"] == 2 and summary["steps"] == 2
    assert (tmp_path / "model.safetensors").is_file()
    if "--disc-r1" in extra:
        entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
        assert all("r1" in e and "detail" in e and math.isfinite(e["discriminator"]) for e in entries)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    # The anchor schedule depends on step / steps, so both runs use a schedule that does not.
    kw = dict(stage="stage2", save_every=1, anchor_start=0.0, anchor_full=0.0, **TINY)
    train(TrainConfig(steps=4, out=str(tmp_path / "a"), **kw))
    train(TrainConfig(steps=2, out=str(tmp_path / "b"), **kw))
    train(TrainConfig(steps=4, out=str(tmp_path / "b"), **kw))
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(x)["step"] for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


@pytest.mark.parametrize("encoding", ["prope", "plucker"])
def test_camera_conditioned_models_train_with_the_clip_cameras(tmp_path, encoding):
    """Stages pass each target's panel cameras (target, anchor = target, selected reference) to the model."""
    cfg = TrainConfig(
        stage="stage2",
        steps=2,
        out=str(tmp_path),
        model_overrides={"camera_encoding": encoding},
        sample_every=2,
        sample_steps=2,
        **{k: v for k, v in TINY.items() if k != "sample_every"},
    )
    summary = train(cfg)
    assert summary["final_loss"] == summary["final_loss"]  # finite, no NaN
    assert (tmp_path / "samples" / "step_000002.png").is_file()
    from worldfm_env.model import load_checkpoint

    assert load_checkpoint(None, tmp_path / "model.safetensors").config.camera_encoding == encoding


def test_clip_panel_cameras_follow_the_selected_reference():
    from worldfm_env.scenes.catalog import resolve_scenes
    from worldfm_env.training.data import ClipConfig, ClipGenerator

    gen = ClipGenerator(
        resolve_scenes("procedural:train:1", torch.device("cpu"), (32, 32), 90.0), ClipConfig(resolution=(32, 32))
    )
    batch = gen.batch(2, seed=3)
    cameras = batch.panel_cameras()
    B, T = batch.reference_slot.shape
    assert cameras.c2w.shape == (B * T, 3, 4, 4) and cameras.K.shape == (B * T, 3, 3, 3)
    assert cameras.image_hw == (32, 32)
    for b in range(B):
        for t in range(T):
            row = cameras.c2w[b * T + t]
            assert torch.equal(row[0], batch.target_c2w[b, t]) and torch.equal(row[1], batch.target_c2w[b, t])
            assert torch.equal(row[2], batch.reference_c2w[b, batch.reference_slot[b, t]])


def test_fine_tune_keeps_the_inits_recommended_sampler_and_records_its_anchors(tmp_path):
    from worldfm_env.model import build_model, save_checkpoint
    from worldfm_env.model.checkpoint import (
        SAMPLER_STEPS_METADATA_KEY,
        recommended_sampler_steps,
        trained_anchor_colour,
        trained_silhouettes,
        trained_splat_radius,
    )

    init = tmp_path / "init.safetensors"
    save_checkpoint(
        build_model("tiny", input_size=32, prediction="v"), init, metadata={SAMPLER_STEPS_METADATA_KEY: "1"}
    )
    args = {k: v for k, v in TINY.items() if k != "model"}
    assert "splat_radius" not in args
    out = str(tmp_path / "ft")
    anchors = dict(splat_radius=1, anchor_colour="bank", silhouettes="learned")
    train(TrainConfig(stage="stage2", prediction="v", init=str(init), steps=1, out=out, **anchors, **args))
    assert recommended_sampler_steps(tmp_path / "ft" / "model.safetensors") == 1
    # The anchors it learned from; the init (no stage II header) tells neither.
    assert trained_splat_radius(tmp_path / "ft" / "model.safetensors") == 1
    assert trained_anchor_colour(tmp_path / "ft" / "model.safetensors") == "bank"
    assert trained_silhouettes(tmp_path / "ft" / "model.safetensors") == "learned"
    assert trained_splat_radius(init) is None and trained_anchor_colour(init) is None
    assert trained_silhouettes(init) is None


def test_splat_radius_on_the_command_line(monkeypatch, capsys):
    import argparse

    from worldfm_env.render.anchor_config import splat_radius_arg
    from worldfm_env.training import distill, stages

    assert splat_radius_arg("auto") == "auto" and splat_radius_arg("2") == 2
    with pytest.raises(argparse.ArgumentTypeError, match=r"splat_radius must be an int in \[0, 8\] or 'auto'"):
        splat_radius_arg("9")
    seen = []
    monkeypatch.setattr(stages, "train", lambda cfg: seen.append(cfg.splat_radius) or {})
    monkeypatch.setattr(distill, "distill", lambda cfg: seen.append(cfg.splat_radius) or {})
    stages.main(["--stage", "stage2", "--splat-radius", "auto"])
    distill.main(["--splat-radius", "1"])
    assert seen == ["auto", 1]
    with pytest.raises(SystemExit):
        stages.main(["--stage", "stage2", "--splat-radius", "wide"])
    assert "splat_radius must be an int in [0, 8] or 'auto'" in capsys.readouterr().err


def test_learning_rate_warms_up_then_holds_or_decays_by_cosine():
    from worldfm_env.training.stages import learning_rate

    const = TrainConfig(lr=1e-3, warmup=4, steps=20)
    assert [learning_rate(const, s) for s in (0, 1, 3, 19)] == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3])
    cos = TrainConfig(lr=1e-3, warmup=4, steps=20, lr_schedule="cosine", decay_start=10)
    assert learning_rate(cos, 9) == pytest.approx(1e-3)  # constant until the decay starts
    assert learning_rate(cos, 10) == pytest.approx(1e-3)
    assert learning_rate(cos, 15) == pytest.approx(0.5e-3)  # half way down the half cosine
    assert 0 < learning_rate(cos, 19) < 0.03e-3  # one step before 0
    rates = [learning_rate(cos, s) for s in range(10, 20)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    early = TrainConfig(lr=1e-3, warmup=4, steps=20, lr_schedule="cosine", decay_start=0)
    assert [learning_rate(early, s) for s in (0, 3)] == pytest.approx([2.5e-4, 1e-3])  # the warm-up comes first
    assert learning_rate(early, 12) == pytest.approx(0.5e-3)
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['constant', 'cosine'\], got 'step'"):
        TrainConfig(lr_schedule="step")
    for bad in (-1, 20, 2.5, True):
        with pytest.raises(ValueError, match=r"decay_start must be an int in \[0, steps=20\)"):
            TrainConfig(steps=20, decay_start=bad)


def test_a_constant_run_resumed_with_a_cosine_decay_equals_a_cosine_run(tmp_path):
    """A run's last part can be annealed after the fact: 2 constant steps resumed as a 4-step run decaying from step 2
    equal 4 steps of that schedule at once, bit for bit, and the decay changes the weights (the optimiser follows
    it)."""
    from safetensors.torch import load_file

    kw = dict(stage="stage2", save_every=1, anchor_start=0.0, anchor_full=0.0, **TINY)
    cosine = dict(lr_schedule="cosine", decay_start=2)
    train(TrainConfig(steps=4, out=str(tmp_path / "a"), **cosine, **kw))
    train(TrainConfig(steps=2, out=str(tmp_path / "b"), **kw))
    train(TrainConfig(steps=4, out=str(tmp_path / "b"), **cosine, **kw))
    train(TrainConfig(steps=4, out=str(tmp_path / "c"), **kw))
    a, b, c = (load_file(str(tmp_path / run / "model.safetensors")) for run in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_every_packaged_training_config_is_valid():
    """The recipes in ``worldfm_env/training/configs`` build their configs (stages I/II or distillation), so a
    renamed or mistyped option fails here rather than at the start of a long run."""
    from pathlib import Path

    import worldfm_env.training
    from worldfm_env.training.distill import DistillConfig

    files = sorted((Path(worldfm_env.training.__file__).parent / "configs").glob("*.json"))
    assert len(files) >= 20
    for path in files:
        values = json.loads(path.read_text())
        config = TrainConfig.from_dict(values) if "stage" in values else DistillConfig.from_dict(values)
        assert config.out == values["out"], path.name
