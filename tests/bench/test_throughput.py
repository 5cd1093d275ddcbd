"""Smoke test of ``benchmarks/throughput.py`` with a tiny grid: the CSV names the settings it measured."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import throughput  # noqa: E402


def test_tiny_throughput_run_records_the_splat_radius(tmp_path):
    throughput.main(
        [
            *["--renderers", "anchor", "--num-envs", "2", "--sync-num-envs", "1", "--steps", "2", "--repeats", "1"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--devices", "cpu", "--splat-radius", "auto"],
            *["--out", str(tmp_path)],
        ]
    )
    with open(tmp_path / "throughput.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["num_envs"], r["splat_radius"]) for r in rows] == [
        ("native", "2", "auto"),
        ("sync", "1", "auto"),
    ]
    assert all(float(r["env_steps_per_s"]) > 0 for r in rows)
    assert (tmp_path / "throughput.png").stat().st_size > 0


def test_worldfm_rows_are_timed_for_each_depth_bound_in_one_run(tmp_path):
    throughput.main(
        [
            *["--renderers", "worldfm", "--num-envs", "2", "--sync-num-envs", "--steps", "1", "--repeats", "1"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--devices", "cpu"],
            *["--depth-bounds", "none", "navigation", "--out", str(tmp_path)],
        ]
    )
    with open(tmp_path / "throughput.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["renderer"], r["depth_bound"]) for r in rows] == [
        ("native", "worldfm", "none"),
        ("native", "worldfm", "navigation"),
    ]
    assert all(float(r["env_steps_per_s"]) > 0 for r in rows)


def test_before_after_comparison_runs_both_trees(tmp_path):
    from benchmarks import throughput_compare

    throughput_compare.main(
        [
            *["--before", str(ROOT), "--renderers", "anchor", "--num-envs", "2", "--steps", "1", "--repeats", "1"],
            *["--scenes", "procedural:train:1", "--resolution", "16", "--out", str(tmp_path)],
        ]
    )
    with open(tmp_path / "throughput_compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["renderer"], r["num_envs"]) for r in rows] == [("anchor", "2")]
    assert len(rows[0]["before_runs"].split()) == 2 and len(rows[0]["after_runs"].split()) == 2
    assert float(rows[0]["ratio"]) > 0
    assert (tmp_path / "throughput_compare.png").stat().st_size > 0
