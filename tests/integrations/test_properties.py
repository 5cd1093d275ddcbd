"""Property-based tests (hypothesis) over the public entry points: random kwargs, random action arrays and random or
corrupted files. The property everywhere: a clear ValueError naming the field or file, or a valid result; and an env
that refused bad input still steps exactly like a twin that never saw it. Example budgets are small (CI on 2 cores).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worldfm_env.envs.config import EnvConfig
from worldfm_env.envs.vector import WorldFMVectorEnv

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------------------------- construction kwargs
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-5, 100), max_size=3),
    st.tuples(st.integers(-5, 100), st.integers(-5, 100)),
)
FIELDS = [f for f in EnvConfig.__dataclass_fields__ if f != "scene_options"]


@FAST
@given(key=st.sampled_from([*FIELDS, "renderr", "num_env", "resolutions"]), value=VALUES)
def test_config_kwargs_are_validated_or_named(key, value):
    try:
        cfg = EnvConfig.from_kwargs(**{key: value})
    except ValueError as error:
        assert key in str(error) or (key == "min_goal_distance" and "max_goal_distance" in str(error)), str(error)
    else:
        assert isinstance(cfg, EnvConfig)


# ----------------------------------------------------------------------------------------------- actions
@pytest.fixture(scope="module")
def twins():
    envs = [WorldFMVectorEnv(num_envs=2, **SMALL) for _ in range(2)]
    for env in envs:
        env.reset(seed=7)
    yield envs
    for env in envs:
        env.close()


DTYPES = st.sampled_from([np.int64, np.int32, np.uint8, np.float32, np.float64, np.bool_, np.complex64])
ACTIONS = st.one_of(
    st.builds(
        lambda dtype, shape, values: np.resize(np.asarray(values).astype(dtype), shape),
        DTYPES,
        st.sampled_from([(2,), (1,), (3,), (2, 1), (), (2, 4)]),
        st.lists(st.one_of(st.floats(-10, 10), st.sampled_from([np.nan, np.inf, -np.inf])), min_size=1, max_size=8),
    ),
    st.lists(st.integers(-3, 8), min_size=0, max_size=3),
    st.sampled_from([None, "1", [1, "2"], [[1, 2], [3]], {"a": 1}]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_bad_actions_raise_and_leave_the_env_like_its_twin(twins, actions):
    env, twin = twins
    try:
        obs, *_ = env.step(actions)
    except ValueError as error:
        assert "action" in str(error), str(error)
    else:  # a valid batch: the twin takes the same step
        twin_obs, *_ = twin.step(actions)
        assert torch.equal(obs["rgb"], twin_obs["rgb"])
    a, *rest_a = env.step(torch.tensor([1, 2]))
    b, *rest_b = twin.step(torch.tensor([1, 2]))
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["pointgoal"], b["pointgoal"])
    assert all(torch.equal(x, y) for x, y in zip(rest_a[:3], rest_b[:3], strict=True))


@settings(max_examples=40, deadline=None)
@given(action=st.one_of(VALUES, st.sampled_from([np.float32(1.7), np.int8(3), np.array([2]), torch.tensor(4)])))
def test_pettingzoo_actions_are_checked_by_agent(action):
    from worldfm_env.envs.actions import check_action

    try:
        value = check_action(action, "discrete", "agent 'agent_0'")
    except ValueError as error:
        assert "agent 'agent_0'" in str(error)
    else:
        assert value.dtype == np.int64 and 0 <= int(value) < 6
        number = np.asarray(action.cpu() if isinstance(action, torch.Tensor) else action).reshape(())
        assert float(number) == int(value)


# ----------------------------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """A valid checkpoint, scene file, meta.json (+ image and depth) and PLY to corrupt."""
    from PIL import Image

    from worldfm_env.model import build_model, save_checkpoint
    from worldfm_env.scenes import save_scene
    from worldfm_env.scenes.catalog import resolve_scenes
    from worldfm_env.scenes.sources import save_ply

    root = tmp_path_factory.mktemp("good")
    save_checkpoint(build_model("tiny", input_size=16), root / "model.safetensors")
    scene = resolve_scenes("procedural:train:1", torch.device("cpu"), (16, 16), 90.0)[0]
    save_scene(scene, root / "scene.wfscene")
    save_ply(root / "cloud.ply", scene.points_xyz[:200], scene.points_rgb[:200])
    Image.fromarray(np.zeros((16, 16, 3), np.uint8) + 90).save(root / "img.png")
    np.save(root / "depth.npy", np.full((16, 16), 2.0, np.float32))
    meta = {"name": "m", "image": "img.png", "K": [[8, 0, 8], [0, 8, 8], [0, 0, 1]], "c2w": np.eye(4).tolist()}
    (root / "meta.json").write_text(json.dumps({**meta, "depth": "depth.npy"}))
    return root


def _loaders():
    from worldfm_env.model import load_checkpoint
    from worldfm_env.scenes import load_scene_file
    from worldfm_env.scenes.sources import load_meta_json_scene, load_ply_scene, read_depth

    return {
        "model.safetensors": lambda p: load_checkpoint(None, p),
        "scene.wfscene": load_scene_file,
        "cloud.ply": load_ply_scene,
        "meta.json": load_meta_json_scene,
        "depth.npy": read_depth,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["model.safetensors", "scene.wfscene", "cloud.ply", "meta.json", "depth.npy"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
    garbage=st.booleans(),
    data=st.binary(max_size=64),
)
def test_corrupted_files_fail_with_the_file_name(good_files, name, cut, flips, garbage, data):
    original = (good_files / name).read_bytes()
    if garbage:
        content = data
    else:
        content = bytearray(original[: int(len(original) * cut) or len(original)])
        for where, byte in flips:
            if content:
                content[min(int(where * len(content)), len(content) - 1)] = byte
        content = bytes(content)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for other in good_files.iterdir():  # the meta.json's image and depth beside it
            (folder / other.name).write_bytes(other.read_bytes())
        path = folder / name
        path.write_bytes(content)
        try:
            _loaders()[name](path)
        except ValueError as error:
            assert name in str(error), f"{type(error).__name__}: {error}"
