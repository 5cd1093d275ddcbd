"""Every way a weights file can be unreadable is one ValueError that names the file and the cause (chained)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import small

from worldfm_env.model import build_model, load_checkpoint, save_checkpoint
from worldfm_env.model.checkpoint import CONFIG_METADATA_KEY, read_metadata, recommended_sampler_steps


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny-32.safetensors"
    save_checkpoint(build_model("tiny", input_size=32, prediction="v"), path)
    return path


def _variants(good, tmp_path):
    data = good.read_bytes()
    files = {
        "truncated.safetensors": data[: len(data) // 2],
        "header-only.safetensors": data[:200],
        "bad-header-length.safetensors": b"\xff" * 8 + b"{" + b"x" * 50,
        "empty.pth": b"",
        "text.pth": b"these are not weights\n",
        "random.pth": bytes(range(256)) * 4,
        "zip-like.pth": b"PK\x03\x04" + b"\x00" * 100,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return [tmp_path / name for name in files]


def test_unreadable_files_name_the_file_and_chain_the_cause(good, tmp_path):
    for path in _variants(good, tmp_path):
        with pytest.raises(ValueError, match=str(path.name)) as caught:
            load_checkpoint(None, path)
        assert caught.value.__cause__ is not None, path.name
        assert "bytes) is" in str(caught.value)


def test_header_reads_fail_the_same_way(good, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:100])
    for read in (read_metadata, recommended_sampler_steps):
        with pytest.raises(ValueError, match="truncated.safetensors.*truncated, partly written or corrupt"):
            read(truncated)


def test_a_bad_config_header_is_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad-config.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={CONFIG_METADATA_KEY: json.dumps({"depth": "many"})})
    with pytest.raises(ValueError, match=f"bad-config.safetensors.*{CONFIG_METADATA_KEY}"):
        load_checkpoint(None, path)
    path.write_bytes(b"")  # too short for safetensors: reported as unreadable by either reader
    with pytest.raises(ValueError, match="bad-config.safetensors.*0 bytes.*neither a safetensors file"):
        load_checkpoint(None, path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found.*nope.pth"):
        load_checkpoint(None, tmp_path / "nope.pth")


def test_env_reports_the_unreadable_weights_file(good, tmp_path):
    from worldfm_env.envs.vector import WorldFMVectorEnv

    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:-64])
    with pytest.raises(ValueError, match="cut.safetensors"):
        WorldFMVectorEnv(num_envs=1, **small(renderer="worldfm"), weights=str(truncated))
