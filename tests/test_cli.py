"""Tests of the ``worldfm-env`` command line (``info``, ``rollout``, ``demo``)."""

from __future__ import annotations

import json
import re

import imageio.v2 as imageio
import pytest
import torch

from worldfm_env.cli import main

SCENE_ARGS = ["--scenes", "procedural:train:1", "--resolution", "32", "--device", "cpu"]


def test_info(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    import warp

    assert info["warp"] == warp.__version__
    assert set(info["env_ids"]) == {"WorldFM/PointNav-v0", "WorldFM/Explore-v0"}
    assert info["cuda_available"] is torch.cuda.is_available()


@pytest.mark.parametrize("env_id", ["WorldFM/PointNav-v0", "WorldFM/Explore-v0"])
def test_rollout(capsys, env_id):
    code = main(["rollout", env_id, "--num-envs", "2", "--steps", "5", "--renderer", "anchor", *SCENE_ARGS])
    out = capsys.readouterr().out
    assert code == 0
    match = re.search(r"([\d,.]+) env-steps/s", out)
    assert match, out
    assert float(match.group(1).replace(",", "")) > 0
    assert "num_envs=2" in out and env_id in out


def test_rollout_scripted_with_video(capsys, tmp_path):
    video = tmp_path / "rollout.mp4"
    code = main(
        ["rollout", "--policy", "scripted", "--num-envs", "1", "--steps", "4", "--video", str(video)]
        + ["--renderer", "anchor", *SCENE_ARGS]
    )
    assert code == 0, capsys.readouterr().err
    assert video.is_file() and video.stat().st_size > 0


def test_demo(capsys, tmp_path):
    code = main(["demo", "--out", str(tmp_path), "--steps", "20", "--fps", "2", "--rows", "3", *SCENE_ARGS])
    out = capsys.readouterr().out
    assert code == 0
    video, sheet_path = tmp_path / "demo.mp4", tmp_path / "demo_contact_sheet.png"
    assert video.is_file() and video.stat().st_size > 0
    assert sheet_path.is_file() and sheet_path.stat().st_size > 0
    steps = int(re.search(r"episode: (\d+) steps", out).group(1))
    assert 1 <= steps <= 20
    # One video frame per observation (the reset one included), the last held for two seconds.
    frames = imageio.mimread(str(video), memtest=False)
    assert len(frames) == steps + 1 + 2 * 2 - 1
    assert frames[0].shape[1] > 4 * 32 * 4  # anchor | (generated) | ground truth | map, each upscaled 4x
    sheet = imageio.imread(sheet_path)
    assert sheet.ndim == 3 and sheet.shape[2] in (3, 4)
    assert sheet.shape[0] >= 3 * 64  # three labelled rows of 2x panels
    assert (sheet[..., :3] > 128).any() and (sheet[..., :3] < 64).any()
    assert "success=" in out and "demo.mp4" in out and "goal distance" in out


def test_unknown_env_id(capsys):
    assert main(["rollout", "WorldFM/NoSuchTask-v0", "--num-envs", "1", "--steps", "1", *SCENE_ARGS]) == 2
    assert "unknown env id" in capsys.readouterr().err


def test_bad_arguments_exit_code(capsys):
    # A ValueError from the env (bad scene spec) is reported as exit code 2, not a traceback.
    assert (
        main(
            [
                "rollout",
                "--num-envs",
                "1",
                "--steps",
                "1",
                "--scenes",
                "procedural:nosuchsplit",
                "--resolution",
                "32",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "scenes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["nosuchcommand"])
    assert exc.value.code == 2


def test_render_meta_json_trajectory(tmp_path):
    """`worldfm-env render` renders one frame per trajectory pose (anchor, then worldfm side by side)."""
    import imageio.v2 as imageio
    import torch
    from scenes.test_sources import _write_meta

    from worldfm_env.model import build_model, save_checkpoint

    meta, *_, trajectory = _write_meta(tmp_path)
    out = tmp_path / "anchor.mp4"
    assert (
        main(
            [
                "render",
                "--meta",
                str(meta),
                "--renderer",
                "anchor",
                "--resolution",
                "32",
                "--device",
                "cpu",
                "--batch-size",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    frames = imageio.mimread(str(out))
    assert len(frames) == len(trajectory)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), weights)
    out2 = tmp_path / "worldfm.mp4"
    assert (
        main(
            [
                "render",
                "--meta",
                str(meta),
                "--weights",
                str(weights),
                "--resolution",
                "32",
                "--device",
                "cpu",
                "--side-by-side",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    frames2 = imageio.mimread(str(out2))
    assert len(frames2) == len(trajectory)
    assert frames2[0].shape[1] == 2 * frames2[0].shape[0]  # anchor | generated
    # Without weights the command fails with the explanation, not with random weights.
    assert (
        main(["render", "--meta", str(meta), "--resolution", "32", "--device", "cpu", "--out", str(tmp_path / "x.mp4")])
        == 2
    )


def test_demo_shows_the_worldfm_column_when_weights_are_shipped(capsys, tmp_path, monkeypatch):
    from worldfm_env.model import build_model, save_checkpoint
    from worldfm_env.model import weights as renderer

    weights = tmp_path / "weights"
    weights.mkdir()
    model = build_model("tiny", input_size=32, prediction="v")
    save_checkpoint(model, weights / "worldfm-tiny-2step-32x32.safetensors")
    monkeypatch.setattr(renderer, "WEIGHTS_DIR", weights)
    assert main(["demo", "--out", str(tmp_path), "--steps", "3", *SCENE_ARGS]) == 0
    assert "(anchor | worldfm | oracle | top-down map)" in capsys.readouterr().out
