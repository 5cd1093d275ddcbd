"""Smoke test of ``benchmarks/transfer.py`` with a tiny budget: CSVs, plot, table, value ranges."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

# `benchmarks/` and `agents/` are top-level folders of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conftest import SMALL  # noqa: E402

from benchmarks import transfer  # noqa: E402

# 2 PPO updates of 4 envs x 16 steps per world, 4 held-out episodes of at most 40 steps.
TINY = [
    "--total-timesteps", "128",
    "--num-envs", "4",
    "--num-steps", "16",
    "--update-epochs", "1",
    "--resolution", str(SMALL["resolution"]),
    "--max-episode-steps", "40",
    "--episodes", "4",
    "--train-scenes", SMALL["scenes"],
    "--eval-scenes", SMALL["scenes"],
    "--device", SMALL["device"],
]  # fmt: skip


def test_tiny_transfer_run_writes_csv_plot_and_table(capsys, tmp_path):
    rows = transfer.main([*TINY, "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| train world | eval world |" in printed

    with open(tmp_path / "transfer.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["train_world"], r["eval_world"]) for r in table] == [
        ("oracle", "oracle"),
        ("anchor", "oracle"),
        ("anchor", "anchor"),
    ]
    assert len(table) == len(rows)
    columns = {"success", "spl", "soft_spl", "episodes", "gap_success", "gap_spl", "gap_soft_spl"}
    columns |= {"train_env_steps", "train_wall_s", "device", "num_envs", "resolution", "allow_sliding", "include_depth"}
    assert columns <= set(table[0])
    for row in table:
        for metric in ("success", "spl", "soft_spl"):
            assert 0.0 <= float(row[metric]) <= 1.0, row
            assert -1.0 <= float(row[f"gap_{metric}"]) <= 1.0, row
        assert int(row["episodes"]) == 4
        assert int(row["train_env_steps"]) == 128
        assert int(row["resolution"]) == SMALL["resolution"]
        assert row["device"] == "cpu"
        assert (row["policy"], row["actions"]) == ("gru", "nav")  # ppo_torch's default layout
        assert row["include_depth"] == "False"
    reference = table[0]
    assert all(float(reference[f"gap_{m}"]) == 0.0 for m in ("success", "spl", "soft_spl"))

    with open(tmp_path / "transfer_episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    assert len(episodes) == 3 * 4
    assert (tmp_path / "transfer.png").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "ppo_anchor.pt").exists()
    assert "global_step=" in (tmp_path / "train_anchor.log").read_text()


def test_worldfm_world_trains_and_transfers(tmp_path):
    """With a frame-model checkpoint (a tiny untrained one here) the worldfm world is trained and evaluated."""
    import torch

    from worldfm_env.model import build_model, save_checkpoint

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), weights)
    rows = transfer.main([*TINY, "--out", str(tmp_path / "out"), "--worldfm-weights", str(weights)])
    pairs = {(r["train_world"], r["eval_world"]) for r in rows}
    assert {("worldfm", "oracle"), ("worldfm", "worldfm")} <= pairs
    with pytest.raises(ValueError, match="worldfm-weights"):
        transfer.main([*TINY, "--out", str(tmp_path / "x"), "--worldfm-weights", str(tmp_path / "missing.pt")])


def test_worldfm_weights_take_a_shipped_name(tmp_path):
    """--worldfm-weights is what the env's weights= takes: a checkpoint path or the name of a shipped model."""
    args = transfer.parse_args([*TINY, "--out", str(tmp_path), "--worldfm-weights", "worldfm-srgbd-auto-64x64"])
    transfer._check_arguments(args)
    assert transfer.train_worlds(args) == ["oracle", "anchor", "worldfm"]
    args = transfer.parse_args([*TINY, "--out", str(tmp_path), "--worldfm-weights", "worldfm-nothing-64x64"])
    with pytest.raises(ValueError, match=r"--worldfm-weights 'worldfm-nothing-64x64' does not exist: .*shipped: \["):
        transfer._check_arguments(args)


def test_depth_policies_train_and_evaluate_with_depth(tmp_path):
    import torch

    rows = transfer.main([*TINY, "--out", str(tmp_path), "--worlds", "oracle", "--include-depth"])
    assert [r["include_depth"] for r in rows] == [True]
    saved = torch.load(tmp_path / "checkpoints" / "ppo_oracle.pt", weights_only=True)
    assert saved["args"]["include_depth"] is True
    assert saved["state_dict"]["cnn.0.weight"].shape[1] == 4  # rgb + depth: evaluation had to observe depth too


def test_sampled_and_argmax_actions_each_get_rows_and_their_own_reference(tmp_path):
    out = tmp_path / "out"
    rows = transfer.main([*TINY, "--out", str(out), "--eval-actions", "sample", "argmax", "sample"])
    assert [(r["train_world"], r["eval_world"], r["eval_actions"]) for r in rows] == [
        ("oracle", "oracle", "sample"),
        ("oracle", "oracle", "argmax"),
        ("anchor", "oracle", "sample"),
        ("anchor", "oracle", "argmax"),
        ("anchor", "anchor", "sample"),
        ("anchor", "anchor", "argmax"),
    ]
    reference = {r["eval_actions"]: r for r in rows[:2]}
    for row in rows:
        for metric in ("success", "spl", "soft_spl"):
            expected = round(row[metric] - reference[row["eval_actions"]][metric], 4)
            assert row[f"gap_{metric}"] == pytest.approx(expected, abs=1e-4), row
    with open(out / "transfer_episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    assert len(episodes) == 6 * 4 and {e["eval_actions"] for e in episodes} == {"sample", "argmax"}

    # Sampled actions come from a generator seeded by --eval-seed: the same episodes again.
    args = transfer.parse_args([*TINY, "--out", str(out)])
    checkpoint = out / "checkpoints" / "ppo_anchor.pt"
    first, _ = transfer.evaluate_policy(checkpoint, "anchor", args, "sample")
    again, _ = transfer.evaluate_policy(checkpoint, "anchor", args, "sample")
    assert first.episodes == again.episodes
    with pytest.raises(ValueError, match="eval_actions='greedy'"):
        transfer.evaluate_policy(checkpoint, "anchor", args, "greedy")


def test_snapshots_give_learning_curves(capsys, tmp_path):
    # 2 updates of 64 env steps, a snapshot every 64: the first update's policy and the final one.
    transfer.main([*TINY, "--out", str(tmp_path), "--worlds", "oracle", "--snapshots", "2"])
    printed = capsys.readouterr().out
    assert "| train world | env steps | wall s |" in printed
    with open(tmp_path / "transfer_curve.csv") as f:
        curve = list(csv.DictReader(f))
    assert [(r["train_world"], int(r["env_steps"])) for r in curve] == [("oracle", 64), ("oracle", 128)]
    assert float(curve[0]["wall_s"]) < float(curve[1]["wall_s"])
    for row in curve:
        assert 0.0 <= float(row["success"]) <= 1.0 and int(row["episodes"]) == 4
    with open(tmp_path / "transfer.csv") as f:
        final = next(csv.DictReader(f))
    assert final["success"] == curve[-1]["success"] and final["spl"] == curve[-1]["spl"]
    assert (tmp_path / "transfer_curve.png").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "ppo_oracle_step64.pt").exists()
    # A later run without snapshots does not leave the old ones behind.
    transfer.main([*TINY, "--out", str(tmp_path), "--worlds", "oracle"])
    assert not list((tmp_path / "checkpoints").glob("ppo_oracle_step*.pt"))


def test_reuse_takes_a_policy_trained_with_the_same_arguments(capsys, tmp_path):
    import torch

    out = ["--out", str(tmp_path)]
    transfer.main([*TINY, *out, "--worlds", "oracle", "--snapshots", "2"])
    oracle = tmp_path / "checkpoints" / "ppo_oracle.pt"
    # A run that compiled its frame model learned the same thing: torch.compile does not stop a reuse.
    saved = torch.load(oracle, weights_only=True)
    saved["args"]["compile_model"] = True
    torch.save(saved, oracle)
    trained = oracle.stat().st_mtime_ns, (tmp_path / "train_oracle.log").read_text()
    capsys.readouterr()
    # The splat radius is the anchor world's: the oracle reference is reused, the anchor policy trained with it.
    rows = transfer.main(
        [*TINY, *out, "--worlds", "oracle", "anchor", "--snapshots", "2", "--reuse", "--splat-radius", "auto"]
    )
    printed = capsys.readouterr().out
    assert f"reusing {oracle}" in printed and "cannot reuse its policy: no " in printed
    assert "(the oracle policy trained by an earlier run, not timed here)" in printed
    assert (oracle.stat().st_mtime_ns, (tmp_path / "train_oracle.log").read_text()) == trained
    assert (tmp_path / "checkpoints" / "ppo_oracle_step64.pt").exists()  # its snapshots are kept too
    assert torch.load(tmp_path / "checkpoints" / "ppo_anchor.pt", weights_only=True)["args"]["splat_radius"] == "auto"
    assert [r["splat_radius"] for r in rows] == [0, "auto", "auto"]  # the oracle world has no anchor
    with open(tmp_path / "transfer_curve.csv") as f:
        assert {r["train_world"] for r in csv.DictReader(f)} == {"oracle", "anchor"}
    # Other arguments: the reference is trained again, and the message says which argument differs.
    transfer.main([*TINY, *out, "--worlds", "oracle", "--reuse", "--update-epochs", "2"])
    assert "cannot reuse its policy: trained with other save_every (64, not 0), update_epochs (1, not 2)" in (
        capsys.readouterr().out
    )
    assert oracle.stat().st_mtime_ns != trained[0]
    # A checkpoint from before an option that changed behaviour (here precision) is not taken for today's default.
    saved = torch.load(oracle, weights_only=True)
    del saved["args"]["precision"]
    torch.save(saved, oracle)
    transfer.main([*TINY, *out, "--worlds", "oracle", "--reuse", "--update-epochs", "2"])
    assert "cannot reuse its policy: it predates the arguments ['precision']" in capsys.readouterr().out


def test_compile_model_reaches_the_worldfm_world_only(tmp_path, monkeypatch):
    trained = []

    def stop_after_parsing(argv):
        trained.append(argv)
        raise RuntimeError("not training in this test")

    monkeypatch.setattr(transfer.ppo_torch, "main", stop_after_parsing)
    args = transfer.parse_args([*TINY, "--out", str(tmp_path), "--worldfm-weights", "w.safetensors", "--compile-model"])
    for world in ("worldfm", "anchor"):
        with pytest.raises(RuntimeError, match="not training"):
            transfer.train_policy(world, args, tmp_path)
    assert "--compile-model" in trained[0] and "--compile-model" not in trained[1]
    assert transfer.parse_args(TINY).compile_model is False
    # ... and to the evaluations in the worldfm world.
    evaluated = []

    def record_evaluation(eval_args):
        evaluated.append((eval_args.renderer, eval_args.compile_model))
        raise RuntimeError("not evaluating in this test")

    monkeypatch.setattr(transfer.evaluate_script, "evaluate", record_evaluation)
    for world in ("worldfm", "oracle"):
        with pytest.raises(RuntimeError, match="not evaluating"):
            transfer.evaluate_policy(tmp_path / "policy.pt", world, args)
    assert evaluated == [("worldfm", True), ("oracle", False)]


def test_capture_reaches_every_world_and_memory_the_worldfm_world(tmp_path, monkeypatch):
    trained, evaluated = [], []

    def record_training(argv):
        trained.append(argv)
        raise RuntimeError("not training in this test")

    def record_evaluation(eval_args):
        evaluated.append((eval_args.renderer, eval_args.capture, eval_args.memory, eval_args.memory_carve))
        raise RuntimeError("not evaluating in this test")

    monkeypatch.setattr(transfer.ppo_torch, "main", record_training)
    monkeypatch.setattr(transfer.evaluate_script, "evaluate", record_evaluation)
    args = transfer.parse_args(
        [*TINY, "--worldfm-weights", "w.safetensors", "--capture", "walk:8", "--memory", "grow", "--memory-carve"]
    )
    for world in ("oracle", "anchor", "worldfm"):
        with pytest.raises(RuntimeError, match="not training"):
            transfer.train_policy(world, args, tmp_path)
        with pytest.raises(RuntimeError, match="not evaluating"):
            transfer.evaluate_policy(tmp_path / "policy.pt", world, args)
        settings = transfer.run_settings(args, world)
        assert (settings["capture"], settings["memory"], settings["memory_carve"]) == (
            ("walk:8", "grow", True) if world == "worldfm" else ("walk:8", "static", False)
        )
    options = [
        (argv[argv.index("--capture") + 1], argv[argv.index("--memory") + 1], "--memory-carve" in argv)
        for argv in trained
    ]
    assert options == [("walk:8", "static", False), ("walk:8", "static", False), ("walk:8", "grow", True)]
    assert all(("--no-memory-carve" in argv) != ("--memory-carve" in argv) for argv in trained)
    assert evaluated == [
        ("oracle", "walk:8", "static", False),
        ("anchor", "walk:8", "static", False),
        ("worldfm", "walk:8", "grow", True),
    ]
    defaults = transfer.parse_args(TINY)
    assert (defaults.capture, defaults.memory, defaults.memory_carve) == ("full", "static", False)
    # Bad values fail before any training, naming the option.
    out = ["--out", str(tmp_path / "x")]
    with pytest.raises(ValueError, match=r"--capture: capture must be .*got 'walk:0'"):
        transfer.main([*TINY, *out, "--worlds", "oracle", "--capture", "walk:0"])
    with pytest.raises(ValueError, match="--memory grow applies to the worldfm world only"):
        transfer.main([*TINY, *out, "--memory", "grow"])
    with pytest.raises(ValueError, match="--memory-carve applies to a growing memory only; --memory is 'static'"):
        transfer.main([*TINY, *out, "--worlds", "oracle", "--memory-carve"])
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_capture_is_a_setting_of_the_rows_and_of_the_reference(tmp_path):
    import torch

    rows = transfer.main([*TINY, "--out", str(tmp_path), "--worlds", "oracle", "--capture", "panorama"])
    assert [(r["capture"], r["memory"]) for r in rows] == [("panorama", "static")]
    saved = torch.load(tmp_path / "checkpoints" / "ppo_oracle.pt", weights_only=True)
    assert (saved["args"]["capture"], saved["args"]["memory"]) == ("panorama", "static")
    reference = ["--reference-csv", str(tmp_path / "transfer.csv"), "--worlds", "anchor"]
    with pytest.raises(ValueError, match=r"other capture \('panorama', not 'full'\)"):
        transfer.reference_rows(transfer.parse_args([*TINY, *reference]))
    assert transfer.reference_rows(transfer.parse_args([*TINY, *reference, "--capture", "panorama"]))


def test_bad_worlds_and_snapshots_fail_before_training(tmp_path):
    out = ["--out", str(tmp_path)]
    with pytest.raises(ValueError, match=r"--worlds anchor must include 'oracle', the reference \(or give --ref"):
        transfer.main([*TINY, *out, "--worlds", "anchor"])
    with pytest.raises(ValueError, match="--worlds worldfm needs --worldfm-weights"):
        transfer.main([*TINY, *out, "--worlds", "oracle", "worldfm"])
    with pytest.raises(ValueError, match="--snapshots must be >= 0"):
        transfer.main([*TINY, *out, "--snapshots", "-1"])
    assert not (tmp_path / "checkpoints").exists()


def test_reference_csv_stands_for_the_oracle_reference_of_an_earlier_run(capsys, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    earlier = transfer.main([*TINY, "--out", str(first), "--worlds", "oracle", "--eval-actions", "sample", "argmax"])
    reference_csv = str(first / "transfer.csv")
    capsys.readouterr()
    later = ["--worlds", "anchor", "--eval-actions", "argmax", "--reference-csv", reference_csv]
    rows = transfer.main([*TINY, "--out", str(second), *later])
    printed = capsys.readouterr().out
    assert not (second / "checkpoints" / "ppo_oracle.pt").exists()  # the reference was not trained again
    assert "(the oracle policy trained by an earlier run, not timed here)" in printed
    reference = next(r for r in earlier if r["eval_actions"] == "argmax")
    assert rows[0] == {**reference, "eval_actions": "argmax"}  # the earlier run's row, values and types alike
    assert [(r["train_world"], r["eval_world"]) for r in rows] == [
        ("oracle", "oracle"),
        ("anchor", "oracle"),
        ("anchor", "anchor"),
    ]
    for r in rows[1:]:
        assert r["gap_success"] == pytest.approx(r["success"] - reference["success"], abs=1e-4)
    with open(second / "transfer.csv") as f:
        assert [r["train_world"] for r in csv.DictReader(f)] == ["oracle", "anchor", "anchor"]
    # A CSV that cannot stand for this run fails before any training, naming what differs.
    out = ["--out", str(tmp_path / "x")]
    with pytest.raises(ValueError, match=r"was run with other seed \(1, not 2\), episodes \(4, not 3\)"):
        transfer.main([*TINY, *out, "--worlds", "anchor", "--reference-csv", reference_csv, "--seed", "2",
                       "--episodes", "3"])  # fmt: skip
    with pytest.raises(ValueError, match="--worlds includes 'oracle' and --reference-csv is given"):
        transfer.main([*TINY, *out, "--worlds", "oracle", "anchor", "--reference-csv", reference_csv])
    with pytest.raises(ValueError, match="does not exist"):
        transfer.main([*TINY, *out, "--worlds", "anchor", "--reference-csv", str(tmp_path / "none.csv")])
    assert not (tmp_path / "x").exists()


def test_reference_csv_reads_results_written_before_the_goal_encoding_column():
    committed = ROOT / "benchmarks" / "results" / "transfer-1m-exact-distance-seed2" / "transfer.csv"
    same = ["--total-timesteps", "1000000", "--include-depth", "--episodes", "200", "--seed", "2"]
    args = transfer.parse_args(
        [*same, "--goal-encoding", "log", "--eval-actions", "sample", "argmax", "--reference-csv", str(committed)]
    )
    rows = transfer.reference_rows(args)
    assert [(r["eval_actions"], r["success"], r["goal_encoding"]) for r in rows] == [
        ("sample", 0.81, "log"),
        ("argmax", 0.8, "log"),
    ]
    args = transfer.parse_args([*same, "--reference-csv", str(committed)])  # the default is log+near
    with pytest.raises(ValueError, match=r"other goal_encoding \('log', not 'log\+near'\)"):
        transfer.reference_rows(args)


def test_resume_continues_an_interrupted_training_and_keeps_its_snapshots(capsys, tmp_path, monkeypatch):
    import torch

    from worldfm_env.envs.vector import WorldFMVectorEnv

    out = ["--out", str(tmp_path), "--worlds", "oracle", "--snapshots", "2"]
    real_step, calls = WorldFMVectorEnv.step, []

    def stop_in_second_update(self, actions):
        calls.append(1)
        if len(calls) == 16 + 3:
            raise KeyboardInterrupt
        return real_step(self, actions)

    monkeypatch.setattr(WorldFMVectorEnv, "step", stop_in_second_update)
    with pytest.raises(KeyboardInterrupt):
        transfer.main([*TINY, *out])
    monkeypatch.setattr(WorldFMVectorEnv, "step", real_step)
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "ppo_oracle_step64.pt").exists() and (checkpoints / "ppo_oracle.resume.pt").exists()
    capsys.readouterr()

    transfer.main([*TINY, *out, "--resume"])
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "the oracle training resumed" in printed  # the budget says so
    log = (tmp_path / "train_oracle.log").read_text()
    assert -1 < log.find("iter=1/2") < log.find("resuming from") < log.find("iter=2/2")  # both segments, in order
    assert not (checkpoints / "ppo_oracle.resume.pt").exists()
    with open(tmp_path / "transfer_curve.csv") as f:
        curve = [int(r["env_steps"]) for r in csv.DictReader(f)]
    assert curve == [64, 128]  # the interrupted segment's snapshot is on the curve
    with open(tmp_path / "transfer.csv") as f:
        wall = float(next(csv.DictReader(f))["train_wall_s"])
    assert wall == pytest.approx(torch.load(checkpoints / "ppo_oracle.pt", weights_only=True)["wall_s"], abs=0.1)
    # Run again with --resume, the finished world is kept (as with --reuse), not trained afresh.
    transfer.main([*TINY, *out, "--resume"])
    assert f"reusing {checkpoints / 'ppo_oracle.pt'}" in capsys.readouterr().out
