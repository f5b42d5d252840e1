"""An upstream that answers every request with a well-formed completion (a fresh id each time),
so a test of the gateway's own behaviour never sees a provider's error; and a flag file for it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FIXED_UPSTREAM", "flag_file"]

_USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "5"}, "finish_reason": "stop"}
        ],
        "usage": _USAGE,
    }


async def _chat(request: Request) -> Response:
    try:  # the chaos proxy passes on whatever a client sent
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        body = None
    body = body if isinstance(body, dict) else {}
    completion = _completion(str(body.get("model")))
    if body.get("stream") is not True:
        return JSONResponse(completion)
    chunk = {**completion, "object": "chat.completion.chunk"}
    chunk["choices"] = [{"index": 0, "delta": {"content": "5"}, "finish_reason": "stop"}]
    return Response(
        f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n", media_type="text/event-stream"
    )


async def _embeddings(request: Request) -> Response:
    data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
    return JSONResponse({"object": "list", "data": data, "model": "a", "usage": _USAGE})


async def _anything(request: Request) -> Response:
    return JSONResponse({"ok": True})


FIXED_UPSTREAM = Starlette(
    routes=[
        Route("/v1/chat/completions", _chat, methods=["POST"]),
        Route("/v1/embeddings", _embeddings, methods=["POST"]),
        Route("/{path:path}", _anything, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
)


def flag_file(path: Path, variations: list[str], rules: list[dict[str, Any]] | None = None) -> Path:
    """Flag `f` serving variations[0] by default, with LaunchDarkly `rules` (clauses on the
    context's attributes) ahead of it."""
    flag = {
        "key": "f",
        "on": True,
        "variations": variations,
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "version": 1,
        "salt": "f",
        "targets": [],
        "contextTargets": [],
        "rules": rules or [],
        "prerequisites": [],
        "trackEvents": False,
    }
    path.write_text(json.dumps({"flags": {"f": flag}, "segments": {}}))
    return path
