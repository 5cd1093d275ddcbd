"""Typed command-line arguments from a dataclass, with plain argparse (no extra dependency).

Each field becomes ``--field-name`` (underscores as dashes); its help text is the string literal
written under the field, as in :class:`worldfm_env.EnvConfig`. Booleans get ``--x/--no-x``;
``T | None`` fields take a ``T`` and default to ``None``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["parse_args", "field_docs"]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (empty when there is none)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # pragma: no cover - source unavailable (frozen apps)
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _scalar_type(hint: Any) -> tuple[type, bool]:
    """(base type, optional) of a field annotation such as ``int``, ``str | None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported argument type {hint!r}")
        return args[0], True
    return hint, False


def parse_args(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse ``argv`` (``sys.argv[1:]`` when None) into an instance of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    parser = argparse.ArgumentParser(
        description=description or (inspect.getdoc(cls) or ""),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(cls):
        base, _ = _scalar_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = docs.get(f.name, "")
        if base is bool:
            parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, type=base, default=default, help=help_text, metavar=base.__name__.upper())
    namespace = parser.parse_args(argv)
    return cls(**vars(namespace))
