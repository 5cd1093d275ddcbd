"""Checkpoint I/O for :class:`~worldfm_env.model.dit.WorldFMDiT`.

* Ours: safetensors, with the :class:`DiTConfig` as JSON in the header (``save_checkpoint``), so a file is enough
  to rebuild the model.
* Official: the published ``worldfm_1-step.pth`` / ``worldfm_2-step.pth`` torch pickles, either a bare state dict
  or ``{"state_dict": ...}``, fp32 (read with ``torch.load(weights_only=True)``, so no code in the file runs).

Loading is strict: a ValueError lists every missing, unexpected and mis-shaped key by name. Two published keys are
handled explicitly:

* ``pos_embed`` (a (1, 1024, 1152) sin-cos buffer for a single 64x64 panel) is dropped: the model recomputes
  positions for the concatenated (H/p) x (3W/p) grid of each input, as the published inference also does (it deletes
  the key before loading).
* The text branch (``y_embedder.*``, ``blocks.*.cross_attn.*``, ``plucker_proj.*``) loads into the parameters the
  ``xl`` config creates for it; with ``skip_text_branch=True`` those keys are skipped instead, for a model built
  with ``with_text_branch=False`` (about 456M parameters, what inference uses).

Published source read: ``modules/worldfm_infer.py`` and ``worldfm/download.py`` (repository ``inspatio/worldfm``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from worldfm_env.model.dit import MODEL_CONFIGS, DiTConfig, WorldFMDiT

__all__ = [
    "ANCHOR_COLOUR_METADATA_KEY",
    "CONFIG_METADATA_KEY",
    "LAYOUT_OBSTACLES_METADATA_KEY",
    "SAMPLER_STEPS_METADATA_KEY",
    "SPLAT_RADIUS_METADATA_KEY",
    "TEXT_BRANCH_PATTERN",
    "load_checkpoint",
    "read_metadata",
    "read_state_dict",
    "recommended_sampler_steps",
    "save_checkpoint",
    "trained_anchor_colour",
    "trained_layout_obstacles",
    "trained_silhouettes",
    "trained_splat_radius",
]

CONFIG_METADATA_KEY = "worldfm_env.dit_config"
SAMPLER_STEPS_METADATA_KEY = "worldfm_env.sampler_steps"
"""Header entry naming the distilled sampler (1 or 2 steps) a checkpoint renders best with; the ``worldfm``
renderer uses it when ``sampler_steps`` is not given."""
SPLAT_RADIUS_METADATA_KEY = "worldfm_env.splat_radius"
"""Header entry naming the anchor ``splat_radius`` a frame model was trained on (stage II and distillation write
it); the env warns when it renders anchors with another."""
ANCHOR_COLOUR_METADATA_KEY = "worldfm_env.anchor_colour"
"""Header entry naming the ``anchor_colour`` of the anchors a frame model was trained on (stage II and distillation
write it beside ``worldfm_env.splat_radius``); the env warns when it renders the other."""
SILHOUETTES_METADATA_KEY = "worldfm_env.silhouettes"
"""Header entry naming the anchors' ``silhouettes`` setting a frame model was trained on (stage II and distillation
write it beside ``worldfm_env.anchor_colour``); the env warns when it renders the other."""
LAYOUT_OBSTACLES_METADATA_KEY = "worldfm_env.layout_obstacles"
"""Header entry naming what the navigation layout a layout frame model (``DiTConfig.refiner_layout``) was trained
on is cast against: ``"footprints"`` or ``"cores"`` (:data:`~worldfm_env.scenes.scene.LAYOUT_OBSTACLES_VALUES`;
training writes it for every layout model); the env gives the model that layout."""
DROPPED_KEYS = ("pos_embed",)  # recomputed at run time for the concatenated grid
_LOG = logging.getLogger(__name__)
TEXT_BRANCH_PATTERN = re.compile(r"^(y_embedder\.|plucker_proj\.|blocks\.\d+\.cross_attn\.)")


def save_checkpoint(model: WorldFMDiT, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model``'s state dict to a safetensors file with its config as JSON in the header.

    Tensors are saved in their current dtype, from CPU copies. ``metadata`` adds extra string entries to the header.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, DiTConfig):
        raise ValueError("save_checkpoint needs a WorldFMDiT (a model with a DiTConfig in model.config)")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {"format": "pt", CONFIG_METADATA_KEY: json.dumps(config.to_dict(), sort_keys=True)}
    for k, v in (metadata or {}).items():
        header[str(k)] = str(v)
    save_file(tensors, os.fspath(path), metadata=header)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string entries of a safetensors checkpoint's header (an empty dict for ``.pth`` files)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path!r}")
    if not _is_safetensors(path):
        return {}
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as error:  # safetensors raises its own SafetensorError (and OSError) for bad files
        raise _unreadable(path, "safetensors", error) from error


def _unreadable(path: str, kind: str, error: BaseException) -> ValueError:
    """The one error for a checkpoint file that cannot be read: names the file, the format tried and the cause."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    what = {
        "safetensors": "a safetensors file whose header or tensors cannot be read (truncated, partly written or "
        "corrupt)",
        "torch": "neither a safetensors file nor a torch checkpoint (.pth) that torch.load can read (empty, "
        "truncated, text or another format)",
    }[kind]
    return ValueError(f"checkpoint {path!r} ({size} bytes) is {what}: {type(error).__name__}: {error}")


def recommended_sampler_steps(path: str | os.PathLike) -> int | None:
    """The sampler steps (1 or 2) a checkpoint's header recommends, or None when it names none."""
    value = read_metadata(path).get(SAMPLER_STEPS_METADATA_KEY)
    if value is None:
        return None
    if value not in ("1", "2"):
        raise ValueError(
            f"{os.fspath(path)!r}: header {SAMPLER_STEPS_METADATA_KEY}={value!r}; valid values are 1 and 2"
        )
    return int(value)


def trained_splat_radius(path: str | os.PathLike) -> int | str | None:
    """The anchor ``splat_radius`` a checkpoint's header says it was trained on, or None when it names none."""
    from worldfm_env.render.anchor_config import parse_splat_radius

    value = read_metadata(path).get(SPLAT_RADIUS_METADATA_KEY)
    if value is None:
        return None
    try:
        return parse_splat_radius(value)
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)!r}: header {SPLAT_RADIUS_METADATA_KEY}: {error}") from None


def _trained_choice(path: str | os.PathLike, key: str, values: tuple[str, ...]) -> str | None:
    """The header's ``key`` (one of ``values``); ``"splat"`` when the header names a ``splat_radius`` but not ``key``
    (written before that setting existed, so on plain splats); None when it names neither."""
    metadata = read_metadata(path)
    value = metadata.get(key)
    if value is None:
        return "splat" if SPLAT_RADIUS_METADATA_KEY in metadata else None
    if value not in values:
        valid = ", ".join(map(repr, values))
        raise ValueError(f"{os.fspath(path)!r}: header {key}={value!r}; valid values are {valid}")
    return value


def trained_anchor_colour(path: str | os.PathLike) -> str | None:
    """The ``anchor_colour`` a checkpoint was trained on, or None when its header does not tell.

    The header's ``worldfm_env.anchor_colour`` when it has one. A header that names a ``splat_radius`` but no anchor
    colour was written before anchor colours could be resampled, so by a run on the splat's colours: ``"splat"``.
    A checkpoint that names neither (stage I, ``.pth`` files) gives None.
    """
    from worldfm_env.render.resample import ANCHOR_COLOUR_VALUES

    return _trained_choice(path, ANCHOR_COLOUR_METADATA_KEY, tuple(ANCHOR_COLOUR_VALUES))


def trained_silhouettes(path: str | os.PathLike) -> str | None:
    """The ``silhouettes`` setting a checkpoint was trained on, or None when its header does not tell.

    The header's ``worldfm_env.silhouettes`` when it has one. A header that names a ``splat_radius`` but no
    silhouettes setting was written before the learned choice existed, so by a run on plain splats: ``"splat"``.
    A checkpoint that names neither (stage I, ``.pth`` files) gives None.
    """
    from worldfm_env.render.silhouette import SILHOUETTE_VALUES

    return _trained_choice(path, SILHOUETTES_METADATA_KEY, SILHOUETTE_VALUES)


def trained_layout_obstacles(path: str | os.PathLike) -> str | None:
    """What the layout a layout frame model was trained on is cast against, or None for a model that reads no layout.

    The header's ``worldfm_env.layout_obstacles`` when it has one. A layout model (its config's ``refiner_layout``)
    whose header does not name it was trained before the grids recorded their obstacles' footprints, on layouts cast
    against the obstacle cores: ``"cores"``.
    """
    from worldfm_env.scenes.scene import LAYOUT_OBSTACLES_VALUES

    metadata = read_metadata(path)
    value = metadata.get(LAYOUT_OBSTACLES_METADATA_KEY)
    if value is not None:
        if value not in LAYOUT_OBSTACLES_VALUES:
            valid = ", ".join(map(repr, LAYOUT_OBSTACLES_VALUES))
            key = LAYOUT_OBSTACLES_METADATA_KEY
            raise ValueError(f"{os.fspath(path)!r}: header {key}={value!r}; valid values are {valid}")
        return value
    try:
        config = json.loads(metadata.get(CONFIG_METADATA_KEY, "{}"))
    except ValueError:
        config = {}  # a bad config is reported by the loader, which reads it too
    return "cores" if isinstance(config, dict) and config.get("refiner_layout") else None


def _is_safetensors(path: str) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON object. Torch files are zip ("PK") or pickle.
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], DiTConfig | None]:
    """Read a checkpoint file into ``(state_dict on CPU, config or None)``.

    Accepts our safetensors (config from the header) and the official ``.pth`` layouts (bare dict or
    ``{"state_dict": ...}``). A leading ``module.`` (DistributedDataParallel) on every key is removed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path!r}")
    config = None
    if _is_safetensors(path):
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as error:  # SafetensorError, OSError: truncated or corrupt files
            raise _unreadable(path, "safetensors", error) from error
        if CONFIG_METADATA_KEY in meta:
            try:
                config = DiTConfig.from_dict(json.loads(meta[CONFIG_METADATA_KEY]))
            except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
                raise ValueError(
                    f"checkpoint {path!r}: header {CONFIG_METADATA_KEY} is not a valid model config: {error}"
                ) from error
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # UnpicklingError, EOFError, RuntimeError (bad zip), IndexError, ...
            raise _unreadable(path, "torch", error) from error
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{path!r} is not a state dict (or {{'state_dict': ...}}) of tensors")
        state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, config


def _resolve_config(config: str | DiTConfig | None, file_config: DiTConfig | None) -> DiTConfig:
    if file_config is not None:
        return file_config
    if isinstance(config, DiTConfig):
        return config
    name = config or "xl"  # official .pth files carry no config: they are the xl layout
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model config {name!r}; valid names: {sorted(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[name]


def load_checkpoint(
    model: WorldFMDiT | None,
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    config: str | DiTConfig | None = None,
    skip_text_branch: bool = False,
) -> WorldFMDiT:
    """Load a checkpoint strictly into ``model`` (or into a new model when ``model`` is None) and return it.

    Args:
        model: an existing model, or None to build one: from the file's header config (our safetensors), else from
            ``config`` (a name in ``MODEL_CONFIGS`` or a :class:`DiTConfig`; default ``"xl"`` for official files).
        path: a ``.safetensors`` written by :func:`save_checkpoint` or an official ``.pth``.
        device, dtype: placement of the returned model. ``dtype=None`` keeps an existing model's dtype and gives
            float32 for a new one. New models are built on the meta device and take the loaded tensors directly, so
            the xl model is not initialised twice; they are returned in eval mode.
        skip_text_branch: skip file keys of the unused text branch that the model does not have.

    Raises:
        ValueError: listing missing, unexpected and mis-shaped keys by name (nothing is loaded then).
    """
    state, file_config = read_state_dict(path)
    notes = []
    for key in DROPPED_KEYS:
        if key in state:
            del state[key]
            notes.append(f"dropped {key!r} (positions are recomputed for each input size)")

    built = model is None
    if built:
        with torch.device("meta"):
            model = WorldFMDiT(_resolve_config(config, file_config))
    expected = model.state_dict()
    if skip_text_branch:
        state = {k: v for k, v in state.items() if k in expected or not TEXT_BRANCH_PATTERN.match(k)}

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {os.fspath(path)!r} does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if misshaped:
            lines.append(f"  mis-shaped keys ({len(misshaped)}): {', '.join(misshaped)}")
        if unexpected and any(TEXT_BRANCH_PATTERN.match(k) for k in unexpected):
            lines.append("  (text-branch keys: build with with_text_branch=True or pass skip_text_branch=True)")
        raise ValueError("\n".join(lines))

    if built:
        target = dtype or torch.float32
        cast = {
            k: (v.to(device=device, dtype=target) if v.is_floating_point() else v.to(device)) for k, v in state.items()
        }
        model.load_state_dict(cast, strict=True, assign=True)
        model.eval()
    else:
        model.load_state_dict(state, strict=True)  # copies into the existing tensors (casting as needed)
        if dtype is not None:
            model.to(device=device, dtype=dtype)
        else:
            model.to(device=device)
    for note in notes:
        _LOG.info("%s: %s", os.fspath(path), note)
    return model
