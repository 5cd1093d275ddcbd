"""The viewer's web server: a Starlette app with one websocket, served by uvicorn.

Routes: ``/`` the page (``static/index.html``), ``/static/...`` its script and style, ``/ws`` the websocket
(messages in :mod:`worldfm_env.viewer.protocol`), ``/recordings/<name>`` the MP4s this session recorded.

Every client talks to one :class:`~worldfm_env.viewer.session.Session`. A single worker task applies what the
clients sent (in one worker thread, so the env is only touched from there) and sends each new ``frame`` to every
client; a message that cannot be read gets an ``error`` reply at once and the connection stays open.

Server messages: ``hello`` (options and keys, on connecting), ``frame`` (images as base64 PNG, pose, reward,
pointgoal, metrics), ``recorded`` (a finished MP4: its name and URL), ``error`` (``message`` names the bad field
and what is valid).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from worldfm_env.viewer.protocol import ProtocolError, parse_message
from worldfm_env.viewer.session import Session

__all__ = ["STATIC_DIR", "DEFAULT_HOST", "DEFAULT_PORT", "Session", "create_app", "serve"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page's files, shipped in the package."""
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

log = logging.getLogger(__name__)


class _Client:
    """One websocket connection; sends are serialised (the reader and the worker both send)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            with contextlib.suppress(Exception):  # a client that went away is dropped by its reader
                await self.websocket.send_json(message)


class _Hub:
    """The clients of one session and the worker that applies their messages."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.clients: set[_Client] = set()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worldfm-view")
        self.wake: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None

    async def run(self, fn, *args):
        """Run ``fn(*args)`` in the session's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _ensure_worker(self) -> None:
        if self.worker is None or self.worker.done():
            self.wake = asyncio.Event()
            self.worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        while True:
            try:
                if self.session.autopilot:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), timeout=1.0 / self.session.fps)
                else:
                    await self.wake.wait()
                self.wake.clear()
                result = await self.run(self.session.process)
                for origin, message in result.errors:
                    targets = [origin] if origin in self.clients else list(self.clients)
                    for client in targets:
                        await client.send({"type": "error", "message": message})
                for notice in result.notices:
                    await self._broadcast(notice)
                if result.frame is not None:
                    await self._broadcast(result.frame)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one failure stop the viewer
                log.exception("viewer worker step failed")
                await asyncio.sleep(0.1)

    async def _broadcast(self, message: dict[str, Any]) -> None:
        for client in list(self.clients):
            await client.send(message)

    async def endpoint(self, websocket: WebSocket) -> None:
        """The ``/ws`` websocket: ``hello`` and the current frame, then messages until the client leaves."""
        await websocket.accept()
        client = _Client(websocket)
        self._ensure_worker()
        self.clients.add(client)
        try:
            await client.send(await self.run(self.session.hello_message))
            await client.send(await self.run(self.session.frame_message))
            while True:
                event = await websocket.receive()
                if event["type"] == "websocket.disconnect":
                    break
                try:
                    text = event.get("text")
                    message = parse_message(event.get("bytes") if text is None else text, self.session.memory_modes)
                except ProtocolError as err:
                    await client.send({"type": "error", "message": str(err)})
                    continue
                if message["type"] == "hello":
                    await client.send(await self.run(self.session.hello_message))
                    await client.send(await self.run(self.session.frame_message))
                    continue
                try:
                    self.session.post(message, origin=client)
                except ProtocolError as err:
                    await client.send({"type": "error", "message": str(err)})
                    continue
                self.wake.set()
        except WebSocketDisconnect:
            pass
        finally:
            self.clients.discard(client)

    async def close(self) -> None:
        """Stop the worker, finish a recording and close the env."""
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(BaseException):
                await self.worker
        await self.run(self.session.close)
        self.executor.shutdown(wait=True)


def create_app(session: Session | None = None, **session_options: Any) -> Starlette:
    """The viewer's ASGI app (Starlette) around ``session``, or a new ``Session(**session_options)``.

    The session is closed when the app shuts down (its lifespan). ``app.state.session`` is the session.
    """
    if session is None:
        session = Session(**session_options)
    elif session_options:
        raise ValueError(f"give a session or session options, not both (got options {sorted(session_options)})")
    hub = _Hub(session)

    async def index(request):
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def recording(request):
        name = request.path_params["name"]
        # Only the viewer's MP4s in the session's record folder, by plain file name.
        plain = "/" not in name and "\\" not in name and name.startswith("worldfm-view-") and name.endswith(".mp4")
        if not plain or not (session.record_dir / name).is_file():
            raise HTTPException(404, f"no recording named {name!r}; names look like worldfm-view-<time>.mp4")
        return FileResponse(session.record_dir / name, media_type="video/mp4", filename=name)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await hub.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/recordings/{name}", recording),
            WebSocketRoute("/ws", hub.endpoint),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.session = session
    return app


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "warning", **session_options) -> int:
    """Build a session, then serve the viewer on ``host:port`` until interrupted (Ctrl+C). Returns 0."""
    import uvicorn

    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    print(
        f"worldfm-env view: building the env ({session_options.get('scenes', 'procedural:test:1')}, "
        f"renderer {session_options.get('renderer', 'worldfm')}) ...",
        flush=True,
    )
    app = create_app(**session_options)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this address can drive the viewer", flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"worldfm-env view: open http://{shown}:{port}/ in a browser (Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
    return 0
