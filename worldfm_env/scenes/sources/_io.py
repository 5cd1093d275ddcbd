"""Shared file readers of the scene sources: images, depth maps, array conversion, default camera height."""

from __future__ import annotations

import tokenize
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

__all__ = ["PathLike", "ArrayLike", "naming_source", "read_depth"]

_DEFAULT_CAMERA_HEIGHT = 1.5  # scene units; only used for PLY scenes, which carry no camera

PathLike = str | Path
ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _read_image(src: PathLike | ArrayLike, field: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a file path or an array (uint8, or float in [0, 1])."""
    if isinstance(src, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        path = Path(src)
        if not path.is_file():
            raise ValueError(f"{field}: image file {str(path)!r} does not exist (expected a PNG/JPEG RGB image)")
        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{field}: {str(path)!r} is not a readable image (expected PNG/JPEG RGB): {err}") from err
    arr = _to_numpy(src)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{field}: image array must be (H, W, 3) RGB, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        # Float images are taken as [0, 1] (the usual convention of torch pipelines).
        return np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"{field}: image array must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def read_depth(src: PathLike | ArrayLike, field: str = "depth") -> np.ndarray:
    """Read a depth map as (H, W) float32 in scene units; 0 marks invalid pixels.

    Args:
        src: a ``.npy`` file (float depth in scene units), a 16-bit single-channel PNG (millimetres,
            divided by 1000 here; 0 = invalid), or an (H, W) array/tensor.
        field: name used in error messages.

    Returns:
        (H, W) float32 depth with non-finite and negative values set to 0.

    Raises:
        ValueError: missing file, unsupported extension, 8-bit PNG, or not a 2-D map.
    """
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise ValueError(f"{field}: depth file {str(path)!r} does not exist (expected .npy or 16-bit .png)")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            # EOFError: an empty or truncated file; SyntaxError / TokenError: a damaged header, which numpy parses
            # as a Python literal
            except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as err:
                raise ValueError(f"{field}: {str(path)!r} is not a readable .npy array: {err}") from err
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"{field}: {str(path)!r} must hold a numeric depth array, got dtype {arr.dtype}")
            arr = arr.astype(np.float32)
        elif suffix == ".png":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    mode = im.mode
                    raw = np.array(im)
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"{field}: {str(path)!r} is not a readable PNG image: {err}") from err
            # 16-bit PNGs open as "I;16*" (or "I" in some Pillow versions); 8-bit ones cannot hold millimetres.
            if not (mode.startswith("I;16") or mode == "I") or raw.ndim != 2:
                raise ValueError(
                    f"{field}: depth PNG {str(path)!r} must be 16-bit single-channel millimetres, got mode {mode!r}"
                )
            arr = raw.astype(np.float32) / 1000.0
        else:
            raise ValueError(
                f"{field}: unsupported depth file {str(path)!r}; expected .npy (float, scene units) "
                "or .png (16-bit, millimetres)"
            )
    else:
        arr = _to_numpy(src).astype(np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{field}: depth must be a 2-D (H, W) map, got shape {tuple(arr.shape)}")
    return np.where(np.isfinite(arr) & (arr > 0), arr, 0.0).astype(np.float32)


@contextmanager
def naming_source(source: str) -> Iterator[None]:
    """Re-raise a ``ValueError`` from the body with ``source`` (e.g. ``"PLY file 'x.ply'"``) in front, the original
    chained: a loader's later steps (navigation, bank rendering) then name the file they came from."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
