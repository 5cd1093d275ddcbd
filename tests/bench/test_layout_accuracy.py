"""Tests of ``benchmarks/layout_accuracy.py``: a tiny run writes its CSV and plot, and each part of the layout (the
footprints, the ceiling, the heights) brings it closer to the truth."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

# `benchmarks/` is a top-level folder of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import layout_accuracy  # noqa: E402


def test_a_quick_run_writes_its_results_and_the_footprints_and_the_ceiling_follow_the_truth_closer(tmp_path, capsys):
    rows = layout_accuracy.main(["--quick", "--out", str(tmp_path)])
    with open(tmp_path / "layout_accuracy.csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["obstacles"], r["ceiling"], r["heights"]) for r in written] == [
        ("footprints", "True", "True"),
        ("footprints", "True", "False"),
        ("footprints", "False", "False"),
        ("cores", "False", "False"),
    ]
    assert tuple(written[0]) == layout_accuracy.COLUMNS
    assert (tmp_path / "layout_accuracy.png").stat().st_size > 1000
    by = {(r["obstacles"], r["ceiling"], r["heights"]): r for r in rows}
    heights, full = by["footprints", True, True], by["footprints", True, False]
    bare, cores = by["footprints", False, False], by["cores", False, False]
    assert full["pixels"] > 0.5 * 8 * 32 * 32  # most rays meet a face or the floor
    # The cores lose one-cell walls, so their rays cross into the next room: farther and more often far off.
    assert bare["absrel_mean"] < cores["absrel_mean"]
    assert bare["beyond_1.25"] < cores["beyond_1.25"]
    # Upward rays stop at the ceiling instead of running on to a wall: fewer pixels far beyond the truth.
    assert full["beyond_1.25"] < bare["beyond_1.25"]
    assert full["absrel_mean"] < bare["absrel_mean"]
    # Rays pass over furniture instead of stopping at a column that reaches the ceiling: fewer pixels too near.
    assert heights["nearer_0.8"] < full["nearer_0.8"]
    assert heights["absrel_mean"] < full["absrel_mean"]
    assert cores["footprint_cells_missed"] > 0.02  # the reference rows have none: they are the footprints
    assert "| footprints | yes | yes |" in capsys.readouterr().out


def test_bad_counts_are_refused_by_name():
    with pytest.raises(SystemExit):
        layout_accuracy.parse_args(["--views", "0"])
