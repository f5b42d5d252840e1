"""What a misbehaving provider sends, byte for byte: error bodies in OpenAI's and Anthropic's
shapes, and completions that are well-formed but useless (empty, or stopped by a content filter).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any, Literal

__all__ = [
    "ErrorShape",
    "UselessAnswer",
    "broken_chunk",
    "error_body",
    "rate_limit_headers",
    "shape_for",
    "synthetic_completion",
    "synthetic_stream",
]

ErrorShape = Literal["openai", "anthropic"]

_MESSAGES = {
    500: ("server_error", "api_error", "The server had an error while processing your request."),
    502: ("server_error", "api_error", "Bad gateway."),
    503: ("server_error", "api_error", "The engine is currently overloaded, please try later."),
    504: ("timeout", "api_error", "The request timed out."),
    529: ("server_error", "overloaded_error", "Overloaded"),
    429: ("rate_limit_exceeded", "rate_limit_error", "Rate limit reached. Please try again later."),
}


def shape_for(path: str, shape: ErrorShape | None) -> ErrorShape:
    """Anthropic's Messages API lives at /v1/messages; everything else speaks OpenAI."""
    if shape is not None:
        return shape
    return "anthropic" if path.rstrip("/").endswith("/v1/messages") else "openai"


def error_body(status: int, shape: ErrorShape) -> dict[str, Any]:
    openai_type, anthropic_type, message = _MESSAGES.get(status, _MESSAGES[500])
    if shape == "anthropic":
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    code = "rate_limit_exceeded" if status == 429 else None
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


def rate_limit_headers(retry_after: float) -> dict[str, str]:
    """Retry-After holds whole seconds (RFC 9110); OpenAI adds retry-after-ms for precision."""
    return {
        "retry-after": str(max(1, math.ceil(retry_after))),
        "retry-after-ms": str(round(retry_after * 1000)),
    }


UselessAnswer = Literal["empty_completion", "content_filter"]

_STOP_REASONS: dict[ErrorShape, dict[UselessAnswer, str]] = {
    "openai": {"empty_completion": "stop", "content_filter": "content_filter"},
    # Anthropic says "refusal" when its streaming classifiers stop an answer.
    "anthropic": {"empty_completion": "end_turn", "content_filter": "refusal"},
}


def _completion_id() -> str:
    return f"chatcmpl-chaos{secrets.token_hex(6)}"


def synthetic_completion(model: str, kind: UselessAnswer, shape: ErrorShape) -> dict[str, Any]:
    """A 200 answer with no content: what an empty answer or a filtered one looks like."""
    finish_reason = _STOP_REASONS[shape][kind]
    if shape == "anthropic":
        return {
            "id": f"msg_chaos{secrets.token_hex(6)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": finish_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def synthetic_stream(model: str, kind: UselessAnswer, shape: ErrorShape) -> list[bytes]:
    """The same as a stream: OpenAI's role chunk, finish chunk, usage and [DONE], or Anthropic's
    message_start, message_delta (with the stop reason) and message_stop."""
    finish_reason = _STOP_REASONS[shape][kind]
    if shape == "anthropic":
        return _anthropic_stream(model, finish_reason)
    completion_id, created = _completion_id(), int(time.time())

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return [
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        event([{"index": 0, "delta": {}, "finish_reason": finish_reason}]),
        event([], usage=usage),
        b"data: [DONE]\n\n",
    ]


def _anthropic_stream(model: str, stop_reason: str) -> list[bytes]:
    def event(name: str, body: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **body})}\n\n".encode()

    message = synthetic_completion(model, "empty_completion", "anthropic")
    message["stop_reason"] = None
    return [
        event("message_start", {"message": message}),
        event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 0},
            },
        ),
        event("message_stop", {}),
    ]


def broken_chunk() -> bytes:
    """An SSE event whose JSON stops mid-string, as a proxy that truncates a buffer sends."""
    return b'data: {"id": "chatcmpl-chaos", "object": "chat.completion.chunk", "choices": [{"de\n\n'
