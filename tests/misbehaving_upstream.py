"""An OpenAI-compatible upstream that misbehaves as told by the first segment of its path:
`http://HOST:PORT/<kind>/v1/chat/completions`, so one server stands for many broken models.

The `leak*` kinds speak all three providers' APIs (OpenAI's, Anthropic's `/v1/messages`, Ollama's
`/api/chat`) and quote, in what they send back, the credentials they were sent and every string
in `app.state.planted`: `leak400`...`leak503` in an error body of that status, `leakstream` in an
error event inside a stream that began with a 200, `leakok` in a well-formed answer.
"""

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

__all__ = ["KINDS", "LEAKED_KEY_TEXT", "LEAK_KINDS", "misbehaving_app"]

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
_DEEP = b"[" * 5000 + b"]" * 5000
"""Valid JSON nested past any parser's recursion limit: the `deep` kinds answer it as the body, a
stream's chunk, or a 503's error body."""
KINDS = (*_ERRORS, "ok", "empty_object", "empty_completion", "filtered", *_BAD_USAGE, "broken",
         "deep", "deep503")  # fmt: skip
LEAK_KINDS = ("leak400", "leak429", "leak500", "leak503", "leakstream", "leakok")


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
    if kind == "deep":
        yield b"data: " + _DEEP + b"\n\n"
        return
    yield _chunk(model, {"content": "ve."})
    yield _chunk(model, {}, "stop")
    yield _chunk(model, {}, usage=_BAD_USAGE.get(kind, _USAGE))
    yield b"data: [DONE]\n\n"


def _leak_text(request: Request, planted: list[str]) -> str:
    sent = [request.headers.get(name, "") for name in ("authorization", "x-api-key")]
    return f"Your request with {' and '.join(sent)} failed; we also know {', '.join(planted)}"


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _leak_openai(kind: str, text: str, model: str, stream: bool) -> Response:
    if kind.removeprefix("leak").isdigit():
        status = int(kind.removeprefix("leak"))
        error = {"message": text, "type": "server_error", "code": None}
        return JSONResponse({"error": error}, status_code=status)
    if kind == "leakstream":
        chunk = f"data: {json.dumps({'error': {'message': text, 'type': 'server_error'}})}\n\n"
        return Response(chunk, media_type="text/event-stream")
    if not stream:
        completion = _completion(model)
        completion["choices"][0]["message"]["content"] = text
        return JSONResponse(completion)
    events = _chunk(model, {"role": "assistant", "content": text}) + _chunk(model, {}, "stop")
    return Response(events + _chunk(model, {}, usage=_USAGE) + b"data: [DONE]\n\n",
                    media_type="text/event-stream")  # fmt: skip


def _leak_anthropic(kind: str, text: str, model: str, stream: bool) -> Response:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": text}}
    if kind.removeprefix("leak").isdigit():
        return JSONResponse(error, status_code=int(kind.removeprefix("leak")))
    if kind == "leakstream":
        return Response(_sse(error), media_type="text/event-stream")
    usage = {"input_tokens": 9, "output_tokens": 3}
    if not stream:
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                   "usage": usage}  # fmt: skip
        return JSONResponse(message)
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
             "content": [], "usage": {"input_tokens": 9, "output_tokens": 0}}  # fmt: skip
    events = _sse(
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage},
        {"type": "message_stop"},
    )
    return Response(events, media_type="text/event-stream")


def _leak_ollama(kind: str, text: str, model: str, stream: bool) -> Response:
    if kind.removeprefix("leak").isdigit():
        return JSONResponse({"error": text}, status_code=int(kind.removeprefix("leak")))
    if kind == "leakstream":
        return Response(json.dumps({"error": text}) + "\n", media_type="application/x-ndjson")
    done = {"model": model, "message": {"role": "assistant", "content": text}, "done": True,
            "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 3}  # fmt: skip
    if not stream:
        return JSONResponse(done)
    first = {"model": model, "message": {"role": "assistant", "content": text}, "done": False}
    last = {**done, "message": {"role": "assistant", "content": ""}}
    lines = json.dumps(first) + "\n" + json.dumps(last) + "\n"
    return Response(lines, media_type="application/x-ndjson")


def misbehaving_app() -> Starlette:
    """`app.state.authorization` keeps the Authorization header of every request, in order;
    `app.state.planted` lists the strings the `leak*` kinds quote besides the credentials."""

    def leaking(face: Any) -> Any:
        async def leak(request: Request) -> Response:
            kind = request.path_params["kind"]
            body = await request.json()
            text = _leak_text(request, app.state.planted)
            return face(kind, text, str(body.get("model")), body.get("stream") is True)

        return leak

    async def chat(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind in LEAK_KINDS:
            return await leaking(_leak_openai)(request)
        body = await request.json()
        model = str(body.get("model"))
        app.state.authorization.append(request.headers.get("authorization"))
        if kind == "deep503":
            return Response(_DEEP, status_code=503, media_type="application/json")
        if kind in _ERRORS:
            status, message, code = _ERRORS[kind]
            error = {"message": message, "type": "invalid_request_error", "code": code}
            return JSONResponse({"error": error}, status_code=status)
        if body.get("stream"):
            return StreamingResponse(_stream(kind, model), media_type="text/event-stream")
        if kind == "empty_object":
            return JSONResponse({})
        if kind == "deep":
            return Response(_DEEP, media_type="application/json")
        if kind in ("empty_completion", "filtered"):
            useless = "empty_completion" if kind == "empty_completion" else "content_filter"
            return JSONResponse(synthetic_completion(model, useless, "openai"))
        return JSONResponse(_completion(model, _BAD_USAGE.get(kind, _USAGE)))

    app = Starlette(
        routes=[
            Route("/{kind}/v1/chat/completions", chat, methods=["POST"]),
            Route("/{kind}/v1/messages", leaking(_leak_anthropic), methods=["POST"]),
            Route("/{kind}/api/chat", leaking(_leak_ollama), methods=["POST"]),
        ]
    )
    app.state.authorization = []
    app.state.planted = []
    return app
