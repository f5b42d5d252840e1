"""The steady-state hypothesis, judged: pure functions of the checks, a phase and an observation.

A scenario judges what users saw through the gateway as a whole, so the per-variant counts of an
Observation are summed first. Too few requests in the window is its own answer, `inconclusive`:
no data never proves a hypothesis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from canaryctl.metrics.base import Observation, VariantStats
from canaryctl.metrics.measures import MEASURES
from canaryctl.runbook.scenario import HypothesisCheck
from canaryctl.slo_metrics import HISTOGRAMS

__all__ = ["CheckResult", "Judgement", "judge", "total"]

Outcome = Literal["held", "violated", "inconclusive"]


@dataclass(frozen=True)
class CheckResult:
    check: str
    value: float | None
    outcome: Outcome

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "value": self.value, "outcome": self.outcome}


@dataclass(frozen=True)
class Judgement:
    phase: str
    requests: float
    outcome: Outcome
    results: tuple[CheckResult, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "requests": self.requests,
            "outcome": self.outcome,
            "reason": self.reason,
            "checks": [r.to_dict() for r in self.results],
        }


def total(observation: Observation) -> VariantStats:
    """Every variant's counts added up: the gateway's traffic as users saw it."""
    stats = list(observation.variants.values())
    histograms: dict[str, dict[float, float]] = {h: {} for h in HISTOGRAMS}
    for s in stats:
        for name, buckets in histograms.items():
            for bound, count in getattr(s, name):
                buckets[bound] = buckets.get(bound, 0.0) + count
    return VariantStats(
        requests=sum(s.requests for s in stats),
        errors=sum(s.errors for s in stats),
        fallbacks=sum(s.fallbacks for s in stats),
        rejected=sum(s.rejected for s in stats),
        filtered=sum(s.filtered for s in stats),
        **{name: tuple(sorted(buckets.items())) for name, buckets in histograms.items()},
        prompt_tokens=sum(s.prompt_tokens for s in stats),
        completion_tokens=sum(s.completion_tokens for s in stats),
        cost_usd=sum(s.cost_usd for s in stats),
    )


def _value(metric: str, stats: VariantStats) -> float | None:
    if metric == "success_rate":  # users got an answer, fallbacks' included
        errors = MEASURES["served_error_rate"](stats)
        return None if errors is None else 1.0 - errors
    return MEASURES[metric](stats)


def judge(
    checks: Sequence[HypothesisCheck], phase: str, stats: VariantStats, min_requests: int
) -> Judgement:
    """Violated if any check of this phase is out of bounds; inconclusive without enough data."""
    mine = [c for c in checks if phase in c.phases]
    if stats.requests < min_requests:
        results = tuple(CheckResult(c.describe(), None, "inconclusive") for c in mine)
        reason = f"{stats.requests:g} requests in the window, fewer than {min_requests}"
        return Judgement(phase, stats.requests, "inconclusive", results, reason)
    results = []
    for check in mine:
        value = _value(check.metric, stats)
        if value is None:
            outcome: Outcome = "inconclusive"
        elif (check.min is not None and value < check.min) or (
            check.max is not None and value > check.max
        ):
            outcome = "violated"
        else:
            outcome = "held"
        results.append(CheckResult(check.describe(), value, outcome))
    broken = [r for r in results if r.outcome == "violated"]
    unknown = [r for r in results if r.outcome == "inconclusive"]
    if broken:
        reason = "; ".join(
            f"{r.check} but was {r.value:.4g}" for r in broken if r.value is not None
        )
        return Judgement(phase, stats.requests, "violated", tuple(results), reason)
    if unknown:
        reason = "no value for " + ", ".join(r.check for r in unknown)
        return Judgement(phase, stats.requests, "inconclusive", tuple(results), reason)
    return Judgement(phase, stats.requests, "held", tuple(results), "every check held")
