"""How canaryctl serves HTTP: one uvicorn set-up for every server it starts (the gateway, lab
providers, the controller's API, the chaos proxy, the guard's webhook).

Every server binds its socket first (so port 0 yields a known free port) and runs uvicorn with
the protocol below, which adds what uvicorn leaves out: deadlines for a request's head and body
and a bound on the head's size (canaryctl.request_limits.ServerLimits). Without them a client
that opens a connection and sends nothing, or half a request, holds it for ever, and a server's
memory goes with thousands of them. The limits an app can see (in-flight counts, body sizes)
are its middleware's: `limited` adds it, and every server's app is built with it.

- The head's deadline runs from the connection's opening, or from the first byte of the next
  request on a kept-alive connection; past it: 408 and the connection closes. A head larger
  than `max_header_bytes`: 431, closed.
- The body's deadline runs from the end of its head to its last byte; past it: 408 and closed,
  unless the app has begun to answer (then only a finished answer's connection is closed).
Between requests uvicorn's keep-alive timeout (5 s) closes idle connections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from canaryctl.errors import InvalidInput
from canaryctl.request_limits import (
    BodyBudget,
    LimitBody,
    LimitInFlight,
    RenderError,
    ServerLimits,
    plain_error,
)

__all__ = ["BackgroundServer", "bind", "limited", "server_for"]


def limited(app: Starlette, limits: ServerLimits, render: RenderError = plain_error) -> Starlette:
    """`app` held to `limits` by the middleware that sees requests, outermost: in-flight counts,
    so a refused request buffers nothing; then the body's size, and the bytes all bodies hold.
    `render` writes an error in the dialect of the request's path."""
    budget = BodyBudget(limits.max_buffered_bytes)
    # each add_middleware goes outside the ones before it
    app.add_middleware(LimitBody, max_bytes=limits.max_body_bytes, render=render, budget=budget)
    app.add_middleware(LimitInFlight, limits=limits, render=render)
    return app


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _response(status: int, message: str) -> bytes:
    """A whole HTTP response written by the protocol, before or instead of the app's."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_COALESCE_BYTES = 64 * 1024
"""Writes held for one turn of the event loop are sent at once past this size, so a response
written in one go cannot pile up memory before flow control sees it."""


class CoalescingTransport:
    """A transport whose writes in one turn of the event loop go out as one.

    uvicorn writes a response's head and its body separately, and on loopback each write is a
    system call in which the kernel also delivers the data to the reader: for a whole response
    in one turn (any non-streamed answer) that is one write instead of two. Writes of a
    stream's chunks, each in its own turn, are as before. Anything else is the transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._size += len(data)
        if self._size > _COALESCE_BYTES:
            self.flush()

    def flush(self) -> None:
        """Send what is held (a no-op when nothing is)."""
        pending, self._pending, self._size = self._pending, [], 0
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, lines: Iterable[bytes]) -> None:
        for data in lines:
            self.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """What was written before is sent first, as it was without holding."""
        self.flush()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head and body, writing
    through a CoalescingTransport; `limits` is set on a subclass per server (server_for)."""

    limits: ServerLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes: int | None = 0
        """Bytes read of the current request's head; None while its body is read or answered."""

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _end(self, status: int | None, message: str = "") -> None:
        """Answer `status` (unless None) and close: nothing more is read from this client."""
        self._disarm()
        if not self.transport.is_closing():
            if status is not None:
                self.transport.write(_response(status, message))
            self.transport.close()

    def _expired(self, phase: str) -> None:
        self._deadline = None
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if phase == "head":
            seconds = self.limits.header_timeout
            # a head still arriving behind an answer in progress: closing is all we may do
            self._end(None if busy else 408, f"the request's head took more than {seconds:g}s")
        elif not cycle.response_started:
            self._end(408, f"the request's body took more than {self.limits.body_timeout:g}s")
        elif cycle.response_complete:
            self._end(None)
        # else the app is answering without the rest of the body: let it finish

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm(self.limits.header_timeout, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Counted while a head is read; checked only if the head is still unfinished after the
        # parser has seen `data`, so a body in the same read is never taken for a head.
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        limit = self.limits.max_header_bytes
        if self._head_bytes is not None and self._head_bytes > limit:
            self._end(431, f"the request's head is larger than {limit} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.limits.header_timeout, "head")

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        super().on_headers_complete()
        if upgrade:  # the connection goes to uvicorn's WebSocket protocol, and out of ours
            self._disarm()
        else:
            self._arm(self.limits.body_timeout, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._head_bytes = 0


_BACKLOG = 2048
"""uvicorn's default backlog; its server listens again with the same one."""


def server_for(
    app: ASGIApp,
    limits: ServerLimits | None = None,
    *,
    lifespan: str = "on",
    grace: float | None = 3.0,
) -> uvicorn.Server:
    """A uvicorn server for `app` with `limits`' deadlines (default: ServerLimits()); `grace`
    is how long in-flight requests may finish at shutdown (None: as long as they take)."""
    protocol = type("LimitedProtocol", (_LimitedProtocol,), {"limits": limits or ServerLimits()})
    config = uvicorn.Config(
        app,
        http=protocol,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=grace,
    )
    return uvicorn.Server(config)


def bind(host: str, port: int, what: str = "--listen") -> socket.socket:
    """A socket bound to host:port (port 0: a free one) and listening; InvalidInput naming
    `what` if not. It listens at once because with SO_REUSEADDR two sockets may both bind a
    port that neither listens on yet: the second to listen would fail later, inside the
    server's start, instead of here with the address in the message."""
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted sockets (no 40 ms delayed ACKs).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"{what}: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


class BackgroundServer:
    """An ASGI app served on 127.0.0.1 from a daemon thread; `url` once started."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ServerLimits | None = None,
    ) -> None:
        self._sock = bind(host, port)
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._server = server_for(app, limits)
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
