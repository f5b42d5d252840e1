"""The gateway's request pipeline, written once: every entry point runs the same named stages.

OpenAI chat completions, Anthropic messages, Ollama chat and generate, plain or streamed, and
embeddings all go through `Pipeline.serve`; an entry point only says which dialect it speaks and
which operation it asks for. The stages, in order, each a method of Pipeline:

1. `read`         the body as a JSON object (400)
2. `check_shape`  the dialect's fields have the right types (400)
3. `identify`     who calls: virtual key, user, team, tier, job (401, 403, 431)
4. `route`        the route named in `model` and the flag's choice for the caller (404);
                  the request's trace span begins
5. `translate`    the dialect's body as the OpenAI-shaped request sent upstream (400, counted
                  `rejected`)
6. `look_up`      the response cache: a hit is answered at once, counted only by the cache
7. `admit`        budgets reserve an estimate or refuse (429, counted `rejected`); a soft limit
                  may downgrade the choice, and so may `downgrade` for low-criticality work
8. `answer`       the fallback chain, one `attempt` per model (`stream` for streams: the chain
                  is walked until a stream starts, then `relay` passes it on)
9. `finish`       count (llm_* families, the trace), keep the answer in the cache (its id the
                  gateway's signed one, feedback.py), settle the budget with the tokens
                  reported; `fail` when no model answered
10. `after_served` stages that run once the response is sent (a stream: once it ended), given a
                  `Served` record. They must not block: they hand work to their own queue or
                  task (shadow traffic does). `Pipeline.add_after_served` adds one.

Which optional stages a route runs is decided once, at load, in its `RoutePlan`: a route with no
cache, judge or shadow has none of them in its plan, so its requests never test for them (the
gateway's added latency is per request, and every test it skips is time given back).

A stage that ends the request early raises `Stop` with the response to send.

Outcomes (canaryctl.slo_metrics.OUTCOMES) are those of the variant's own model: failures.py and
answers.py say what counts as which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from canaryctl import fastjson
from canaryctl.gateway import anthropic
from canaryctl.gateway.answers import outcome_of
from canaryctl.gateway.batching import Batcher
from canaryctl.gateway.budgets import Admission, Budgets, Refusal
from canaryctl.gateway.cache import CachedAnswer, ResponseCache, cache_key
from canaryctl.gateway.downgrade import Downgrader
from canaryctl.gateway.fallback import Answered, ChainExhausted, time_attempt, walk_chain
from canaryctl.gateway.feedback import open_answer_ids
from canaryctl.gateway.identity import Callers, Identity, Refused
from canaryctl.gateway.metrics import OTHER_TIER, BatchMetrics, GatewayMetrics
from canaryctl.gateway.ollama import Dialect, chat_request, ollama_line, ollama_response
from canaryctl.gateway.request_shape import shape_problem
from canaryctl.gateway.routing import Choice, FlagRouter
from canaryctl.gateway.spend import SpendMeter
from canaryctl.gateway.tracing import Tracing
from canaryctl.gateway.upstream import Upstream, UpstreamFailure, UpstreamStream, error_body
from canaryctl.request_limits import BadJSON, clip, parse_json
from canaryctl.runbook.gateway import GatewaySpec, ModelSpec, RouteSpec

__all__ = [
    "AfterServed",
    "Call",
    "Operation",
    "Pipeline",
    "RoutePlan",
    "Served",
    "Stop",
    "error_response",
    "refused_response",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

Operation = Literal["chat", "embeddings"]
"""What the request asks a model for: a chat completion (any dialect) or embeddings."""


class FastJSONResponse(JSONResponse):
    """Starlette's JSONResponse written by orjson (canaryctl/fastjson.py): the same compact
    UTF-8 JSON in a fraction of the time."""

    def render(self, content: Any) -> bytes:
        return fastjson.dumps(content)


class Stop(Exception):
    """A stage's last word: the request ends with `response` (an error, a cache hit)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class Call:
    """One request on its way through the stages; each stage fills in what it learns."""

    plan: RoutePlan
    dialect: Dialect
    operation: Operation
    started: float
    """perf_counter() when the request arrived: the end-to-end duration starts here."""
    body: dict[str, Any]
    identity: Identity
    choice: Choice
    """The flag's choice; after `admit`, the budget's (a downgrade may replace the model)."""
    tier: str
    """The requester's tier as a metric label: one of the configured tiers, or `other`."""
    headers: dict[str, str]
    request: dict[str, Any] = field(default_factory=dict)
    """The OpenAI-shaped request sent upstream: a chat request or an embeddings body."""
    cache_key: str | None = None
    admission: Admission | None = None
    served: Served | None = None
    """Set by `finish` or `fail`: what the after-served stages are given."""

    @property
    def streamed(self) -> bool:
        return self.operation == "chat" and self.request.get("stream") is True

    def labels(self, model: ModelSpec) -> dict[str, str]:
        """The request-family labels for an answer from `model` (route, variant, model,
        provider, tier)."""
        return {
            "route": self.choice.route.name,
            "variant": self.choice.variant,
            "model": model.name,
            "provider": model.provider,
            "tier": self.tier,
        }


@dataclass(frozen=True)
class Served:
    """A request a model was asked to answer, as after-served stages see it. Cache hits and
    requests refused before any model was asked (400, 404, 429) have none."""

    call: Call
    model: ModelSpec
    """The model that answered, or the last one that failed."""
    outcome: str
    """The variant's own model's outcome, as counted in llm_requests_total."""
    completion: dict[str, Any] | None
    """The answer in OpenAI shape (a stream's assembled from its chunks; embeddings as sent);
    None when no model answered or a stream was cut."""
    usage: dict[str, Any] | None


AfterServed = Callable[[Served], None]
"""An after-served stage: called once the response is sent; it must return at once."""


@dataclass(frozen=True)
class RoutePlan:
    """The optional stages one route runs, chosen when the gateway loads."""

    route: RouteSpec
    cache: ResponseCache | None
    """The response cache, when it applies to this route."""
    tracing: Tracing | None
    after_served: tuple[tuple[str, AfterServed], ...]
    """(name, stage) pairs, run in order."""

    def stages(self) -> tuple[str, ...]:
        """The names of the optional stages in the plan, in order (for logs and tests)."""
        names = ["cache"] if self.cache is not None else []
        names += ["tracing"] if self.tracing is not None else []
        return (*names, *(name for name, _ in self.after_served))


def error_response(
    dialect: Dialect,
    status: int,
    body: dict[str, Any],
    background: BackgroundTask | None = None,
    **headers: str,
) -> JSONResponse:
    """An OpenAI-shaped error `body` rendered in the dialect the client spoke."""
    if dialect == "anthropic":
        body = anthropic.error_from_openai(status, body)
    elif dialect != "openai":  # Ollama's errors are a bare message
        body = {"error": (body.get("error") or {}).get("message", "error")}
    return FastJSONResponse(body, status_code=status, headers=headers, background=background)


def refused_response(dialect: Dialect, refused: Refused) -> JSONResponse:
    body = error_body(refused.message, "invalid_request_error")
    body["error"]["code"] = refused.code
    return error_response(dialect, refused.status, body)


def _bad_request(dialect: Dialect, message: str, **headers: str) -> Stop:
    return Stop(
        error_response(dialect, 400, error_body(message, "invalid_request_error"), **headers)
    )


class Pipeline:
    """The stages and the parts they use. `router`, `upstream` and `budgets` are set by the
    app's lifespan once they are open."""

    def __init__(self, spec: GatewaySpec, metrics: GatewayMetrics) -> None:
        self.spec = spec
        self.metrics = metrics
        self.models = {m.name: m for m in spec.models}
        self.tiers = frozenset(spec.context.tiers)
        self.cache = ResponseCache(spec.cache, metrics.registry) if spec.cache else None
        self.tracing = Tracing(spec.tracing) if spec.tracing else None
        self.callers = Callers(spec.auth, spec.context, spec.limits.max_id_length)
        self.served, self.unshared_ids = open_answer_ids(spec)
        self.router: FlagRouter
        self.upstream: Upstream
        self.budgets: Budgets | None = None
        self.spend = SpendMeter(spec.spend, metrics)
        self.batcher = Batcher(  # embeddings to a model with `batch:`; upstream is set at start
            lambda m, body: self.upstream.embed(m, body), BatchMetrics(metrics.registry)
        )
        self.downgrader = Downgrader(spec, metrics) if spec.downgrade else None
        cache = self.cache
        self.plans = {
            route.name: RoutePlan(
                route,
                cache if cache is not None and cache.applies_to(route.name) else None,
                self.tracing,
                (("spend", self.meter_spend),),  # on every route: spend: is not optional
            )
            for route in spec.routes
        }
        """Each route's stages, by route name."""

    def add_after_served(self, name: str, stage: AfterServed, routes: set[str]) -> None:
        """Run `stage` (called `name`) after the response on `routes`, after the stages already
        there. Stages run in order; one that raises is logged and skipped, the others still
        run."""
        for route, plan in self.plans.items():
            if route in routes:
                after = (*plan.after_served, (name, stage))
                self.plans[route] = replace(plan, after_served=after)

    async def serve(self, request: Request, dialect: Dialect, operation: Operation) -> Response:
        """Every routed request, start to end."""
        started = time.perf_counter()
        try:
            body = await self.read(request, dialect)
            self.check_shape(dialect, body)
            identity = self.identify(request, dialect, body)
            call = self.route(dialect, operation, body, identity, started)
            self.translate(call)
            self.look_up(call)
            await self.admit(call)
            if call.streamed:
                return await self.stream(call)
            return await self.answer(call)
        except Stop as stop:
            return stop.response

    # 1-4: who asks for what

    async def read(self, request: Request, dialect: Dialect) -> dict[str, Any]:
        try:
            body = parse_json(await request.body(), self.spec.limits.max_json_depth)
        except BadJSON as bad:
            raise Stop(refused_response(dialect, Refused(400, str(bad), "invalid_json"))) from bad
        if not isinstance(body, dict):
            raise _bad_request(dialect, "the body must be a JSON object")
        return body

    def check_shape(self, dialect: Dialect, body: dict[str, Any]) -> None:
        if problem := shape_problem(dialect, body):
            raise _bad_request(dialect, problem)

    def identify(self, request: Request, dialect: Dialect, body: dict[str, Any]) -> Identity:
        identity = self.callers.identify(request.headers, body)
        if isinstance(identity, Refused):
            raise Stop(refused_response(dialect, identity))
        return identity

    def route(
        self,
        dialect: Dialect,
        operation: Operation,
        body: dict[str, Any],
        identity: Identity,
        started: float,
    ) -> Call:
        name = body.get("model")
        plan = self.plans.get(name) if isinstance(name, str) else None
        if plan is None:
            known = ", ".join(r.name for r in self.spec.routes)
            message = f"no route named {clip(name)}; routes: {known}"
            raise Stop(error_response(dialect, 404, error_body(message, "invalid_request_error")))
        choice = self.router.choose(plan.route, identity)
        if plan.tracing is not None:
            plan.tracing.begin(choice, body)
        headers = {"x-canaryctl-variant": choice.variant, "x-canaryctl-model": choice.model.name}
        tier = choice.tier if choice.tier in self.tiers else OTHER_TIER
        return Call(plan, dialect, operation, started, body, identity, choice, tier, headers)

    # 5-7: what goes upstream, if anything

    def translate(self, call: Call) -> None:
        body, dialect = call.body, call.dialect
        if call.operation == "embeddings":
            text = body.get("input")
            if (isinstance(text, str) and text) or (isinstance(text, list) and text):
                call.request = body
                return
            problem = "the request needs an 'input': a string or a list"
        else:
            chat = (
                anthropic.chat_from_messages(body)
                if dialect == "anthropic"
                else chat_request(dialect, body)
            )
            if isinstance(chat, dict):
                call.request = chat
                return
            wanted = "a non-empty 'prompt'" if dialect == "generate" else "a list of 'messages'"
            problem = chat or f"the request needs {wanted}"
        self.count(call, call.choice.model, "rejected")
        raise _bad_request(dialect, problem, **call.headers)

    def look_up(self, call: Call) -> None:
        cache = call.plan.cache
        if cache is None:
            return
        route = call.choice.route.name
        call.cache_key = cache_key(
            call.choice, call.request, embeddings=call.operation == "embeddings"
        )
        hit = cache.get(route, call.cache_key) if call.cache_key else None
        if hit is None:
            return
        if call.plan.tracing is not None:
            call.plan.tracing.finish(call.choice, hit.model, "cache_hit", None, 0.0)
        self.spend.cache_hit(route, self.models.get(hit.model), hit.completion)
        call.headers.update({"x-canaryctl-model": hit.model, "x-canaryctl-cache": "hit"})
        raise Stop(FastJSONResponse(self.render(call, hit.completion), headers=call.headers))

    async def admit(self, call: Call) -> None:
        if self.budgets is None:
            call.admission = Admission(call.choice, (), ())
            self.downgrade(call)
            return
        verdict = await self.budgets.admit(call.choice, call.identity.budget_keys(), call.request)
        if isinstance(verdict, Refusal):
            self.count(call, call.choice.model, "rejected")
            call.headers["Retry-After"] = str(verdict.retry_after)
            raise Stop(error_response(call.dialect, 429, verdict.body, **call.headers))
        call.admission, call.choice = verdict, verdict.choice
        self.downgrade(call)

    def downgrade(self, call: Call) -> None:
        """Low-criticality work to a cheaper model meeting its floor (gateway/downgrade.py)."""
        if self.downgrader is not None and call.admission is not None:
            share, job = call.admission.share, call.identity.job
            call.choice = self.downgrader.apply(call.choice, job, share, call.request)
        call.headers["x-canaryctl-model"] = call.choice.model.name

    # 8-9: the answer

    def attempt(self, call: Call, model: ModelSpec) -> Awaitable[Any]:
        """One try at one model: what the fallback chain calls for each model in turn."""
        if call.operation == "embeddings":
            sent: Awaitable[Any] = self.batcher.embed(
                model, call.request, call.choice, call.identity
            )
        elif call.streamed:
            sent = self.upstream.open_stream(model, call.request)
        else:
            sent = self.upstream.complete(model, call.request)
        tracing = call.plan.tracing
        return sent if tracing is None else tracing.attempt(model, sent)

    async def _walk(self, call: Call, *, time_success: bool = True) -> Answered[Any]:
        try:
            return await walk_chain(
                call.choice,
                self.models,
                self.metrics,
                lambda model: self.attempt(call, model),
                time_success=time_success,
            )
        except ChainExhausted as exhausted:
            raise Stop(await self.fail(call, exhausted)) from exhausted

    async def answer(self, call: Call) -> Response:
        answer = await self._walk(call)
        result: dict[str, Any] = answer.result
        if call.operation == "embeddings":
            outcome = _outcome(answer, "ok")
            cacheable = not answer.fell_back
        else:
            outcome = _outcome(answer, outcome_of(result))
            cacheable = outcome == "ok"
            result["id"] = self.served.issue(call.labels(answer.model), call.choice.key_id)
        if call.cache_key is not None and call.plan.cache is not None and cacheable:
            call.plan.cache.put(call.cache_key, CachedAnswer(answer.model.name, result))
        await self.finish(call, answer.model, outcome, result)
        call.headers["x-canaryctl-model"] = answer.model.name
        return FastJSONResponse(
            self.render(call, result), headers=call.headers, background=self._after(call)
        )

    async def stream(self, call: Call) -> Response:
        answer: Answered[UpstreamStream] = await self._walk(call, time_success=False)
        call.headers["x-canaryctl-model"] = answer.model.name
        events = call.dialect in ("openai", "anthropic")
        media = "text/event-stream" if events else "application/x-ndjson"
        return StreamingResponse(
            self.relay(call, answer),
            media_type=media,
            headers=call.headers,
            background=self._after(call),
        )

    async def relay(self, call: Call, answer: Answered[UpstreamStream]) -> AsyncIterator[bytes]:
        """Pass chunks on as they come; finish when the stream ends, however it ends."""
        dialect = call.dialect
        wants_usage = bool((call.request.get("stream_options") or {}).get("include_usage"))
        outcome, usage, finish_reason = None, None, None
        completion_id = self.served.issue(call.labels(answer.model), call.choice.key_id)
        text: list[str] = []
        model_name = answer.model.upstream_model or answer.model.name
        claude = anthropic.EventEncoder(model_name) if dialect == "anthropic" else None
        model, watch = answer.model, answer.result.watch
        timing = self.metrics.stream_timing(
            call.choice.route.name, call.choice.variant, model.name, model.provider, call.tier
        )
        first_token: float | None = None
        try:
            async for batch in answer.result:
                out: list[bytes] = []
                for chunk in batch:
                    usage = chunk.get("usage") or usage
                    chunk["id"] = completion_id
                    choices = chunk.get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content")
                    finish_reason = choices[0].get("finish_reason") or finish_reason
                    if isinstance(piece, str):
                        text.append(piece)
                    if claude is not None:
                        out.extend(event.encode() for event in claude.feed(chunk))
                    elif dialect == "openai":
                        if wants_usage or chunk.get("choices"):
                            out.append(b"data: " + fastjson.dumps(chunk) + b"\n\n")
                    elif piece:
                        line = ollama_line(dialect, model_name, piece, None, done=False)
                        out.append(fastjson.dumps(line) + b"\n")
                if out:
                    if first_token is None and watch.answered:  # the first content goes out
                        first_token = time.perf_counter()
                        timing.first_token(first_token - call.started)
                    yield b"".join(out)  # one write per batch the model sent
            if first_token is not None:
                timing.generated(time.perf_counter() - first_token, usage)
            outcome = _outcome(answer, answer.result.watch.outcome)
            if claude is not None:
                yield "".join(claude.end(usage)).encode()
            elif dialect == "openai":
                yield b"data: [DONE]\n\n"
            else:
                yield fastjson.dumps(ollama_line(dialect, model_name, "", usage)) + b"\n"
        except UpstreamFailure as failure:
            # Headers are gone: the client sees a cut stream, the metrics see an error.
            log.warning(
                "route %s: %s cut its stream: %s",
                call.choice.route.name,
                answer.model.name,
                failure,
            )
            outcome = "error"
            if claude is not None:  # Anthropic's clients raise on an error event
                yield "".join(claude.failed(failure.status, failure.body)).encode()
        finally:
            if outcome is None:  # the client left before the end: count what was seen
                outcome = _outcome(answer, answer.result.watch.outcome)
            await answer.result.aclose()
            time_attempt(self.metrics, call.choice, answer.model, answer.attempt_started)
            completion = None
            if outcome != "error":
                completion = _assembled(completion_id, model_name, text, finish_reason, usage)
            else:
                self.served.burn(completion_id)
            await self.finish(call, answer.model, outcome, completion, usage)

    async def finish(
        self,
        call: Call,
        model: ModelSpec,
        outcome: str,
        completion: dict[str, Any] | None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Count, then settle the budget: the synchronous step first, so a stream cut by its
        client still counts before the settlement's await."""
        if usage is None and completion is not None:
            usage = completion.get("usage")
        self.count(call, model, outcome, usage)
        call.served = Served(call, model, outcome, completion, usage)
        await self.settle(call, model, usage)

    async def fail(self, call: Call, exhausted: ChainExhausted) -> Response:
        """No model answered: the client is told what the last one said."""
        failure = exhausted.failure
        await self.settle(call, exhausted.model, None)
        # A variant is judged on its own model: when every model failed, the failure is its own.
        self.count(call, call.choice.model, exhausted.outcome)
        call.served = Served(call, call.choice.model, exhausted.outcome, None, None)
        call.headers["x-canaryctl-model"] = exhausted.model.name
        if failure.retry_after:
            call.headers["Retry-After"] = failure.retry_after
        return error_response(
            call.dialect, failure.status, failure.body, self._after(call), **call.headers
        )

    async def settle(self, call: Call, model: ModelSpec, usage: dict[str, Any] | None) -> None:
        if self.budgets is not None and call.admission is not None:
            await self.budgets.settle(call.admission, model, usage)

    def count(
        self, call: Call, model: ModelSpec, outcome: str, usage: dict[str, Any] | None = None
    ) -> None:
        """The request in the user-facing families (llm_requests_total and its kin), and the
        end of its trace span."""
        choice = call.choice
        series = self.metrics.series(
            choice.route.name, choice.variant, model.name, model.provider, call.tier
        )
        series.count(outcome, time.perf_counter() - call.started)
        cost: float | None = 0.0
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            cost = model.usd(prompt, completion)  # None: no price, counted apart
            series.spent(prompt, completion, cost, outcome)
        if call.plan.tracing is not None:
            call.plan.tracing.finish(choice, model.name, outcome, usage, cost)

    def render(self, call: Call, completion: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI-shaped answer in the client's dialect."""
        if call.operation == "embeddings" or call.dialect == "openai":
            return completion
        if call.dialect == "anthropic":
            return anthropic.message_from_completion(completion)
        return ollama_response(call.dialect, completion)

    # 10: after the response

    def meter_spend(self, served: Served) -> None:
        """The spend families (gateway/spend.py): by team and job, repeats, top users."""
        call = served.call
        self.spend.record(
            call.choice.route.name,
            served.model,
            call.identity,
            call.request,
            served.usage,
            answered=served.outcome not in ("error", "rejected"),
            fell_back=served.outcome == "fallback_ok",
        )

    def _after(self, call: Call) -> BackgroundTask | None:
        """The response's background task: Starlette runs it once the body is sent."""
        return _AfterServed(self._run_after_served, call) if call.plan.after_served else None

    async def _run_after_served(self, call: Call) -> None:
        served = call.served
        if served is None:
            return
        for name, stage in call.plan.after_served:
            try:
                stage(served)
            except Exception:  # an observer never breaks the gateway
                log.exception("after-served stage %s failed", name)


class _AfterServed(BackgroundTask):
    """Starlette's BackgroundTask for a coroutine function known to be one: its constructor
    asks `inspect` whether the function is async, on every request (a few percent of a
    streamed request's CPU in the gateway's profile)."""

    def __init__(self, run: Callable[[Call], Awaitable[None]], call: Call) -> None:
        self.func, self.args, self.kwargs, self.is_async = run, (call,), {}, True


def _outcome(answer: Answered[Any], answered: str) -> str:
    """What the variant's own model did: `answered` (ok, filtered) unless it failed first."""
    return "fallback_ok" if answer.fell_back else answered


def _assembled(
    completion_id: str,
    model: str,
    text: list[str],
    finish_reason: str | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """A streamed answer as the completion it adds up to, for after-served stages."""
    completion: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(text)},
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage:
        completion["usage"] = usage
    return completion
