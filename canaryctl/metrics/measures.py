"""The SLO metrics, computed from a variant's counts; None when there is nothing to measure."""

from __future__ import annotations

import math
from collections.abc import Callable

from canaryctl.metrics.base import VariantStats

__all__ = ["MEASURES", "NEEDS", "histogram_quantile", "measure", "samples"]


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(upper_bound):
                return lower_bound  # the quantile is above the highest finite bucket
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = upper_bound, count
    return lower_bound


def _ratio(numerator: float, stats: VariantStats) -> float | None:
    return numerator / stats.requests if stats.requests > 0 else None


MEASURES: dict[str, Callable[[VariantStats], float | None]] = {
    "error_rate": lambda s: _ratio(s.errors, s),
    "fallback_rate": lambda s: _ratio(s.fallbacks, s),
    "latency_p50_seconds": lambda s: histogram_quantile(0.50, s.latency_buckets),
    "latency_p90_seconds": lambda s: histogram_quantile(0.90, s.latency_buckets),
    "latency_p95_seconds": lambda s: histogram_quantile(0.95, s.latency_buckets),
    "latency_p99_seconds": lambda s: histogram_quantile(0.99, s.latency_buckets),
    "cost_per_query_usd": lambda s: _ratio(s.cost_usd, s),
    "tokens_per_query": lambda s: _ratio(s.prompt_tokens + s.completion_tokens, s),
    "quality_score": lambda s: s.quality_sum / s.quality_count if s.quality_count > 0 else None,
}


_LATENCY = frozenset({"latency_buckets"})
NEEDS: dict[str, frozenset[str]] = {
    "error_rate": frozenset({"requests", "errors"}),
    "fallback_rate": frozenset({"requests", "fallbacks"}),
    "latency_p50_seconds": _LATENCY,
    "latency_p90_seconds": _LATENCY,
    "latency_p95_seconds": _LATENCY,
    "latency_p99_seconds": _LATENCY,
    "cost_per_query_usd": frozenset({"requests", "cost_usd"}),
    "tokens_per_query": frozenset({"requests", "prompt_tokens", "completion_tokens"}),
    "quality_score": frozenset({"quality_sum", "quality_count"}),
}
"""The counts (a metric profile's ingredients) each measure reads: what a Prometheus source must
query, and what a profile must yield, for an SLO on that metric."""


def measure(metric: str, stats: VariantStats) -> float | None:
    return MEASURES[metric](stats)


def samples(metric: str | None, stats: VariantStats) -> float:
    """How many observations a metric's value rests on, for the min_requests floor: the scores
    for quality (only scored answers count), the requests for everything else."""
    return stats.quality_count if metric == "quality_score" else stats.requests
