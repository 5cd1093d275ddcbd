"""``worldfm-env view``: a local web page that drives one env from the keyboard.

:mod:`~worldfm_env.viewer.session` holds the env and everything the page shows (:class:`Session`),
:mod:`~worldfm_env.viewer.server` the Starlette app with its websocket (:func:`create_app`, :func:`serve`),
:mod:`~worldfm_env.viewer.protocol` the key bindings and message checks, :mod:`~worldfm_env.viewer.topdown` the
map. The server parts need the ``viewer`` extra (``pip install 'worldfm-env[viewer]'``: starlette, uvicorn).
"""

from __future__ import annotations

from worldfm_env.viewer.protocol import KEY_BINDINGS, KEY_HELP, ProtocolError, parse_message
from worldfm_env.viewer.session import Session

__all__ = ["KEY_BINDINGS", "KEY_HELP", "ProtocolError", "Session", "create_app", "parse_message", "serve"]


def create_app(*args, **kwargs):
    """:func:`worldfm_env.viewer.server.create_app` (imported on first use: it needs starlette)."""
    from worldfm_env.viewer.server import create_app as _create_app

    return _create_app(*args, **kwargs)


def serve(*args, **kwargs):
    """:func:`worldfm_env.viewer.server.serve` (imported on first use: it needs starlette and uvicorn)."""
    from worldfm_env.viewer.server import serve as _serve

    return _serve(*args, **kwargs)
