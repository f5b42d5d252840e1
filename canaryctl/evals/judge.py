"""Judge an eval: each variant's score with its interval, and the canary against both bounds.

Decisions use two-sided intervals at the eval's `confidence`, read the way non-inferiority trials
read them: the canary passes `min_score` when its whole interval is at or above it and fails when
its whole interval is below; it passes the comparison when the interval for canary - baseline
lies above -margin and fails when it lies below. An interval that straddles a bound proves
neither: INCONCLUSIVE, as is any eval with fewer than `min_items` items. Pure: numbers in, the
analysis core's Checks out, so gate checks read like rollout checks (the comparison's bound is
baseline score - margin; its evidence gives the interval the decision used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canaryctl.analysis import Check, Outcome
from canaryctl.evals.runner import ItemResult
from canaryctl.evals.stats import newcombe_interval, percentile, wilson_interval
from canaryctl.runbook.gate import EvalSpec
from canaryctl.runbook.price import PriceSpec

__all__ = ["ModelScore", "judge_eval", "summarize"]


@dataclass(frozen=True)
class ModelScore:
    """One variant's eval: `right` of `items` (errors score as wrong), latency, cost."""

    variant: str
    model: str
    items: int
    right: int
    errors: int
    interval: tuple[float, float]
    latency_p50: float | None
    latency_p95: float | None
    cost_usd: float | None
    """None when the model has no price: the cost is unknown, not $0."""

    @property
    def score(self) -> float:
        return self.right / self.items if self.items else 0.0

    @property
    def cost_per_query(self) -> float | None:
        answered = self.items - self.errors
        if self.cost_usd is None or answered <= 0:
            return None
        return self.cost_usd / answered

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "model": self.model,
            "items": self.items,
            "right": self.right,
            "errors": self.errors,
            "score": self.score,
            "interval": list(self.interval),
            "latency_p50_seconds": self.latency_p50,
            "latency_p95_seconds": self.latency_p95,
            "cost_usd": self.cost_usd,
            "cost_per_query_usd": self.cost_per_query,
        }


def summarize(
    variant: str,
    model: str,
    results: Sequence[ItemResult],
    price: PriceSpec | None,
    confidence: float,
) -> ModelScore:
    right = sum(r.correct for r in results)
    latencies = [r.latency for r in results if r.latency is not None and r.error is None]
    return ModelScore(
        variant=variant,
        model=model,
        items=len(results),
        right=right,
        errors=sum(r.error is not None for r in results),
        interval=wilson_interval(right, len(results), confidence),
        latency_p50=percentile(latencies, 0.50),
        latency_p95=percentile(latencies, 0.95),
        cost_usd=None if price is None else sum(r.cost(price) for r in results),
    )


def _check(
    slo: str,
    metric: str,
    outcome: Outcome,
    reason: str,
    value: float,
    baseline_value: float | None,
    bound: float,
    canary: ModelScore,
    baseline: ModelScore,
) -> Check:
    return Check(
        slo=slo,
        metric=metric,
        outcome=outcome,
        reason=reason,
        canary_value=value,
        baseline_value=baseline_value,
        bound=bound,
        canary_requests=canary.items,
        baseline_requests=baseline.items,
    )


def _pct(value: float) -> str:
    return f"{value:.1%}"


def judge_eval(spec: EvalSpec, canary: ModelScore, baseline: ModelScore) -> tuple[Check, ...]:
    """Two checks: the canary's own score, and the canary against the baseline."""
    level = f"{spec.confidence:.0%}"
    floor_slo = f"eval score >= {spec.min_score:g}"
    compare_slo = f"eval score >= baseline - {spec.margin:g}"
    low, high = canary.interval
    diff = canary.score - baseline.score
    diff_low, diff_high = newcombe_interval(
        canary.right, canary.items, baseline.right, baseline.items, spec.confidence
    )
    shown = f"{_pct(canary.score)} ({level} interval {_pct(low)}..{_pct(high)})"
    shown_diff = f"{diff:+.1%} ({level} interval {diff_low:+.1%}..{diff_high:+.1%})"

    few = min(canary.items, baseline.items)
    if few < spec.min_items:
        reason = f"too few items ({few} < min_items {spec.min_items})"
        return (
            _check(floor_slo, "eval_score", Outcome.INCONCLUSIVE, f"{floor_slo}: {reason}",
                   canary.score, None, spec.min_score, canary, baseline),
            _check(compare_slo, "eval_score_vs_baseline", Outcome.INCONCLUSIVE,
                   f"{compare_slo}: {reason}", canary.score, baseline.score,
                   baseline.score - spec.margin, canary, baseline),
        )  # fmt: skip

    if low >= spec.min_score:
        floor = Outcome.PASS, f"eval score {shown} is at least {spec.min_score:g}"
    elif high < spec.min_score:
        floor = Outcome.FAIL, f"eval score {shown} is below {spec.min_score:g}"
    else:
        floor = Outcome.INCONCLUSIVE, f"eval score {shown} straddles {spec.min_score:g}"
    if diff_low >= -spec.margin:
        versus = Outcome.PASS, f"canary - baseline = {shown_diff} is within -{spec.margin:g}"
    elif diff_high < -spec.margin:
        versus = Outcome.FAIL, f"canary - baseline = {shown_diff} is worse than -{spec.margin:g}"
    else:
        versus = (
            Outcome.INCONCLUSIVE,
            f"canary - baseline = {shown_diff} straddles -{spec.margin:g}",
        )
    return (
        _check(floor_slo, "eval_score", *floor, canary.score, None, spec.min_score,
               canary, baseline),
        _check(compare_slo, "eval_score_vs_baseline", *versus, canary.score, baseline.score,
               baseline.score - spec.margin, canary, baseline),
    )  # fmt: skip
