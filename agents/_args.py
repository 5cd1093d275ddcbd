"""Typed command-line arguments of the agent scripts: a thin layer over :mod:`worldfm_env._config`.

Each field of an ``Args`` dataclass becomes ``--field-name`` (underscores as dashes); its help text is the string
literal written under the field, as in :class:`worldfm_env.EnvConfig`. Booleans get ``--x/--no-x``; ``T | None``
fields take a ``T`` and default to ``None``. :func:`env_kwargs` picks the environment options out of an ``Args``.
"""

from __future__ import annotations

from typing import Any

from worldfm_env._config import field_docs, parse_dataclass_args, pick_fields

__all__ = ["WORLDFM_ONLY", "env_kwargs", "field_docs", "parse_args"]

parse_args = parse_dataclass_args
"""``parse_args(Args, argv=None, description=None)``: :func:`worldfm_env._config.parse_dataclass_args`."""

WORLDFM_ONLY = (
    "weights",
    "vae",
    "compile_model",
    "sampler_steps",
    "teacher_steps",
    "model_dtype",
    "noise",
    "noise_key",
)
"""Environment options of ``renderer="worldfm"`` alone: :func:`env_kwargs` leaves them out for the other renderers."""


def env_kwargs(args: object, **overrides: Any) -> dict[str, Any]:
    """The :class:`~worldfm_env.envs.config.EnvConfig` options of a script's ``args``, ``overrides`` on top.

    Every attribute of ``args`` named like an ``EnvConfig`` field is taken (a field added to ``EnvConfig`` needs no
    copy here, only a same-named argument); ``overrides`` replace or add options (a device of another name, a parsed
    ``splat_radius``, values read from a checkpoint). The ``renderer="worldfm"`` options (:data:`WORLDFM_ONLY`) are
    dropped for the other renderers, and an empty ``weights`` is dropped (the env's default then applies).
    """
    from worldfm_env.envs.config import EnvConfig

    kwargs = {**pick_fields(EnvConfig, args), **overrides}
    if kwargs.get("renderer", EnvConfig.renderer) != "worldfm":
        kwargs = {k: v for k, v in kwargs.items() if k not in WORLDFM_ONLY}
    if "weights" in kwargs and not kwargs["weights"]:
        del kwargs["weights"]
    return kwargs
