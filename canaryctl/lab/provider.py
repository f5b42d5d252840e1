"""A simulated LLM provider speaking the OpenAI and Ollama dialects, or Anthropic's Messages API
(`api: anthropic`), driven by a ProviderProfile; with a `judge` section it answers chats with
verdicts (judge.py) instead of answers.

Each request's fate is drawn up front (see behaviour.py), then served: errors with the bodies and
headers real providers send (a 429 carries Retry-After), answers after a log-normal delay, streams
paced so that the whole reply takes about that delay, the first token coming after the profile's
own `first_token` draw when it has one (`pacing`). A "timeout" holds the request open until the
client gives up, `hold` seconds pass, or `release()` is called: servers call it before shutting
down so that no held request outlives them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from canaryctl import fastjson
from canaryctl.lab import claude, judge
from canaryctl.lab.behaviour import Behaviour, decide, estimate_tokens, request_rng
from canaryctl.request_limits import ServerLimits
from canaryctl.runbook.lab import ProviderProfile
from canaryctl.serving import limited

__all__ = ["SimulatedProvider", "pacing"]

Dialect = Literal["openai", "chat", "generate"]
"""OpenAI /v1/chat/completions, Ollama /api/chat, Ollama /api/generate."""

_ERRORS: dict[str, tuple[int, str, str]] = {
    "500": (500, "server_error", "The server had an error while processing your request."),
    "503": (503, "server_error", "The server is overloaded or not ready yet."),
    "529": (529, "server_error", "Overloaded"),
    "429": (429, "rate_limit_exceeded", "Rate limit reached for requests. Try again later."),
    "timeout": (504, "timeout", "The request timed out upstream."),
}
_MAX_CHUNKS = 24
EMBEDDING_CONTEXT = 8192
"""Tokens one embeddings input may hold, as OpenAI's text-embedding-3 models take."""
_FIRST_TOKEN_SHARE = 0.25
"""Part of a streamed reply's delay spent before the first chunk, as with real models."""


def _error(dialect: Dialect, status: int, kind: str, message: str) -> JSONResponse:
    if dialect == "openai":
        body: dict[str, Any] = {
            "error": {"message": message, "type": kind, "param": None, "code": None}
        }
    else:
        body = {"error": message}
    return JSONResponse(body, status_code=status)


def _prompt(dialect: Dialect, body: dict[str, Any]) -> tuple[str, int]:
    """The text the model answers (the last user turn) and the prompt's token count."""
    if dialect == "generate":
        prompt = str(body.get("prompt") or "")
        return prompt, estimate_tokens(prompt)
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    texts = [_text(m.get("content")) for m in messages]
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return (users[-1] if users else ""), sum(estimate_tokens(t) + 3 for t in texts) or 1


def _text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; only the text parts count here."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    size = max(1, math.ceil(len(words) / _MAX_CHUNKS))
    groups = [words[i : i + size] for i in range(0, len(words), size)]
    return [(" " if i else "") + " ".join(g) for i, g in enumerate(groups)]


class SimulatedProvider:
    """One provider: `app` is its ASGI app; `requests` counts the requests it has numbered,
    `embedded_inputs` and `embedded_tokens` the inputs and prompt tokens of the embeddings it
    answered (what a batching gateway's callers must add up to)."""

    def __init__(self, profile: ProviderProfile, *, seed: int = 0, hold: float = 120.0) -> None:
        self.profile = profile
        self.seed = seed
        self.hold = hold
        self.requests = 0
        self.embedded_inputs = 0
        self.embedded_tokens = 0
        self._released = asyncio.Event()
        health = Route("/health", self._health, methods=["GET"])
        if profile.api == "anthropic":
            routes = [Route("/v1/messages", self._messages, methods=["POST"]), health]
        else:
            routes = [
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/api/chat", self._ollama_chat, methods=["POST"]),
                Route("/api/generate", self._ollama_generate, methods=["POST"]),
                health,
            ]
        self.app = limited(Starlette(routes=routes), ServerLimits())

    def release(self) -> None:
        """End every held ("timeout") request now; call it on the server's event loop."""
        self._released.set()

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "provider": self.profile.name})

    async def _openai(self, request: Request) -> Response:
        return await self._serve(request, "openai")

    async def _embeddings(self, request: Request) -> Response:
        """OpenAI embeddings: a vector per input drawn from a hash of its text, so the same
        text always gets the same vector; errors and latency follow the profile. Like OpenAI,
        it refuses (400) an empty string and an input over EMBEDDING_CONTEXT tokens."""
        try:
            body = fastjson.loads(await request.body())
        except ValueError:  # not JSON, not UTF-8, or nested past the recursion limit
            return _error("openai", 400, "invalid_request_error", "The body is not JSON.")
        inputs = body.get("input") if isinstance(body, dict) else None
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not inputs:
            return _error("openai", 400, "invalid_request_error", "'input' is required.")
        self.requests += 1
        counts = [estimate_tokens(str(text)) for text in inputs]
        if any(text == "" for text in inputs) or max(counts) > EMBEDDING_CONTEXT:
            message = (
                f"'$.input' is invalid: each input must be non-empty and at most "
                f"{EMBEDDING_CONTEXT} tokens."
            )
            return _error("openai", 400, "invalid_request_error", message)
        rng = request_rng(self.seed, self.profile.name, self.requests)
        fate = decide(self.profile, "", rng, sequence=self.requests)
        if fate.error is not None:
            return await self._fail(request, "openai", fate.error, fate.latency)
        await asyncio.sleep(fate.latency)
        tokens = sum(counts)
        self.embedded_inputs += len(inputs)
        self.embedded_tokens += tokens
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(text))}
            for i, text in enumerate(inputs)
        ]
        model = str(body.get("model") or self.profile.name)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})

    async def _messages(self, request: Request) -> Response:
        """Anthropic's Messages API: the same draws as the OpenAI dialect, Claude's shapes, a
        tool_use answer when the request offers tools and is not answering one."""
        try:
            body = fastjson.loads(await request.body())
        except ValueError:  # not JSON, not UTF-8, or nested past the recursion limit
            body = None
        if not isinstance(body, dict) or "anthropic-version" not in request.headers:
            problem = "anthropic-version: header is required" if isinstance(body, dict) else ""
            return JSONResponse(claude.error_body(400, problem or "The body is not JSON."), 400)
        self.requests += 1
        rng = request_rng(self.seed, self.profile.name, self.requests)
        prompt, prompt_tokens = claude.prompt(body)
        max_tokens = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else None
        fate = decide(self.profile, prompt, rng, max_tokens=max_tokens, sequence=self.requests)
        if fate.error is not None:
            return await self._fail(request, "anthropic", fate.error, fate.latency)
        answer = claude.Answer.of(body, fate, prompt, prompt_tokens, rng)
        if body.get("stream") is True:
            events = claude.paced_events(answer, self._paced(fate))
            return StreamingResponse(events, media_type="text/event-stream")
        await asyncio.sleep(fate.latency)
        return JSONResponse(answer.message())

    async def _ollama_chat(self, request: Request) -> Response:
        return await self._serve(request, "chat")

    async def _ollama_generate(self, request: Request) -> Response:
        return await self._serve(request, "generate")

    async def _serve(self, request: Request, dialect: Dialect) -> Response:
        try:
            body = fastjson.loads(await request.body())
        except ValueError:  # not JSON, not UTF-8, or nested past the recursion limit
            return _error(dialect, 400, "invalid_request_error", "The body is not JSON.")
        if not isinstance(body, dict):
            return _error(dialect, 400, "invalid_request_error", "The body must be an object.")
        self.requests += 1
        rng = request_rng(self.seed, self.profile.name, self.requests)
        prompt, prompt_tokens = _prompt(dialect, body)
        if dialect == "openai":
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        else:
            max_tokens = (body.get("options") or {}).get("num_predict")
        if not isinstance(max_tokens, int):
            max_tokens = None
        fate = decide(self.profile, prompt, rng, max_tokens=max_tokens, sequence=self.requests)
        if fate.error is not None:
            return await self._fail(request, dialect, fate.error, fate.latency)
        if self.profile.judge is not None:
            text = judge.verdict(body.get("messages"), self.profile.judge, rng)
            fate = replace(fate, text=text, completion_tokens=estimate_tokens(text))
        model = str(body.get("model") or self.profile.name)
        stream = body.get("stream", dialect != "openai") is True
        if dialect == "openai":
            completion_id = f"chatcmpl-{rng.getrandbits(64):016x}"
            if stream:
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                chunks = self._openai_chunks(completion_id, model, fate, prompt_tokens, usage)
                return StreamingResponse(chunks, media_type="text/event-stream")
            await asyncio.sleep(fate.latency)
            return JSONResponse(_openai_completion(completion_id, model, fate, prompt_tokens))
        if stream:
            lines = self._ollama_lines(dialect, model, fate, prompt_tokens)
            return StreamingResponse(lines, media_type="application/x-ndjson")
        await asyncio.sleep(fate.latency)
        return JSONResponse(_ollama_message(dialect, model, fate.text, True, fate, prompt_tokens))

    async def _fail(
        self, request: Request, dialect: Dialect | Literal["anthropic"], error: str, latency: float
    ) -> Response:
        status, kind, message = _ERRORS[error]
        if error == "timeout":
            await self._hold(request)
        elif error != "429":  # rate limits are refused at the door, without delay
            await asyncio.sleep(latency)
        if dialect == "anthropic":
            response = JSONResponse(claude.error_body(status), status_code=status)
        else:
            response = _error(dialect, status, kind, message)
        if error == "429":
            response.headers["Retry-After"] = str(math.ceil(self.profile.errors.retry_after))
        return response

    async def _hold(self, request: Request) -> None:
        """Wait for the first of: release(), the client hanging up, `hold` seconds."""

        async def hung_up() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        waiters = {
            asyncio.ensure_future(self._released.wait()),
            asyncio.ensure_future(hung_up()),
        }
        try:
            await asyncio.wait(waiters, timeout=self.hold, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _openai_chunks(
        self, completion_id: str, model: str, fate: Behaviour, prompt_tokens: int, usage: bool
    ) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(body)}\n\n"

        async for i, piece in self._paced(fate):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            yield chunk([{"index": 0, "delta": delta, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage:
            yield chunk([], usage=_usage(prompt_tokens, fate.completion_tokens))
        yield "data: [DONE]\n\n"

    async def _ollama_lines(
        self, dialect: Dialect, model: str, fate: Behaviour, prompt_tokens: int
    ) -> AsyncIterator[str]:
        async for _, piece in self._paced(fate):
            line = _ollama_message(dialect, model, piece, False, fate, prompt_tokens)
            yield json.dumps(line) + "\n"
        yield json.dumps(_ollama_message(dialect, model, "", True, fate, prompt_tokens)) + "\n"

    @staticmethod
    async def _paced(fate: Behaviour) -> AsyncIterator[tuple[int, str]]:
        """The reply in pieces, paced so that the whole takes about the drawn latency."""
        pieces = _pieces(fate.text)
        first, gap = pacing(fate, len(pieces))
        await asyncio.sleep(first)
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(gap)
            yield i, piece


def pacing(fate: Behaviour, pieces: int) -> tuple[float, float]:
    """(seconds before the first piece, seconds between pieces) of a streamed reply: the first
    token after the profile's own draw (else a quarter of the latency), the rest spread so the
    whole takes the drawn latency, or ends with its first piece when that came later still."""
    first = fate.latency * _FIRST_TOKEN_SHARE if fate.first_token is None else fate.first_token
    return first, max(fate.latency - first, 0.0) / pieces


def _vector(text: str, size: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 127.5 - 1, 4) for b in digest[:size]]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _openai_completion(
    completion_id: str, model: str, fate: Behaviour, prompt_tokens: int
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": fate.text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(prompt_tokens, fate.completion_tokens),
    }


def _ollama_message(
    dialect: Dialect, model: str, text: str, done: bool, fate: Behaviour, prompt_tokens: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "done": done,
    }
    if dialect == "chat":
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    if done:
        nanos = int(fate.latency * 1e9)
        body.update(
            done_reason="stop",
            total_duration=nanos,
            load_duration=0,
            prompt_eval_count=prompt_tokens,
            prompt_eval_duration=nanos // 4,
            eval_count=fate.completion_tokens,
            eval_duration=nanos - nanos // 4,
        )
    return body
