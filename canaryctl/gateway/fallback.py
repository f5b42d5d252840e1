"""Walk a model's fallback chain: the variant's model first, then its `fallback` list in order.

Every failure of the variant's model but the client's own fault (failures.py) moves down the
chain: 5xx, 429, timeouts, 401/403/404, malformed and empty answers alike.

Each attempt is timed into llm_upstream_duration_seconds and each move down the chain is counted
in llm_fallbacks_total with the reason the previous model failed. Fallback chains are one level:
a fallback model's own `fallback` list is not followed, so a chain can never loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.routing import Choice
from canaryctl.gateway.upstream import UpstreamFailure
from canaryctl.runbook.gateway import ModelSpec

__all__ = ["Answered", "ChainExhausted", "time_attempt", "walk_chain"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Answered(Generic[T]):
    model: ModelSpec
    result: T
    fell_back: bool
    attempt_started: float
    """perf_counter() at the start of the attempt that answered, for streams timed at their end."""


class ChainExhausted(Exception):
    """Every model failed, or one failed in a way no fallback can fix; `model` was tried last
    and `failure` is its (what the client is told). `outcome` is the variant's own model's:
    `rejected` only when that model found the request at fault, else `error`."""

    def __init__(self, model: ModelSpec, failure: UpstreamFailure, outcome: str) -> None:
        super().__init__(f"{model.name}: {failure}")
        self.model = model
        self.failure = failure
        self.outcome = outcome


async def walk_chain(
    choice: Choice,
    models: Mapping[str, ModelSpec],
    metrics: GatewayMetrics,
    attempt: Callable[[ModelSpec], Awaitable[T]],
    *,
    time_success: bool = True,
) -> Answered[T]:
    """Try each model until one answers; `time_success=False` leaves timing it to the caller."""
    chain = [choice.model, *(models[name] for name in choice.model.fallback)]
    outcome = "error"
    for i, model in enumerate(chain):
        started = time.perf_counter()
        try:
            result = await attempt(model)
        except UpstreamFailure as failure:
            time_attempt(metrics, choice, model, started)
            if i == 0:
                outcome = failure.outcome
            if not failure.retryable or i == len(chain) - 1:
                raise ChainExhausted(model, failure, outcome) from failure
            following = chain[i + 1]
            log.info(
                "route %s: %s failed (%s), falling back to %s",
                choice.route.name,
                model.name,
                failure.reason,
                following.name,
            )
            metrics.fallbacks.labels(
                route=choice.route.name,
                variant=choice.variant,
                from_model=model.name,
                to_model=following.name,
                reason=failure.reason,
            ).inc()
            continue
        if time_success:
            time_attempt(metrics, choice, model, started)
        return Answered(model, result, fell_back=i > 0, attempt_started=started)
    raise AssertionError("a chain always has at least the chosen model")


def time_attempt(metrics: GatewayMetrics, choice: Choice, model: ModelSpec, started: float) -> None:
    timer = metrics.attempt_timer(choice.route.name, choice.variant, model.name, model.provider)
    timer.observe(time.perf_counter() - started)
