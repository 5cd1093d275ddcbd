"""Helpers of the viewer tests: the server in a thread on a free port, and Debian's Chromium for Playwright.

Run as a script, it takes the screenshot of the docs (the frame model at 64x64 after a few key presses):

    python tests/viewer/browser_harness.py docs/viewer.png
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def chromium_executable() -> str | None:
    """Path of Debian's Chromium (``apt-get install chromium``; ``make browser`` installs it), or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(session) -> Iterator[str]:
    """Serve ``session`` with uvicorn in a thread; yields the base URL (``http://127.0.0.1:PORT``)."""
    import uvicorn

    from worldfm_env.viewer.server import create_app

    port = free_port()
    config = uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="viewer-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the viewer server did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for_frame(page, after: int, timeout_ms: int = 60_000) -> int:
    """Wait until the page shows a frame newer than ``after``; returns its sequence number."""
    page.wait_for_function("s => Number(document.body.dataset.seq || 0) > s", arg=after, timeout=timeout_ms)
    return int(page.evaluate("Number(document.body.dataset.seq)"))


def take_screenshot(out: str) -> None:
    """Open the viewer (frame model, 64x64, growing memory when the env has it) in Chromium, drive a few steps
    and save a screenshot of the page to ``out``."""
    from playwright.sync_api import sync_playwright

    from worldfm_env.viewer.session import Session, memory_modes

    modes = memory_modes()
    memory = "grow" if modes is not None and "grow" in modes else None
    session = Session(scenes="procedural:test:1", seed=0, renderer="worldfm", memory=memory, device="cpu")
    executable = chromium_executable()
    if executable is None:
        raise SystemExit("Chromium is not installed: apt-get install chromium (or make browser)")
    with running_server(session) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url + "/")
        seq = wait_for_frame(page, 0)
        # Turn from the start's wall towards the open room, then walk into it.
        for key in ["d"] * 10 + ["w"] * 4:
            page.keyboard.press(key)
            seq = wait_for_frame(page, seq)
        page.screenshot(path=out, full_page=True)
        browser.close()
    session.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    take_screenshot(sys.argv[1] if len(sys.argv) > 1 else "docs/viewer.png")
