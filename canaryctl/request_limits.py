"""What a client may send to canaryctl's servers (the gateway and the chaos proxy), and how a
request that sends more is answered: a 4xx with a short message, never a 500, never an echo.

The body limit is an ASGI middleware, so it holds on every route, and it counts bytes as they
arrive: a 50 MB upload is refused after the first megabytes, not after it sits in memory. JSON
is decoded by `parse_json`, which turns every way a body can be broken (not UTF-8, not JSON,
NaN, nested past a depth) into one `BadJSON` with a message that quotes none of the body.
`clip` is how a message names a value the client chose: a short prefix, never the whole thing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: documents import the defaults without loading starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_JSON_DEPTH",
    "BadJSON",
    "LimitBody",
    "clip",
    "parse_json",
]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""Room for a long conversation or a few inlined images; far below what hurts a server."""
DEFAULT_MAX_JSON_DEPTH = 64
"""Chat requests nest about six deep (tools with JSON Schemas a little more)."""
_CLIP = 64

RenderError = Callable[["Scope", str], dict[str, Any]]
"""The JSON body of an error for a request, in the dialect its route speaks."""


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
    """

    def __init__(self, app: ASGIApp, max_bytes: int, render: RenderError) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.app, self.max_bytes, self.render = app, max_bytes, render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body arrived: nobody is there to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks)}
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return whole

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        payload = json.dumps(self.render(scope, message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),  # the rest of the body is never read
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
