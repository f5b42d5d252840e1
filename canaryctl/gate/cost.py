"""Monthly cost of each variant at a stated volume, from a measured cost per query. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaryctl.analysis import Check, Outcome
from canaryctl.runbook.gate import CostSpec

__all__ = ["CostProjection", "judge_cost", "project"]


@dataclass(frozen=True)
class CostProjection:
    """`source` says where each cost per query was measured: `live` traffic or the `eval`."""

    monthly_queries: int
    baseline_per_query: float | None
    canary_per_query: float | None
    baseline_source: str
    canary_source: str

    @property
    def baseline_monthly(self) -> float | None:
        return _monthly(self.baseline_per_query, self.monthly_queries)

    @property
    def canary_monthly(self) -> float | None:
        return _monthly(self.canary_per_query, self.monthly_queries)

    @property
    def monthly_difference(self) -> float | None:
        if self.canary_monthly is None or self.baseline_monthly is None:
            return None
        return self.canary_monthly - self.baseline_monthly

    def to_dict(self) -> dict[str, Any]:
        return {
            "monthly_queries": self.monthly_queries,
            "baseline": {
                "cost_per_query_usd": self.baseline_per_query,
                "monthly_usd": self.baseline_monthly,
                "source": self.baseline_source,
            },
            "canary": {
                "cost_per_query_usd": self.canary_per_query,
                "monthly_usd": self.canary_monthly,
                "source": self.canary_source,
            },
            "monthly_difference_usd": self.monthly_difference,
        }


def _monthly(per_query: float | None, queries: int) -> float | None:
    return None if per_query is None else per_query * queries


def project(
    spec: CostSpec,
    *,
    live: tuple[float | None, float | None],
    evaluated: tuple[float | None, float | None],
) -> CostProjection:
    """Per variant (baseline, canary): live traffic's cost per query when measured (it carries
    the real prompt mix), else the eval's."""
    chosen = [
        (live_cost, "live") if live_cost is not None else (eval_cost, "eval")
        for live_cost, eval_cost in zip(live, evaluated, strict=True)
    ]
    (baseline, baseline_source), (canary, canary_source) = chosen
    return CostProjection(
        spec.monthly_queries,
        baseline,
        canary,
        baseline_source if baseline is not None else "none",
        canary_source if canary is not None else "none",
    )


def judge_cost(spec: CostSpec, projection: CostProjection) -> Check | None:
    """A check only when the runbook bounds the canary's monthly cost."""
    if spec.max_monthly_usd is None:
        return None
    slo = f"monthly cost <= ${spec.max_monthly_usd:,.2f}"
    value = projection.canary_monthly
    if value is None:
        outcome, reason = Outcome.INCONCLUSIVE, f"{slo}: no cost per query measured for canary"
    elif value > spec.max_monthly_usd:
        outcome = Outcome.FAIL
        reason = f"canary projects ${value:,.2f}/month, above ${spec.max_monthly_usd:,.2f}"
    else:
        outcome = Outcome.PASS
        reason = f"canary projects ${value:,.2f}/month, within ${spec.max_monthly_usd:,.2f}"
    return Check(
        slo=slo,
        metric="monthly_cost_usd",
        outcome=outcome,
        reason=reason,
        canary_value=value,
        baseline_value=projection.baseline_monthly,
        bound=spec.max_monthly_usd,
        canary_requests=0,
        baseline_requests=0,
    )
