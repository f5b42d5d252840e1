"""The SLO metrics' values from a variant's counts; None when there is nothing to measure."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from canaryctl.metrics.base import VariantStats
from canaryctl.slo_metrics import SLO_METRICS, Mean, Quantile, Rate

__all__ = [
    "MEASURES",
    "NEEDS",
    "as_latency",
    "histogram_quantile",
    "measure",
    "samples",
    "unknown_parts",
]


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


def _value(formula: Rate | Quantile | Mean, stats: VariantStats) -> float | None:
    if isinstance(formula, Quantile):
        return histogram_quantile(formula.q, getattr(stats, formula.histogram))
    if isinstance(formula, Rate):
        events, trials = formula.events(stats), formula.trials(stats)
    else:
        if formula.unknown is not None and formula.unknown(stats) > 0:
            return None  # a partial total is no value (Mean)
        events, trials = formula.total(stats), formula.count(stats)
    return events / trials if trials > 0 else None


MEASURES: dict[str, Callable[[VariantStats], float | None]] = {
    name: partial(_value, metric.formula) for name, metric in SLO_METRICS.items()
}
"""Each SLO metric's value from a variant's counts (canaryctl.slo_metrics has the formulas)."""

NEEDS: dict[str, frozenset[str]] = {name: metric.needs for name, metric in SLO_METRICS.items()}
"""The counts (a metric profile's ingredients) each measure cannot do without: what a profile
must yield for an SLO on that metric. Sources also read a metric's optional ingredients
(`SLO_METRICS[name].optional`, such as `rejected`) when the profile yields them."""


def measure(metric: str, stats: VariantStats) -> float | None:
    return MEASURES[metric](stats)


def unknown_parts(metric: str | None, stats: VariantStats) -> float:
    """How many parts of a metric's total are unknown (answers without a price, for cost per
    query): while there are any the metric has no value, whatever the sample size."""
    formula = SLO_METRICS[metric].formula if metric is not None else None
    if not isinstance(formula, Mean) or formula.unknown is None:
        return 0.0
    return formula.unknown(stats)


def samples(metric: str | None, stats: VariantStats) -> float:
    """How many observations a metric's value rests on, for the min_requests floor: what a
    rate or mean divides by (scored answers for quality, requests less the rejected for most
    rates), the streamed answers observed for first-token and per-token percentiles, the
    requests for latency and for custom PromQL SLOs (`metric` None)."""
    formula = SLO_METRICS[metric].formula if metric is not None else None
    if isinstance(formula, Rate):
        return formula.trials(stats)
    if isinstance(formula, Mean):
        return formula.count(stats)
    if isinstance(formula, Quantile) and formula.observations is not None:
        return formula.observations(stats)
    return stats.requests


def as_latency(metric: str | None, stats: VariantStats) -> VariantStats:
    """`stats` as a percentile SLO on `metric` reads them: its histogram in `latency_buckets`,
    where the sequential latency tests look, so first-token and per-token percentiles are
    tested by the very code that tests end-to-end latency."""
    formula = SLO_METRICS[metric].formula if metric is not None else None
    if not isinstance(formula, Quantile) or formula.histogram == "latency_buckets":
        return stats
    return replace(stats, latency_buckets=getattr(stats, formula.histogram))
