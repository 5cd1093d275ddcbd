"""Device resolution shared by torch and warp."""

from __future__ import annotations

import functools

import torch

__all__ = ["resolve_device", "warp_device", "init_warp"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` into a torch device."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            _refuse_cuda_after_fork(device)
            return torch.device("cuda:0")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda":
        _refuse_cuda_after_fork(device)
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device='cpu' or 'auto'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _refuse_cuda_after_fork(device) -> None:
    """Raise when this process was forked from one that had initialised CUDA (CUDA cannot work after a fork)."""
    if torch.cuda._is_in_bad_fork():
        raise RuntimeError(
            f"device={device!r} resolves to CUDA, but this process was forked from one that had already initialised "
            "CUDA, and CUDA cannot be used after a fork (start method 'fork'). Start the workers with 'spawn' or "
            "'forkserver' (gym.make_vec(..., vectorization_mode='async', vector_kwargs={'context': 'spawn'}), "
            "SubprocVecEnv(env_fns, start_method='spawn')), or pass device='cpu'"
        )


@functools.cache
def init_warp():
    """Import and initialise warp once (quietly); returns the module."""
    import logging

    import warp as wp

    wp.config.log_level = logging.WARNING  # no banner or per-module load lines
    wp.init()
    return wp


def warp_device(device: torch.device) -> str:
    """The warp device string for a torch device ("cpu" or "cuda:N")."""
    init_warp()
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else 0}"
    return "cpu"
