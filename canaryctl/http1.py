"""A small HTTP/1.1 client for plain-HTTP upstreams: raw asyncio and httptools' C parser over a
pool of kept-alive connections. The fault proxy's no-fault path and the gateway's calls to
`http://` models both go through it.

The caller writes the request's bytes (head and body, in one write); the answer comes back as
httptools parses it, its headers as bytes and its body as the reads bring it. Nothing is
decoded, re-encoded or wrapped in objects on the way, which costs a fraction of aiohttp's client
per request (docs/chaos.md and docs/gateway.md have the figures). TLS, decompression and
redirects are not here: HTTPS upstreams keep aiohttp's client, and callers ask for
`accept-encoding: identity`.

What it does keep correct: bodies framed by content-length, by chunked transfer-encoding, or by
the connection's end (HTTP/1.0 style); interim 1xx answers skipped; a connect timeout, and a
read timeout that is a silence (no byte for that long), not a cap on a long stream; flow control
(a reader slower than the upstream pauses the socket rather than holding the stream in memory);
and a bound on the connections in use at once (past it, a request waits for one to come back).

A connection goes back to the pool only after a whole answer the upstream lets it keep alive,
and is dropped after `keepalive` idle seconds (by default 2, before uvicorn's 5 s would close it
under us). An upstream that closes one anyway as it is reused is asked again on a new one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

__all__ = ["Answer", "RawUpstream", "UpstreamFailed"]

_IDLE_KEPT = 256
"""Idle connections kept at most; more in flight at once are closed when done."""
_HIGH_WATER = 256 * 1024
"""Bytes of an answer held unsent before the upstream is read no more until they go out."""
_FRAMING = (b"content-length", b"transfer-encoding")
_BODILESS = (204, 304)
"""A body with neither framing header runs to the connection's end (HTTP/1.0 style), except on
the statuses that never have one."""


class UpstreamFailed(Exception):
    """The upstream could not be reached, went silent, or cut its answer short; the message
    says which in a few words. `timed_out` when it was a timeout (connect or silence)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class Answer(asyncio.Protocol):
    """One connection to the upstream, reading one answer at a time: its `headers` (names
    lower-cased), `reason` phrase, and `body()`."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.last_read = 0.0
        self.read_timeout = 0.0
        self.heard = False
        """Whether any byte of the current answer has arrived."""
        self.reused = False
        """Whether this connection served an answer before the current one."""
        self.lent = False
        """Whether a caller has it (between `ask` and `done`): it counts against the bound."""
        self.head: asyncio.Future[int] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.chunks: list[bytes] = []
        self.held = 0
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.keep_alive = False
        self.lost = False
        self.interim = False
        self.paused = False
        self.silent = False
        self.garbled = False
        self.until_close = False
        self._watchdog: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        """Ready for the next answer on this connection, watched for `read_timeout` seconds of
        silence."""
        self.head = loop.create_future()
        self.headers = []
        self.reason = b""
        self.chunks = []
        self.held = 0
        self.done = False
        self.keep_alive = False
        self.until_close = False
        self.heard = False
        self.read_timeout = read_timeout
        self.last_read = time.monotonic()
        self._watchdog = loop.call_later(read_timeout, self._watch)

    def stop(self) -> None:
        """No more watching: the answer is whole, or no longer wanted."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _watch(self) -> None:
        """One timer per answer, not per read: re-armed for what is left of the allowance."""
        silent = time.monotonic() - self.last_read
        if silent >= self.read_timeout:
            self._watchdog = None
            self.silent = True
            self._fail()
        else:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self.read_timeout - silent, self._watch)

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        self.heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.garbled = True
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.until_close and not self.done and self.head is not None and self.head.done():
            self.on_message_complete()  # a body without a length ends with its connection
        self._fail()

    def _fail(self) -> None:
        self.lost = True
        self.stop()
        if self.transport is not None:
            self.transport.close()
        if self.head is not None and not self.head.done():
            self.head.set_exception(UpstreamFailed(self.why(), timed_out=self.silent))
        self._wake()

    def why(self) -> str:
        if self.silent:
            return f"sent nothing for {self.read_timeout:g}s"
        return "sent what is not HTTP" if self.garbled else "closed the connection"

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks --

    def on_status(self, reason: bytes) -> None:
        self.reason += reason  # a phrase split across reads comes in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.interim = 100 <= status < 200 and status != 101
        if self.interim:  # 100 Continue and the like: the answer is the message after it
            self.headers = []
            self.reason = b""
        elif self.head is not None and not self.head.done():
            framed = any(k in _FRAMING for k, _ in self.headers)
            self.until_close = not framed and status not in _BODILESS
            self.head.set_result(status)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.held += len(body)
        if self.held > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()  # the parser forgets it after this
        self.stop()
        self._wake()

    # -- reading an answer --

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower-case), None if the answer has none."""
        return next((value for key, value in self.headers if key == name), None)

    def take(self) -> bytes:
        """What has arrived of the body and not been taken."""
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.held = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until more of the body, its end, or the connection's loss (or silence)."""
        while not (self.chunks or self.done or self.lost):
            self.waiter = loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def body(self, loop: asyncio.AbstractEventLoop) -> AsyncIterator[bytes]:
        """The body as the reads bring it; UpstreamFailed if the upstream cuts it short."""
        while True:
            if self.chunks:
                yield self.take()
            elif self.done:
                return
            elif self.lost:
                if self.silent:
                    raise UpstreamFailed(self.why(), timed_out=True)
                raise UpstreamFailed("cut its answer short")
            else:
                await self.wait(loop)

    async def read(self, loop: asyncio.AbstractEventLoop) -> bytes:
        """The whole body, once it has all arrived."""
        parts = [chunk async for chunk in self.body(loop)]
        return parts[0] if len(parts) == 1 else b"".join(parts)


class RawUpstream:
    """Connections to one plain-HTTP upstream (its base URL's host and port).

    `connect_timeout` bounds opening a connection, `read_timeout` the silence while an answer
    is awaited or read; at most `max_connections` are in use at once (more requests wait); an
    idle connection is kept `keepalive` seconds."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        max_connections: int = 1000,
        keepalive: float = 2.0,
    ) -> None:
        parts = urlsplit(base_url)
        if not self.serves(base_url):
            raise ValueError("RawUpstream speaks plain HTTP to a host, without credentials")
        self.host: str = parts.hostname  # type: ignore[assignment]
        self.port = parts.port or 80
        self.host_header = parts.netloc.encode("idna")
        self.prefix = parts.path.rstrip("/").encode()
        """The base URL's path, before each request's own."""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.keepalive = keepalive
        self._idle: list[Answer] = []
        self._busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @staticmethod
    def serves(base_url: str) -> bool:
        """Whether this client can reach `base_url`: plain HTTP, a host, no credentials (which
        aiohttp turns into an Authorization header), no query or fragment."""
        parts = urlsplit(base_url)
        return (
            parts.scheme == "http"
            and bool(parts.hostname)
            and parts.username is None
            and not parts.query
            and not parts.fragment
        )

    async def ask(self, request: bytes, *, fresh: bool = False) -> tuple[Answer, int]:
        """Send `request` (head and body, with its Host header) and wait for the answer's
        head: the connection, to read the answer from and then `done` with, and the status.

        A kept connection the upstream closes before a byte of the answer was closing when
        the request went out (an idle connection's end races its reuse): the upstream never
        took the request, so it is sent once more on a new connection (`fresh`)."""
        loop = asyncio.get_running_loop()
        if self._busy >= self.max_connections:
            await self._turn(loop)
        self._busy += 1
        try:
            answer = await self._connection(loop, fresh)
        except BaseException:
            self._release()
            raise
        answer.lent = True
        answer.start(loop, self.read_timeout)
        assert answer.transport is not None and answer.head is not None
        answer.transport.write(request)
        try:
            return answer, await answer.head
        except UpstreamFailed as failed:
            self.done(answer)
            if answer.reused and not answer.heard and not failed.timed_out:
                return await self.ask(request, fresh=True)
            raise
        except BaseException:
            self.done(answer)
            raise

    def done(self, answer: Answer) -> None:
        """Back to the pool after a whole answer, when the upstream keeps the connection;
        closed otherwise (the rest of its answer, if any, is not wanted). Once per `ask`: a
        second call does nothing."""
        if not answer.lent:
            return
        answer.lent = False
        self._release()
        answer.stop()
        kept = answer.done and not answer.lost and not answer.chunks
        if kept and answer.keep_alive and len(self._idle) < _IDLE_KEPT:
            answer.idle_since = time.monotonic()
            answer.reused = True
            self._idle.append(answer)
            return
        _close(answer)

    def close(self) -> None:
        for answer in self._idle:
            _close(answer)
        self._idle.clear()

    def _release(self) -> None:
        self._busy -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until fewer than max_connections are in use."""
        while self._busy >= self.max_connections:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken but leaving: the turn goes to the next
                raise

    async def _connection(self, loop: asyncio.AbstractEventLoop, fresh: bool) -> Answer:
        now = time.monotonic()
        while self._idle and not fresh:
            answer = self._idle.pop()
            transport = answer.transport
            kept = now - answer.idle_since < self.keepalive
            if kept and transport is not None and not transport.is_closing():
                return answer
            _close(answer)
        seconds = self.connect_timeout
        try:
            _, answer = await asyncio.wait_for(
                loop.create_connection(Answer, self.host, self.port), seconds
            )
        except TimeoutError:
            message = f"did not accept a connection within {seconds:g}s"
            raise UpstreamFailed(message, timed_out=True) from None
        except OSError as exc:
            raise UpstreamFailed(f"refused the connection: {exc.strerror or exc}") from None
        return answer


def _close(answer: Answer) -> None:
    answer.stop()
    if answer.transport is not None:
        answer.transport.close()
