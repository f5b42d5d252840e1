"""The SLO measures against values worked out by hand, Prometheus' histogram_quantile included."""

from __future__ import annotations

import math

import pytest

from canaryctl.metrics import EMPTY, VariantStats, histogram_quantile, measure

# 100 requests: 10 under 0.1 s, 50 more under 0.5 s, 30 more under 1 s, 10 slower than 1 s.
BUCKETS = ((0.1, 10.0), (0.5, 60.0), (1.0, 90.0), (math.inf, 100.0))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.05, 0.05),  # rank 5 of the first bucket's 10, between 0 and 0.1
        (0.5, 0.42),  # rank 50: 40 of the 50 in (0.1, 0.5]
        (0.9, 1.0),  # rank 90 is the top of the (0.5, 1] bucket
        (0.95, 1.0),  # in the +Inf bucket: Prometheus answers the highest finite bound
    ],
)
def test_histogram_quantile_interpolates_inside_the_bucket(q: float, expected: float) -> None:
    assert histogram_quantile(q, BUCKETS) == pytest.approx(expected)


def test_histogram_quantile_skips_empty_buckets() -> None:
    buckets = ((0.1, 0.0), (0.5, 0.0), (1.0, 10.0), (math.inf, 10.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.75)


@pytest.mark.parametrize("buckets", [(), ((0.5, 0.0), (math.inf, 0.0))])
def test_histogram_quantile_of_nothing_is_none(buckets: tuple[tuple[float, float], ...]) -> None:
    assert histogram_quantile(0.95, buckets) is None


def test_ratios_are_none_without_requests() -> None:
    for metric in ("error_rate", "fallback_rate", "cost_per_query_usd", "tokens_per_query"):
        assert measure(metric, EMPTY) is None
    assert measure("latency_p95_seconds", EMPTY) is None


def test_ratios_per_request() -> None:
    stats = VariantStats(
        requests=200,
        errors=5,
        fallbacks=8,
        latency_buckets=BUCKETS,
        prompt_tokens=30_000,
        completion_tokens=10_000,
        cost_usd=0.4,
    )
    assert measure("error_rate", stats) == pytest.approx(0.025)
    assert measure("fallback_rate", stats) == pytest.approx(0.04)
    assert measure("cost_per_query_usd", stats) == pytest.approx(0.002)
    assert measure("tokens_per_query", stats) == pytest.approx(200)
    assert measure("latency_p50_seconds", stats) == pytest.approx(0.42)
