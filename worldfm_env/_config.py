"""Dataclass configs: strict merging of option dicts, and command lines built from the fields.

Ground floor: imports only the standard library (no torch, no other package module), so every config module
can use it.

* :func:`strict_kwargs` checks option names against a dataclass's fields: an unknown name is a ``ValueError``
  that names it, suggests the closest valid names and lists them all.
* :func:`add_dataclass_arguments` turns each field into ``--field-name`` with the string literal written under
  the field (:func:`field_docs`) as its help and its default shown; :func:`parse_dataclass_args` parses a
  command line straight into an instance.
* :func:`check_one_of` is the "must be one of" check of string options.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import textwrap
import types as _types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "add_dataclass_arguments",
    "check_one_of",
    "field_docs",
    "field_names",
    "parse_dataclass_args",
    "pick_fields",
    "strict_kwargs",
]


def field_names(cls: type) -> list[str]:
    """The field names of dataclass ``cls`` (or of a dataclass instance), in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls``, whitespace collapsed (absent when none)."""
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


def strict_kwargs(cls: type, values: Mapping[str, Any], what: str = "option", where: str = "") -> dict[str, Any]:
    """``values`` as a dict after checking that every key is a field of dataclass ``cls``.

    An unknown key raises ``ValueError``: "unknown WHAT 'key'[ for WHERE][; did you mean [...]?] (valid WHATs:
    [...])", with up to 3 close matches (difflib) per unknown key and every valid key in field order. ``what``
    names one key (``"environment option"``, ``"DiTConfig key"``, ``"training option"``); ``where`` optionally
    names the receiver (``"build_model"``).
    """
    valid = field_names(cls)
    unknown = [key for key in values if key not in valid]
    if unknown:
        hints = {key: difflib.get_close_matches(str(key), valid, n=3) for key in unknown}
        if len(unknown) == 1:
            named = f"{what} {unknown[0]!r}"
            hint = f"; did you mean {hints[unknown[0]]}?" if hints[unknown[0]] else ""
        else:
            named = f"{what}s {unknown}"
            found = ", ".join(f"{match} for {key!r}" for key, match in hints.items() if match)
            hint = f"; did you mean {found}?" if found else ""
        place = f" for {where}" if where else ""
        raise ValueError(f"unknown {named}{place}{hint} (valid {what}s: {valid})")
    return dict(values)


def pick_fields(cls: type, source: object, skip: Collection[str] = ()) -> dict[str, Any]:
    """The attributes of ``source`` named like a field of dataclass ``cls`` (those in ``skip`` aside).

    E.g. the environment options of a script's arguments: ``pick_fields(EnvConfig, args)``; a field added to
    ``cls`` is taken as soon as ``source`` has it, with no copy to keep in step.
    """
    return {name: getattr(source, name) for name in field_names(cls) if name not in skip and hasattr(source, name)}


def check_one_of(name: str, value: Any, valid: Iterable[Any]) -> None:
    """Raise ``ValueError("NAME must be one of [...], got VALUE")`` unless ``value`` is in ``valid``."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")


def _field_type(hint: Any) -> tuple[Any, bool, bool]:
    """(base type, optional, list) of a field annotation: ``int`` -> (int, False, False), ``str | None`` ->
    (str, True, False), ``list[int] | None`` -> (int, True, True). Unions of several types keep the union
    as base (they need an explicit ``types`` entry)."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, _types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) == 1:
            hint = args[0]
    if typing.get_origin(hint) in (list, tuple) or hint in (list, tuple):
        items = typing.get_args(hint)
        if len(items) == 1 or (len(items) == 2 and items[1] is Ellipsis):
            return items[0], optional, True
        return hint, optional, False
    return hint, optional, False


def _default(f: dataclasses.Field) -> Any:
    """The default value of dataclass field ``f`` (``MISSING`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Collection[str] = (),
    types: Mapping[str, Callable[[str], Any]] | None = None,
    choices: Mapping[str, Iterable[Any]] | None = None,
    defaults_none: bool = False,
) -> None:
    """Add ``--field-name`` (underscores as dashes) for each field of dataclass ``cls`` not in ``skip``.

    The help of an option is the string literal written under its field (:func:`field_docs`), followed by the
    field's default. ``bool`` fields become ``--x/--no-x``; ``T | None`` fields take a ``T``; ``list[T]`` fields
    take one or more ``T`` (``nargs="+"``). ``types`` maps field names to the ``type=`` callable of their option
    (needed for unions such as ``int | str``, e.g. ``{"splat_radius": splat_radius_arg}``); ``choices`` maps
    field names to their valid values. With ``defaults_none`` every option defaults to None (the help still shows
    the field's default), so that the options given on the command line can be told apart and merged over a
    config file's. Fields of another type (dicts, unions without a ``types`` entry) raise ``TypeError``: skip them
    or give their type.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    types = dict(types or {})
    choices = dict(choices or {})
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        base, _, many = _field_type(hints[f.name])
        default = _default(f)
        shown = "" if default is dataclasses.MISSING else str(default)
        # argparse %-formats help texts; "%(default).0s" shows nothing but tells ArgumentDefaultsHelpFormatter
        # that the default is already in the text (it would add "(default: None)" with defaults_none).
        help_text = docs.get(f.name, "").replace("%", "%%")
        if shown:
            help_text = f"{help_text} (default: {shown.replace('%', '%%')})%(default).0s".lstrip()
        kwargs: dict[str, Any] = {
            "default": None if defaults_none or default is dataclasses.MISSING else default,
            "help": help_text,
        }
        if f.name in choices:
            kwargs["choices"] = list(choices[f.name])
        if default is dataclasses.MISSING and not defaults_none:
            kwargs["required"] = True
        flag = "--" + f.name.replace("_", "-")
        if f.name in types:
            kwargs["type"] = types[f.name]
        elif base is bool and not many:
            action = parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            action.help = help_text  # Python < 3.13 appends its own "(default: ...)"
            continue
        elif isinstance(base, type) and base in (int, float, str):
            kwargs["type"] = base
            if "choices" not in kwargs:  # else argparse shows them
                kwargs["metavar"] = base.__name__.upper()
        else:
            raise TypeError(
                f"{cls.__name__}.{f.name}: no command-line form for {hints[f.name]!r}; pass types= or skip="
            )
        if many:
            kwargs["nargs"] = "+"
        parser.add_argument(flag, **kwargs)


def parse_dataclass_args(
    cls: type[T],
    argv: list[str] | None = None,
    description: str | None = None,
    **options: Any,
) -> T:
    """Parse ``argv`` (``sys.argv[1:]`` when None) into an instance of dataclass ``cls``.

    The parser's description is ``description`` or the class docstring; ``--help`` lists every field with its
    help and default. ``options`` (``skip``, ``types``, ``choices``) go to :func:`add_dataclass_arguments`.
    """
    parser = argparse.ArgumentParser(
        description=description or (inspect.getdoc(cls) or ""),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(parser, cls, **options)
    return cls(**vars(parser.parse_args(argv)))
