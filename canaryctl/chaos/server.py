"""Serving the fault proxy: in the foreground for `canaryctl chaos proxy`, or on a background
thread for tests and benchmarks. Both bind the socket first, so port 0 yields a known free port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from canaryctl.errors import InvalidInput

__all__ = ["BackgroundServer", "bind", "server_for"]


def bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted sockets (no 40 ms delayed ACKs).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"--listen: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def server_for(app: ASGIApp) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


class BackgroundServer:
    """An ASGI app served on 127.0.0.1 from a daemon thread; `url` once started."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = bind(host, port)
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._server = server_for(app)
        self._thread = threading.Thread(target=self._run, name="canaryctl-server", daemon=True)

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        waited = threading.Event()
        while not self._server.started and self._thread.is_alive():
            waited.wait(0.01)
            timeout -= 0.01
            if timeout <= 0:
                raise RuntimeError("the server did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
