"""The fault proxy's way to a plain-HTTP upstream while no fault is in force: raw asyncio and
httptools' C parser over a pool of kept-alive connections.

The request goes out as the bytes the client sent (method, path and query as written, headers
bar the hop-by-hop ones) in one write; the answer comes back as httptools parses it, its
headers as bytes and its body as the reads bring it. Nothing is decoded, re-encoded or wrapped
in objects on the way, which halves what the proxy spends relaying a streamed answer compared
with aiohttp's client (docs/chaos.md has the figures). The fault path, HTTPS upstreams and HEAD
requests keep aiohttp's client: they are rare, or need what it does (TLS, a body-less answer to
a request the parser cannot see).

A connection goes back to the pool only after a whole answer the upstream lets it keep alive,
and is dropped after _KEEPALIVE idle seconds, before uvicorn (5 s) would close it under us.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

__all__ = ["RawUpstream", "UpstreamFailed"]

_KEEPALIVE = 2.0
_IDLE_KEPT = 256
"""Idle connections kept at most; more in flight at once are closed when done."""
_HIGH_WATER = 256 * 1024
"""Bytes of an answer held unsent before the upstream is read no more until they go out."""
_FRAMING = (b"content-length", b"transfer-encoding")
_BODILESS = (204, 304)
"""A body with neither framing header runs to the connection's end (HTTP/1.0 style), except on
the statuses that never have one."""
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 300.0
"""Seconds without a byte from the upstream, once asked, before the answer counts as failed."""


class UpstreamFailed(Exception):
    """The upstream could not be reached, went silent, or cut its answer short; the message
    says which in a few words (the proxy's 502 names it)."""


class _Answer(asyncio.Protocol):
    """One connection to the upstream, reading one answer at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.last_read = 0.0
        self.head: asyncio.Future[int] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.held = 0
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.keep_alive = False
        self.lost = False
        self.interim = False
        self.paused = False
        self.silent = False
        self.until_close = False
        self._watchdog: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ready for the next answer on this connection, watched for silence."""
        self.head = loop.create_future()
        self.headers = []
        self.chunks = []
        self.held = 0
        self.done = False
        self.keep_alive = False
        self.until_close = False
        self.last_read = time.monotonic()
        self._watchdog = loop.call_later(_READ_TIMEOUT, self._watch)

    def stop(self) -> None:
        """No more watching: the answer is whole, or no longer wanted."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _watch(self) -> None:
        """One timer per answer, not per read: re-armed for what is left of the allowance."""
        silent = time.monotonic() - self.last_read
        if silent >= _READ_TIMEOUT:
            self._watchdog = None
            self.silent = True
            self._fail()
        else:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(_READ_TIMEOUT - silent, self._watch)

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
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
            self.head.set_exception(UpstreamFailed(self.why()))
        self._wake()

    def why(self) -> str:
        return "sent nothing for 300s" if self.silent else "closed the connection"

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.interim = 100 <= status < 200 and status != 101
        if self.interim:  # 100 Continue and the like: the answer is the message after it
            self.headers = []
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
                raise UpstreamFailed("went silent" if self.silent else "cut its answer short")
            else:
                await self.wait(loop)


class RawUpstream:
    """Connections to one plain-HTTP upstream (its base URL's host and port)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if not self.serves(base_url):
            raise ValueError("RawUpstream speaks plain HTTP to a host, without credentials")
        self.host: str = parts.hostname  # type: ignore[assignment]
        self.port = parts.port or 80
        self.host_header = parts.netloc.encode("idna")
        self.prefix = parts.path.rstrip("/").encode()
        """The base URL's path, before each request's own."""
        self._idle: list[_Answer] = []

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

    async def ask(self, request: bytes) -> tuple[_Answer, int]:
        """Send `request` (head and body, without a Host header) and wait for the answer's
        head: the connection, to read the answer from and then `done` with, and the status."""
        loop = asyncio.get_running_loop()
        answer = await self._connection(loop)
        answer.start(loop)
        assert answer.transport is not None and answer.head is not None
        answer.transport.write(request)
        try:
            return answer, await answer.head
        except BaseException:
            self.drop(answer)
            raise

    def done(self, answer: _Answer) -> None:
        """Back to the pool after a whole answer, when the upstream keeps the connection."""
        answer.stop()
        kept = answer.done and not answer.lost and not answer.chunks
        if kept and answer.keep_alive and len(self._idle) < _IDLE_KEPT:
            answer.idle_since = time.monotonic()
            self._idle.append(answer)
            return
        self.drop(answer)

    @staticmethod
    def drop(answer: _Answer) -> None:
        """Close the connection: the rest of its answer, if any, is not wanted."""
        answer.stop()
        if answer.transport is not None:
            answer.transport.close()

    def close(self) -> None:
        for answer in self._idle:
            self.drop(answer)
        self._idle.clear()

    async def _connection(self, loop: asyncio.AbstractEventLoop) -> _Answer:
        now = time.monotonic()
        while self._idle:
            answer = self._idle.pop()
            transport = answer.transport
            if now - answer.idle_since < _KEEPALIVE and transport and not transport.is_closing():
                return answer
            self.drop(answer)
        try:
            _, answer = await asyncio.wait_for(
                loop.create_connection(_Answer, self.host, self.port), _CONNECT_TIMEOUT
            )
        except TimeoutError:
            raise UpstreamFailed("did not accept a connection within 10s") from None
        except OSError as exc:
            raise UpstreamFailed(f"refused the connection: {exc.strerror or exc}") from None
        return answer
