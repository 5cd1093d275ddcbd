"""Fork safety: envs built in a process forked from one that already ran torch on the CPU.

torch's CPU wheels run their intra-op thread pool on GNU OpenMP (``libgomp``), which is not fork-safe: once the
parent has run one parallel region (any large enough tensor op, e.g. building an env's scene pool), a forked child
inherits libgomp's record of a worker team whose threads do not exist in the child, and the child's first parallel
region waits at a barrier for them forever. This is what hung ``gym.make_vec(..., vectorization_mode="async")``
(start method ``fork``, the Linux default) and ``SubprocVecEnv(..., start_method="fork")``: the parent builds one
env to read the spaces, then forks the workers, and each worker's env hung building its scene pool.

:func:`install` (called by ``import worldfm_env``, so before any fork that could matter) registers a child-side
fork hook that sets torch's intra-op threads to one in every forked child of a process that has imported torch:
torch then runs every op inline, never entering an OpenMP parallel region, so nothing waits for the missing
threads. Forked workers therefore compute single-threaded (the usual choice when each worker is a process);
calling ``torch.set_num_threads(k)`` with ``k > 1`` in such a child brings the hang back. Workers started with
``spawn`` or ``forkserver`` start a fresh OpenMP runtime and keep torch's default thread count. warp's CPU state
survives a fork (its kernels run in the calling thread). CUDA cannot be used after a fork at all: that case is
refused with a clear error when the env resolves its device (:func:`worldfm_env._device.resolve_device`).

This module imports nothing heavy (it is loaded by ``import worldfm_env``).
"""

from __future__ import annotations

import os
import sys

__all__ = ["install", "forked_child_threads_limited"]

_installed = False
_limited = False


def _after_fork_in_child() -> None:
    """Child side of a fork: run torch single-threaded when the parent had torch loaded (see the module docstring)."""
    global _limited
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return  # torch not (fully) imported in the parent: the child starts a fresh OpenMP runtime when it imports it
    try:
        if torch.get_num_threads() > 1:
            torch.set_num_threads(1)
            _limited = True
    except Exception:  # pragma: no cover - a torch whose backend refuses the change is fork-safe by itself
        pass


def install() -> None:
    """Register the fork hook once per process (idempotent; a no-op where ``os.register_at_fork`` is missing)."""
    global _installed
    if _installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _installed = True


def forked_child_threads_limited() -> bool:
    """Whether this process is a forked child whose torch intra-op threads the fork hook set to one."""
    return _limited
