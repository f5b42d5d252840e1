"""What a client may send to canaryctl's servers (the gateway, lab providers, the controller's
API, the chaos proxy, the guard's webhook), and how a request that sends more, or holds on too
long, is answered: a 4xx or 503 with a short message, never a 500, never an echo.

`ServerLimits` is the one list of those limits. Two parts enforce them: the ASGI middleware
below (LimitInFlight, then LimitBody: every server's app is built with them, by
canaryctl.serving.limited), and the connection's deadlines and head size, which only uvicorn's
protocol sees (canaryctl/serving.py):

| limit | past it |
| --- | --- |
| `header_timeout`: a request's head within this many seconds | 408, connection closed |
| `max_header_bytes`: the head's size | 431, connection closed |
| `body_timeout`: its body within this many seconds of its head | 408, connection closed |
| `max_body_bytes`: the body's size, declared or counted as it arrives | 413, the rest unread |
| `max_in_flight_per_client`: requests of one client address at once | 429 |
| `max_in_flight`: requests at once, in all | 503 |
| `max_buffered_bytes`: request bodies held in memory at once, in all | 503 |

So a client that opens connections and never finishes them, or sends large bodies and stalls,
holds a bounded share of the server for a bounded time. Behind a proxy every request has the
proxy's address: raise `max_in_flight_per_client` to `max_in_flight` there.

JSON is decoded by `parse_json`, which turns every way a body can be broken (not UTF-8, not
JSON, NaN, nested past a depth) into one `BadJSON` with a message that quotes none of the body.
`clip` is how a message names a value the client chose: a short prefix, never the whole thing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: documents import the defaults without loading starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_JSON_DEPTH",
    "BadJSON",
    "BodyBudget",
    "LimitBody",
    "LimitInFlight",
    "ServerLimits",
    "clip",
    "parse_json",
    "plain_error",
]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""Room for a long conversation or a few inlined images; far below what hurts a server."""
DEFAULT_MAX_JSON_DEPTH = 64
"""Chat requests nest about six deep (tools with JSON Schemas a little more)."""
_CLIP = 64
_RETRY_AFTER = b"1"
"""Seconds a client refused for load (429, 503) is asked to wait: in-flight requests end fast."""

RenderError = Callable[["Scope", int, str], dict[str, Any]]
"""The JSON body of an error (its status, its message) for a request, in the dialect its route
speaks: a dialect whose error types follow the status (Anthropic's) needs the status."""


@dataclass(frozen=True)
class ServerLimits:
    """What one client, and all of them together, may hold of a server (the module's table)."""

    header_timeout: float = 10.0
    """Seconds for a request's line and headers, from the connection's opening or the request's
    first byte: a slow network sends a head in well under a second."""
    body_timeout: float = 30.0
    """Seconds for a body, from its head: 4 MiB at 150 kB/s."""
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_buffered_bytes: int = 64 * 1024 * 1024
    """Sixteen bodies at the largest size, thousands of ordinary chat requests."""
    max_in_flight: int = 4096
    max_in_flight_per_client: int = 1024
    """Room for a lab's traffic (every client on 127.0.0.1) through a slow model."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError("max_buffered_bytes must hold at least one body of max_body_bytes")


def plain_error(scope: Scope, status: int, message: str) -> dict[str, Any]:
    """An error body for a server without a dialect of its own: `{"error": message}`."""
    return {"error": message}


async def _refuse(
    send: Send, status: int, body: dict[str, Any], *extra: tuple[bytes, bytes]
) -> None:
    """An error response that ends the connection: the request's body, if any, is never read."""
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class LimitInFlight:
    """ASGI middleware: a request past `max_in_flight_per_client` of its client's address is a
    429, past `max_in_flight` in all a 503, both before the app runs; counted until the app
    returns (a streamed answer is in flight until its end)."""

    def __init__(
        self, app: ASGIApp, limits: ServerLimits, render: RenderError = plain_error
    ) -> None:
        self.app, self.limits, self.render = app, limits, render
        self.by_client: Counter[str] = Counter()
        self.total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("", 0))[0]
        retry = (b"retry-after", _RETRY_AFTER)
        if self.total >= self.limits.max_in_flight:
            message = f"the server has {self.total} requests in flight, its most; retry shortly"
            await _refuse(send, 503, self.render(scope, 503, message), retry)
            return
        if self.by_client[client] >= self.limits.max_in_flight_per_client:
            message = (
                f"{self.by_client[client]} requests in flight from your address, the most "
                "allowed; wait for one to end"
            )
            await _refuse(send, 429, self.render(scope, 429, message), retry)
            return
        self.total += 1
        self.by_client[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.total -= 1
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]


class BodyBudget:
    """Bytes of request bodies a server holds at once; LimitBody takes from it as a body
    arrives and gives back when the app is done with the request."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.held = capacity, 0

    def take(self, size: int) -> bool:
        """Whether `size` more bytes fit; if so they are held."""
        if self.held + size > self.capacity:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


def clip(value: object, limit: int = _CLIP) -> str:
    """`value` for a message: its repr, cut to `limit` characters with the full length noted."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class BadJSON(ValueError):
    """A body that is not the JSON a route takes; the message is safe to send back."""


def _reject_constant(name: str) -> Any:
    raise BadJSON(f"the body holds {name}, which JSON does not allow")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"the body holds a number too large for a float ({clip(text, 24)})")
    return value


def parse_json(body: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """The decoded body, or BadJSON saying what is wrong (and where, for a syntax error)."""
    from canaryctl.fastjson import UNSURE, quick_loads  # here: documents import this module

    value = quick_loads(body)  # orjson's value where it is surely json's (canaryctl/fastjson.py)
    if value is not UNSURE:
        # no deeper than it has brackets: the walk is for bodies that might be
        if body.count(b"[") + body.count(b"{") > max_depth and _deeper_than(value, max_depth):
            raise BadJSON(f"the body nests deeper than {max_depth} levels")
        return value
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJSON(f"the body is not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise BadJSON(f"the body is not JSON: {exc.msg} at {where}") from None
    except BadJSON:
        raise
    except ValueError:  # an integer past Python's digit limit
        raise BadJSON("the body holds an integer with too many digits") from None
    except RecursionError:
        raise BadJSON(f"the body nests deeper than {max_depth} levels") from None
    if _deeper_than(value, max_depth):
        raise BadJSON(f"the body nests deeper than {max_depth} levels")
    return value


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether containers nest past `max_depth`; iterative, so depth costs no stack."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class LimitBody:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before the app runs.

    A declared Content-Length over the limit is refused at once; a chunked body is counted as it
    arrives and refused as soon as it passes the limit, without reading the rest. A body within
    the limit is handed to the app whole, as one message, so the app reads it as it always did.
    A client that hangs up before its body has all arrived never reaches the app: there is no
    one to answer, and the app would only fail reading the rest.

    Bodies are held against `budget` (all requests' bodies together) until the app returns: a
    declared length is taken before any byte is read, a chunked body as it comes; one that does
    not fit is a 503, and nothing more of it is read.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        render: RenderError,
        budget: BodyBudget | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.app, self.max_bytes, self.render = app, max_bytes, render
        self.budget = budget or BodyBudget(ServerLimits().max_buffered_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_big(scope, send)
            return
        held = 0
        try:
            if declared and not self.budget.take(declared):
                await self._busy(scope, send)
                return
            held = declared or 0
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left before its body arrived: nobody is there to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await self._too_big(scope, send)
                    return
                if size > held:
                    if not self.budget.take(size - held):
                        await self._busy(scope, send)
                        return
                    held = size
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            whole: Message = {"type": "http.request", "body": b"".join(chunks)}
            del chunks
            handed = False

            async def replay() -> Message:
                nonlocal handed
                if handed:
                    return await receive()
                handed = True
                return whole

            await self.app(scope, replay, send)
        finally:
            self.budget.give(held)

    async def _too_big(self, scope: Scope, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        await _refuse(send, 413, self.render(scope, 413, message))

    async def _busy(self, scope: Scope, send: Send) -> None:
        message = "the server holds as many request bodies as it may; retry shortly"
        await _refuse(send, 503, self.render(scope, 503, message), (b"retry-after", _RETRY_AFTER))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
