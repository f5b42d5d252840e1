"""What a misbehaving provider sends, byte for byte: error bodies in OpenAI's and Anthropic's
shapes, and completions that are well-formed but useless (empty, or stopped by a content filter).
Anthropic's shapes are built by canaryctl.gateway.anthropic, the one place that knows them.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any, Literal

from canaryctl.gateway import anthropic

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
    500: ("server_error", "The server had an error while processing your request."),
    502: ("server_error", "Bad gateway."),
    503: ("server_error", "The engine is currently overloaded, please try later."),
    504: ("timeout", "The request timed out."),
    529: ("server_error", "Overloaded"),
    429: ("rate_limit_exceeded", "Rate limit reached. Please try again later."),
}


def shape_for(path: str, shape: ErrorShape | None) -> ErrorShape:
    """Anthropic's Messages API lives at /v1/messages; everything else speaks OpenAI."""
    if shape is not None:
        return shape
    return "anthropic" if path.rstrip("/").endswith("/v1/messages") else "openai"


def error_body(status: int, shape: ErrorShape) -> dict[str, Any]:
    known = status in _MESSAGES
    openai_type, message = _MESSAGES[status if known else 500]
    if shape == "anthropic":
        return anthropic.error_body(status if known else 500, message)
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
        message_id = f"msg_chaos{secrets.token_hex(6)}"
        return anthropic.message(model, [], finish_reason, 0, 0, message_id=message_id)
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
    message = synthetic_completion(model, "empty_completion", "anthropic")
    message["stop_reason"] = None
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    events = [
        anthropic.event("message_start", {"message": message}),
        anthropic.event("message_delta", {"delta": delta, "usage": {"output_tokens": 0}}),
        anthropic.event("message_stop", {}),
    ]
    return [e.encode() for e in events]


def broken_chunk() -> bytes:
    """An SSE event whose JSON stops mid-string, as a proxy that truncates a buffer sends."""
    return b'data: {"id": "chatcmpl-chaos", "object": "chat.completion.chunk", "choices": [{"de\n\n'
