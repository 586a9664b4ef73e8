"""Serving the dashboard with uvicorn: in the foreground (``coordinator web``) or on a
background thread (tests, screenshots, the benchmark)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

#: Seconds open live streams get to finish when the server stops.
GRACEFUL_SHUTDOWN = 1


class Server(uvicorn.Server):
    """A uvicorn server that tells ``on_bound`` each address it listens on."""

    def __init__(self, config: uvicorn.Config, on_bound: Callable[[str], None] | None = None):
        super().__init__(config)
        self.on_bound = on_bound
        self.urls: list[str] = []

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGINT/SIGTERM stop the server (a second one at once); unlike uvicorn's own
        # handling the signal is not raised again afterwards, so a stop exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
                self.urls.append(url)
                if self.on_bound is not None:
                    self.on_bound(url)


def config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` serves ``app`` on a free loopback port."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = Server(config(app, host, port))
        self._thread = threading.Thread(target=self.server.run, name="coordinator-web", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.urls:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.01)
        return self.server.urls[0]

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=GRACEFUL_SHUTDOWN + 10)
