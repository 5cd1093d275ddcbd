"""The frame models shipped in the package and how ``weights=`` finds one: a path, a shipped name, or the default."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["WEIGHTS_DIR", "default_weights_path", "resolve_weights", "shipped_resolutions", "shipped_weights"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def default_weights_path(height: int, width: int, sampler_steps: int | None = None) -> Path | None:
    """The shipped checkpoint for a resolution, if the package has one.

    Students distilled for one sampler are named ``weights/worldfm-<config>-<k>step-<H>x<W>.safetensors``; with
    ``sampler_steps=k`` that file is preferred, then any ``worldfm-*-<H>x<W>.safetensors`` (2-step first).
    """
    if sampler_steps is not None:
        exact = sorted(WEIGHTS_DIR.glob(f"worldfm-*-{int(sampler_steps)}step-{height}x{width}.safetensors"))
        if exact:
            return exact[0]
    candidates = sorted(WEIGHTS_DIR.glob(f"worldfm-*-{height}x{width}.safetensors"))
    candidates.sort(key=lambda p: "2step" not in p.name)
    return candidates[0] if candidates else None


def shipped_weights() -> dict[str, Path]:
    """The frame models in the package, by name (the file's stem): ``{"worldfm-srd-64x64": path, ...}``.

    The default model of each resolution sits in ``weights/``; earlier ones, kept for speed or comparison,
    in ``weights/earlier/`` (e.g. ``"worldfm-s-64x64"``, about 1.4x the env-steps/s at 64x64 on a CPU); others that
    ship by name but are not a default in ``weights/other/`` (e.g. ``"worldfm-srgbd-64x64"``, an RGB-D model).
    """
    return {p.stem: p for p in sorted(WEIGHTS_DIR.rglob("*.safetensors"))}


def resolve_weights(weights: str | os.PathLike) -> Path:
    """The checkpoint file that ``weights=`` names: a path to a file, or the name of a shipped model
    (:func:`shipped_weights`). A name that is neither raises ValueError listing the shipped names."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    shipped = shipped_weights()
    if str(weights) in shipped:
        return shipped[str(weights)]
    raise ValueError(
        f"weights={str(weights)!r}: no such checkpoint file, nor the name of a shipped model "
        f"(shipped: {sorted(shipped)})"
    )


def shipped_resolutions() -> list[str]:
    """The resolutions a default model ships for, as ``"HxW"`` strings (``["64x64"]``), from the file names in
    ``weights/`` (the earlier models in ``weights/earlier/`` are not defaults)."""
    found = {m.group(1) for p in WEIGHTS_DIR.glob("worldfm-*.safetensors") if (m := re.search(r"-(\d+x\d+)$", p.stem))}
    return sorted(found, key=lambda r: tuple(int(v) for v in r.split("x")))
