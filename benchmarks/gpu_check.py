"""The GPU check: on a machine with CUDA, the GPU tests and a short form of every GPU benchmark, within 8 minutes.

    make gpu-check                                   # or: python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --parts tests anchor --budget-scale 0.5
    python benchmarks/gpu_check.py --list            # the parts, their commands and time budgets; runs nothing

Parts, each a subprocess with its own time budget (killed when it runs past it; the check goes on with the next):

- ``tests``: ``pytest -m gpu`` over the test files that hold ``gpu``-marked tests (the CUDA tests: env on CUDA
  against the CPU, device-resident outputs, warp kernels on torch's stream, ...), per-test results in
  ``gpu_tests.csv``;
- ``anchor``: ``benchmarks/throughput.py``, the anchor renderer at 1,024, 2,048 and 4,096 envs, 64x64;
- ``worldfm``: the same with the shipped frame model (``worldfm-srd-64x64``) at 256 and 1,024 envs;
- ``xl``: ``benchmarks/model_latency.py``, the published ``xl`` layout at 512x512 in bfloat16 with random weights and
  no autoencoder (random latents stand in for the encoded anchor and reference, so encode and decode are not
  timed), 2 sampler steps, batch 1 (the latency) up to batch 16 (the best aggregate frames/s), with the
  published-style batch-1 loop beside each batch.

Writes, under ``benchmarks/results/gpu/``: each part's CSV and PNG in its folder (``anchor/throughput.csv``,
``worldfm/throughput.csv``, ``xl/model_latency.csv``), ``gpu_tests.csv``, each part's console output
(``<part>.log``), and ``gpu_check.csv``: one row per part with its status, seconds, the device, and the headline
figures beside the goals (anchor >= 100,000 env-steps/s at >= 1,024 envs; shipped model >= 30,000 env-steps/s;
``xl`` batch-1 <= 40 ms and >= 50 frames/s aggregate). Without CUDA it prints why and exits with status 2,
having run nothing. Exit status 1 when a part failed or ran out of time. See ``docs/gpu.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu"
TOTAL_BUDGET_S = 480
"""The whole check's limit (8 minutes); the parts' budgets add up to less, leaving room for start-up."""


@dataclass
class Part:
    """One step of the check: a command run in a subprocess with a time budget."""

    name: str
    """Short name (``--parts``, the log file and the row of ``gpu_check.csv``)."""
    command: list[str]
    """The command line, run from the repository root."""
    budget_s: float
    """Seconds it may run before it is stopped."""
    what: str
    """One line on what it measures."""
    headline: dict = field(default_factory=dict)
    """Figures read from its CSV once it ran (filled by :func:`read_headline`)."""


def gpu_test_files() -> list[str]:
    """The test files holding ``gpu``-marked tests, relative to the repository root. The tests part collects these
    alone, so a test module importing an optional package the GPU machine lacks (SB3, PettingZoo, ...) cannot stop
    the collection."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("test_*.py")
        if "mark.gpu" in path.read_text(encoding="utf-8", errors="replace")
    )


def plan(out: Path, python: str = sys.executable, scale: float = 1.0) -> list[Part]:
    """The parts of the check, writing under ``out``; ``scale`` multiplies every budget (and the benchmarks' work
    stays the same: use it to give a slow machine more time, or to test the timeouts)."""
    bench = ROOT / "benchmarks"
    return [
        Part(
            "tests",
            [python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_test_files()]
            + [f"--junitxml={out / 'gpu_tests.xml'}"],
            120 * scale,
            "pytest -m gpu: the CUDA tests",
        ),
        Part(
            "anchor",
            [python, str(bench / "throughput.py"), "--devices", "cuda", "--renderers", "anchor"]
            + ["--num-envs", "1024", "2048", "4096", "--sync-num-envs", "1", "--steps", "20", "--repeats", "3"]
            + ["--resolution", "64", "--out", str(out / "anchor")],
            75 * scale,
            "anchor renderer env-steps/s at 1,024-4,096 envs, 64x64",
        ),
        Part(
            "worldfm",
            [python, str(bench / "throughput.py"), "--devices", "cuda", "--renderers", "worldfm"]
            + ["--weights", "worldfm-srd-64x64", "--num-envs", "256", "1024", "--sync-num-envs", "1"]
            + ["--steps", "10", "--repeats", "3", "--resolution", "64", "--out", str(out / "worldfm")],
            90 * scale,
            "shipped frame model env-steps/s at 256 and 1,024 envs, 64x64",
        ),
        Part(
            "xl",
            [python, str(bench / "model_latency.py"), "--config", "xl", "--resolution", "512", "--devices", "cuda"]
            + ["--dtype", "bfloat16", "--batch-sizes", "1", "4", "16", "--repeats", "3", "--out", str(out / "xl")],
            150 * scale,
            "xl 512x512 bf16 2-step latency at batch 1 and frames/s up to batch 16, beside the published-style loop",
        ),
    ]


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_headline(part: Part, out: Path) -> dict:
    """The headline figures of a part that ran, from its CSV, with the goal each is held against (empty when the
    CSV is missing)."""
    if part.name == "tests":
        rows = _read_csv(out / "gpu_tests.csv")
        if not rows:
            return {}
        counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "error", "skipped")}
        value = "/".join(map(str, counts.values()))
        return {
            "figure": "tests passed/failed/error/skipped",
            "value": value,
            "goal": "0 failed",
            "met": not (counts["failed"] or counts["error"]),
        }
    if part.name in ("anchor", "worldfm"):
        rows = [r for r in _read_csv(out / part.name / "throughput.csv") if r["kind"] == "native"]
        if not rows:
            return {}
        best = max(rows, key=lambda r: float(r["env_steps_per_s"]))
        goal = 100_000 if part.name == "anchor" else 30_000
        value = float(best["env_steps_per_s"])
        return {
            "figure": f"best env-steps/s ({best['num_envs']} envs, {best['resolution']}px)",
            "value": round(value),
            "goal": f">= {goal:,}",
            "met": value >= goal,
        }
    if part.name == "xl":
        rows = _read_csv(out / "xl" / "model_latency.csv")
        one = next((r for r in rows if r["batch"] == "1"), None)
        if one is None:
            return {}
        best = max(rows, key=lambda r: float(r["frames_per_s"]))
        latency, fps = float(one["total_ms"]), float(best["frames_per_s"])
        return {
            "figure": f"batch-1 ms / best frames/s (batch {best['batch']}) / published loop frames/s at batch 1",
            "value": f"{latency:.1f} / {fps:.1f} / {float(one['published_loop_frames_per_s']):.1f}",
            "goal": "<= 40 ms / >= 50",
            "met": latency <= 40 and fps >= 50,
        }
    return {}


def junit_to_csv(xml_path: Path, csv_path: Path) -> int:
    """Per-test rows (test, outcome, seconds, message) of a pytest JUnit XML report; returns the row count."""
    if not xml_path.is_file():
        return 0
    rows = []
    for case in ElementTree.parse(xml_path).iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (found.get("message") or "")[:300]
                break
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        rows.append({"test": name, "outcome": outcome, "seconds": case.get("time", ""), "message": message})
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["test", "outcome", "seconds", "message"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def run_part(part: Part, log_path: Path, budget_s: float) -> tuple[str, float]:
    """Run ``part`` from the repository root, its output to the console and ``log_path``, stopping its whole
    process group after ``budget_s`` seconds; (status: ok, failed (exit N), timeout; seconds)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(part.command) + "\n")
        log.flush()
        proc = subprocess.Popen(
            part.command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a timeout stops its children too
        )

        def pump() -> None:
            for line in proc.stdout:
                sys.stdout.write(f"[{part.name}] {line}")
                sys.stdout.flush()
                log.write(line)
            log.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=max(1.0, budget_s))
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = "timeout"
        reader.join(timeout=5)
    return status, time.perf_counter() - start


def cuda_summary() -> tuple[bool, str]:
    """(whether CUDA is usable, a line naming the device or saying why not)."""
    try:
        import torch
    except ImportError as err:
        return False, f"torch cannot be imported ({err})"
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        return False, (
            f"torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA {built}); "
            "run it on a machine with an NVIDIA GPU, its driver and a CUDA build of torch (docs/gpu.md)"
        )
    name = torch.cuda.get_device_name(0)
    return True, f"{name} (torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s))"


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the exit status (0 all parts ok, 1 a part failed or timed out, 2 no CUDA)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=None, help="run only these parts (default: all, in order)")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    parser.add_argument("--list", action="store_true", help="print the parts, commands and budgets; run nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    parts = plan(out, scale=args.budget_scale)
    names = [p.name for p in parts]
    if args.parts:
        unknown = sorted(set(args.parts) - set(names))
        if unknown:
            parser.error(f"--parts {' '.join(unknown)}: not a part; valid parts: {' '.join(names)}")
        parts = [p for p in parts if p.name in args.parts]
    if args.budget_scale <= 0:
        parser.error(f"--budget-scale must be > 0, got {args.budget_scale}")
    if args.list:
        for p in parts:
            print(f"{p.name:8s} {p.budget_s:5.0f} s  {p.what}\n         $ {' '.join(p.command)}")
        print(f"total budget {sum(p.budget_s for p in parts):.0f} s (limit {TOTAL_BUDGET_S * args.budget_scale:.0f} s)")
        return 0

    usable, device = cuda_summary()
    if not usable:
        print(f"gpu-check: no CUDA device: {device}. Nothing was run.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check on {device}; parts: {' '.join(p.name for p in parts)}", flush=True)
    deadline = time.perf_counter() + TOTAL_BUDGET_S * args.budget_scale
    rows = []
    for part in parts:
        left = deadline - time.perf_counter()
        budget = min(part.budget_s, left)
        if budget < 5:
            status, seconds = "skipped (no time left)", 0.0
        else:
            status, seconds = run_part(part, out / f"{part.name}.log", budget)
        if part.name == "tests":
            junit_to_csv(out / "gpu_tests.xml", out / "gpu_tests.csv")
        headline = read_headline(part, out) if not status.startswith("skipped") else {}
        rows.append(
            {
                "part": part.name,
                "status": status,
                "seconds": round(seconds, 1),
                "budget_s": round(budget, 1),
                "device": device,
                "machine": platform.node(),
                "what": part.what,
                **{k: headline.get(k, "") for k in ("figure", "value", "goal", "met")},
            }
        )
        print(f"gpu-check: {part.name}: {status} in {seconds:.0f} s", flush=True)
    with open(out / "gpu_check.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print()
    print(f"GPU check on {device}")
    print("| part | status | s | figure | value | goal | met |")
    print("|---|---|---:|---|---|---|---|")
    for r in rows:
        cells = [r["part"], r["status"], f"{r['seconds']:.0f}", r["figure"], r["value"], r["goal"], r["met"]]
        print("| " + " | ".join(map(str, cells)) + " |")
    print(f"wrote {out / 'gpu_check.csv'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
