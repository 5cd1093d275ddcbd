"""The example scene shipped in ``examples/scene/`` loads, renders with ``worldfm-env render`` and regenerates."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from worldfm_env.cli import main
from worldfm_env.scenes.sources import load_meta_json_scene

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "scene"
META = EXAMPLE / "meta.json"


def _poses() -> int:
    return len(json.loads(META.read_text())["c2w"])


def test_example_scene_is_small_and_complete():
    meta = json.loads(META.read_text())
    assert {"name", "image", "K", "c2w", "depth"} <= set(meta)
    assert (EXAMPLE / meta["image"]).is_file() and (EXAMPLE / meta["depth"]).is_file()
    depth = np.asarray(Image.open(EXAMPLE / meta["depth"]))
    assert depth.dtype == np.uint16 and (depth > 0).mean() > 0.9  # millimetres, nearly every pixel known
    assert sum(p.stat().st_size for p in EXAMPLE.iterdir()) < 1_000_000
    scene = load_meta_json_scene(META)
    assert scene.points_xyz.shape[0] > 10_000
    assert len(scene.info["trajectory_c2w"]) == _poses() >= 8


def test_render_the_example_with_the_anchor(tmp_path):
    out = tmp_path / "anchor.mp4"
    args = ["render", "--meta", str(META), "--renderer", "anchor", "--resolution", "64", "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    frames = imageio.mimread(str(out))
    assert len(frames) == _poses()
    assert frames[0].shape[:2] == (256, 256)  # 64 pixels upscaled 4x for viewing


def test_render_the_example_with_the_shipped_frame_model(tmp_path):
    out = tmp_path / "video.mp4"
    assert main(["render", "--meta", str(META), "--side-by-side", "--device", "cpu", "--out", str(out)]) == 0
    frames = imageio.mimread(str(out))
    assert len(frames) == _poses()
    assert frames[0].shape[1] == 2 * frames[0].shape[0]  # anchor | generated


def test_the_script_regenerates_the_shipped_files(tmp_path):
    spec = importlib.util.spec_from_file_location("make_example_scene", ROOT / "examples" / "make_example_scene.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 0
    made, shipped = json.loads((tmp_path / "meta.json").read_text()), json.loads(META.read_text())
    assert {k: made[k] for k in ("name", "image", "depth")} == {k: shipped[k] for k in ("name", "image", "depth")}
    for key in ("K", "c2w"):
        assert np.allclose(made[key], shipped[key], atol=1e-5), key
    # Ray casting on another CPU may round a few edge pixels differently: compare within a tolerance.
    image_made, image_shipped = (np.asarray(Image.open(d / "image.png")).astype(int) for d in (tmp_path, EXAMPLE))
    assert (np.abs(image_made - image_shipped).max(-1) > 8).mean() < 0.002
    depth_made, depth_shipped = (np.asarray(Image.open(d / "depth.png")).astype(int) for d in (tmp_path, EXAMPLE))
    assert (np.abs(depth_made - depth_shipped) > 1).mean() < 0.002  # millimetres
