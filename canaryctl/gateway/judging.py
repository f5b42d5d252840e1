"""Online judges: a route's `judge` model grades a sample of what the route served, off the
request path, so the quality SLO has scores without the application's feedback.

The request path only *offers* (`offer_answer`, `offer_pair`): a synchronous call that samples,
checks the route's judge budget and puts the job on the route's bounded queue, or counts it as
dropped (`llm_judge_dropped_total{reason="queue_full"|"budget"}`). It never waits: a full queue
drops the job, never delays the user. `concurrency` workers per route take jobs off the queue and
call the judge model through the gateway's own upstream client (no fallback: a judge that fails
gives no verdict), in the format of verdicts.py.

- Pointwise: a score from 0 to 1 for one answer, observed in `llm_quality_score` with the labels
  of what served it (the quality SLO reads that family), or `llm_shadow_quality_score` for a
  shadow answer nobody saw.
- Pairwise: the primary (baseline) and shadow (candidate) answers to the same request; the
  shadow is shown first on every other pair (`swap`), so a judge that favours a position favours
  each side equally often; counted in `llm_judge_pairwise_total` as the candidate's win, tie or
  loss.

Every call is counted in `llm_judge_requests_total{outcome}`: `ok`, `error` (the judge failed)
or `bad_reply` (it answered, but no verdict could be read: never a guessed score). Its cost
(`llm_judge_cost_usd_total`) counts against `max_usd_per_hour`, a per-replica budget over a
rolling hour: past it, offers are dropped until older spend leaves the window.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from canaryctl.errors import InvalidInput
from canaryctl.gateway.failures import UpstreamFailure
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.pipeline import Served
from canaryctl.gateway.spend_cap import LastHourSpend
from canaryctl.gateway.verdicts import (
    Winner,
    answer_text,
    pairwise_messages,
    pointwise_messages,
    question_text,
    read_score,
    read_winner,
)
from canaryctl.runbook.gateway import GatewaySpec, JudgeSpec, ModelSpec

__all__ = ["DEFAULT_RUBRIC", "Complete", "Judges", "pair_result"]

log = logging.getLogger(__name__)

DEFAULT_RUBRIC = (
    "You are a strict grader of an assistant's answers. An answer is good when it is correct, "
    "answers the question asked and says nothing false."
)
"""The rubric of a judge whose route names no `rubric` file."""

Complete = Callable[[ModelSpec, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Upstream.complete: send a chat to a model, get its checked completion or UpstreamFailure."""
Kind = Literal["pointwise", "pairwise"]


def pair_result(winner: Winner, swapped: bool) -> str:
    """The candidate's result: it is answer B, or answer A when the pair was swapped."""
    if winner == "tie":
        return "tie"
    return "win" if (winner == "A") == swapped else "loss"


@dataclass(frozen=True)
class _Job:
    kind: Kind
    messages: list[dict[str, str]]
    labels: Mapping[str, str]
    """Pointwise: what served the answer. Pairwise: the pair's route, baseline and candidate."""
    shadow: bool = False
    swapped: bool = False


class _RouteJudge:
    """One route's judge: its settings, rubric, queue, spend and order-swap alternation."""

    def __init__(
        self, route: str, spec: JudgeSpec, model: ModelSpec, rubric: str, clock: Callable[[], float]
    ) -> None:
        self.route, self.spec, self.model, self.rubric = route, spec, model, rubric
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=spec.queue)
        self.spend = LastHourSpend(clock)
        self.swap_next = False


def _rubric(spec: JudgeSpec, where: str) -> str:
    if spec.rubric is None:
        return DEFAULT_RUBRIC
    try:
        text = spec.rubric.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InvalidInput(f"{where}.rubric: cannot read {spec.rubric}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{where}.rubric: {spec.rubric} is not UTF-8 text") from None
    if not text.strip():
        raise InvalidInput(f"{where}.rubric: {spec.rubric} is empty")
    return text


class Judges:
    """The gateway's online judges, one per route with a `judge` section.

    Build it with the document (rubric files are read here: InvalidInput naming the field), then
    `start(complete)` on the event loop (Upstream.complete, once the upstream is open) and
    `await aclose()` before the upstream closes. `rng` draws the samples; `clock` times spend.
    """

    def __init__(
        self,
        spec: GatewaySpec,
        metrics: GatewayMetrics,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        models = {m.name: m for m in spec.models}
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._routes = {
            route.name: _RouteJudge(
                route.name,
                route.judge,
                models[route.judge.model],
                _rubric(route.judge, f"routes[{i}].judge"),
                clock,
            )
            for i, route in enumerate(spec.routes)
            if route.judge is not None
        }
        self._complete: Complete | None = None
        self._workers: list[asyncio.Task[None]] = []

    @property
    def any(self) -> bool:
        """Whether any route has a judge (else the pipeline need not offer it anything)."""
        return bool(self._routes)

    def start(self, complete: Complete) -> None:
        """Start each route's workers on the running loop."""
        self._complete = complete
        for judge in self._routes.values():
            for _ in range(judge.spec.concurrency):
                self._workers.append(asyncio.create_task(self._work(judge)))

    async def aclose(self) -> None:
        """Stop the workers; jobs still queued are not judged."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    def offer_answer(
        self,
        labels: Mapping[str, str],
        chat: dict[str, Any],
        completion: dict[str, Any],
        *,
        shadow: bool,
    ) -> None:
        """Maybe grade an answer (a `sample` share of them); returns at once, whatever happens."""
        judge = self._routes.get(labels["route"])
        if judge is None or self._rng.random() >= judge.spec.sample:
            return
        answer = answer_text(completion)
        if not answer.strip():  # a tool call, say: nothing a text rubric can grade
            return
        messages = pointwise_messages(judge.rubric, question_text(chat), answer)
        self._offer(judge, _Job("pointwise", messages, dict(labels), shadow=shadow))

    def offer_served(self, served: Served) -> None:
        """The pipeline's after-served stage: a chat answer the user got (streamed ones as
        assembled), unless a content filter stopped it or no model answered."""
        call = served.call
        if call.operation != "chat" or served.completion is None:
            return
        if served.outcome in ("ok", "fallback_ok"):
            labels = call.labels(served.model)
            self.offer_answer(labels, call.request, served.completion, shadow=False)

    def offer_pair(
        self,
        route: str,
        chat: dict[str, Any],
        primary_labels: Mapping[str, str],
        primary_completion: dict[str, Any],
        shadow_labels: Mapping[str, str],
        shadow_completion: dict[str, Any],
    ) -> None:
        """Maybe compare a primary answer with its shadow (a `pairs` share); returns at once."""
        judge = self._routes.get(route)
        if judge is None or self._rng.random() >= judge.spec.pairs:
            return
        primary, candidate = answer_text(primary_completion), answer_text(shadow_completion)
        if not primary.strip() or not candidate.strip():
            return
        swapped = judge.swap_next
        judge.swap_next = judge.spec.swap and not swapped
        first, second = (candidate, primary) if swapped else (primary, candidate)
        messages = pairwise_messages(judge.rubric, question_text(chat), first, second)
        pair = {
            "route": route,
            "baseline": primary_labels["model"],
            "candidate": shadow_labels["model"],
        }
        self._offer(judge, _Job("pairwise", messages, pair, swapped=swapped))

    def _offer(self, judge: _RouteJudge, job: _Job) -> None:
        limit = judge.spec.max_usd_per_hour
        if limit is not None and judge.spend.last_hour() >= limit:
            self._dropped(judge, job.kind, "budget")
            return
        try:
            judge.queue.put_nowait(job)
        except asyncio.QueueFull:
            self._dropped(judge, job.kind, "queue_full")

    def _dropped(self, judge: _RouteJudge, kind: Kind, reason: str) -> None:
        self._metrics.judge_dropped.labels(route=judge.route, kind=kind, reason=reason).inc()

    async def _work(self, judge: _RouteJudge) -> None:
        while True:
            job = await judge.queue.get()
            try:
                await self._judge(judge, job)
            except Exception:  # a worker that dies would leave its queue to fill: log, go on
                log.exception("route %s: judging failed", judge.route)

    async def _judge(self, judge: _RouteJudge, job: _Job) -> None:
        assert self._complete is not None, "Judges.start() was not called"
        chat = {"messages": job.messages, "temperature": 0, "max_tokens": judge.spec.max_tokens}
        try:
            completion = await self._complete(judge.model, chat)
        except UpstreamFailure as failure:
            log.info("route %s: judge %s failed: %s", judge.route, judge.model.name, failure)
            self._count(judge, job.kind, "error")
            return
        usage = completion.get("usage") or {}
        usd = (
            judge.model.usd(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            )
            or 0.0
        )  # a judge model with no price: nothing known to count against its cap
        judge.spend.add(usd)
        self._metrics.judge_cost.labels(route=judge.route, judge=judge.model.name).inc(usd)
        reply = answer_text(completion)
        if job.kind == "pointwise":
            score = read_score(reply)
            if score is None:
                self._count(judge, job.kind, "bad_reply")
                return
            family = self._metrics.shadow_quality if job.shadow else self._metrics.quality
            family.labels(**job.labels).observe(score)
        else:
            winner = read_winner(reply)
            if winner is None:
                self._count(judge, job.kind, "bad_reply")
                return
            result = pair_result(winner, job.swapped)
            self._metrics.judge_pairwise.labels(**job.labels, result=result).inc()
        self._count(judge, job.kind, "ok")

    def _count(self, judge: _RouteJudge, kind: Kind, outcome: str) -> None:
        labels = {"route": judge.route, "judge": judge.model.name, "kind": kind}
        self._metrics.judge_requests.labels(**labels, outcome=outcome).inc()
