"""The gateway's HTTP face: route by flag, answer through the fallback chain, meter everything.

Clients name a route in the request's `model` field, in OpenAI (`/v1/chat/completions`), Ollama
(`/api/chat`, `/api/generate`) or Anthropic (`/v1/messages`) form. Every routed response carries
`x-canaryctl-variant` (the flag variation served) and `x-canaryctl-model` (what answered, after
fallback), so a caller can see which side of a rollout it landed on. Each request is counted in
llm_requests_total under the outcome of the variant's own model (canaryctl.slo_metrics.OUTCOMES):
`ok`, `error` (it failed and the client got an error), `fallback_ok` (it failed and a fallback
answered), `filtered` (the provider's content filter answered) or `rejected` (the client's own
fault: a 400 here, or 400, 413 or 422 from the model). failures.py and answers.py say what counts as
which.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Scope

from canaryctl.errors import InvalidInput
from canaryctl.gateway import anthropic
from canaryctl.gateway.answers import outcome_of
from canaryctl.gateway.batching import Batcher
from canaryctl.gateway.budgets import Admission, Budgets, Refusal, open_store, store_prefix
from canaryctl.gateway.cache import CachedAnswer, ResponseCache, cache_key
from canaryctl.gateway.fallback import Answered, ChainExhausted, time_attempt, walk_chain
from canaryctl.gateway.feedback import OTHER_KEY, ServedAnswers, parse_feedback
from canaryctl.gateway.identity import Callers, Identity, Refused
from canaryctl.gateway.keys import check_api_keys
from canaryctl.gateway.metrics import OTHER_TIER, BatchMetrics, GatewayMetrics
from canaryctl.gateway.ollama import Dialect, chat_request, ollama_line, ollama_response
from canaryctl.gateway.request_shape import shape_problem
from canaryctl.gateway.routing import Choice, FlagRouter
from canaryctl.gateway.tracing import Tracing
from canaryctl.gateway.upstream import Upstream, UpstreamFailure, UpstreamStream, error_body
from canaryctl.request_limits import BadJSON, LimitBody, clip, parse_json
from canaryctl.runbook.gateway import GatewaySpec, ModelSpec

__all__ = ["create_app"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def create_app(spec: GatewaySpec) -> Starlette:
    """A gateway app for `spec`; the LaunchDarkly client and HTTP pool live for its lifespan.

    Models must have real URLs: `lab://` ones are resolved by canaryctl.lab.LabStack. Every
    model's key must be in the environment (gateway/keys.py): InvalidInput otherwise. The app's
    metrics are at `app.state.metrics` (a GatewayMetrics) and served at `GET /metrics`.
    """
    for i, model in enumerate(spec.models):
        if model.base_url.startswith("lab://"):
            raise InvalidInput(
                f"models[{i}].base_url: {model.base_url} names a lab provider; "
                "serve it with `canaryctl lab serve`"
            )
    check_api_keys(spec)
    gateway = _Gateway(spec)
    if gateway.callers.banner:
        log.warning("%s", gateway.callers.banner)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The SDK loads the flag file synchronously; keep that off the event loop.
        gateway.router = await asyncio.to_thread(FlagRouter, spec, gateway.metrics)
        async with Upstream.open() as upstream:
            gateway.upstream = upstream
            gateway.budgets = gateway.open_budgets()
            try:
                yield
            finally:
                if gateway.budgets is not None:
                    await gateway.budgets.store.close()
                if gateway.tracing is not None:
                    gateway.tracing.close()
                await asyncio.to_thread(gateway.router.close)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", gateway.openai, methods=["POST"]),
            Route("/v1/messages", gateway.messages, methods=["POST"]),
            Route("/v1/embeddings", gateway.embeddings, methods=["POST"]),
            Route("/api/chat", gateway.ollama_chat, methods=["POST"]),
            Route("/api/generate", gateway.ollama_generate, methods=["POST"]),
            Route("/v1/feedback", gateway.feedback, methods=["POST"]),
            Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
            Route("/health", gateway.health, methods=["GET"]),
        ],
        middleware=[Middleware(LimitBody, max_bytes=spec.limits.max_body_bytes, render=_too_big)],
        lifespan=lifespan,
    )
    app.state.metrics = gateway.metrics
    return app


def _error(dialect: Dialect, status: int, body: dict[str, Any], **headers: str) -> JSONResponse:
    if dialect == "anthropic":
        body = anthropic.error_from_openai(status, body)
    elif dialect != "openai":  # Ollama's errors are a bare message
        body = {"error": (body.get("error") or {}).get("message", "error")}
    return JSONResponse(body, status_code=status, headers=headers)


def _refused(dialect: Dialect, refused: Refused) -> JSONResponse:
    body = error_body(refused.message, "invalid_request_error")
    body["error"]["code"] = refused.code
    return _error(dialect, refused.status, body)


def _too_big(scope: Scope, message: str) -> dict[str, Any]:
    if scope["path"].startswith("/api/"):
        return {"error": message}
    if scope["path"] == "/v1/messages":
        return anthropic.error_body(413, message)
    return {"error": {**error_body(message, "invalid_request_error")["error"], "code": "too_big"}}


class _Gateway:
    def __init__(self, spec: GatewaySpec) -> None:
        self.spec = spec
        self.metrics = GatewayMetrics()
        self.models = {m.name: m for m in spec.models}
        self.tiers = frozenset(spec.context.tiers)
        self.cache = ResponseCache(spec.cache, self.metrics.registry) if spec.cache else None
        self.tracing = Tracing(spec.tracing) if spec.tracing else None
        self.router: FlagRouter
        self.upstream: Upstream
        self.budgets: Budgets | None = None
        self.served = ServedAnswers()
        self.callers = Callers(spec.auth, spec.context, spec.limits.max_id_length)
        self.batcher = Batcher(  # self.upstream is opened at start
            lambda m, body: self.upstream.embed(m, body), BatchMetrics(self.metrics.registry)
        )

    def open_budgets(self) -> Budgets | None:
        spec = self.spec.budgets
        if spec is None:
            return None
        store, prefix = open_store(spec), store_prefix(spec)
        registry = self.metrics.registry
        return Budgets(spec, self.models, store, registry, prefix=prefix)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def feedback(self, request: Request) -> Response:
        """A caller's quality score for an answer it got, metered against what served it."""
        body = await self._read(request, "openai")
        if isinstance(body, Response):
            return body
        identity = self.callers.identify(request.headers, body)
        if isinstance(identity, Refused):
            return _refused("openai", identity)
        parsed = parse_feedback(body, self.spec.limits.max_id_length)
        if isinstance(parsed, Refused):
            return _refused("openai", parsed)
        completion_id, score = parsed
        labels = self.served.take(completion_id, identity.key_id)
        if labels is OTHER_KEY:
            message = f"answer {clip(completion_id)} was served to another API key"
            return _refused("openai", Refused(403, message, "not_your_answer"))
        if not isinstance(labels, dict):
            message = (
                f"no answer {clip(completion_id)} to score: unknown, expired or already scored"
            )
            return _error("openai", 404, error_body(message, "invalid_request_error"))
        self.metrics.quality.labels(**labels).observe(score)
        return JSONResponse({"id": completion_id, "score": score, "variant": labels["variant"]})

    async def openai(self, request: Request) -> Response:
        return await self._serve(request, "openai")

    async def messages(self, request: Request) -> Response:
        return await self._serve(request, "anthropic")

    async def ollama_chat(self, request: Request) -> Response:
        return await self._serve(request, "chat")

    async def ollama_generate(self, request: Request) -> Response:
        return await self._serve(request, "generate")

    async def _read(self, request: Request, dialect: Dialect) -> dict[str, Any] | Response:
        """The body as a JSON object, or the 400 to answer."""
        try:
            body = parse_json(await request.body(), self.spec.limits.max_json_depth)
        except BadJSON as bad:
            return _refused(dialect, Refused(400, str(bad), "invalid_json"))
        if not isinstance(body, dict):
            message = "the body must be a JSON object"
            return _error(dialect, 400, error_body(message, "invalid_request_error"))
        return body

    async def _choose(
        self, request: Request, dialect: Dialect
    ) -> tuple[dict[str, Any], Choice, Identity] | Response:
        """The request's body, the flag's choice for it and the requester, or the error."""
        body = await self._read(request, dialect)
        if isinstance(body, Response):
            return body
        if problem := shape_problem(dialect, body):
            return _error(dialect, 400, error_body(problem, "invalid_request_error"))
        identity = self.callers.identify(request.headers, body)
        if isinstance(identity, Refused):
            return _refused(dialect, identity)
        route = self.router.route(body["model"]) if isinstance(body.get("model"), str) else None
        if route is None:
            known = ", ".join(r.name for r in self.spec.routes)
            message = f"no route named {clip(body.get('model'))}; routes: {known}"
            return _error(dialect, 404, error_body(message, "invalid_request_error"))
        choice = self.router.choose(route, identity)
        if self.tracing is not None:
            self.tracing.begin(choice, body)
        return body, choice, identity

    async def _admit(
        self, identity: Identity, choice: Choice, call: dict[str, Any]
    ) -> Admission | Refusal:
        if self.budgets is None:
            return Admission(choice, (), ())
        return await self.budgets.admit(choice, identity.budget_keys(), call)

    async def embeddings(self, request: Request) -> Response:
        """OpenAI's /v1/embeddings: routed by the flag, cached, budgeted and metered like chat."""
        started = time.perf_counter()
        chosen = await self._choose(request, "openai")
        if isinstance(chosen, Response):
            return chosen
        body, choice, identity = chosen
        headers = {"x-canaryctl-variant": choice.variant, "x-canaryctl-model": choice.model.name}
        text = body.get("input")
        if not (isinstance(text, str) and text) and not (isinstance(text, list) and text):
            self._count(choice, choice.model, "rejected", started)
            message = "the request needs an 'input': a string or a list"
            return _error("openai", 400, error_body(message, "invalid_request_error"), **headers)
        key = None
        if self.cache is not None and self.cache.applies_to(choice.route.name):
            key = cache_key(choice, body, embeddings=True)
            hit = self.cache.get(choice.route.name, key) if key else None
            if hit is not None:
                if self.tracing is not None:
                    self.tracing.finish(choice, hit.model, "cache_hit", None, 0.0)
                headers.update({"x-canaryctl-model": hit.model, "x-canaryctl-cache": "hit"})
                return JSONResponse(hit.completion, headers=headers)
        verdict = await self._admit(identity, choice, body)
        if isinstance(verdict, Refusal):
            self._count(choice, choice.model, "rejected", started)
            headers["Retry-After"] = str(verdict.retry_after)
            return _error("openai", 429, verdict.body, **headers)
        admission, choice = verdict, verdict.choice
        try:
            answer = await walk_chain(
                choice,
                self.models,
                self.metrics,
                lambda m: self._traced(m, self.batcher.embed(m, body, choice, identity)),
            )
        except ChainExhausted as exhausted:
            await self._settle(admission, exhausted.model, None)
            return self._failed("openai", choice, exhausted, started, headers)
        usage = answer.result.get("usage")
        await self._settle(admission, answer.model, usage)
        self._count(choice, answer.model, _outcome(answer, "ok"), started, usage)
        if key is not None and self.cache is not None and not answer.fell_back:
            self.cache.put(key, CachedAnswer(answer.model.name, answer.result))
        headers["x-canaryctl-model"] = answer.model.name
        return JSONResponse(answer.result, headers=headers)

    async def _serve(self, request: Request, dialect: Dialect) -> Response:
        started = time.perf_counter()
        chosen = await self._choose(request, dialect)
        if isinstance(chosen, Response):
            return chosen
        body, choice, identity = chosen
        headers = {"x-canaryctl-variant": choice.variant, "x-canaryctl-model": choice.model.name}
        if dialect == "anthropic":
            chat: dict[str, Any] | str | None = anthropic.chat_from_messages(body)
        else:
            chat = chat_request(dialect, body)
        if not isinstance(chat, dict):
            self._count(choice, choice.model, "rejected", started)
            wanted = "a non-empty 'prompt'" if dialect == "generate" else "a list of 'messages'"
            message = chat or f"the request needs {wanted}"
            return _error(dialect, 400, error_body(message, "invalid_request_error"), **headers)
        key = None
        if self.cache is not None and self.cache.applies_to(choice.route.name):
            key = cache_key(choice, chat)
            hit = self.cache.get(choice.route.name, key) if key else None
            if hit is not None:
                if self.tracing is not None:
                    self.tracing.finish(choice, hit.model, "cache_hit", None, 0.0)
                headers.update({"x-canaryctl-model": hit.model, "x-canaryctl-cache": "hit"})
                return JSONResponse(_render(dialect, hit.completion), headers=headers)
        verdict = await self._admit(identity, choice, chat)
        if isinstance(verdict, Refusal):
            self._count(choice, choice.model, "rejected", started)
            headers["Retry-After"] = str(verdict.retry_after)
            return _error(dialect, 429, verdict.body, **headers)
        admission, choice = verdict, verdict.choice
        headers["x-canaryctl-model"] = choice.model.name
        if chat.get("stream") is True:
            return await self._stream(dialect, choice, chat, started, headers, admission)
        try:
            answer = await walk_chain(
                choice,
                self.models,
                self.metrics,
                lambda m: self._traced(m, self.upstream.complete(m, chat)),
            )
        except ChainExhausted as exhausted:
            await self._settle(admission, exhausted.model, None)
            return self._failed(dialect, choice, exhausted, started, headers)
        completion = answer.result
        usage = completion.get("usage")
        await self._settle(admission, answer.model, usage)
        outcome = _outcome(answer, outcome_of(completion))
        self._count(choice, answer.model, outcome, started, usage)
        self.served.remember(
            completion.get("id"), self._labels(choice, answer.model), choice.key_id
        )
        if key is not None and self.cache is not None and outcome == "ok":
            self.cache.put(key, CachedAnswer(answer.model.name, completion))
        headers["x-canaryctl-model"] = answer.model.name
        return JSONResponse(_render(dialect, completion), headers=headers)

    async def _stream(
        self,
        dialect: Dialect,
        choice: Choice,
        chat: dict[str, Any],
        started: float,
        headers: dict[str, str],
        admission: Admission,
    ) -> Response:
        try:
            answer = await walk_chain(
                choice,
                self.models,
                self.metrics,
                lambda m: self._traced(m, self.upstream.open_stream(m, chat)),
                time_success=False,
            )
        except ChainExhausted as exhausted:
            await self._settle(admission, exhausted.model, None)
            return self._failed(dialect, choice, exhausted, started, headers)
        headers["x-canaryctl-model"] = answer.model.name
        wants_usage = bool((chat.get("stream_options") or {}).get("include_usage"))
        events = dialect in ("openai", "anthropic")
        media = "text/event-stream" if events else "application/x-ndjson"
        body = self._relay(dialect, choice, answer, started, wants_usage, admission)
        return StreamingResponse(body, media_type=media, headers=headers)

    async def _relay(
        self,
        dialect: Dialect,
        choice: Choice,
        answer: Answered[UpstreamStream],
        started: float,
        wants_usage: bool,
        admission: Admission,
    ) -> AsyncIterator[str]:
        """Pass chunks on as they come; meter when the stream ends, however it ends."""
        outcome, usage, completion_id = None, None, None
        model_name = answer.model.upstream_model or answer.model.name
        claude = anthropic.EventEncoder(model_name) if dialect == "anthropic" else None
        try:
            async for batch in answer.result:
                out = []
                for chunk in batch:
                    usage = chunk.get("usage") or usage
                    completion_id = chunk.get("id") or completion_id
                    if claude is not None:
                        out.extend(claude.feed(chunk))
                        continue
                    if dialect == "openai":
                        if wants_usage or chunk.get("choices"):
                            out.append(f"data: {json.dumps(chunk)}\n\n")
                        continue
                    choices = chunk.get("choices") or [{}]
                    text = (choices[0].get("delta") or {}).get("content")
                    if text:
                        line = ollama_line(dialect, model_name, text, None, done=False)
                        out.append(json.dumps(line) + "\n")
                if out:
                    yield "".join(out)  # one write per batch the model sent
            outcome = _outcome(answer, answer.result.watch.outcome)
            if claude is not None:
                yield "".join(claude.end(usage))
            elif dialect == "openai":
                yield "data: [DONE]\n\n"
            else:
                yield json.dumps(ollama_line(dialect, model_name, "", usage)) + "\n"
        except UpstreamFailure as failure:
            # Headers are gone: the client sees a cut stream, the metrics see an error.
            log.warning(
                "route %s: %s cut its stream: %s", choice.route.name, answer.model.name, failure
            )
            outcome = "error"
            if claude is not None:  # Anthropic's clients raise on an error event
                yield "".join(claude.failed(failure.status, failure.body))
        finally:
            if outcome is None:  # the client left before the end: count what was seen
                outcome = _outcome(answer, answer.result.watch.outcome)
            await answer.result.aclose()
            time_attempt(self.metrics, choice, answer.model, answer.attempt_started)
            self._count(choice, answer.model, outcome, started, usage)
            if outcome != "error":
                labels = self._labels(choice, answer.model)
                self.served.remember(completion_id, labels, choice.key_id)
            await self._settle(admission, answer.model, usage)

    def _failed(
        self,
        dialect: Dialect,
        choice: Choice,
        exhausted: ChainExhausted,
        started: float,
        headers: dict[str, str],
    ) -> Response:
        failure = exhausted.failure
        self._count(choice, exhausted.model, exhausted.outcome, started)
        headers["x-canaryctl-model"] = exhausted.model.name
        if failure.retry_after:
            headers["Retry-After"] = failure.retry_after
        return _error(dialect, failure.status, failure.body, **headers)

    def _traced(self, model: ModelSpec, call: Awaitable[T]) -> Awaitable[T]:
        """The attempt, in its own span when tracing is on."""
        return call if self.tracing is None else self.tracing.attempt(model, call)

    async def _settle(
        self, admission: Admission, model: ModelSpec, usage: dict[str, Any] | None
    ) -> None:
        if self.budgets is not None:
            await self.budgets.settle(admission, model, usage)

    def _labels(self, choice: Choice, model: ModelSpec) -> dict[str, str]:
        return {
            "route": choice.route.name,
            "variant": choice.variant,
            "model": model.name,
            "provider": model.provider,
            "tier": choice.tier if choice.tier in self.tiers else OTHER_TIER,
        }

    def _count(
        self,
        choice: Choice,
        model: ModelSpec,
        outcome: str,
        started: float,
        usage: dict[str, Any] | None = None,
    ) -> None:
        labels = self._labels(choice, model)
        self.metrics.requests.labels(**labels, outcome=outcome).inc()
        self.metrics.duration.labels(**labels).observe(time.perf_counter() - started)
        cost = 0.0
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            self.metrics.tokens.labels(**labels, kind="prompt").inc(prompt)
            self.metrics.tokens.labels(**labels, kind="completion").inc(completion)
            cost = model.price.usd(prompt, completion)
            self.metrics.cost.labels(**labels).inc(cost)
        if self.tracing is not None:
            self.tracing.finish(choice, model.name, outcome, usage, cost)


def _render(dialect: Dialect, completion: dict[str, Any]) -> dict[str, Any]:
    if dialect == "anthropic":
        return anthropic.message_from_completion(completion)
    return completion if dialect == "openai" else ollama_response(dialect, completion)


def _outcome(answer: Answered[Any], answered: str) -> str:
    """What the variant's own model did: `answered` (ok, filtered) unless it failed first."""
    return "fallback_ok" if answer.fell_back else answered
