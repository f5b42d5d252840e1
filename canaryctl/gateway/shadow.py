"""Shadow traffic: mirror a share of a route's requests to another model, whose answers nobody sees.

A route's `shadow` says where: `{model: NAME, percent: P}` mirrors each request with probability
P/100; `{flag: KEY}` asks that flag per request, in the same context as the route's flag, and
mirrors to the model its variation names (any other value, such as `"off"`, mirrors nothing), so
a rollout turns shadowing on and off by moving a flag.

It runs as an after-served stage of the pipeline: once the primary response has been sent (a
stream: once it ended), `Shadowing.offer` decides (`shadow_target`, a pure function) and puts
the request in a bounded queue that `concurrency` workers drain. Nothing waits on it: a full
queue drops the shadow request, counted in llm_shadow_dropped_total{reason="queue_full"}, and so
does a spent hourly cap (`shadowing.max_usd_per_hour`, reason `budget`). The primary is never
dropped, slowed or changed.

What is mirrored: requests a model was asked to answer, chat or embeddings. A streamed request
is sent to the shadow model as the same request, not streamed, and its answer goes to no one.
Not mirrored: cache hits, requests refused before any model was asked (400, 404, 429), requests
the variant's model found at fault (`rejected`), and requests whose variant is the shadow model
itself. A shadow call has no fallback.

Metering: only the llm_shadow_* families (gateway/metrics.py), with the shadow model as
`variant`, `model` and `provider`, so llm_requests_total, latency, cost, user budgets and the
canary's SLOs never count shadow calls. Shadow calls charge no user budget; their spend is bounded
per replica by `shadowing.max_usd_per_hour` (unset: unbounded), counted from the tokens they
report. They are not traced.

Judging: `Shadowing.judge` is where a judge (ShadowJudge) is given each shadow answer and each
(primary, shadow) pair of chat answers; unset, none is judged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from canaryctl.gateway.answers import outcome_of
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.pipeline import Served
from canaryctl.gateway.routing import FlagRouter
from canaryctl.gateway.spend_cap import LastHourSpend
from canaryctl.gateway.upstream import Upstream, UpstreamFailure
from canaryctl.runbook.gateway import GatewaySpec, ModelSpec, ShadowSpec, StaticShadow

__all__ = ["ShadowJudge", "Shadowing", "shadow_request", "shadow_target"]

log = logging.getLogger(__name__)

OFF = "off"
"""What a shadow flag is taken to say when it cannot be evaluated: no shadow."""


class ShadowJudge(Protocol):
    """Grades answers without blocking (the judges' contract); the shadow stage offers it every
    shadow answer, and every pair of chat answers with the primary's."""

    def offer_answer(
        self,
        labels: dict[str, str],
        chat: dict[str, Any],
        completion: dict[str, Any],
        *,
        shadow: bool,
    ) -> None: ...

    def offer_pair(
        self,
        route: str,
        chat: dict[str, Any],
        primary_labels: dict[str, str],
        primary_completion: dict[str, Any],
        shadow_labels: dict[str, str],
        shadow_completion: dict[str, Any],
    ) -> None: ...


def shadow_target(
    shadow: ShadowSpec,
    flag_value: Callable[[str], object],
    draw: Callable[[], float],
    models: Mapping[str, ModelSpec],
) -> ModelSpec | None:
    """The model to mirror one request to, or None. `draw` is uniform on [0, 1); `flag_value`
    evaluates a flag key for this request's requester."""
    if isinstance(shadow, StaticShadow):
        return models[shadow.model] if draw() * 100 < shadow.percent else None
    value = flag_value(shadow.flag)
    return models.get(value) if isinstance(value, str) else None


def shadow_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request as a plain call: a stream's options go, the rest goes as the client sent it."""
    return {k: v for k, v in request.items() if k not in ("stream", "stream_options")}


@dataclass
@dataclass(frozen=True)
class _Job:
    served: Served
    model: ModelSpec


class Shadowing:
    """The shadow stage of one gateway: `offer` is the after-served stage; `start` and `close`
    bracket its workers (within the upstream pool's life). `draw` and `clock` are for tests."""

    def __init__(
        self,
        spec: GatewaySpec,
        metrics: GatewayMetrics,
        *,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._routes = {r.name: r.shadow for r in spec.routes if r.shadow is not None}
        self._models = {m.name: m for m in spec.models}
        self._limits = spec.shadowing
        self._metrics = metrics
        self._draw = draw
        self._clock = clock
        self._spend = LastHourSpend(clock)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=spec.shadowing.queue)
        self._workers: list[asyncio.Task[None]] = []
        self._upstream: Upstream
        self._router: FlagRouter
        self.judge: ShadowJudge | None = None
        """Where shadow answers and (primary, shadow) pairs are offered for grading: the
        judges' object (offer_answer, offer_pair) once the gateway has one; None judges none."""

    @staticmethod
    def wanted(spec: GatewaySpec) -> bool:
        """Whether any route of `spec` is shadowed (else the gateway needs no shadow stage)."""
        return any(route.shadow is not None for route in spec.routes)

    async def start(self, upstream: Upstream, router: FlagRouter) -> None:
        self._upstream, self._router = upstream, router
        self._workers = [
            asyncio.create_task(self._work(), name=f"canaryctl-shadow-{i}")
            for i in range(self._limits.concurrency)
        ]

    async def close(self) -> None:
        """Stop the workers: shadow requests in flight or queued are abandoned with the
        process (a count of them would die with its metrics)."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def offer(self, served: Served) -> None:
        """The after-served stage: queue a shadow request for `served` if its route wants one."""
        call = served.call
        shadow = self._routes.get(call.choice.route.name)
        if shadow is None or served.outcome == "rejected":
            return
        target = shadow_target(
            shadow,
            lambda flag: self._router.variation(flag, call.identity, OFF),
            self._draw,
            self._models,
        )
        if target is None or target.name == call.choice.model.name:
            return
        cap = self._limits.max_usd_per_hour
        if cap is not None and self._spend.last_hour() >= cap:
            self._drop(served, target, "budget")
            return
        try:
            self._queue.put_nowait(_Job(served, target))
        except asyncio.QueueFull:
            self._drop(served, target, "queue_full")

    def _drop(self, served: Served, model: ModelSpec, reason: str) -> None:
        route = served.call.choice.route.name
        self._metrics.shadow_dropped.labels(route=route, model=model.name, reason=reason).inc()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._send(job)
            except Exception:  # a shadow call must never take a worker down
                log.exception("shadow call to %s failed unexpectedly", job.model.name)

    async def _send(self, job: _Job) -> None:
        served, model = job.served, job.model
        call = served.call
        labels = {
            "route": call.choice.route.name,
            "variant": model.name,
            "model": model.name,
            "provider": model.provider,
            "tier": call.tier,
        }
        started = time.perf_counter()
        answer: dict[str, Any] | None = None
        try:
            if call.operation == "embeddings":
                answer = await self._upstream.embed(model, call.request)
                outcome = "ok"
            else:
                answer = await self._upstream.complete(model, shadow_request(call.request))
                outcome = outcome_of(answer)
        except UpstreamFailure as failure:
            outcome = failure.outcome
        metrics = self._metrics
        metrics.shadow_requests.labels(**labels, outcome=outcome).inc()
        metrics.shadow_duration.labels(**labels).observe(time.perf_counter() - started)
        usage = answer.get("usage") if answer is not None else None
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            metrics.shadow_tokens.labels(**labels, kind="prompt").inc(prompt)
            metrics.shadow_tokens.labels(**labels, kind="completion").inc(completion)
            cost = model.usd(prompt, completion)
            if cost is None:  # unknown, not $0: counted apart, so the candidate's has no value
                metrics.shadow_unpriced.labels(**labels, outcome=outcome).inc()
            else:
                metrics.shadow_cost.labels(**labels).inc(cost)
                self._spend.add(cost)
        if self.judge is not None and answer is not None and call.operation == "chat":
            try:
                self._offer_to_judge(self.judge, served, labels, answer)
            except Exception:  # a judge observes; it never breaks shadowing
                log.exception("the judge refused a shadow answer of %s", model.name)

    @staticmethod
    def _offer_to_judge(
        judge: ShadowJudge, served: Served, labels: dict[str, str], answer: dict[str, Any]
    ) -> None:
        call = served.call
        judge.offer_answer(labels, call.request, answer, shadow=True)
        if served.completion is not None:
            primary = call.labels(served.model)
            route = call.choice.route.name
            judge.offer_pair(route, call.request, primary, served.completion, labels, answer)
