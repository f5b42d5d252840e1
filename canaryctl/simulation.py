"""Rollouts on simulated traffic: what a runbook decides, and how fast, before it runs.

The one decision logic is the controller's: each simulated rollout drives `tick`
(controller/step.py) and `assess` (the analysis the runner calls) as the runner does, with the
clock a number and the metrics drawn from a traffic model, so thousands of rollouts take seconds.
`canaryctl plan` and `benchmarks/rollout_simulation.py` both run here.

The traffic model, per variant: requests arrive as a Poisson process at the variant's share of
`rps`; each fails (outcome `error`) with the variant's error rate, independently; latencies are
log-normal with the variant's p95 and a median at p95 / 2.2 (the lab's providers' shape),
counted in the gateway's histogram buckets; cost per query is the same for both variants, half
the runbook's tightest bound on it. What a model does not describe (quality scores, tokens,
fallbacks, a runbook's own PromQL, a judge's win rate) is left out of the simulated runbook and
named in `not_simulated`. A `pause: approval` is approved at once; a chaos step holds; a shadow
step passes at once. A step undecided past `inconclusive_limit` with `on_inconclusive: pause`
waits for a human who never comes: the run counts as `paused` if it reaches `max_wait`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canaryctl.analysis import Outcome, Verdict, assess
from canaryctl.controller.phases import Phase
from canaryctl.controller.step import (
    Analyze,
    Analyzed,
    Approved,
    ChaosPlayed,
    EndShadow,
    Finish,
    Hold,
    Promote,
    Promoted,
    Rollback,
    RolledBack,
    RolloutState,
    RunChaos,
    SetShadow,
    SetWeight,
    ShadowEnded,
    ShadowSet,
    Wait,
    WeightItem,
    WeightSet,
    plan,
    tick,
)
from canaryctl.gateway.metrics import BUCKETS
from canaryctl.metrics.base import Observation, VariantStats
from canaryctl.runbook.rollout import RolloutSpec, SloSpec
from canaryctl.slo_metrics import SLO_METRICS, Quantile

__all__ = [
    "OUTCOMES",
    "RunResult",
    "Traffic",
    "cost_per_query",
    "holds",
    "simulable",
    "simulate",
    "simulated_spec",
    "summary",
]

OUTCOMES = ("promoted", "rolled_back", "paused")
"""How a simulated rollout ends: `paused` is a step undecided until max_wait with no human."""

_EDGES = (*BUCKETS, math.inf)
_SPREAD = math.log(2.2) / 1.6448536269514722
"""The log-normal's sigma that puts the median at p95 / 2.2."""
_RATES = frozenset(
    {"error_rate", "served_error_rate", "fallback_rate", "filtered_rate", "rejected_rate"}
)
_COST_SPREAD = 0.5
"""Cost per request varies by its mean times this (coefficient of variation)."""


@dataclass(frozen=True)
class Traffic:
    """One variant's requests: the share that fail, the p95 latency (seconds), the mean cost."""

    error_rate: float
    p95: float
    cost: float = 0.001

    def slower_than(self, seconds: float) -> float:
        """The share of requests slower than `seconds`."""
        return 1 - _normal_cdf(math.log(seconds * 2.2 / self.p95) / _SPREAD)

    def bucket_shares(self) -> tuple[float, ...]:
        """The share of requests in each histogram bucket (not cumulative; the last is +inf)."""
        median = self.p95 / 2.2
        cumulative = [
            1.0 if math.isinf(edge) else _normal_cdf(math.log(edge / median) / _SPREAD)
            for edge in _EDGES
        ]
        return tuple(b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True))


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def simulable(slo: SloSpec) -> bool:
    """Does the traffic model describe this SLO's metric?"""
    if slo.metric is None or slo.paired:
        return False
    formula = SLO_METRICS[slo.metric].formula
    return (
        slo.metric in _RATES
        or isinstance(formula, Quantile)
        or slo.metric == ("cost_per_query_usd")
    )


def simulated_spec(spec: RolloutSpec) -> tuple[RolloutSpec, tuple[str, ...]]:
    """The runbook with only the SLOs the model describes, and the ones left out."""
    kept = [slo for slo in spec.slos if simulable(slo)]
    left = tuple(slo.describe() for slo in spec.slos if not simulable(slo))
    return spec.model_copy(update={"slos": kept}), left


def cost_per_query(spec: RolloutSpec) -> float:
    """Half the tightest absolute bound on cost per query, or a tenth of a cent."""
    bounds = [
        slo.max for slo in spec.slos if slo.metric == "cost_per_query_usd" and slo.max is not None
    ]
    return min(bounds) / 2 if bounds else 0.001


@dataclass(frozen=True)
class RunResult:
    """One simulated rollout: how it ended, when (seconds from its start), whether it ever
    waited for a human (`asked`), and per weight step (by plan index) the seconds from the
    weight being set to the step's end and to its first passing analysis (None: never)."""

    outcome: str
    seconds: float
    reason: str
    asked: bool
    step_seconds: dict[int, float] = field(default_factory=dict)
    first_pass: dict[int, float | None] = field(default_factory=dict)


class _Traffic:
    """The counts a gateway's counters would show: one window's running totals per variant."""

    def __init__(self, rng: np.random.Generator, rps: float, canary: Traffic, baseline: Traffic):
        self.rng, self.rps = rng, rps
        self.models = {"cand": canary, "base": baseline}
        self.shares = {name: model.bucket_shares() for name, model in self.models.items()}
        self.window: dict[str, VariantStats] = {}

    def restart(self) -> None:
        self.window = {"cand": VariantStats(), "base": VariantStats()}

    def add(self, seconds: float, weight: float) -> None:
        for name, percent in (("cand", weight), ("base", 100 - weight)):
            model, total = self.models[name], self.window[name]
            n = int(self.rng.poisson(self.rps * seconds * percent / 100)) if percent > 0 else 0
            errors = int(self.rng.binomial(n, model.error_rate)) if n else 0
            slow = self.rng.multinomial(n, self.shares[name]) if n else [0] * len(_EDGES)
            cost = 0.0
            if n:
                spread = model.cost * _COST_SPREAD / math.sqrt(n)
                cost = n * max(float(self.rng.normal(model.cost, spread)), 0.0)
            before = total.latency_buckets or tuple((edge, 0.0) for edge in _EDGES)
            running, buckets = 0.0, []
            for (edge, count), more in zip(before, slow, strict=True):
                running += float(more)
                buckets.append((edge, count + running))
            self.window[name] = VariantStats(
                requests=total.requests + n,
                errors=total.errors + errors,
                cost_usd=total.cost_usd + cost,
                latency_buckets=tuple(buckets),
            )


def simulate(
    spec: RolloutSpec,
    rng: np.random.Generator,
    rps: float,
    canary: Traffic,
    baseline: Traffic,
) -> RunResult:
    """One rollout of `spec` (see simulated_spec) on simulated traffic and a simulated clock."""
    traffic = _Traffic(rng, rps, canary, baseline)
    state, now, event = RolloutState(), 0.0, None
    weight, counted, set_at, step = 0.0, 0.0, 0.0, -1
    step_seconds: dict[int, float] = {}
    first_pass: dict[int, float | None] = {}
    asked = False
    for _ in range(1_000_000):
        decision = tick(spec, state, now, event)
        state, action, event = decision.state, decision.action, None
        asked = asked or state.undecided_until is not None
        match action:
            case SetWeight(percent=percent):
                if step >= 0:
                    step_seconds[step] = now - set_at
                weight, counted, set_at, step = percent, now, now, state.item
                first_pass[step] = None
                traffic.restart()
                event = WeightSet(at=now)
            case Wait(until=until):
                if state.phase is Phase.AWAITING_APPROVAL and state.undecided_until is None:
                    event = Approved("plan")  # a `pause: approval` is approved at once
                else:
                    assert until is not None
                    now = until
            case Analyze(shadow=True):
                event = Analyzed(Verdict(Outcome.PASS, (), now, now))
            case Analyze(since=since):
                traffic.add(now - counted, weight)
                counted = now
                observation = Observation(since, now, dict(traffic.window))
                verdict, ledger = assess(
                    spec.slos,
                    spec.analysis,
                    observation,
                    state.ledger,
                    baseline="base",
                    canary="cand",
                    baseline_served=weight < 100,
                )
                decided = verdict.outcome is Outcome.PASS and not verdict.not_shown_within
                if decided and first_pass.get(step, 0.0) is None:
                    first_pass[step] = now - set_at
                event = Analyzed(verdict, ledger)
            case SetShadow():
                event = ShadowSet(at=now)
            case EndShadow():
                event = ShadowEnded()
            case RunChaos():
                event = ChaosPlayed(True, "not simulated", now)
            case Promote():
                event = Promoted()
            case Rollback():
                event = RolledBack()
            case Finish(outcome=outcome, reason=reason):
                if step >= 0:
                    step_seconds[step] = now - set_at
                if reason.startswith("inconclusive: still undecided after max_wait"):
                    outcome = "paused"
                elif outcome != "promoted":
                    outcome = "rolled_back"
                return RunResult(outcome, now, reason, asked, step_seconds, first_pass)
    raise AssertionError(f"a simulated rollout of {spec!r} did not end")


def holds(spec: RolloutSpec) -> dict[int, float | None]:
    """Per weight step (plan index), how long its hold lasts: the pauses after it, added up
    (at least one interval; None: until approved)."""
    items = plan(spec)
    found: dict[int, float | None] = {}
    for index, item in enumerate(items):
        if not isinstance(item, WeightItem):
            continue
        total: float | None = 0.0
        for later in items[index + 1 :]:
            if not isinstance(later, Hold):
                break
            total = None if later.seconds is None or total is None else total + later.seconds
        found[index] = None if total is None else max(total, spec.analysis.interval)
    return found


def summary(seconds: list[float]) -> dict[str, Any]:
    """Median and 90th percentile of simulated seconds (None when there are none)."""
    if not seconds:
        return {"median": None, "p90": None}
    ordered = sorted(seconds)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
    }
