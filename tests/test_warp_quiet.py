"""Warp start-up is quiet on machines without a CUDA driver, and keeps every other message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worldfm_env import _device

WARNING = "Could not find or load the NVIDIA CUDA driver"


@pytest.mark.skipif(_device.cuda_driver_present(), reason="a CUDA driver is installed: warp does not warn")
def test_no_cuda_driver_warning_on_import():
    result = subprocess.run(
        [sys.executable, "-c", "import worldfm_env.render.splat"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert WARNING not in result.stderr
    assert WARNING not in result.stdout


class _FakeWarp:
    """Stands in for the warp module: its ``init`` prints through file descriptor 2 as warp's native code does."""

    def __init__(self, lines: list[str], fail: bool = False):
        self.lines = lines
        self.fail = fail

    def init(self):
        os.write(2, "".join(self.lines).encode())
        if self.fail:
            raise RuntimeError("Warp initialization failed")


def test_only_the_driver_line_is_dropped(capfd):
    other = "Warp CUDA error: something real\n"
    _device._init_without_driver_warning(_FakeWarp([_device._NO_DRIVER_WARNING + " GPU execution ...\n", other]))
    err = capfd.readouterr().err
    assert WARNING not in err
    assert other in err


def test_errors_from_init_propagate_and_stderr_is_restored(capfd):
    with pytest.raises(RuntimeError, match="initialization failed"):
        _device._init_without_driver_warning(_FakeWarp(["kept line\n"], fail=True))
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "kept line" in err and "after" in err
