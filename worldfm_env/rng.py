"""Counter-based random numbers for episode sampling, vectorised on the device.

Each env's draws are a hash of (env seed, episode number, draw index), so an env's episodes do not
depend on which other envs share its batch, on how often the others reset, or on the device: the
native vector env, a SyncVectorEnv of single envs and a CUDA run all draw the same episodes.
The hash is Chris Wellons' ``lowbias32`` integer mixer, done in int64 with 32-bit masking.
:func:`hash_normal` turns the same hash into standard normals (Box-Muller) for the frame model's diffusion
noise: one batched computation on the seeds' device, no host sync and no per-env kernel launches.
"""

from __future__ import annotations

import math

import torch

__all__ = ["hash_combine", "hash_int", "hash_normal", "hash_uniform"]

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


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    # In-place _mix32 for large tensors: at most one temporary of x's size alive at a time.
    x.bitwise_xor_(x >> 16)
    _mul32_(x, 0x7FEB352D)
    x.bitwise_xor_(x >> 15)
    _mul32_(x, 0x846CA68B)
    return x.bitwise_xor_(x >> 16)


def _mul32_(x: torch.Tensor, c: int) -> None:
    lo, hi = c & 0xFFFF, c >> 16
    t = (x * hi).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    x.mul_(lo).add_(t).bitwise_and_(_MASK32)


def _row_key(seed: torch.Tensor, counter, stream: int) -> torch.Tensor:
    """(N,) 32-bit key of (seed, counter, stream) per row; ``counter`` is an (N,) tensor or an int."""
    seed = seed.long()
    lo = seed & _MASK32
    hi = (seed >> 32) & _MASK32
    h = _mix32(lo ^ _mix32(hi ^ 0x9E3779B9))
    # An int counter is mixed as a Python int (no host-to-device copy: that would sync a CUDA stream).
    counter = counter.long() if isinstance(counter, torch.Tensor) else int(counter)
    return _mix32(h ^ _mix32((counter & _MASK32) ^ ((stream * 0x85EBCA6B) & _MASK32)))


def hash_int(seed: torch.Tensor, counter: torch.Tensor, count: int, stream: int = 0) -> torch.Tensor:
    """Uniform 32-bit integers in [0, 2**32) as int64, shape (N, count); see :func:`hash_uniform`."""
    h = _row_key(seed, counter, stream)
    k = torch.arange(count, device=seed.device, dtype=torch.long)
    return _mix32(h[:, None] ^ _mix32((k * 0x27D4EB2F + 0x165667B1) & _MASK32)[None, :])


def hash_combine(seed: torch.Tensor, keys: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """One 32-bit hash (N,) int64 per row of ``seed`` (N,) and integer ``keys`` (N, K).

    Row i depends only on ``seed[i]``, ``keys[i]`` (the low 32 bits of each, in order) and ``stream``. The
    columns are mixed in one vectorised pass and folded into the seed's key: about a dozen elementwise kernels
    per column on the seeds' device, no host sync.
    """
    if keys.ndim != 2 or keys.shape[0] != seed.shape[0]:
        raise ValueError(f"keys must be ({seed.shape[0]}, K), got {tuple(keys.shape)}")
    salt = torch.arange(keys.shape[1], device=keys.device, dtype=torch.long) * 0x27D4EB2F + 0x165667B1
    mixed = _mix32((keys.long() & _MASK32) ^ (salt & _MASK32))  # (N, K)
    h = _row_key(seed, 0, stream)
    for column in mixed.unbind(1):
        h = _mix32(h ^ column)
    return h


def hash_uniform(seed: torch.Tensor, counter: torch.Tensor, count: int, stream: int = 0) -> torch.Tensor:
    """Uniform floats in [0, 1), shape (N, count), from per-env ``seed`` (N,) and ``counter`` (N,) int64.

    ``stream`` separates independent uses (e.g. episode sampling vs. renderer noise).
    """
    values = hash_int(seed, counter, count, stream)
    return values.to(torch.float64).div_(4294967296.0).to(torch.float32).clamp_(max=0.99999994)


def hash_normal(seed: torch.Tensor, shape: tuple[int, ...], stream: int = 0, counter=None) -> torch.Tensor:
    """Standard normals, (N, *shape) float32 on ``seed``'s device, from per-row ``seed`` (N,) int64.

    Row i is a function of ``(seed[i], counter[i], stream)`` and the element index only, so it is the same
    whatever else is in the batch, and the same on every call. Element pair ``(2j, 2j + 1)`` of a row (in
    row-major order over ``shape``) is a Box-Muller pair ``r cos(2 pi u2), r sin(2 pi u2)``, ``r = sqrt(-2 log u1)``,
    with ``u1`` in (0, 1] (never 0: no ``log(0)``, normals bounded by about 6.7) and ``u2`` in [0, 1] hashed
    from (row key, j) under two sub-keys; a row's first elements do not depend on ``shape``'s size.

    Args:
        seed: (N,) integer tensor of per-row seeds (all 64 bits are used); the result is on its device.
        shape: per-row shape, e.g. ``(C, H, W)``.
        stream: separates independent draws from the same seeds (e.g. initial noise 0, re-noise 1, 2, ...).
        counter: optional (N,) integer tensor or int mixed into the key (e.g. a step counter); None = 0.

    Fully vectorised: a few dozen elementwise kernels over (N, ceil(numel / 2)) int64 (at most two such
    int64 buffers alive at once: 2 x 50 MB for N = 1024 rows of 3x64x64), no Python loop, no host sync.
    Values agree across devices up to float rounding of ``log``/``cos``/``sin``.
    """
    if not isinstance(seed, torch.Tensor) or seed.ndim != 1:
        raise ValueError(f"seed must be a 1-D (N,) integer tensor, got {getattr(seed, 'shape', type(seed))}")
    if seed.is_floating_point() or seed.is_complex() or seed.dtype == torch.bool:
        raise ValueError(f"seed must be an integer tensor, got dtype {seed.dtype}")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"shape must have non-negative sizes, got {shape}")
    N, numel = seed.shape[0], math.prod(shape)
    pairs = (numel + 1) // 2
    key = _row_key(seed, 0 if counter is None else counter, stream)  # (N,)
    j = torch.arange(pairs, device=seed.device, dtype=torch.long)
    j = _mix32((j * 0x2C1B3C6D + 0x297A2D39) & _MASK32)  # (pairs,) element keys
    # One (N, pairs) int64 buffer, reused for both uniforms; the sub-keys make u1 and u2 independent hashes.
    x = torch.bitwise_xor(_mix32(key ^ 0x68E31DA4)[:, None], j[None, :])
    u1 = _mix32_(x).to(torch.float32).add_(1.0).mul_(2.0**-32)  # (0, 1]
    torch.bitwise_xor(_mix32(key ^ 0xB5297A4D)[:, None], j[None, :], out=x)
    theta = _mix32_(x).to(torch.float32).mul_(2.0 * math.pi * 2.0**-32)  # [0, 2 pi]
    del x
    r = u1.log_().mul_(-2.0).sqrt_()
    cos = torch.cos(theta).mul_(r)
    sin = theta.sin_().mul_(r)
    out = torch.stack((cos, sin), dim=-1)  # (N, pairs, 2): pair j fills elements 2j, 2j + 1
    return out.view(N, 2 * pairs)[:, :numel].reshape(N, *shape)
