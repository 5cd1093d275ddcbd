"""worldfm_env._config: strict option merging and command lines built from dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from worldfm_env._config import (
    add_dataclass_arguments,
    check_one_of,
    field_docs,
    parse_dataclass_args,
    pick_fields,
    strict_kwargs,
)


def _radius(text: str) -> int | str:
    return text if text == "auto" else int(text)


@dataclass
class Example:
    """An example config."""

    steps: int = 10
    """Optimiser steps (100 % of the run)."""
    lr: float = 3e-4
    """Learning rate."""
    fixed_batch: bool = False
    """Train on the same clips every step."""
    ema_on: bool = True
    """Keep an average of the weights."""
    init: str | None = None
    """Checkpoint to start from."""
    resolution: int | None = 64
    """Square image size."""
    timesteps: list[int] | None = None
    """Train only at these timesteps."""
    radius: int | str = 0
    """Splat radius or auto."""
    stage: str = "stage2"
    """Which stage."""
    options: dict = field(default_factory=dict)
    """Not on the command line."""


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_arguments(
        parser, Example, skip=("options",), types={"radius": _radius}, choices={"stage": ("stage1", "stage2")}, **kwargs
    )
    return parser


def test_field_docs():
    docs = field_docs(Example)
    assert docs["steps"] == "Optimiser steps (100 % of the run)."
    assert docs["options"] == "Not on the command line."


def test_strict_kwargs_names_the_unknown_key_with_close_matches():
    assert strict_kwargs(Example, {"steps": 3}, "training option") == {"steps": 3}
    with pytest.raises(ValueError, match=r"unknown training option 'step'; did you mean \['steps'") as info:
        strict_kwargs(Example, {"step": 3, "lr": 1.0}, "training option")
    assert "valid training options: ['steps', 'lr', 'fixed_batch'" in str(info.value)
    with pytest.raises(ValueError, match=r"unknown overrides \['stepz', 'qqqq'\] for build_model") as info:
        strict_kwargs(Example, {"stepz": 1, "qqqq": 2}, "override", where="build_model")
    hint = str(info.value).split("; did you mean ")[1].split("?")[0]
    assert hint.startswith("['steps'") and hint.endswith("] for 'stepz'")  # no hint for 'qqqq'
    assert "(valid overrides: ['steps', 'lr'" in str(info.value)
    with pytest.raises(ValueError) as info:
        strict_kwargs(Example, {"zzzzzz": 1}, "key")
    assert "did you mean" not in str(info.value) and "valid keys" in str(info.value)


def test_env_config_and_model_use_the_strict_check():
    from worldfm_env.envs.config import EnvConfig
    from worldfm_env.model.dit import DiTConfig, build_model

    with pytest.raises(ValueError, match=r"unknown environment option 'renderr'; did you mean \['renderer'\]"):
        EnvConfig.from_kwargs(renderr="anchor")
    with pytest.raises(ValueError, match=r"unknown DiTConfig key 'dept'; did you mean \['depth'\]"):
        DiTConfig.from_dict({"dept": 2})
    with pytest.raises(ValueError, match=r"unknown override 'hidden' for build_model.*valid overrides"):
        build_model("s", hidden=8)


def test_training_configs_use_the_strict_check():
    from worldfm_env.training.distill import DistillConfig
    from worldfm_env.training.stages import TrainConfig

    with pytest.raises(ValueError, match=r"unknown training option 'step'; did you mean \['steps'"):
        TrainConfig.from_dict({"step": 3})
    with pytest.raises(ValueError, match=r"unknown distillation option 'fake_l'; did you mean \['fake_lr'"):
        DistillConfig.from_dict({"fake_l": 3})


def test_help_lists_every_field_with_its_docstring_and_default(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--steps INT Optimiser steps (100 % of the run). (default: 10)" in out
    assert "--fixed-batch, --no-fixed-batch Train on the same clips every step. (default: False)" in out
    assert "--timesteps INT [INT ...]" in out and "--options" not in out
    assert "--stage {stage1,stage2} Which stage. (default: stage2)" in out
    assert out.count("(default:") == 9  # every field but the skipped one, once


def test_values_bools_optionals_lists_types_and_choices():
    args = _parser().parse_args([])
    assert vars(args) == {
        "steps": 10,
        "lr": 3e-4,
        "fixed_batch": False,
        "ema_on": True,
        "init": None,
        "resolution": 64,
        "timesteps": None,
        "radius": 0,
        "stage": "stage2",
    }
    args = _parser().parse_args(
        "--steps 3 --lr 0.5 --fixed-batch --no-ema-on --init a.pt --resolution 32 --timesteps 999 200 --radius auto "
        "--stage stage1".split()
    )
    assert (args.steps, args.lr, args.fixed_batch, args.ema_on, args.init, args.resolution) == (
        3,
        0.5,
        True,
        False,
        "a.pt",
        32,
    )
    assert args.timesteps == [999, 200] and args.radius == "auto" and args.stage == "stage1"
    assert _parser().parse_args(["--radius", "3"]).radius == 3
    for bad in (["--steps", "x"], ["--stage", "stage3"], ["--timesteps"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(bad)


def test_defaults_none_lets_a_config_file_stand(capsys):
    parser = _parser(defaults_none=True)
    assert all(v is None for v in vars(parser.parse_args([])).values())
    assert vars(parser.parse_args(["--no-fixed-batch"]))["fixed_batch"] is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 10)" in out and "(default: True)" in out and "(default: stage2)" in out


def test_unsupported_field_types_need_a_type_or_a_skip():
    with pytest.raises(TypeError, match=r"Example\.radius.*types="):
        add_dataclass_arguments(argparse.ArgumentParser(), Example, skip=("options",))
    with pytest.raises(TypeError, match=r"Example\.options"):
        add_dataclass_arguments(argparse.ArgumentParser(), Example, types={"radius": _radius})


def test_parse_dataclass_args_builds_the_instance():
    @dataclass
    class Small:
        """Small things."""

        n: int = 1
        """How many."""
        fast: bool = False
        """Go fast."""

    assert parse_dataclass_args(Small, ["--n", "4", "--fast"]) == Small(n=4, fast=True)
    assert parse_dataclass_args(Small, []) == Small()


def test_pick_fields_and_check_one_of():
    source = SimpleNamespace(steps=5, lr=0.1, unrelated=1)
    assert pick_fields(Example, source) == {"steps": 5, "lr": 0.1}
    assert pick_fields(Example, source, skip=("lr",)) == {"steps": 5}
    check_one_of("stage", "stage1", ("stage1", "stage2"))
    with pytest.raises(ValueError, match=r"stage must be one of \['stage1', 'stage2'\], got 'x'"):
        check_one_of("stage", "x", ("stage1", "stage2"))


def test_agent_env_kwargs_take_the_env_fields_by_name():
    from agents import evaluate, ppo_sb3, ppo_torch
    from agents._args import env_kwargs

    args = ppo_torch.Args(renderer="anchor", weights="w.safetensors", compile_model=True, resolution=32)
    picked = env_kwargs(args, splat_radius=0)
    assert picked["resolution"] == 32 and picked["task"] == "pointnav" and picked["splat_radius"] == 0
    assert "weights" not in picked and "compile_model" not in picked and "seed" not in picked  # worldfm-only
    args.renderer = "worldfm"
    assert env_kwargs(args)["weights"] == "w.safetensors" and env_kwargs(args)["compile_model"] is True
    sb3 = ppo_sb3.Args(device="cuda", env_device="cpu")
    assert env_kwargs(sb3, device=sb3.env_device)["device"] == "cpu"  # the policy's device is not the env's
    assert "weights" not in env_kwargs(evaluate.Args(renderer="worldfm", weights=""))


def test_training_command_lines_list_every_option_and_merge_over_a_config_file(tmp_path, monkeypatch, capsys):
    import json

    from worldfm_env.training import distill, stages

    for main, config in ((stages.main, stages.TrainConfig), (distill.main, distill.DistillConfig)):
        with pytest.raises(SystemExit):
            main(["--help"])
        out = " ".join(capsys.readouterr().out.split())
        docs = field_docs(config)
        for name in config.__dataclass_fields__:
            if name == "model_overrides":
                continue
            assert f"--{name.replace('_', '-')}" in out
            assert f"{docs[name][:40]}" in out, name
        assert f"(default: {config().steps})" in out

    seen = []
    monkeypatch.setattr(stages, "train", lambda cfg: seen.append(cfg) or {})
    monkeypatch.setattr(distill, "distill", lambda cfg: seen.append(cfg) or {})
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"steps": 5, "fixed_batch": True, "model_overrides": {"depth": 2}}))
    stages.main(["--stage", "stage1", "--config", str(path)])
    stages.main(["--stage", "stage1", "--config", str(path), "--steps", "7", "--no-fixed-batch", "--timesteps", "9"])
    path.write_text(json.dumps({"steps": 5, "lr": 0.5}))
    distill.main(["--config", str(path), "--steps", "3"])
    first, second, third = seen
    assert (first.stage, first.steps, first.fixed_batch, first.model_overrides) == ("stage1", 5, True, {"depth": 2})
    assert (second.steps, second.fixed_batch, second.timesteps, second.lr) == (7, False, [9], stages.TrainConfig.lr)
    assert (third.steps, third.lr, third.teacher_steps) == (3, 0.5, distill.DistillConfig.teacher_steps)
    path.write_text(json.dumps({"stepz": 5}))
    with pytest.raises(ValueError, match=r"unknown training option 'stepz'; did you mean \['steps'"):
        stages.main(["--config", str(path)])
