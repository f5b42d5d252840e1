"""Serve low-criticality work with the cheapest model that still meets its quality floor.

A request is low-criticality when its route is marked `criticality: low` (its floor is the
route's `min_quality`) or its job (the X-Job header) is listed in `spec.downgrade.jobs` (the
floor given there; the stricter of the two when both apply). When the policy says so (`always`;
`budget`: the requester has used at least `share` of a budget that applies; `hours`: the clock is
inside a named UTC window) the request goes to the model that, among those whose eval quality
meets the floor, costs least for this request's estimated tokens (ModelSpec.price, the one cost
formula), if that is cheaper than the flag's choice. A model without a known quality, or without
a price (its cost is unknown, not $0), is never chosen. The flag's variation stays the `variant`
label; `model` says what served, and llm_downgrades_total{route,from_model,to_model,reason}
counts each move, `reason` being the policy that fired (always, budget, hours).

`decide` is pure (the clock and the budget share are arguments); `Downgrader` applies it in the
pipeline's `admit` stage and counts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from canaryctl.gateway.budgets import estimate_tokens
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.routing import Choice
from canaryctl.runbook.gateway import DowngradeSpec, GatewaySpec, ModelSpec, RouteSpec

__all__ = ["Downgrade", "Downgrader", "decide", "floor_for", "in_hours", "load_quality"]


@dataclass(frozen=True)
class Downgrade:
    """Serve `model` instead of the flag's choice, because of policy `reason`."""

    model: str
    reason: str


def in_hours(windows: Sequence[str], now: float) -> bool:
    """Is `now` (epoch seconds) inside one of the UTC windows `HH:MM-HH:MM`? A window whose
    end is before its start wraps past midnight; start is inclusive, end exclusive."""
    moment = datetime.fromtimestamp(now, UTC)
    minute = moment.hour * 60 + moment.minute
    for window in windows:
        start_text, end_text = window.split("-")
        start = int(start_text[:2]) * 60 + int(start_text[3:])
        end = int(end_text[:2]) * 60 + int(end_text[3:])
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        if inside:
            return True
    return False


def floor_for(route: RouteSpec, job: str | None, spec: DowngradeSpec) -> float | None:
    """The request's quality floor, or None when it is not low-criticality work."""
    floors = []
    if route.criticality == "low" and route.min_quality is not None:
        floors.append(route.min_quality)
    if job is not None and job in spec.jobs:
        floors.append(spec.jobs[job])
    return max(floors) if floors else None


def decide(
    spec: DowngradeSpec,
    quality: Mapping[str, float],
    models: Sequence[ModelSpec],
    route: RouteSpec,
    served: ModelSpec,
    *,
    job: str | None,
    now: float,
    budget_share: float,
    tokens: tuple[int, int],
) -> Downgrade | None:
    """The cheaper model to serve, or None. `budget_share` is the highest share of a budget
    the requester has used (0 without budgets); `tokens` the request's (prompt, completion)
    estimate, to price each model for this request."""
    floor = floor_for(route, job, spec)
    if floor is None:
        return None
    if spec.when == "always":
        reason = "always"
    elif spec.when == "budget" and spec.share is not None and budget_share >= spec.share:
        reason = "budget"
    elif spec.when == "hours" and in_hours(spec.hours, now):
        reason = "hours"
    else:
        return None
    prompt, completion = tokens
    price = served.usd(prompt, completion)
    if price is None:
        return None  # the flag's choice has no price: nothing is known to be cheaper
    best: tuple[float, str] | None = None
    for model in models:  # in the document's order: the first of equally cheap models wins
        score = quality.get(model.name)
        usd = model.usd(prompt, completion)
        if score is None or score < floor or usd is None:
            continue  # unknown quality, below the floor, or an unknown cost (not $0)
        if usd < price and (best is None or usd < best[0]):
            best = (usd, model.name)
    return None if best is None else Downgrade(best[1], reason)


def load_quality(spec: DowngradeSpec) -> dict[str, float]:
    """Each model's quality: `quality_file`'s eval scores, overridden by `quality`."""
    found: dict[str, float] = {}
    if spec.quality_file is not None:
        from canaryctl.cost.eval_results import read_evals  # only a gateway that names a file

        found = {name: e.score for name, e in read_evals([spec.quality_file]).items()}
    return {**found, **spec.quality}


class Downgrader:
    """The policy of one gateway: `apply` returns the choice to serve, counting downgrades."""

    def __init__(
        self,
        spec: GatewaySpec,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert spec.downgrade is not None
        self.spec = spec.downgrade
        self.quality = load_quality(spec.downgrade)
        self._models = list(spec.models)
        self._by_name = {m.name: m for m in spec.models}
        self._metrics = metrics
        self._clock = clock
        self._estimate = spec.budgets.completion_estimate if spec.budgets else 256

    def apply(
        self, choice: Choice, job: str | None, budget_share: float, request: Mapping[str, Any]
    ) -> Choice:
        found = decide(
            self.spec,
            self.quality,
            self._models,
            choice.route,
            choice.model,
            job=job,
            now=self._clock(),
            budget_share=budget_share,
            tokens=estimate_tokens(request, self._estimate),
        )
        if found is None:
            return choice
        self._metrics.downgrades.labels(
            route=choice.route.name,
            from_model=choice.model.name,
            to_model=found.model,
            reason=found.reason,
        ).inc()
        return replace(choice, model=self._by_name[found.model])
