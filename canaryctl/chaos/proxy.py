"""The fault proxy: a reverse proxy in front of one LLM provider that injects faults per request.

Requests are streamed to the upstream with httpx and the answer streamed back untouched unless a
fault hits. Faults act where a client would see them: before any byte (error, rate_limit,
timeout, reset), before the upstream is asked (latency), inside an SSE stream (slow_first_token,
stream_cut, stream_stall, malformed) or instead of the answer (empty_completion, content_filter).

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

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

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
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",  # identity upstream, so SSE faults can read the events
    }
)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_EVENT_END = re.compile(rb"\r?\n\r?\n")
_TRANSPORT = "canaryctl.transport"
_STREAMED = ("text/event-stream", "application/x-ndjson")
"""Media types relayed chunk by chunk (OpenAI's SSE, Ollama's NDJSON); others are read whole."""
_POOL = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=2.0)
"""Idle connections are dropped before servers commonly drop them (uvicorn: 5 s), so a request
is never sent down a connection the upstream is closing."""
_UPSTREAM_TIMEOUT = httpx.Timeout(300.0, connect=10.0)


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
        async with httpx.AsyncClient(limits=_POOL, timeout=_UPSTREAM_TIMEOUT) as client:
            proxy.client = client
            yield

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    admin = [
        Route("/faults", proxy.list_faults, methods=["GET"]),
        Route("/faults", proxy.add_fault, methods=["POST"]),
        Route("/faults", proxy.reset_faults, methods=["DELETE"]),
        Route("/faults/{fault_id}", proxy.remove_fault, methods=["DELETE"]),
        Route("/metrics", proxy.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=[
            Mount(ADMIN_PREFIX, routes=admin),
            Route("/{path:path}", proxy.forward, methods=methods),
        ],
        lifespan=lifespan,
    )
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


def _limits(max_body_bytes: int) -> ServerLimits:
    """The default limits, with room for at least one body of `max_body_bytes` in memory."""
    buffered = max(max_body_bytes, ServerLimits.max_buffered_bytes)
    return ServerLimits(max_body_bytes=max_body_bytes, max_buffered_bytes=buffered)


def _refused(scope: Scope, status: int, message: str) -> dict[str, object]:
    if scope["path"].startswith(ADMIN_PREFIX):
        return {"error": message}
    return {"error": {"message": f"chaos proxy: {message}", "type": "invalid_request_error"}}


def _facts(request: Request, body: bytes) -> RequestFacts:
    model, stream = None, False
    try:
        data = parse_json(body) if body else None
    except BadJSON:
        data = None  # not JSON: matched on its path and headers only
    if isinstance(data, dict):
        model = data.get("model") if isinstance(data.get("model"), str) else None
        stream = data.get("stream") is True
    headers = {k.lower(): v for k, v in request.headers.items()}
    return RequestFacts(request.url.path, model, stream, headers)


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
        self.client: httpx.AsyncClient
        self.admin_from_anywhere = admin_from_anywhere
        self._token = token

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

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        facts = _facts(request, body)
        self.metrics.requests.inc()
        fault = self.table.pick(facts, self.rng)
        if fault is None:
            return await self._pass(request, body)
        spec = fault.spec
        self.metrics.injected.labels(fault=spec.fault).inc()
        shape = shape_for(facts.path, spec.shape)
        match spec.fault:
            case "error":
                status = spec.status or 503
                return JSONResponse(error_body(status, shape), status)
            case "rate_limit":
                headers = rate_limit_headers(spec.retry_after or 1.0)
                return JSONResponse(error_body(429, shape), 429, headers=headers)
            case "reset":
                if await _drop_connection(request.scope):
                    return Response(status_code=502)  # never sent: the connection is gone
                return _cut_short()
            case "timeout":
                await self._hold(request, fault)
                return JSONResponse(error_body(504, shape), 504)
            case "empty_completion" | "content_filter" as kind:
                model = facts.model or "unknown"
                if facts.stream:
                    events = synthetic_stream(model, kind, shape)
                    return StreamingResponse(_iterate(events), media_type="text/event-stream")
                return JSONResponse(synthetic_completion(model, kind, shape))
            case "latency":
                await asyncio.sleep(draw_delay(spec, self.rng))
                return await self._pass(request, body)
        return await self._pass(request, body, fault)

    async def _hold(self, request: Request, fault: ActiveFault) -> None:
        """Until the client hangs up or the fault expires, whichever comes first."""

        async def hung_up() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        remaining = max(0.0, fault.expires_at - self.table.now())
        with suppress(TimeoutError):
            await asyncio.wait_for(hung_up(), remaining)

    async def _pass(
        self, request: Request, body: bytes, fault: ActiveFault | None = None
    ) -> Response:
        url = self.upstream + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        try:
            outgoing = self.client.build_request(request.method, url, headers=headers, content=body)
        except (httpx.InvalidURL, UnicodeError):
            message = "chaos proxy: the request's path cannot be forwarded"
            return JSONResponse(
                {"error": {"message": message, "type": "invalid_request_error"}}, 400
            )
        try:
            upstream = await self.client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            return await self._upstream_failed(exc)
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        media = upstream.headers.get("content-type", "")
        if not media.startswith(_STREAMED):
            # A whole answer is read whole: cheaper than relaying it, and just as faithful.
            try:
                content = await upstream.aread()
            except httpx.HTTPError:
                return await self._upstream_failed(upstream)
            finally:
                await upstream.aclose()
            if fault is not None and fault.spec.fault == "malformed":
                content = content[: len(content) // 2]
            return Response(content, upstream.status_code, headers=kept)
        if fault is None:
            chunks = self._relay(upstream, upstream.aiter_raw())
        else:
            chunks = self._relay(upstream, self._faulty_stream(request, upstream, fault))
        close = BackgroundTask(upstream.aclose)
        return StreamingResponse(chunks, upstream.status_code, headers=kept, background=close)

    async def _upstream_failed(self, cause: httpx.HTTPError | httpx.Response) -> Response:
        self.metrics.upstream_errors.inc()
        what = type(cause).__name__ if isinstance(cause, Exception) else "cut its answer short"
        message = f"chaos proxy: upstream {redact_url(self.upstream)} failed ({what})"
        return JSONResponse({"error": {"message": message, "type": "upstream_error"}}, 502)

    @staticmethod
    async def _relay(
        upstream: httpx.Response, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except httpx.HTTPError:
            pass  # the upstream cut us off: the client sees its stream end short, as we did
        finally:
            await upstream.aclose()

    async def _faulty_stream(
        self, request: Request, upstream: httpx.Response, fault: ActiveFault
    ) -> AsyncIterator[bytes]:
        spec = fault.spec
        after = spec.after_chunks if spec.after_chunks is not None else 1
        sent = 0
        async for event in _events(upstream.aiter_raw()):
            if spec.fault == "slow_first_token" and sent == 0:
                await asyncio.sleep(spec.delay if spec.delay is not None else 1.0)
            elif sent == after and spec.fault == "stream_cut":
                if not await _drop_connection(request.scope):
                    raise _StreamCut
                return
            elif sent == after and spec.fault == "stream_stall":
                await self._hold(request, fault)
            elif sent == after and spec.fault == "malformed":
                event = broken_chunk()
            sent += 1
            yield event


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
