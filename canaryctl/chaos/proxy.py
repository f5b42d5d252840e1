"""The fault proxy: a reverse proxy in front of one LLM provider that injects faults per request.

Requests go to the upstream and the answer comes back untouched unless a fault hits.
Faults act where a client would see them: before any byte (error, rate_limit, timeout, reset),
before the upstream is asked (latency), inside an SSE stream (slow_first_token, stream_cut,
stream_stall, malformed) or instead of the answer (empty_completion, content_filter).

While no fault is in force (the common case: a proxy left in front of a provider between drills)
a request costs what relaying it costs and no more: the forwarding path is plain ASGI, below
Starlette's routing and response classes; its body is neither parsed nor matched against
anything; to a plain-HTTP upstream it goes out as the client's bytes and the answer's bytes come
back as httptools parses them, over kept-alive connections (canaryctl/http1.py); a
streamed answer is relayed chunk by chunk as each network read brings it; nothing is logged.
The fault path, HTTPS upstreams and HEAD requests use aiohttp's client (its C parser and pool
cost a fraction of httpx's per request); docs/chaos.md has the measured figures.

The admin API lives under ADMIN_PREFIX on the same listener, answers loopback clients only unless
told otherwise, and wants `Authorization: Bearer <token>`; only /metrics is open, for Prometheus.
A POST with an `Idempotency-Key` header names the fault by that key, so a client that retries
after losing the answer gets the fault it added, not a second one. Client bodies are bounded
(request_limits.py): a 413 past `max_body_bytes`, on the admin API and the forwarding path alike.

`reset` and `stream_cut` drop the TCP connection with an RST. ASGI has no verb for that, so the
outermost layer keeps the server's transport from uvicorn's `send` (uvicorn's RequestResponseCycle
owns it); under a server that does not expose it, the response is cut short instead.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from urllib.parse import quote

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from yarl import URL

from canaryctl.chaos.admin import ADMIN_PREFIX, IDEMPOTENCY_KEY
from canaryctl.chaos.faults import (
    ActiveFault,
    FaultIdTaken,
    FaultTable,
    RequestFacts,
    draw_delay,
    new_fault_id,
)
from canaryctl.chaos.responses import (
    broken_chunk,
    error_body,
    rate_limit_headers,
    shape_for,
    synthetic_completion,
    synthetic_stream,
)
from canaryctl.http1 import RawUpstream, UpstreamFailed
from canaryctl.redact import redact_url
from canaryctl.request_limits import (
    DEFAULT_MAX_BODY_BYTES,
    BadJSON,
    ServerLimits,
    clip,
    parse_json,
)
from canaryctl.runbook.scenario import FaultSpec
from canaryctl.serving import limited

__all__ = ["ProxyMetrics", "create_proxy_app"]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"accept-encoding",  # identity upstream (below), so SSE faults can read the events
    }
)
_IDENTITY = ("accept-encoding", "identity")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_EVENT_END = re.compile(rb"\r?\n\r?\n")
_TRANSPORT = "canaryctl.transport"
_STREAMED = ("text/event-stream", "application/x-ndjson")
"""Media types relayed chunk by chunk (OpenAI's SSE, Ollama's NDJSON); others are read whole."""
_STREAMED_BYTES = tuple(media.encode() for media in _STREAMED)
_POOL_SIZE = 1000
_KEEPALIVE = 2.0
"""Idle connections are dropped before servers commonly drop them (uvicorn: 5 s), so a request
is never sent down a connection the upstream is closing."""
_UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=300.0)
_UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError, UpstreamFailed)
_TARGETS_KEPT = 1024
"""Upstream URLs remembered by path and query (_Proxy._target): a few hundred kB at most."""
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
"""aiohttp adds none of its own headers: the upstream sees the client's."""


class ProxyMetrics:
    """Counters Prometheus scrapes from ADMIN_PREFIX/metrics; one registry per proxy app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chaos_proxy_requests_total",
            "Requests that reached the proxy (admin API excluded)",
            registry=self.registry,
        )
        self.injected = Counter(
            "chaos_proxy_faults_injected_total",
            "Requests a fault hit, by fault type",
            ["fault"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "chaos_proxy_upstream_errors_total",
            "Requests the proxy could not forward (upstream unreachable or timed out)",
            registry=self.registry,
        )
        self.active = Gauge(
            "chaos_proxy_active_faults", "Faults in force at scrape time", registry=self.registry
        )


def create_proxy_app(
    upstream: str,
    *,
    token: str,
    table: FaultTable | None = None,
    rng: random.Random | None = None,
    admin_from_anywhere: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> ASGIApp:
    """A proxy to `upstream` (base URL); tests pass their own fault table and random generator.
    A client body over `max_body_bytes` is a 413, never forwarded."""
    if not token:
        raise ValueError("the admin API needs a token")
    proxy = _Proxy(
        upstream.rstrip("/"),
        token,
        table or FaultTable(),
        rng or random.Random(),
        admin_from_anywhere=admin_from_anywhere,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(
            limit=_POOL_SIZE, keepalive_timeout=_KEEPALIVE, enable_cleanup_closed=True
        )
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=_UPSTREAM_TIMEOUT,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
        ) as session:
            proxy.session = session
            proxy.raw = RawUpstream(proxy.upstream) if RawUpstream.serves(proxy.upstream) else None
            try:
                yield
            finally:
                if proxy.raw is not None:
                    proxy.raw.close()

    admin = [
        Route("/faults", proxy.list_faults, methods=["GET"]),
        Route("/faults", proxy.add_fault, methods=["POST"]),
        Route("/faults", proxy.reset_faults, methods=["DELETE"]),
        Route("/faults/{fault_id}", proxy.remove_fault, methods=["DELETE"]),
        Route("/metrics", proxy.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=[Mount(ADMIN_PREFIX, routes=admin)], lifespan=lifespan)
    app.add_middleware(_Forward, proxy=proxy)  # innermost: inside the limits `limited` adds
    return _KeepTransport(limited(app, _limits(max_body_bytes), _refused))


class _KeepTransport:
    """Puts the server's transport in the scope, so a fault can drop the connection."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            owner = getattr(send, "__self__", None)
            scope = {**scope, _TRANSPORT: getattr(owner, "transport", None)}
        await self.app(scope, receive, send)


class _Forward:
    """Sends every request outside the admin API to the proxy, past Starlette's routing."""

    def __init__(self, app: ASGIApp, proxy: _Proxy) -> None:
        self.app, self.proxy = app, proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_admin(scope["path"]):
            await self.app(scope, receive, send)
        elif scope["method"] not in _METHODS:
            await JSONResponse({"error": "method not allowed"}, 405)(scope, receive, send)
        else:
            await self.proxy.forward(scope, receive, send)


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


async def _drop_connection(scope: Scope) -> bool:
    """Close the client's connection with an RST; False when the server hides its transport."""
    transport = scope.get(_TRANSPORT)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0)  # let the server see the connection go before the app returns
    return True


def _client_gone(scope: Scope) -> bool:
    """Whether the client has hung up; never, under a server that hides its transport."""
    transport = scope.get(_TRANSPORT)
    return transport is not None and transport.is_closing()


def _limits(max_body_bytes: int) -> ServerLimits:
    """The default limits, with room for at least one body of `max_body_bytes` in memory."""
    buffered = max(max_body_bytes, ServerLimits.max_buffered_bytes)
    return ServerLimits(max_body_bytes=max_body_bytes, max_buffered_bytes=buffered)


def _refused(scope: Scope, status: int, message: str) -> dict[str, object]:
    if scope["path"].startswith(ADMIN_PREFIX):
        return {"error": message}
    return {"error": {"message": f"chaos proxy: {message}", "type": "invalid_request_error"}}


async def _body(receive: Receive) -> bytes:
    """The request's body: one message under LimitBody, which has read it whole already."""
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body", False):
        message = await receive()
        body += message.get("body", b"")
    return body


def _facts(scope: Scope, body: bytes) -> RequestFacts:
    model, stream = None, False
    try:
        data = parse_json(body) if body else None
    except BadJSON:
        data = None  # not JSON: matched on its path and headers only
    if isinstance(data, dict):
        model = data.get("model") if isinstance(data.get("model"), str) else None
        stream = data.get("stream") is True
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return RequestFacts(scope["path"], model, stream, headers)


async def _events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-cut a byte stream into whole SSE events (each ending with its blank line)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while match := _EVENT_END.search(buffer):
            yield buffer[: match.end()]
            buffer = buffer[match.end() :]
    if buffer:
        yield buffer


class _Proxy:
    def __init__(
        self,
        upstream: str,
        token: str,
        table: FaultTable,
        rng: random.Random,
        *,
        admin_from_anywhere: bool,
    ) -> None:
        self.upstream = upstream
        self.table = table
        self.rng = rng
        self.metrics = ProxyMetrics()
        self.session: aiohttp.ClientSession
        self.raw: RawUpstream | None = None
        """The no-fault path's client for a plain-HTTP upstream (canaryctl/http1.py)."""
        self.admin_from_anywhere = admin_from_anywhere
        self._token = token
        self._targets: dict[tuple[bytes, bytes], URL] = {}

    # -- admin API --

    def _refuse(self, request: Request, *, need_token: bool = True) -> Response | None:
        host = request.client.host if request.client else ""
        if not self.admin_from_anywhere and host not in _LOOPBACK:
            return JSONResponse({"error": "the admin API answers loopback clients only"}, 403)
        if not need_token:
            return None
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, 401)
        return None

    async def list_faults(self, request: Request) -> Response:
        if refused := self._refuse(request):
            return refused
        now = self.table.now()
        return JSONResponse({"faults": [f.to_dict(now) for f in self.table.active()]})

    async def add_fault(self, request: Request) -> Response:
        if refused := self._refuse(request):
            return refused
        fault_id = request.headers.get(IDEMPOTENCY_KEY) or new_fault_id()
        try:
            spec = FaultSpec.model_validate(parse_json(await request.body()))
            fault, added = self.table.put(spec, fault_id)
        except FaultIdTaken:
            message = f"{IDEMPOTENCY_KEY}: fault {fault_id} is in force with another spec"
            return JSONResponse({"error": message}, 409)
        except ValueError as exc:  # BadJSON, ValidationError, a malformed id alike
            return JSONResponse({"error": _validation_message(exc)}, 422)
        return JSONResponse(fault.to_dict(self.table.now()), 201 if added else 200)

    async def remove_fault(self, request: Request) -> Response:
        if refused := self._refuse(request):
            return refused
        fault_id = request.path_params["fault_id"]
        if not self.table.remove(fault_id):
            return JSONResponse({"error": f"no fault {clip(fault_id)} (expired or removed)"}, 404)
        return JSONResponse({"removed": fault_id})

    async def reset_faults(self, request: Request) -> Response:
        if refused := self._refuse(request):
            return refused
        return JSONResponse({"removed": self.table.reset()})

    async def metrics_endpoint(self, request: Request) -> Response:
        if refused := self._refuse(request, need_token=False):
            return refused
        self.metrics.active.set(len(self.table.active()))
        return Response(generate_latest(self.metrics.registry), media_type="text/plain")

    # -- the proxy --

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        self.metrics.requests.inc()
        if self.table.idle():  # no fault in force: nothing to parse, match or roll
            if self.raw is not None and scope["method"] != "HEAD":
                await self._pass(scope, send, body, self.raw)
            else:
                await self._relay(scope, send, body)
            return
        facts = _facts(scope, body)
        fault = self.table.pick(facts, self.rng)
        if fault is None:
            await self._relay(scope, send, body)
            return
        spec = fault.spec
        self.metrics.injected.labels(fault=spec.fault).inc()
        shape = shape_for(facts.path, spec.shape)
        response: Response | None = None
        match spec.fault:
            case "error":
                status = spec.status or 503
                response = JSONResponse(error_body(status, shape), status)
            case "rate_limit":
                headers = rate_limit_headers(spec.retry_after or 1.0)
                response = JSONResponse(error_body(429, shape), 429, headers=headers)
            case "reset":
                if await _drop_connection(scope):
                    return  # nothing more can reach the client: the connection is gone
                response = _cut_short()
            case "timeout":
                await self._hold(receive, fault)
                response = JSONResponse(error_body(504, shape), 504)
            case "empty_completion" | "content_filter" as kind:
                model = facts.model or "unknown"
                if facts.stream:
                    events = synthetic_stream(model, kind, shape)
                    response = StreamingResponse(_iterate(events), media_type="text/event-stream")
                else:
                    response = JSONResponse(synthetic_completion(model, kind, shape))
            case "latency":
                await asyncio.sleep(draw_delay(spec, self.rng))
                await self._relay(scope, send, body)
                return
        if response is not None:
            await response(scope, receive, send)
        else:
            await self._relay(scope, send, body, receive, fault)

    async def _hold(self, receive: Receive, fault: ActiveFault) -> None:
        """Until the client hangs up or the fault expires, whichever comes first."""

        async def hung_up() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        remaining = max(0.0, fault.expires_at - self.table.now())
        with suppress(TimeoutError):
            await asyncio.wait_for(hung_up(), remaining)

    async def _pass(self, scope: Scope, send: Send, body: bytes, raw: RawUpstream) -> None:
        """The no-fault relay: the client's request as bytes to the upstream, the answer's
        bytes back as they come (the same answer `_relay` gives, without aiohttp's objects)."""
        if self._target(scope) is None:
            await _unforwardable(scope, send)
            return
        target = scope.get("raw_path") or quote(scope["path"]).encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        head = [scope["method"].encode(), b" ", raw.prefix, target, b" HTTP/1.1\r\nhost: "]
        head.append(raw.host_header)
        for name, value in scope["headers"]:
            if name not in _HOP_BY_HOP:
                head += (b"\r\n", name, b": ", value)
        head.append(b"\r\naccept-encoding: identity\r\ncontent-length: %d\r\n\r\n" % len(body))
        head.append(body)
        try:
            answer, status = await raw.ask(b"".join(head))
        except UpstreamFailed as exc:
            await self._upstream_failed(scope, send, str(exc))
            return
        try:
            kept = [(k, v) for k, v in answer.headers if k not in _HOP_BY_HOP]
            media = next((v for k, v in answer.headers if k == b"content-type"), b"")
            loop = asyncio.get_running_loop()
            if not media.startswith(_STREAMED_BYTES):
                content = []
                try:
                    async for chunk in answer.body(loop):
                        content.append(chunk)
                except UpstreamFailed as exc:
                    await self._upstream_failed(scope, send, str(exc))
                    return
                whole = b"".join(content)
                kept.append((b"content-length", b"%d" % len(whole)))
                await send({"type": "http.response.start", "status": status, "headers": kept})
                await send({"type": "http.response.body", "body": whole})
                return
            await send({"type": "http.response.start", "status": status, "headers": kept})
            await _send_stream(scope, send, answer.body(loop))
        finally:
            raw.done(answer)

    async def _relay(
        self,
        scope: Scope,
        send: Send,
        body: bytes,
        receive: Receive | None = None,
        fault: ActiveFault | None = None,
    ) -> None:
        """The upstream's answer to the request, sent on as it comes; `fault` (with `receive`,
        to see the client hang up) changes a stream or a body on the way."""
        target = self._target(scope)
        if target is None:
            await _unforwardable(scope, send)
            return
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in _HOP_BY_HOP
        ]
        headers.append(_IDENTITY)
        try:
            upstream = await self.session.request(
                scope["method"], target, headers=headers, data=body, allow_redirects=False
            )
        except aiohttp.InvalidURL:
            await _unforwardable(scope, send)
            return
        except _UPSTREAM_ERRORS as exc:
            await self._upstream_failed(scope, send, type(exc).__name__)
            return
        try:
            lowered = [(k.lower(), v) for k, v in upstream.raw_headers]
            kept = [(k, v) for k, v in lowered if k not in _HOP_BY_HOP]
            if not upstream.headers.get("content-type", "").startswith(_STREAMED):
                # A whole answer is read whole: cheaper than relaying it, and just as faithful.
                try:
                    content = await upstream.read()
                except _UPSTREAM_ERRORS:
                    await self._upstream_failed(scope, send, "cut its answer short")
                    return
                if fault is not None and fault.spec.fault == "malformed":
                    content = content[: len(content) // 2]
                kept.append((b"content-length", str(len(content)).encode()))
                start = {"type": "http.response.start", "status": upstream.status, "headers": kept}
                await send(start)
                await send({"type": "http.response.body", "body": content})
                return
            await send({"type": "http.response.start", "status": upstream.status, "headers": kept})
            if fault is None or receive is None:
                chunks = upstream.content.iter_any()
            else:
                chunks = self._faulty_stream(scope, receive, upstream, fault)
            await _send_stream(scope, send, chunks)
        finally:
            upstream.release()

    def _target(self, scope: Scope) -> URL | None:
        """The upstream URL for the request's path and query as the client wrote them, None if
        it cannot be one. Clients of an LLM provider ask a handful of paths again and again, so
        each is parsed once; past _TARGETS_KEPT different ones the memo starts over."""
        path = scope.get("raw_path") or quote(scope["path"]).encode()
        key = (path, scope["query_string"])
        target = self._targets.get(key)
        if target is None:
            url = self.upstream + path.decode("latin-1")
            if key[1]:
                url += "?" + key[1].decode("latin-1")
            try:
                target = URL(url, encoded=True)
            except (ValueError, TypeError):
                return None
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            self._targets[key] = target
        return target

    async def _upstream_failed(self, scope: Scope, send: Send, what: str) -> None:
        self.metrics.upstream_errors.inc()
        message = f"chaos proxy: upstream {redact_url(self.upstream)} failed ({what})"
        response = JSONResponse({"error": {"message": message, "type": "upstream_error"}}, 502)
        await response(scope, _no_receive, send)

    async def _faulty_stream(
        self, scope: Scope, receive: Receive, upstream: aiohttp.ClientResponse, fault: ActiveFault
    ) -> AsyncIterator[bytes]:
        spec = fault.spec
        after = spec.after_chunks if spec.after_chunks is not None else 1
        sent = 0
        async for event in _events(upstream.content.iter_any()):
            if spec.fault == "slow_first_token" and sent == 0:
                await asyncio.sleep(spec.delay if spec.delay is not None else 1.0)
            elif sent == after and spec.fault == "stream_cut":
                if not await _drop_connection(scope):
                    raise _StreamCut
                return
            elif sent == after and spec.fault == "stream_stall":
                await self._hold(receive, fault)
            elif sent == after and spec.fault == "malformed":
                event = broken_chunk()
            sent += 1
            yield event


async def _send_stream(scope: Scope, send: Send, chunks: AsyncIterator[bytes]) -> None:
    """Each chunk as it comes, until the stream ends, the upstream cuts it (the client sees it
    end short, as we did) or the client hangs up (nothing more is read from the upstream)."""
    try:
        async for chunk in chunks:
            if _client_gone(scope):
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except _UPSTREAM_ERRORS:
        pass
    await send({"type": "http.response.body", "body": b""})


async def _unforwardable(scope: Scope, send: Send) -> None:
    message = "chaos proxy: the request's path cannot be forwarded"
    response = JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, 400)
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    """What a response that never reads its request is given to receive from."""
    return {"type": "http.disconnect"}


class _StreamCut(Exception):
    """Raised inside a response body so the server closes the connection mid-stream."""


def _cut_short() -> Response:
    async def body() -> AsyncIterator[bytes]:
        raise _StreamCut
        yield b""  # pragma: no cover  (makes this an async generator)

    return StreamingResponse(body())


async def _iterate(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def _validation_message(exc: ValueError) -> str:
    """One line per wrong field, each cut short: field names and values are the client's."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            _cut(".".join(str(p) for p in e["loc"]) or "body")
            + ": "
            + _cut(e["msg"].removeprefix("Value error, "))
            for e in exc.errors(include_url=False)[:5]
        )
    if isinstance(exc, BadJSON):
        return str(exc)
    return f"{IDEMPOTENCY_KEY}: {exc}"


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
