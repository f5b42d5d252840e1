"""The SLO measures against values worked out by hand, Prometheus' histogram_quantile included."""

from __future__ import annotations

import math

import pytest

from canaryctl.metrics import EMPTY, VariantStats, histogram_quantile, measure
from canaryctl.metrics.measures import samples
from canaryctl.runbook.profile import Ingredient
from canaryctl.runbook.rollout import HIGHER_IS_BETTER, SloSpec
from canaryctl.slo_metrics import INGREDIENTS, SLO_METRICS

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
    for metric in SLO_METRICS:
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
    assert measure("error_rate", stats) == pytest.approx(13 / 200)  # rescued ones count too
    assert measure("served_error_rate", stats) == pytest.approx(0.025)
    assert measure("fallback_rate", stats) == pytest.approx(0.04)
    assert measure("cost_per_query_usd", stats) == pytest.approx(0.002)
    assert measure("tokens_per_query", stats) == pytest.approx(200)
    assert measure("latency_p50_seconds", stats) == pytest.approx(0.42)


def test_rates_judge_the_model_and_leave_the_clients_mistakes_out() -> None:
    """200 requests: 40 the client's fault, 6 errors, 10 rescued by a fallback, 4 filtered."""
    stats = VariantStats(requests=200, errors=6, fallbacks=10, rejected=40, filtered=4)
    assert measure("error_rate", stats) == pytest.approx(16 / 160)
    assert measure("served_error_rate", stats) == pytest.approx(6 / 160)
    assert measure("fallback_rate", stats) == pytest.approx(10 / 160)
    assert measure("filtered_rate", stats) == pytest.approx(4 / 160)
    assert measure("rejected_rate", stats) == pytest.approx(40 / 200)
    assert samples("error_rate", stats) == 160  # min_requests counts what the rate rests on
    assert samples("rejected_rate", stats) == 200
    assert samples("latency_p95_seconds", stats) == 200
    assert stats.answered == 140
    assert stats.model_failures == 16


def test_a_variant_whose_every_request_was_rejected_has_no_error_rate() -> None:
    stats = VariantStats(requests=50, rejected=50)
    assert measure("error_rate", stats) is None
    assert measure("rejected_rate", stats) == 1.0


def test_every_part_reads_the_one_registry() -> None:
    """Runbook validation, profile ingredients and which way is worse come from slo_metrics."""
    for metric in SLO_METRICS:
        bound = {"min": 0.5} if metric in HIGHER_IS_BETTER else {"max": 0.5}
        assert SloSpec(metric=metric, **bound).metric == metric
    assert frozenset({"quality_score", "win_rate"}) == HIGHER_IS_BETTER
    assert set(Ingredient.__args__) == set(INGREDIENTS)
    for metric in SLO_METRICS.values():
        assert metric.reads <= set(INGREDIENTS), metric.name
