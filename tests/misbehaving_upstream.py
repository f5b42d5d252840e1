"""An OpenAI-compatible upstream that misbehaves as told by the first segment of its path:
`http://HOST:PORT/<kind>/v1/chat/completions`, so one server stands for many broken models."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from canaryctl.chaos.responses import broken_chunk, synthetic_completion, synthetic_stream

__all__ = ["KINDS", "LEAKED_KEY_TEXT", "misbehaving_app"]

LEAKED_KEY_TEXT = "Incorrect API key provided: sk-test****cret"
"""What OpenAI's 401 says: part of the key. It must never reach a client."""

_ERRORS = {
    "401": (401, LEAKED_KEY_TEXT, "invalid_api_key"),
    "403": (403, f"{LEAKED_KEY_TEXT} is not allowed to use this model", "forbidden"),
    "404": (404, "The model `gpt-9` does not exist or you do not have access to it.", None),
    "400": (400, "Invalid 'messages': empty content", None),
    "413": (413, "Request too large", None),
    "422": (422, "This model's maximum context length is 8192 tokens", None),
    "503": (503, "The engine is currently overloaded", None),
}
_USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
_BAD_USAGE = {
    "bad_usage": {"prompt_tokens": "nine", "completion_tokens": 3},
    "negative_usage": {"prompt_tokens": 9, "completion_tokens": -3, "total_tokens": 6},
}
KINDS = (*_ERRORS, "ok", "empty_object", "empty_completion", "filtered", *_BAD_USAGE, "broken")


def _completion(model: str, usage: Any = _USAGE) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Five."},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if delta else [],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def _stream(kind: str, model: str) -> AsyncIterator[bytes]:
    if kind in ("empty_completion", "filtered"):
        useless = "empty_completion" if kind == "empty_completion" else "content_filter"
        for event in synthetic_stream(model, useless, "openai"):
            yield event
        return
    yield _chunk(model, {"role": "assistant", "content": "Fi"})
    await asyncio.sleep(0.01)
    if kind == "broken":
        yield broken_chunk()
        return
    yield _chunk(model, {"content": "ve."})
    yield _chunk(model, {}, "stop")
    yield _chunk(model, {}, usage=_BAD_USAGE.get(kind, _USAGE))
    yield b"data: [DONE]\n\n"


def misbehaving_app() -> Starlette:
    """`app.state.authorization` keeps the Authorization header of every request, in order."""

    async def chat(request: Request) -> Response:
        kind = request.path_params["kind"]
        body = await request.json()
        model = str(body.get("model"))
        app.state.authorization.append(request.headers.get("authorization"))
        if kind in _ERRORS:
            status, message, code = _ERRORS[kind]
            error = {"message": message, "type": "invalid_request_error", "code": code}
            return JSONResponse({"error": error}, status_code=status)
        if body.get("stream"):
            return StreamingResponse(_stream(kind, model), media_type="text/event-stream")
        if kind == "empty_object":
            return JSONResponse({})
        if kind in ("empty_completion", "filtered"):
            useless = "empty_completion" if kind == "empty_completion" else "content_filter"
            return JSONResponse(synthetic_completion(model, useless, "openai"))
        return JSONResponse(_completion(model, _BAD_USAGE.get(kind, _USAGE)))

    app = Starlette(routes=[Route("/{kind}/v1/chat/completions", chat, methods=["POST"])])
    app.state.authorization = []
    return app
