"""The facts the optimizer reads, gathered from where they live: eval results, the gateway's
/metrics, the gateway document's prices, the flag file, and values written in the document.

Precedence, per model and fact (the `sources` of each ModelFacts say which won):

- accuracy: the document's `models.NAME.accuracy`, else an eval result (the low end of its
  interval with `accuracy: lower_bound`, the default, or its score);
- p95: the document's, else Prometheus's, else a scrape's (canaryctl/cost/observed.py), else
  the eval's;
- cost per query: the document's `cost_per_query_usd`, else mean tokens (the document's, else
  the gateway's llm_tokens_total per request) priced with the gateway's ModelSpec.price (the one
  cost formula), else the eval's cost per query; none for a model whose gateway entry sets no
  price (UNPRICED).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from canaryctl.cost.eval_results import EvalFacts, read_evals
from canaryctl.cost.flagplan import tier_splits
from canaryctl.cost.observed import (
    ObservedFacts,
    prometheus_observed,
    prometheus_traffic,
    scrape_observed,
)
from canaryctl.cost.optimize import ModelFacts, TierGoal
from canaryctl.errors import InvalidInput
from canaryctl.flags.file import read_flag
from canaryctl.retry import BACKEND, RetryPolicy
from canaryctl.runbook.gateway import FileFlagSource, Gateway, GatewaySpec, RouteSpec
from canaryctl.runbook.lab import Lab
from canaryctl.runbook.loader import load_document
from canaryctl.runbook.optimize import CostOptimizationSpec

__all__ = ["UNPRICED", "Inputs", "gather"]

UNPRICED = "no price in the gateway document"
"""A model's cost source when its gateway entry sets no `price`: its cost is unknown, not zero
(an eval or a scrape priced it at the default $0), so it serves no tier unless the document
gives `models.NAME.cost_per_query_usd`. A model that truly costs nothing per token says so with
`price: {prompt_per_1k: 0, completion_per_1k: 0}`."""


@dataclass(frozen=True)
class Inputs:
    """Everything `solve` and the runbooks need, resolved from one document."""

    gateway: GatewaySpec
    route: RouteSpec
    models: tuple[ModelFacts, ...]
    goals: tuple[TierGoal, ...]
    today: dict[str, dict[str, float]]
    traffic_source: str = "document"
    """Where the monthly queries per tier came from: `document` or `prometheus`."""


def _gateway(path: Path) -> GatewaySpec:
    doc = load_document(path)
    if isinstance(doc, Lab):
        return doc.spec.gateway
    if isinstance(doc, Gateway):
        return doc.spec
    raise InvalidInput(f"{path}: spec.gateway: expected a Gateway or Lab document")


def _route(spec: CostOptimizationSpec, gateway: GatewaySpec) -> RouteSpec:
    routes = {r.name: r for r in gateway.routes}
    if spec.route is None:
        if len(routes) != 1:
            raise InvalidInput(f"spec.route: the gateway has routes {', '.join(routes)}; pick one")
        return gateway.routes[0]
    if spec.route not in routes:
        raise InvalidInput(f"spec.route: '{spec.route}' is not a route of {spec.gateway}")
    return routes[spec.route]


def _today(
    spec: CostOptimizationSpec, gateway: GatewaySpec, route: RouteSpec, models: set[str]
) -> dict[str, dict[str, float]]:
    if spec.today is not None:
        missing = [t for t in spec.tiers if t not in spec.today]
        if missing:
            raise InvalidInput(f"spec.today: no split for tier(s) {', '.join(missing)}")
        today = {t: dict(spec.today[t]) for t in spec.tiers}
    elif isinstance(gateway.flags, FileFlagSource):
        _, flag = read_flag(gateway.flags.path, route.flag)
        today = tier_splits(flag, spec.tiers)
    else:
        raise InvalidInput(
            f"spec.today: the gateway reads its flags from {gateway.flags.provider}, which this "
            "command does not read; write today's split per tier"
        )
    for tier, split in today.items():
        total = sum(split.values())
        for model in split:
            if model not in models:
                raise InvalidInput(f"spec.today.{tier}: '{model}' is not a model of the gateway")
        today[tier] = {m: share / total for m, share in split.items() if share > 0}
    return today


def gather(
    spec: CostOptimizationSpec, *, client: httpx.Client | None = None, policy: RetryPolicy = BACKEND
) -> Inputs:
    """Read every source the document names and resolve each model's facts."""
    gateway = _gateway(spec.gateway)
    route = _route(spec, gateway)
    names = {m.name for m in gateway.models}
    for where, listed in [("spec.models", spec.models)] + [
        (f"spec.tiers.{t}.models", dict.fromkeys(g.models or [])) for t, g in spec.tiers.items()
    ]:
        for name in listed:
            if name not in names:
                raise InvalidInput(f"{where}: '{name}' is not a model of {spec.gateway}")
    evals = read_evals(spec.evals)
    observed = scrape_observed(spec.metrics, route.name, client=client, policy=policy)
    if spec.prometheus is not None:  # over a window: preferred to counts since each start
        observed |= prometheus_observed(spec.prometheus, route.name, client=client, policy=policy)
    facts = tuple(
        _facts(
            m.name,
            None if m.price is None else m.price.usd,
            spec,
            evals.get(m.name),
            observed.get(m.name),
        )
        for m in gateway.models
    )
    monthly, source = _traffic(spec, route, client, policy)
    goals = tuple(
        TierGoal(
            name=tier,
            monthly_queries=monthly[tier],
            max_p95_seconds=goal.p95,
            min_accuracy=goal.min_accuracy,
            models=None if goal.models is None else frozenset(goal.models),
        )
        for tier, goal in spec.tiers.items()
    )
    today = _today(spec, gateway, route, names)
    return Inputs(gateway, route, facts, goals, today, source)


def _traffic(
    spec: CostOptimizationSpec,
    route: RouteSpec,
    client: httpx.Client | None,
    policy: RetryPolicy,
) -> tuple[dict[str, float], str]:
    """Queries a month per tier, and whether the document or Prometheus said so."""
    measured: dict[str, float] | None = None
    if spec.monthly_queries is None or any(g.share is None for g in spec.tiers.values()):
        assert spec.prometheus is not None  # the document's validator saw to it
        measured = prometheus_traffic(spec.prometheus, route.name, client=client, policy=policy)
    shares = {t: g.share for t, g in spec.tiers.items()}
    if any(share is None for share in shares.values()):
        assert measured is not None
        shares = {t: measured.get(t, 0.0) for t in spec.tiers}
    total_share = sum(s or 0.0 for s in shares.values())
    if total_share <= 0:
        raise InvalidInput(
            f"spec.prometheus: no requests of route {route.name} in the last "
            f"{spec.prometheus.window if spec.prometheus else 0:g}s for tiers "
            f"{', '.join(spec.tiers)}: nothing to measure the traffic on"
        )
    monthly = spec.monthly_queries
    if monthly is None:
        assert measured is not None
        monthly = sum(measured.values())
    source = "document" if measured is None else "prometheus"
    return {t: monthly * (s or 0.0) / total_share for t, s in shares.items()}, source


def _facts(
    name: str,
    usd: Callable[[float, float], float] | None,
    spec: CostOptimizationSpec,
    evaluated: EvalFacts | None,
    observed: ObservedFacts | None,
) -> ModelFacts:
    given = spec.models.get(name)
    sources: dict[str, str] = {}
    accuracy = None if given is None else given.accuracy
    if accuracy is not None:
        sources["accuracy"] = "document"
    elif evaluated is not None:
        lower = spec.accuracy == "lower_bound"
        accuracy = evaluated.lower_bound if lower else evaluated.score
        sources["accuracy"] = f"eval {Path(evaluated.source).name} ({evaluated.items} items)"
    p95 = None if given is None else given.p95
    if p95 is not None:
        sources["p95"] = "document"
    elif observed is not None and observed.p95_seconds is not None:
        p95 = observed.p95_seconds
        sources["p95"] = f"{observed.source} ({observed.requests:.0f} requests)"
    elif evaluated is not None and evaluated.p95_seconds is not None:
        p95 = evaluated.p95_seconds
        sources["p95"] = "eval"
    cost = None if given is None else given.cost_per_query_usd
    if cost is not None:
        sources["cost"] = "document"
    elif usd is None:
        sources["cost"] = UNPRICED
    elif given is not None and given.tokens is not None:
        cost = usd(given.tokens.prompt, given.tokens.completion)
        sources["cost"] = "document tokens x price"
    elif observed is not None and observed.prompt_tokens is not None:
        cost = usd(observed.prompt_tokens, observed.completion_tokens or 0.0)
        sources["cost"] = f"{observed.source} tokens x price"
    elif evaluated is not None and evaluated.cost_per_query is not None:
        cost = evaluated.cost_per_query
        sources["cost"] = "eval"
    if cost is not None and not math.isfinite(cost * (spec.monthly_queries or 1e12)):
        raise InvalidInput(f"{spec.gateway}: {name}: its price is too large to add up")
    return ModelFacts(name, accuracy, p95, cost, sources)
