"""Analysis: no data is inconclusive, the bound itself passes, relative bounds use the baseline."""

from __future__ import annotations

from typing import Any

import pytest

from canaryctl.analysis import Outcome, Verdict, judge
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

ANALYSIS = AnalysisSpec(interval=10, min_requests=100)


def observe(canary: VariantStats | None, baseline: VariantStats | None = None) -> Observation:
    variants = {}
    if canary is not None:
        variants["canary"] = canary
    if baseline is not None:
        variants["baseline"] = baseline
    return Observation(0.0, 60.0, variants)


def run(slo: dict[str, Any], observation: Observation) -> Verdict:
    return judge([SloSpec(**slo)], ANALYSIS, observation, baseline="baseline", canary="canary")


def errors(requests: float, errs: float) -> VariantStats:
    return VariantStats(requests=requests, errors=errs)


def test_no_data_is_inconclusive_with_the_reason() -> None:
    verdict = run({"metric": "error_rate", "max": 0.02}, observe(None))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason == "error_rate <= 0.02: too few requests for 'canary' (0 < 100)"
    check = verdict.checks[0]
    assert (check.canary_value, check.canary_requests) == (None, 0)


def test_too_few_requests_is_inconclusive_even_when_the_value_looks_good() -> None:
    verdict = run({"metric": "error_rate", "max": 0.02}, observe(errors(99, 0)))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "too few requests for 'canary' (99 < 100)" in verdict.reason


def test_a_metric_without_a_value_is_inconclusive() -> None:
    # Enough requests, but no latency histogram: no p95 to judge.
    verdict = run({"metric": "latency_p95_seconds", "max": 2.0}, observe(errors(500, 0)))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason == "latency_p95_seconds: no value for canary 'canary'"


@pytest.mark.parametrize(
    ("slo", "canary", "baseline"),
    [
        ({"metric": "error_rate", "max": 0.02}, errors(200, 4), None),
        ({"metric": "error_rate", "min": 0.02}, errors(200, 4), None),
        (
            {"metric": "error_rate", "compare": "baseline", "max_increase": 0.005},
            errors(200, 3),
            errors(1000, 10),
        ),
        (
            {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.5},
            errors(200, 3),
            errors(1000, 10),
        ),
    ],
)
def test_exactly_at_the_bound_passes(
    slo: dict[str, Any], canary: VariantStats, baseline: VariantStats | None
) -> None:
    verdict = run(slo, observe(canary, baseline))
    assert verdict.outcome is Outcome.PASS, verdict.checks[0].reason


def test_above_a_maximum_fails_with_evidence() -> None:
    verdict = run({"metric": "error_rate", "max": 0.02}, observe(errors(200, 5)))
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reason == "error_rate = 0.025 is above the maximum 0.02"
    assert verdict.checks[0].to_dict() == {
        "slo": "error_rate <= 0.02",
        "metric": "error_rate",
        "outcome": "fail",
        "reason": "error_rate = 0.025 is above the maximum 0.02",
        "canary_value": 0.025,
        "baseline_value": None,
        "bound": 0.02,
        "canary_requests": 200,
        "baseline_requests": 0,
    }


def test_below_a_minimum_fails() -> None:
    verdict = run({"metric": "tokens_per_query", "min": 10}, observe(VariantStats(requests=200)))
    assert verdict.outcome is Outcome.FAIL
    assert "below the minimum 10" in verdict.reason


def test_relative_increase_is_measured_against_the_baseline() -> None:
    slo = {"metric": "error_rate", "compare": "baseline", "max_increase": 0.005}
    verdict = run(slo, observe(errors(200, 4), errors(1000, 10)))
    assert verdict.outcome is Outcome.FAIL
    check = verdict.checks[0]
    assert (check.canary_value, check.baseline_value) == (0.02, 0.01)
    assert check.bound == pytest.approx(0.015)
    assert "baseline 0.01" in check.reason


def test_relative_ratio_fails_above_the_multiple() -> None:
    slo = {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.5}
    verdict = run(slo, observe(errors(200, 4), errors(1000, 10)))
    assert verdict.outcome is Outcome.FAIL
    assert verdict.checks[0].bound == pytest.approx(0.015)


def test_relative_slo_needs_baseline_traffic_too() -> None:
    slo = {"metric": "error_rate", "compare": "baseline", "max_increase": 0.005}
    verdict = run(slo, observe(errors(500, 0), errors(20, 0)))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "too few requests for 'baseline' (20 < 100)" in verdict.reason


def test_fail_beats_inconclusive_beats_pass() -> None:
    slos = [
        SloSpec(metric="error_rate", max=0.02),
        SloSpec(metric="latency_p95_seconds", max=2.0),
        SloSpec(metric="cost_per_query_usd", max=1.0),
    ]
    good = judge(slos[2:], ANALYSIS, observe(errors(200, 0)), baseline="baseline", canary="canary")
    assert good.outcome is Outcome.PASS and good.reason == ""
    unsure = judge(
        slos[1:], ANALYSIS, observe(errors(200, 0)), baseline="baseline", canary="canary"
    )
    assert unsure.outcome is Outcome.INCONCLUSIVE
    bad = judge(slos, ANALYSIS, observe(errors(200, 10)), baseline="baseline", canary="canary")
    assert bad.outcome is Outcome.FAIL
    assert [c.outcome for c in bad.checks] == [Outcome.FAIL, Outcome.INCONCLUSIVE, Outcome.PASS]
    assert Verdict.from_dict(bad.to_dict()) == bad


def test_latency_from_the_histogram() -> None:
    buckets = ((1.0, 100.0), (2.0, 150.0), (4.0, 200.0), (float("inf"), 200.0))
    stats = VariantStats(requests=200, latency_buckets=buckets)
    verdict = run({"metric": "latency_p95_seconds", "max": 2.0}, observe(stats))
    assert verdict.outcome is Outcome.FAIL
    assert verdict.checks[0].canary_value == pytest.approx(3.6)  # interpolated in (2, 4]
    fine = run({"metric": "latency_p50_seconds", "max": 2.0}, observe(stats))
    assert fine.outcome is Outcome.PASS


def test_relative_slos_step_aside_when_the_baseline_gets_no_traffic() -> None:
    slos = [
        SloSpec(metric="error_rate", max=0.02),
        SloSpec(metric="error_rate", compare="baseline", max_increase=0.005),
    ]
    at_full = observe(errors(300, 3))  # canary at 100%: the baseline is absent
    judged = judge(slos, ANALYSIS, at_full, baseline="baseline", canary="canary")
    assert judged.outcome is Outcome.INCONCLUSIVE  # still served: the baseline must be seen
    alone = judge(
        slos, ANALYSIS, at_full, baseline="baseline", canary="canary", baseline_served=False
    )
    assert alone.outcome is Outcome.PASS
    assert [c.metric for c in alone.checks] == ["error_rate"]
    only_relative = judge(
        slos[1:], ANALYSIS, at_full, baseline="baseline", canary="canary", baseline_served=False
    )
    assert only_relative.outcome is Outcome.INCONCLUSIVE  # nothing judged is never a pass


def scores(mean: float, count: float, requests: float = 1000) -> VariantStats:
    return VariantStats(requests=requests, quality_sum=mean * count, quality_count=count)


def test_quality_is_the_mean_score_and_lower_fails_a_minimum() -> None:
    good = run({"metric": "quality_score", "min": 0.8}, observe(scores(0.85, 200)))
    assert good.outcome is Outcome.PASS and good.checks[0].canary_value == pytest.approx(0.85)
    bad = run({"metric": "quality_score", "min": 0.8}, observe(scores(0.7, 200)))
    assert bad.outcome is Outcome.FAIL
    assert "quality_score = 0.7 is below the minimum 0.8" in bad.reason


def test_quality_relative_to_the_baseline_fails_only_below_the_allowed_decrease() -> None:
    slo = {"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}
    equal = run(slo, observe(scores(0.9, 200), scores(0.9, 800)))
    assert equal.outcome is Outcome.PASS
    assert run(slo, observe(scores(0.85, 200), scores(0.9, 800))).outcome is Outcome.PASS
    better = run(slo, observe(scores(0.99, 200), scores(0.9, 800)))
    assert better.outcome is Outcome.PASS  # higher is better: no upper bound
    worse = run(slo, observe(scores(0.8, 200), scores(0.9, 800)))
    assert worse.outcome is Outcome.FAIL
    assert worse.checks[0].bound == pytest.approx(0.85)
    assert "is below 0.85 (baseline 0.9, quality_score >= baseline - 0.05)" in worse.reason


def test_quality_with_too_few_scores_is_inconclusive_however_many_requests() -> None:
    slo = {"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}
    verdict = run(slo, observe(scores(0.2, 99, requests=5000), scores(0.9, 800)))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "too few quality scores for 'canary' (99 < 100)" in verdict.reason
    unscored = run({"metric": "quality_score", "min": 0.8}, observe(VariantStats(5000)))
    assert unscored.outcome is Outcome.INCONCLUSIVE


@pytest.mark.parametrize(
    ("slo", "problem"),
    [
        ({"metric": "quality_score", "compare": "baseline", "max_increase": 0.1}, "lower is worse"),
        ({"metric": "quality_score", "compare": "baseline", "max_ratio": 0.9}, "lower is worse"),
        ({"metric": "error_rate", "compare": "baseline", "max_decrease": 0.1}, "worse when higher"),
        ({"metric": "quality_score", "max_increase": 0.1, "max_decrease": 0.1}, "use one of"),
        ({"metric": "quality_score", "min": 0.8, "max_decrease": 0.1}, "not both"),
    ],
)
def test_relative_bounds_must_point_the_way_the_metric_gets_worse(
    slo: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        SloSpec(**slo)
