"""The gateway's HTTP face: route by flag, answer through the fallback chain, meter everything.

Clients name a route in the request's `model` field, in OpenAI (`/v1/chat/completions`), Ollama
(`/api/chat`, `/api/generate`) or Anthropic (`/v1/messages`) form. Every routed response carries
`x-canaryctl-variant` (the flag variation served) and `x-canaryctl-model` (what answered, after
fallback), so a caller can see which side of a rollout it landed on. Each request is counted in
llm_requests_total under the outcome of the variant's own model (canaryctl.slo_metrics.OUTCOMES):
`ok`, `error` (it failed and the client got an error), `fallback_ok` (it failed and a fallback
answered), `filtered` (the provider's content filter answered) or `rejected` (the client's own
fault: a 400 here, or 400, 413 or 422 from the model). failures.py and answers.py say what counts as
which. Every routed request runs the stages of pipeline.py, the optional ones as its route's plan
says; this module only maps paths to them and owns the parts' lifetimes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from canaryctl.errors import InvalidInput
from canaryctl.gateway import anthropic
from canaryctl.gateway.budgets import Budgets, open_store, store_prefix
from canaryctl.gateway.feedback import OTHER_KEY, parse_feedback
from canaryctl.gateway.identity import Refused
from canaryctl.gateway.judging import Judges
from canaryctl.gateway.keys import check_api_keys
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.pipeline import Pipeline, Stop, error_response, refused_response
from canaryctl.gateway.routing import FlagRouter
from canaryctl.gateway.scrubbing import Scrubber, configured_secrets
from canaryctl.gateway.shadow import Shadowing
from canaryctl.gateway.split_routing import SplitFlagRouter
from canaryctl.gateway.upstream import Upstream, error_body
from canaryctl.request_limits import clip
from canaryctl.runbook.gateway import GatewaySpec, SplitFlagSource
from canaryctl.serving import limited

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(spec: GatewaySpec) -> Starlette:
    """A gateway app for `spec`; the LaunchDarkly client and HTTP pool live for its lifespan.

    Models must have real URLs: `lab://` ones are resolved by canaryctl.lab.LabStack. Every
    model's key must be in the environment (gateway/keys.py): InvalidInput otherwise. The app's
    metrics are at `app.state.metrics` (a GatewayMetrics) and served at `GET /metrics`; its
    Pipeline, with each route's plan of stages, at `app.state.pipeline`.
    """
    for i, model in enumerate(spec.models):
        if model.base_url.startswith("lab://"):
            raise InvalidInput(
                f"models[{i}].base_url: {model.base_url} names a lab provider; "
                "serve it with `canaryctl lab serve`"
            )
    check_api_keys(spec)
    gateway = _Gateway(spec)
    pipeline = gateway.pipeline
    for warning in (pipeline.callers.banner, pipeline.unshared_ids):
        if warning:
            log.warning("%s", warning)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The SDK loads the flag file synchronously; keep that off the event loop.
        router = SplitFlagRouter if isinstance(spec.flags, SplitFlagSource) else FlagRouter
        pipeline.router = await asyncio.to_thread(router, spec, gateway.metrics)
        async with Upstream.open(gateway.scrubber) as upstream:
            pipeline.upstream = upstream
            pipeline.budgets = gateway.open_budgets()
            gateway.judges.start(upstream.complete)
            if gateway.shadowing is not None:
                await gateway.shadowing.start(upstream, pipeline.router)
            try:
                yield
            finally:
                if gateway.shadowing is not None:
                    await gateway.shadowing.close()
                await gateway.judges.aclose()
                if pipeline.budgets is not None:
                    await pipeline.budgets.store.close()
                if pipeline.tracing is not None:
                    pipeline.tracing.close()
                await asyncio.to_thread(pipeline.router.close)

    routed = gateway.routed()
    app = Starlette(
        routes=[
            *(Route(path, handler, methods=["POST"]) for path, handler in routed.items()),
            Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
            Route("/health", gateway.health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = gateway.metrics
    app.state.pipeline = pipeline
    app.add_middleware(_Routed, handlers=routed)  # innermost: inside the limits
    return limited(app, spec.limits.server(), _refused)


Handler = Callable[[Request], Awaitable[Response]]


class _Routed:
    """The routed POSTs straight to their handler, past Starlette's router and its exception
    layers, which wrap every `send` in one more call each, on every request (docs/gateway.md).
    What those layers would do here they do not: the handlers raise no HTTPException, and any
    other exception still reaches Starlette's ServerErrorMiddleware (a 500), outside this. Any
    other method or path, or an app mounted under a root path, goes the usual way (a 405, a
    404, a redirect)."""

    def __init__(self, app: ASGIApp, handlers: dict[str, Handler]) -> None:
        self.app, self.handlers = app, handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self.handlers.get(scope["path"])
            if handler is not None:
                response = await handler(Request(scope, receive, send))
                if isinstance(response, StreamingResponse):
                    await _stream(response, receive, send)
                else:
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _stream(response: StreamingResponse, receive: Receive, send: Send) -> None:
    """What Starlette's StreamingResponse does under uvicorn (ASGI 2.3, whose `send` is silent
    once the client has gone), in plain asyncio: the chunks are sent as they come while one
    task waits for the client's disconnect and, if it comes first, cancels the relay (its
    upstream stream is closed); the background (the after-served stages) runs either way.
    Starlette does it with an anyio task group per stream, a third of a streamed request's
    CPU in the gateway's profile (docs/gateway.md)."""
    relay = asyncio.current_task()
    assert relay is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True
        relay.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        start = {"type": "http.response.start", "status": response.status_code}
        await send({**start, "headers": response.raw_headers})
        async for chunk in response.body_iterator:
            if not isinstance(chunk, bytes | memoryview):
                chunk = chunk.encode(response.charset)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not left:
            raise
        relay.uncancel()  # the client's leaving, not ours: the background still runs
    finally:
        watcher.cancel()
    if response.background is not None:
        await response.background()


def _refused(scope: Scope, status: int, message: str) -> dict[str, Any]:
    """A request refused before any route reads it (request_limits: 413, 429, 503), in the
    dialect of the path it was sent to."""
    if scope["path"].startswith("/api/"):
        return {"error": message}
    if scope["path"] == "/v1/messages":
        return anthropic.error_body(status, message)
    return error_body(message, "invalid_request_error")


class _Gateway:
    """The endpoints: each routed one hands its request to the one pipeline."""

    def __init__(self, spec: GatewaySpec) -> None:
        self.spec = spec
        self.metrics = GatewayMetrics()
        self.pipeline = Pipeline(spec, self.metrics)
        secrets = configured_secrets(spec, self.pipeline.callers.key_envs)
        self.scrubber = Scrubber(secrets)
        """Every body a model sends passes it: no configured secret reaches a client or a log."""
        self.judges = Judges(spec, self.metrics)
        judged = {route.name for route in spec.routes if route.judge is not None}
        if judged:
            self.pipeline.add_after_served("judge", self.judges.offer_served, judged)
        self.shadowing = Shadowing(spec, self.metrics) if Shadowing.wanted(spec) else None
        if self.shadowing is not None:
            if self.judges.any:  # shadow answers and pairs are judged on routes with a judge
                self.shadowing.judge = self.judges
            shadowed = {route.name for route in spec.routes if route.shadow is not None}
            self.pipeline.add_after_served("shadow", self.shadowing.offer, shadowed)

    def open_budgets(self) -> Budgets | None:
        spec = self.spec.budgets
        if spec is None:
            return None
        store, prefix = open_store(spec), store_prefix(spec)
        registry = self.metrics.registry
        return Budgets(spec, self.pipeline.models, store, registry, prefix=prefix)

    def routed(self) -> dict[str, Handler]:
        """The POST endpoints by path (the Starlette routes say the same, for the rest)."""
        return {
            "/v1/chat/completions": self.openai,
            "/v1/messages": self.messages,
            "/v1/embeddings": self.embeddings,
            "/api/chat": self.ollama_chat,
            "/api/generate": self.ollama_generate,
            "/v1/feedback": self.feedback,
        }

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def feedback(self, request: Request) -> Response:
        """A caller's quality score for an answer it got, metered against what served it."""
        pipeline = self.pipeline
        try:
            body = await pipeline.read(request, "openai")
            identity = pipeline.identify(request, "openai", body)
        except Stop as stop:
            return stop.response
        parsed = parse_feedback(body, pipeline.served.max_length)
        if isinstance(parsed, Refused):
            return refused_response("openai", parsed)
        completion_id, score = parsed
        labels = pipeline.served.take(completion_id, identity.key_id)
        if labels is OTHER_KEY:
            message = f"answer {clip(completion_id)} was served to another API key"
            return refused_response("openai", Refused(403, message, "not_your_answer"))
        if not isinstance(labels, dict):
            message = (
                f"no answer {clip(completion_id)} to score: unknown, expired or already scored"
            )
            return error_response("openai", 404, error_body(message, "invalid_request_error"))
        self.metrics.quality.labels(**labels).observe(score)
        return JSONResponse({"id": completion_id, "score": score, "variant": labels["variant"]})

    async def openai(self, request: Request) -> Response:
        return await self.pipeline.serve(request, "openai", "chat")

    async def messages(self, request: Request) -> Response:
        return await self.pipeline.serve(request, "anthropic", "chat")

    async def ollama_chat(self, request: Request) -> Response:
        return await self.pipeline.serve(request, "chat", "chat")

    async def ollama_generate(self, request: Request) -> Response:
        return await self.pipeline.serve(request, "generate", "chat")

    async def embeddings(self, request: Request) -> Response:
        """OpenAI's /v1/embeddings: routed by the flag, cached, budgeted and metered like chat."""
        return await self.pipeline.serve(request, "openai", "embeddings")
