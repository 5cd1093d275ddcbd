"""Device resolution shared by torch and warp."""

from __future__ import annotations

import functools
import os
import sys
import tempfile

import torch

__all__ = ["resolve_device", "warp_device", "init_warp", "cuda_driver_present"]


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


# What warp's native library prints to stderr at ``wp.init()`` when it cannot load the CUDA driver (libcuda). On a
# machine without an NVIDIA driver that is the expected state, not a problem, so :func:`init_warp` drops this one line.
_NO_DRIVER_WARNING = "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver."


def cuda_driver_present() -> bool:
    """Whether the NVIDIA CUDA driver library can be loaded, probed by the names warp's native library tries."""
    import ctypes

    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so", "libcuda.so.1")
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def _init_without_driver_warning(wp) -> None:
    """``wp.init()`` with the native "no CUDA driver" line removed from stderr; everything else it prints stays.

    The native library writes with C ``fprintf(stderr)``, which Python's ``sys.stderr`` cannot intercept, so file
    descriptor 2 is pointed at a temporary file for the duration of the call and the captured text, less that one
    line, is written back to stderr afterwards. Exceptions from ``wp.init()`` propagate unchanged.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (e.g. closed): nothing to filter
        wp.init()
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        try:
            os.dup2(captured.fileno(), 2)
            try:
                wp.init()
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(_NO_DRIVER_WARNING))
            if kept and sys.stderr is not None:
                sys.stderr.write(kept)
                sys.stderr.flush()


@functools.cache
def init_warp():
    """Import and initialise warp once (quietly); returns the module.

    Quietly: no banner or per-module load lines, and on a machine without an NVIDIA driver no "Could not find or
    load the NVIDIA CUDA driver" warning (CPU-only machines are a supported configuration); any other message warp
    prints at start-up is kept.
    """
    import logging

    import warp as wp

    wp.config.log_level = logging.WARNING  # no banner or per-module load lines
    if sys.platform == "darwin" or cuda_driver_present():
        wp.init()  # warp probes no driver on macOS; with a driver present there is nothing to filter
    else:
        _init_without_driver_warning(wp)
    return wp


def warp_device(device: torch.device) -> str:
    """The warp device string for a torch device ("cpu" or "cuda:N")."""
    init_warp()
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else 0}"
    return "cpu"
