"""Run under ``torchrun`` by ``test_distributed.py``: ``agents/ppo_torch.py`` with every rank recording a hash of
its network after each optimizer step (``<out>/hashes_rank<r>.json``).

    torchrun --standalone --nproc_per_node 2 tests/agents/dist_driver.py OUT [ppo_torch arguments ...]

Environment switches of the test: ``DRIVER_SLOW_RANK=r`` makes rank r's env steps 50 ms slower (a straggler, for
the preemption threshold); ``DRIVER_KEEP_RESUME_STATE=1`` leaves the last resume state in place when the run
finishes (a run stopped between its last two updates); ``DRIVER_FREEZE=1`` turns the optimizer's steps off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import ppo_torch  # noqa: E402
from agents._dist import shutdown_distributed  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402


def network_hash(params) -> str:
    """SHA-256 of the bytes of every tensor in ``params``, in order."""
    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    """Train with ``sys.argv[2:]`` and write this rank's per-step network hashes to ``sys.argv[1]``."""
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    rank = int(os.environ.get("RANK", "0"))
    hashes: list[str] = []
    real_step = torch.optim.Adam.step

    def recording_step(self, closure=None):
        result = None if os.environ.get("DRIVER_FREEZE") else real_step(self, closure)
        hashes.append(network_hash(p for group in self.param_groups for p in group["params"]))
        return result

    torch.optim.Adam.step = recording_step
    if os.environ.get("DRIVER_SLOW_RANK") == str(rank):
        real_env_step = WorldFMVectorEnv.step

        def slow_step(self, actions):
            time.sleep(0.05)
            return real_env_step(self, actions)

        WorldFMVectorEnv.step = slow_step
    if os.environ.get("DRIVER_KEEP_RESUME_STATE"):
        ppo_torch._remove_resume_state = lambda path: None
    ppo_torch.main(argv)
    (out / f"hashes_rank{rank}.json").write_text(json.dumps(hashes))
    shutdown_distributed()


if __name__ == "__main__":
    main()
