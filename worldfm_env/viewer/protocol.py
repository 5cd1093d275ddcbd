"""The viewer's websocket messages: the key bindings and the checks of what the page sends.

The page sends JSON text messages, each an object with a ``type``:

- ``{"type": "key", "key": "w"}``: one key press (names in :data:`KEY_BINDINGS`; browser names such as
  ``"ArrowUp"`` and ``" "`` are accepted case-insensitively);
- ``{"type": "configure", "scenes": "procedural:test:1", "seed": 0, "renderer": "anchor", "memory": "static"}``:
  rebuild the env (every field optional; ``memory`` only where the env has that option);
- ``{"type": "record", "on": true}``: start (true) or stop (false) recording the session to an MP4;
- ``{"type": "autopilot", "on": true}``: let the ``--policy`` agent drive (``on`` omitted: toggle);
- ``{"type": "hello"}``: ask again for the options and the current frame.

The server answers with ``hello``, ``frame``, ``recorded`` and ``error`` messages (see
:mod:`worldfm_env.viewer.server`); every ``error`` names the field that was wrong and what is valid.
"""

from __future__ import annotations

import json
from typing import Any

from worldfm_env.envs.config import RENDERERS

__all__ = ["KEY_BINDINGS", "KEY_HELP", "MESSAGE_FIELDS", "ProtocolError", "normalize_key", "parse_message"]

KEY_BINDINGS: dict[str, tuple[str, Any]] = {
    "w": ("action", 1),
    "arrowup": ("action", 1),
    "a": ("action", 2),
    "arrowleft": ("action", 2),
    "d": ("action", 3),
    "arrowright": ("action", 3),
    "r": ("action", 4),
    "f": ("action", 5),
    "space": ("action", 0),
    "backspace": ("reset", None),
    "n": ("next_episode", None),
    "1": ("renderer", "worldfm"),
    "2": ("renderer", "anchor"),
    "3": ("renderer", "oracle"),
    "p": ("autopilot", None),
}
"""Key name -> (command, argument). ``action`` commands step the env with that discrete action (0 stop,
1 forward, 2 turn left, 3 turn right, 4 look up, 5 look down); ``reset`` starts the seed's first episode again;
``next_episode`` starts the next one; ``renderer`` switches the renderer at the same pose; ``autopilot`` toggles
the ``--policy`` agent."""

KEY_HELP: list[tuple[str, str]] = [
    ("W / ArrowUp", "forward"),
    ("A / ArrowLeft", "turn left"),
    ("D / ArrowRight", "turn right"),
    ("R / F", "look up / look down"),
    ("Space", "stop (ends the episode; PointNav success if within the goal radius)"),
    ("Backspace", "reset: the seed's first episode again"),
    ("N", "next episode"),
    ("1 / 2 / 3", "renderer worldfm / anchor / oracle, same pose"),
    ("P", "autopilot on/off (with --policy)"),
]
"""(keys, what they do), as shown on the page and in the docs."""

_ALIASES = {" ": "space", "spacebar": "space", "up": "arrowup", "left": "arrowleft", "right": "arrowright"}

MESSAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "key": ("key",),
    "configure": ("scenes", "seed", "renderer", "memory"),
    "record": ("on",),
    "autopilot": ("on",),
    "hello": (),
}
"""Message type -> the fields it may carry (besides ``type``)."""


class ProtocolError(ValueError):
    """A message from the page that is not valid; the text names the bad field and what is valid."""


def normalize_key(key: Any) -> str:
    """The binding name of a key as the browser reports it (``"W"`` -> ``"w"``, ``" "`` -> ``"space"``).

    Raises :class:`ProtocolError` for a key that is not bound, naming the valid keys.
    """
    if not isinstance(key, str) or not key:
        raise ProtocolError(f"field 'key' must be a non-empty string, one of {sorted(KEY_BINDINGS)}; got {key!r}")
    name = key if key == " " else key.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in KEY_BINDINGS:
        raise ProtocolError(f"field 'key' must be one of {sorted(KEY_BINDINGS)}, got {key!r}")
    return name


def parse_message(text: str | bytes | None, memory_modes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Check one websocket message and return it as a dict (``key`` normalised).

    ``memory_modes``: the valid ``memory`` values of ``configure``, or None where the env has no memory option.
    Raises :class:`ProtocolError` naming what is wrong: not JSON, not an object, a missing or unknown ``type``,
    unknown fields, or a field of the wrong type or value.
    """
    if text is None or isinstance(text, (bytes, bytearray)):
        raise ProtocolError(
            'binary messages are not accepted: send JSON text, an object such as {"type": "key", "key": "w"}'
        )
    try:
        message = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProtocolError(
            f"message is not valid JSON ({err.msg} at character {err.pos}): send an object such as "
            '{"type": "key", "key": "w"}'
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object with a 'type' field, got a JSON {type(message).__name__}")
    kind = message.get("type")
    if kind not in MESSAGE_FIELDS:
        missing = "missing" if "type" not in message else f"{kind!r}"
        raise ProtocolError(f"field 'type' must be one of {sorted(MESSAGE_FIELDS)}, got {missing}")
    allowed = MESSAGE_FIELDS[kind]
    unknown = sorted(set(message) - {"type", *allowed})
    if unknown:
        raise ProtocolError(f"unknown field(s) {unknown} in a {kind!r} message; valid fields: {list(allowed)}")
    out: dict[str, Any] = {"type": kind}
    if kind == "key":
        if "key" not in message:
            raise ProtocolError(f"field 'key' is missing; give one of {sorted(KEY_BINDINGS)}")
        out["key"] = normalize_key(message["key"])
    elif kind == "configure":
        if "scenes" in message:
            scenes = message["scenes"]
            if not isinstance(scenes, str) or not scenes.strip():
                raise ProtocolError(
                    f"field 'scenes' must be a non-empty scene spec string (e.g. 'procedural:test:1'), got {scenes!r}"
                )
            out["scenes"] = scenes.strip()
        if "seed" in message:
            seed = message["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ProtocolError(f"field 'seed' must be an int >= 0, got {seed!r}")
            out["seed"] = seed
        if "renderer" in message:
            if message["renderer"] not in RENDERERS:
                raise ProtocolError(f"field 'renderer' must be one of {list(RENDERERS)}, got {message['renderer']!r}")
            out["renderer"] = message["renderer"]
        if "memory" in message:
            if memory_modes is None:
                raise ProtocolError(
                    "field 'memory' is not available: this version's EnvConfig has no memory option; leave it out"
                )
            if message["memory"] not in memory_modes:
                raise ProtocolError(f"field 'memory' must be one of {list(memory_modes)}, got {message['memory']!r}")
            out["memory"] = message["memory"]
    elif kind in ("record", "autopilot"):
        if "on" in message:
            if not isinstance(message["on"], bool):
                raise ProtocolError(f"field 'on' must be true or false, got {message['on']!r}")
            out["on"] = message["on"]
        elif kind == "record":
            raise ProtocolError("field 'on' is missing; give true (start recording) or false (stop)")
    return out
