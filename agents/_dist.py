"""The small ``torch.distributed`` helpers of the agent scripts and benchmarks run under ``torchrun``.

One process (no ``torchrun``, or ``WORLD_SIZE=1``) is world size 1: every helper here is then a no-op that returns
its input, so the scripts run exactly as they do without ``torchrun``. Under ``torchrun --nproc_per_node N`` each
rank binds its local GPU (``LOCAL_RANK``) and joins an NCCL group, or a gloo group on the CPU.

What the scripts use:

- :func:`init_distributed` / :class:`DistInfo`: the process group, this rank and the world size;
- :func:`rank_device`: the device of this rank (``auto`` and ``cuda`` become ``cuda:<LOCAL_RANK>``);
- :func:`shard_scenes`: this rank's share of a scene spec (DD-PPO: each worker trains on its own scenes);
- :func:`shard_range`: this rank's contiguous block of ``n`` items (held-out episodes);
- :func:`broadcast_parameters`: rank 0's initial network on every rank;
- :func:`average_gradients`: the explicit all-reduce (mean) of a module's gradients (DD-PPO's synchronous update);
- :func:`all_reduce_sum`, :func:`all_reduce_max`, :func:`gather_objects`, :func:`broadcast_object`: the few
  collectives the scripts need for logging, gathering CSV rows and sharing rank 0's decisions;
- :class:`PreemptionCounter`: DD-PPO's preemption of stragglers, a counter in the process group's store;
- :func:`shutdown_distributed`: leave the group as a script ends.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "PreemptionCounter",
    "all_reduce_max",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "broadcast_object",
    "broadcast_parameters",
    "dist_info",
    "gather_objects",
    "init_distributed",
    "rank_device",
    "shard_range",
    "shard_scenes",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the run: its rank, the world size and its rank on this machine."""

    rank: int = 0
    """Global rank (0 on one process)."""
    world_size: int = 1
    """Number of processes (1 without torchrun)."""
    local_rank: int = 0
    """Rank on this machine (``LOCAL_RANK``): the index of its GPU."""

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that logs and writes files."""
        return self.rank == 0


def _wants_cuda(device: str) -> bool:
    """Whether ``device`` (auto, cpu, cuda, cuda:N) resolves to CUDA on this machine."""
    device = str(device)
    if device.startswith("cuda"):
        return True
    return device == "auto" and torch.cuda.is_available()


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by ``torchrun`` with ``WORLD_SIZE`` > 1 (once; later calls return the same
    :class:`DistInfo`), else return world size 1 and start nothing.

    ``device`` is the script's ``--device``: where it resolves to CUDA, this rank binds ``cuda:<LOCAL_RANK>`` and the
    group uses NCCL; on the CPU it uses gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if _wants_cuda(device):
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK={local_rank} has no GPU: this machine has {torch.cuda.device_count()}; start at most "
                    f"that many processes per node (--nproc_per_node), or pass --device cpu"
                )
            torch.cuda.set_device(local_rank)  # bind before NCCL picks a GPU
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return dist_info()


def dist_info() -> DistInfo:
    """This process's :class:`DistInfo` from the initialised process group (world size 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: str, info: DistInfo) -> str:
    """The device this rank runs on: under torchrun ``auto`` (with CUDA present) and ``cuda`` become
    ``cuda:<local rank>``; anything else (``cpu``, ``cuda:N``, one process) is returned unchanged."""
    if not info.distributed:
        return device
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"cuda:{info.local_rank}"
    return device


def shard_scenes(spec: str, info: DistInfo) -> str | list[str]:
    """This rank's share of the scenes named by ``spec`` (DD-PPO: each worker has its own training scenes).

    The spec is expanded (``procedural:train`` is 4 procedural scenes, ``procedural:train:8`` is 8, a path is one
    file) and rank r takes scenes r, r + W, r + 2W, ... as a list of single-scene specs. With fewer scenes than
    ranks, rank r takes scene ``r mod count`` alone (scenes are then shared by several ranks). World size 1
    returns ``spec`` unchanged.
    """
    if not info.distributed:
        return spec
    from worldfm_env.scenes.catalog import parse_scene_spec

    entries = parse_scene_spec(spec)
    specs = [f"procedural:seed:{value}" if kind == "procedural" else str(value) for kind, value in entries]
    if len(specs) < info.world_size:
        return [specs[info.rank % len(specs)]]
    return specs[info.rank :: info.world_size]


def shard_range(n: int, info: DistInfo) -> range:
    """This rank's contiguous block of ``range(n)``: rank r of W gets ``[r n / W, (r + 1) n / W)`` (block sizes
    differ by at most one; a rank may get an empty block when ``n`` < W)."""
    return range(info.rank * n // info.world_size, (info.rank + 1) * n // info.world_size)


def average_gradients(parameters: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce (mean over ranks) the gradients of ``parameters`` in one flat buffer, in place.

    A parameter without a gradient on this rank counts as a zero gradient (and gets one), so every rank reduces
    the same buffer. No-op on one process.
    """
    if not info.distributed:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers of ``module`` to every rank, in place (no-op on one process)."""
    if not info.distributed:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum over ranks of ``values`` (a new tensor; ``values`` itself on one process)."""
    if not info.distributed:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total


def all_reduce_max(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The element-wise maximum over ranks of ``values`` (a new tensor; ``values`` itself on one process)."""
    if not info.distributed:
        return values
    top = values.clone()
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return top


def gather_objects(obj: object, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` on one process."""
    if not info.distributed:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: object, info: DistInfo, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself on one process."""
    if not info.distributed:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.distributed:
        dist.barrier()


def shutdown_distributed() -> None:
    """Leave the process group, after every rank got here (no-op when there is none). Call it once, as a script
    ends: a gloo group left to the interpreter's exit can abort the process (``terminate called without an active
    exception``) after its work is done."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class PreemptionCounter:
    """DD-PPO's preemption threshold: once ``fraction`` of the ranks have collected their whole rollout, the others
    stop collecting (after at least ``min_steps`` steps) and train on the steps they have.

    The count lives in the process group's key-value store (the ``torchrun`` rendezvous store), one key per update:
    a rank that finished its rollout calls :meth:`finished`; a rank still collecting calls :meth:`should_stop` after
    each step, one store round trip (no collective, so the ranks need not be in step). ``fraction`` 0 switches it
    off (every rank collects its whole rollout); on one process it is always off.
    """

    def __init__(self, fraction: float, info: DistInfo, min_steps: int) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"preempt_fraction must be in [0, 1] (0: off), got {fraction}")
        self.enabled = fraction > 0 and info.distributed
        self.needed = max(1, math.ceil(fraction * info.world_size))
        self.min_steps = min_steps
        self.store = None
        if self.enabled:
            self.store = dist.PrefixStore("worldfm_ppo_preempt/", dist.distributed_c10d._get_default_store())

    def finished(self, update: int) -> None:
        """Count this rank as done collecting the rollout of ``update``."""
        if self.enabled:
            self.store.add(str(update), 1)

    def should_stop(self, update: int, steps_done: int) -> bool:
        """Whether a rank that has collected ``steps_done`` steps of ``update``'s rollout should stop now."""
        if not self.enabled or steps_done < self.min_steps:
            return False
        return self.store.add(str(update), 0) >= self.needed
