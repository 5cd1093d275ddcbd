"""Counter-based random numbers for episode sampling, vectorised on the device.

Each env's draws are a hash of (env seed, episode number, draw index), so an env's episodes do not
depend on which other envs share its batch, on how often the others reset, or on the device: the
native vector env, a SyncVectorEnv of single envs and a CUDA run all draw the same episodes.
The hash is Chris Wellons' ``lowbias32`` integer mixer, done in int64 with 32-bit masking.
"""

from __future__ import annotations

import torch

__all__ = ["hash_int", "hash_uniform"]

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 without overflowing int64: split c into 16-bit halves.
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_int(seed: torch.Tensor, counter: torch.Tensor, count: int, stream: int = 0) -> torch.Tensor:
    """Uniform 32-bit integers in [0, 2**32) as int64, shape (N, count); see :func:`hash_uniform`."""
    seed = seed.long()
    lo = seed & _MASK32
    hi = (seed >> 32) & _MASK32
    h = _mix32(lo ^ _mix32(hi ^ 0x9E3779B9))
    h = _mix32(h ^ _mix32((counter.long() & _MASK32) ^ ((stream * 0x85EBCA6B) & _MASK32)))
    k = torch.arange(count, device=seed.device, dtype=torch.long)
    return _mix32(h[:, None] ^ _mix32((k * 0x27D4EB2F + 0x165667B1) & _MASK32)[None, :])


def hash_uniform(seed: torch.Tensor, counter: torch.Tensor, count: int, stream: int = 0) -> torch.Tensor:
    """Uniform floats in [0, 1), shape (N, count), from per-env ``seed`` (N,) and ``counter`` (N,) int64.

    ``stream`` separates independent uses (e.g. episode sampling vs. renderer noise).
    """
    values = hash_int(seed, counter, count, stream)
    return values.to(torch.float64).div_(4294967296.0).to(torch.float32).clamp_(max=0.99999994)
