"""DD-PPO under torchrun on the CPU (gloo): identical networks on every rank, the preemption threshold, sharded
evaluation (the rows of one process), resuming across world sizes, and the helpers of ``agents/_dist.py``.

Each multi-process test starts ``torchrun --standalone --nproc_per_node 2`` in a subprocess with tiny budgets.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import _dist, evaluate, ppo_torch  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402

DRIVER = Path(__file__).resolve().parent / "dist_driver.py"
# Per rank: 2 envs x 16 steps per rollout; a 32-wide GRU policy; two small training scenes.
TINY = [
    *["--num-envs", "2", "--num-steps", "16", "--hidden-size", "32", "--update-epochs", "2"],
    *["--scenes", "procedural:train:2", "--resolution", "16", "--device", "cpu"],
]
HELD_OUT = ["--scenes", "procedural:test:2", "--resolution", "16", "--device", "cpu", "--max-episode-steps", "60"]


def torchrun(script: Path, args: list[str], cwd: Path, **env: str) -> str:
    """Run ``script`` under ``torchrun --standalone --nproc_per_node 2`` (gloo on the CPU); its stdout."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def rank_hashes(folder: Path) -> tuple[list[str], list[str]]:
    """The per-optimizer-step network hashes each rank of a driver run wrote."""
    return tuple(json.loads((folder / f"hashes_rank{r}.json").read_text()) for r in (0, 1))


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory) -> tuple[Path, str]:
    """A 2-rank run of 2 updates (2 x 2 envs x 16 steps each) that keeps its last resume state; (folder, stdout)."""
    folder = tmp_path_factory.mktemp("ddppo")
    argv = [str(folder), *TINY, "--total-timesteps", "128", "--save-path", str(folder / "ppo.pt")]
    return folder, torchrun(DRIVER, argv, folder, DRIVER_KEEP_RESUME_STATE="1")


def test_two_ranks_hold_identical_networks_after_every_update(two_rank_run):
    folder, out = two_rank_run
    first, second = rank_hashes(folder)
    # 2 updates x 2 epochs x 2 recurrent minibatches (one env each): 8 optimizer steps, each changing the network.
    assert len(first) == 8 and len(set(first)) == 8
    assert first == second
    # Rank 0 alone logs; an update takes the env steps of both ranks.
    assert re.findall(r"iter=\d/\d global_step=\d+", out) == ["iter=1/2 global_step=64", "iter=2/2 global_step=128"]
    saved = torch.load(folder / "ppo.pt", weights_only=True)
    assert saved["global_step"] == 128 and saved["world_size"] == 2 and saved["finished"]
    assert saved["args"]["num_envs"] == 2  # per rank


def test_preemption_stops_a_straggler_and_keeps_the_ranks_in_step(tmp_path):
    # Rank 1 steps 50 ms slower; with a threshold of half the ranks it stops once it has a quarter of its rollout.
    argv = [str(tmp_path), *TINY, "--num-steps", "32", "--total-timesteps", "256", "--no-recurrent"]
    argv += ["--preempt-fraction", "0.5", "--save-path", str(tmp_path / "ppo.pt")]
    out = torchrun(DRIVER, argv, tmp_path, DRIVER_SLOW_RANK="1")
    lines = re.findall(r"iter=\d/2 global_step=(\d+) .* preempted=(\d)", out)
    assert [int(p) for _, p in lines] == [1, 1], out
    steps = [int(s) for s, _ in lines]
    assert 64 + 16 <= steps[0] < 128 and steps[1] - steps[0] < 128  # rank 0's 64 steps, at least 8 x 2 of rank 1
    first, second = rank_hashes(tmp_path)
    # Feed-forward minibatches: exactly --num-minibatches (4) per epoch on every rank, whatever its rollout length.
    assert len(first) == 2 * 2 * 4 and first == second


def test_sharded_evaluation_writes_the_rows_of_one_process(tmp_path):
    # 7 episodes over 2 ranks (3 and 4) in batches of 3: uneven shards and a padded last batch. (A PPO policy's
    # sharded evaluation is compared in test_transfer_shards_its_evaluation.)
    common = ["--agent", "shortest-path", "--episodes", "7", "--num-envs", "3", *HELD_OUT]
    out = torchrun(ROOT / "agents" / "evaluate.py", [*common, "--output-dir", str(tmp_path / "two")], tmp_path)
    assert out.count("success=") == 1  # rank 0 alone prints
    evaluate.main([*common, "--output-dir", str(tmp_path / "one")])
    one = (tmp_path / "one" / "episodes.csv").read_text()
    assert (tmp_path / "two" / "episodes.csv").read_text() == one
    with open(tmp_path / "one" / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["episode"]) for r in rows] == list(range(7))
    assert len({r["steps"] for r in rows}) > 1  # episodes of several lengths: batches ended at different steps


def test_resume_goes_from_two_ranks_to_one(two_rank_run, tmp_path, capsys):
    folder, _ = two_rank_run
    # The state the 2-rank run left after its first update: 1 update of 64 env steps done, written at world size 2.
    state = torch.load(ppo_torch.resume_path(folder / "ppo.pt"), weights_only=True)
    assert (state["iteration"], state["global_step"], state["world_size"]) == (1, 64, 2)
    checkpoint = tmp_path / "ppo.pt"
    shutil.copy(ppo_torch.resume_path(folder / "ppo.pt"), ppo_torch.resume_path(checkpoint))
    ppo_torch.main([*TINY, "--total-timesteps", "128", "--save-path", str(checkpoint), "--resume"])
    out = capsys.readouterr().out
    # One process takes 32 env steps an update: the 64 steps done are updates 1-2 of 4, and 3 and 4 remain.
    assert "written by a run of world size 2; continuing with world size 1 at update 2 of 4" in out
    assert re.findall(r"iter=\d/\d global_step=\d+", out) == ["iter=3/4 global_step=96", "iter=4/4 global_step=128"]
    assert not ppo_torch.resume_path(checkpoint).exists()
    # The world-size-2 run's final checkpoint is recognised as finished by a resume at world size 1.
    ppo_torch.main([*TINY, "--total-timesteps", "128", "--save-path", str(folder / "ppo.pt"), "--resume"])
    assert "already holds the finished run" in capsys.readouterr().out


def test_resume_goes_from_one_rank_to_two_from_the_saved_network(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ppo.pt"
    train = [*TINY, "--total-timesteps", "128", "--save-path", str(checkpoint)]
    real_step, calls = WorldFMVectorEnv.step, []

    def stop_in_third_update(self, actions):
        calls.append(1)
        if len(calls) == 2 * 16 + 5:
            raise KeyboardInterrupt
        return real_step(self, actions)

    monkeypatch.setattr(WorldFMVectorEnv, "step", stop_in_third_update)
    with pytest.raises(KeyboardInterrupt):
        ppo_torch.main(train)  # one process, 4 updates of 32 env steps; stopped in the third
    state = torch.load(ppo_torch.resume_path(checkpoint), weights_only=True)
    assert (state["iteration"], state["global_step"], state.get("world_size")) == (2, 64, 1)
    # Two ranks, optimizer steps switched off: both end with the saved network, so it was loaded (and shared).
    out = torchrun(DRIVER, [str(tmp_path), *train, "--resume"], tmp_path, DRIVER_FREEZE="1")
    assert "continuing with world size 2 at update 1 of 2" in out
    assert re.findall(r"iter=\d/\d global_step=\d+", out) == ["iter=2/2 global_step=128"]
    final = torch.load(checkpoint, weights_only=True)
    for name, tensor in state["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
    first, second = rank_hashes(tmp_path)
    assert len(first) == 4 and len(set(first)) == 1 and first == second


def test_transfer_shards_its_evaluation(tmp_path):
    from benchmarks import transfer

    tiny = ["--total-timesteps", "64", "--num-envs", "2", "--num-steps", "16", "--update-epochs", "1"]
    tiny += ["--resolution", "16", "--max-episode-steps", "40", "--episodes", "5", "--device", "cpu"]
    tiny += ["--train-scenes", "procedural:train:1", "--eval-scenes", "procedural:test:2", "--worlds", "oracle"]
    transfer.main([*tiny, "--out", str(tmp_path / "one")])
    shutil.copytree(tmp_path / "one" / "checkpoints", tmp_path / "two" / "checkpoints")
    # The same policy (reused), evaluated by two ranks: the per-episode rows of the single process.
    out = torchrun(ROOT / "benchmarks" / "transfer.py", [*tiny, "--reuse", "--out", str(tmp_path / "two")], tmp_path)
    assert "reusing" in out and out.count("| train world | eval world |") == 1
    one = (tmp_path / "one" / "transfer_episodes.csv").read_text()
    assert (tmp_path / "two" / "transfer_episodes.csv").read_text() == one and len(one.splitlines()) == 6
    with open(tmp_path / "two" / "transfer.csv") as f:
        assert [r["world_size"] for r in csv.DictReader(f)] == ["2"]


def test_helpers_on_one_process_and_their_arithmetic():
    one = _dist.DistInfo()
    assert not one.distributed and one.is_main and _dist.dist_info() == one
    assert _dist.shard_scenes("procedural:train:3", one) == "procedural:train:3"
    assert _dist.rank_device("auto", one) == "auto"
    assert _dist.shard_range(5, one) == range(5)
    # Contiguous blocks that cover every item once, sizes within one of each other.
    for n in (0, 1, 5, 7):
        blocks = [_dist.shard_range(n, _dist.DistInfo(r, 3)) for r in range(3)]
        assert [i for b in blocks for i in b] == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    # Scenes: a partition over the ranks, or one scene each when there are fewer scenes than ranks.
    shares = [_dist.shard_scenes("procedural:train:5", _dist.DistInfo(r, 2)) for r in range(2)]
    assert len(shares[0]) == 3 and len(shares[1]) == 2 and not set(shares[0]) & set(shares[1])
    assert all(s.startswith("procedural:seed:") for s in shares[0] + shares[1])
    assert [_dist.shard_scenes("procedural:train:1", _dist.DistInfo(r, 3)) for r in range(3)] == [shares[0][:1]] * 3
    assert _dist.rank_device("auto", _dist.DistInfo(1, 2, 1)) == ("cuda:1" if torch.cuda.is_available() else "auto")
    assert _dist.rank_device("cuda", _dist.DistInfo(1, 2, 1)) == "cuda:1"
    # On one process the collectives return their input and the preemption counter is off.
    values = torch.tensor([1.0, 2.0])
    assert _dist.all_reduce_sum(values, one) is values and _dist.gather_objects("x", one) == ["x"]
    counter = _dist.PreemptionCounter(0.6, one, min_steps=1)
    assert not counter.enabled and not counter.should_stop(1, 100)


def test_preempt_fraction_is_checked():
    with pytest.raises(ValueError, match=r"preempt_fraction must be in \[0, 1\] \(0: off\), got 1.5"):
        _dist.PreemptionCounter(1.5, _dist.DistInfo(), min_steps=1)
    with pytest.raises(ValueError, match=r"preempt_fraction must be in \[0, 1\]"):
        ppo_torch.main([*TINY, "--total-timesteps", "32", "--preempt-fraction", "-0.1"])
