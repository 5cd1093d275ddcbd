"""``benchmarks/gpu_check.py`` on the CPU: its refusal without CUDA, its plan and budgets, and the machinery (time
budgets, JUnit -> CSV, headline figures) on stand-in parts. The GPU parts themselves only run on a GPU."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_non_zero(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err
    assert "gpu-check: no CUDA device: torch.cuda.is_available() is False" in err and "Nothing was run" in err
    assert not (tmp_path / "gpu").exists()


def test_plan_covers_every_gpu_benchmark_within_the_budget(tmp_path, capsys):
    parts = {p.name: p for p in gpu_check.plan(tmp_path)}
    assert list(parts) == ["tests", "anchor", "worldfm", "xl"]
    assert sum(p.budget_s for p in parts.values()) <= gpu_check.TOTAL_BUDGET_S - 30  # room for start-up
    assert "gpu" in parts["tests"].command and "pytest" in parts["tests"].command
    assert {"tests/test_gpu.py", "tests/envs/test_device.py"} <= set(parts["tests"].command)  # files with gpu tests
    assert "tests/agents/test_agents.py" not in parts["tests"].command
    anchor = " ".join(parts["anchor"].command)
    assert "--renderers anchor" in anchor and "--num-envs 1024 2048 4096" in anchor and "--devices cuda" in anchor
    assert "--weights worldfm-srd-64x64" in " ".join(parts["worldfm"].command)
    xl = " ".join(parts["xl"].command)
    assert "--config xl --resolution 512" in xl and "--dtype bfloat16" in xl and "--batch-sizes 1 " in xl
    # Every option a command passes is one its benchmark's parser declares.
    for name in ("anchor", "worldfm", "xl"):
        source = Path(parts[name].command[1]).read_text()
        for option in (a for a in parts[name].command[2:] if a.startswith("--")):
            assert f'add_argument("{option}"' in source or f'add_argument(\n        "{option}"' in source, option
    assert gpu_check.main(["--list"]) == 0
    assert "total budget 435 s" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        gpu_check.main(["--parts", "nope"])
    assert "--parts nope: not a part; valid parts: tests anchor worldfm xl" in capsys.readouterr().err


def test_a_part_past_its_budget_is_stopped_and_a_failing_one_reported(tmp_path):
    sleeper = gpu_check.Part(
        "sleep", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 1, ""
    )
    status, seconds = gpu_check.run_part(sleeper, tmp_path / "sleep.log", budget_s=1.5)
    assert status == "timeout" and seconds < 20
    assert "started" in (tmp_path / "sleep.log").read_text()
    failing = gpu_check.Part("fail", [sys.executable, "-c", "raise SystemExit(3)"], 10, "")
    assert gpu_check.run_part(failing, tmp_path / "fail.log", budget_s=10)[0] == "failed (exit 3)"
    ok = gpu_check.Part("ok", [sys.executable, "-c", "print('fine')"], 10, "")
    assert gpu_check.run_part(ok, tmp_path / "ok.log", budget_s=10)[0] == "ok"


def test_junit_report_and_headlines_are_read_back(tmp_path):
    (tmp_path / "gpu_tests.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_gpu" name="test_a" time="1.5"/>'
        '<testcase classname="tests.test_gpu" name="test_b" time="0.1"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_gpu" name="test_c" time="0"><skipped message="no"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert gpu_check.junit_to_csv(tmp_path / "gpu_tests.xml", tmp_path / "gpu_tests.csv") == 3
    with open(tmp_path / "gpu_tests.csv") as f:
        assert [(r["test"], r["outcome"]) for r in csv.DictReader(f)] == [
            ("tests.test_gpu::test_a", "passed"),
            ("tests.test_gpu::test_b", "failed"),
            ("tests.test_gpu::test_c", "skipped"),
        ]
    parts = {p.name: p for p in gpu_check.plan(tmp_path)}
    tests = gpu_check.read_headline(parts["tests"], tmp_path)
    assert tests["value"] == "1/1/0/1" and tests["met"] is False

    (tmp_path / "anchor").mkdir()
    with open(tmp_path / "anchor" / "throughput.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["kind", "num_envs", "resolution", "env_steps_per_s"])
        writer.writeheader()
        writer.writerows(
            [
                {"kind": "native", "num_envs": 1024, "resolution": 64, "env_steps_per_s": 90000.0},
                {"kind": "native", "num_envs": 4096, "resolution": 64, "env_steps_per_s": 150000.0},
                {"kind": "sync", "num_envs": 1, "resolution": 64, "env_steps_per_s": 999999.0},
            ]
        )
    anchor = gpu_check.read_headline(parts["anchor"], tmp_path)
    assert anchor["value"] == 150000 and anchor["met"] is True and "4096 envs" in anchor["figure"]

    (tmp_path / "xl").mkdir()
    with open(tmp_path / "xl" / "model_latency.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["batch", "total_ms", "frames_per_s", "published_loop_frames_per_s"])
        writer.writeheader()
        writer.writerows(
            [
                {"batch": 1, "total_ms": 45.0, "frames_per_s": 22.2, "published_loop_frames_per_s": 15.0},
                {"batch": 16, "total_ms": 200.0, "frames_per_s": 80.0, "published_loop_frames_per_s": 15.0},
            ]
        )
    xl = gpu_check.read_headline(parts["xl"], tmp_path)
    assert xl["value"] == "45.0 / 80.0 / 15.0" and xl["met"] is False  # 45 ms misses the 40 ms goal
    assert gpu_check.read_headline(parts["worldfm"], tmp_path) == {}  # no CSV: no figures
