"""Absolute bounds under the sequential method: each e-value against a direct computation, the
pass / fail / inconclusive boundaries, and the guarantee on a seeded simulation with bursts."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from canaryctl.analysis import Outcome, Verdict, assess
from canaryctl.analysis.betting import SCALES
from canaryctl.analysis.bound import WITHIN_ALTERNATIVES, BoundTest
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

SEQUENTIAL = AnalysisSpec(interval=30, min_requests=100, method="sequential", alpha=0.05)


def beyond_direct(intervals: list[tuple[float, float]], bound: float) -> float:
    """mean over scales a of Π (1 + λ (X - b)), λ = n·a / (1 + b·n·a), X = events / n."""
    total = 0.0
    for a in SCALES:
        product = 1.0
        for n, events in intervals:
            product *= 1 + n * a / (1 + bound * n * a) * (events / n - bound)
        total += product
    return total / len(SCALES)


def within_direct(intervals: list[tuple[float, float]], bound: float) -> float:
    """mean over g of the likelihood ratio of a rate b/g against b, request by request."""
    n = sum(trials for trials, _ in intervals)
    s = sum(events for _, events in intervals)
    return sum(
        (1 / g) ** s * ((1 - bound / g) / (1 - bound)) ** (n - s) for g in WITHIN_ALTERNATIVES
    ) / len(WITHIN_ALTERNATIVES)


def test_both_e_values_match_a_direct_computation() -> None:
    intervals = [(120.0, 3.0), (40.0, 0.0), (300.0, 9.0), (7.0, 2.0)]
    test = BoundTest(0.02)
    for trials, events in intervals:
        test = test.observe(trials, events)
    assert test.e_value_beyond() == pytest.approx(beyond_direct(intervals, 0.02), rel=1e-9)
    assert test.e_value_within() == pytest.approx(within_direct(intervals, 0.02), rel=1e-9)
    assert test.estimate() == pytest.approx(14 / 467)
    assert BoundTest.from_dict(test.to_dict()) == test


def test_an_empty_interval_is_no_evidence_and_a_single_request_is_some() -> None:
    """A look with no requests changes nothing (no estimate yet); one request is a whole
    interval of evidence, its one event a rate of 1."""
    empty = BoundTest(0.02)
    assert empty.observe(0, 0) == empty and empty.estimate() is None
    one = empty.observe(1, 1)
    assert one.estimate() == 1.0
    assert one.e_value_beyond() == pytest.approx(beyond_direct([(1.0, 1.0)], 0.02), rel=1e-9)
    assert one.e_value_within() == pytest.approx(within_direct([(1.0, 1.0)], 0.02), rel=1e-9)


def test_a_latency_interval_counts_each_side_at_its_own_edge() -> None:
    """`events` (slower than the edge above the bound) feed the test to fail, `events_within`
    (slower than the edge below) the test to pass, even when none was slower than that."""
    for within_events in (0.0, 4.0):
        test = BoundTest(0.05).observe(200, 2, within_events)
        assert test.e_value_beyond() == pytest.approx(beyond_direct([(200.0, 2.0)], 0.05))
        assert test.e_value_within() == pytest.approx(
            within_direct([(200.0, within_events)], 0.05), rel=1e-9
        )


def test_a_rate_exactly_at_the_bound_is_no_evidence_that_it_is_beyond() -> None:
    test = BoundTest(0.05)
    for _ in range(50):
        test = test.observe(200, 10)  # 5% in every interval
    assert test.e_value_beyond() == pytest.approx(1.0)


def observe(canary: VariantStats, start: float) -> Observation:
    return Observation(start, start + 30, {"canary": canary, "baseline": VariantStats(1000)})


def run(slos: list[dict[str, Any]], intervals: list[VariantStats]) -> list[Verdict]:
    """Each interval a new 30 s window; every verdict on the way."""
    specs = [SloSpec(**slo) for slo in slos]
    ledger: dict[str, Any] = {}
    verdicts = []
    for index, canary in enumerate(intervals):
        verdict, ledger = assess(
            specs, SEQUENTIAL, observe(canary, index * 30.0), ledger,
            baseline="baseline", canary="canary",
        )  # fmt: skip
        verdicts.append(verdict)
    return verdicts


BUDGET = [{"metric": "error_rate", "max": 0.02}]


def test_one_error_in_33_requests_is_not_a_rollback() -> None:
    """The point estimate 3% is above the 2% budget; the evidence is not."""
    (verdict,) = run(BUDGET, [VariantStats(requests=33, errors=1)])
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "too few requests" in verdict.reason


def test_a_clean_canary_passes_exactly_when_the_within_evidence_reaches_1_over_alpha() -> None:
    intervals = [VariantStats(requests=100, errors=0)] * 12
    needed = next(k for k in range(1, 13) if within_direct([(100.0, 0.0)] * k, 0.02) >= 1 / 0.05)
    verdicts = run(BUDGET, intervals)
    outcomes = [v.outcome for v in verdicts]
    assert outcomes[needed - 2] is Outcome.INCONCLUSIVE  # just under: not yet shown within
    assert "not yet shown within its bound" in verdicts[needed - 2].checks[0].reason
    assert outcomes[needed - 1] is Outcome.PASS  # at: the confidence sequence is below 2%
    assert "the canary is within its bound" in verdicts[needed - 1].checks[0].reason
    assert needed == 3  # 300 clean requests show an error rate under 2% at alpha 0.05


def test_a_bad_canary_fails_exactly_when_the_beyond_evidence_reaches_1_over_alpha() -> None:
    intervals = [VariantStats(requests=200, errors=12)] * 20  # 6% against a 2% budget
    needed = next(k for k in range(1, 21) if beyond_direct([(200.0, 12.0)] * k, 0.02) >= 1 / 0.05)
    outcomes = [v.outcome for v in run(BUDGET, intervals)]
    assert outcomes[needed - 2] is Outcome.INCONCLUSIVE
    assert outcomes[needed - 1] is Outcome.FAIL
    assert all(o is Outcome.FAIL for o in outcomes[needed - 1 :])  # a rejection is final
    assert needed == 4


def test_alpha_is_shared_with_the_relative_slos() -> None:
    slos = [*BUDGET, {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.0}]
    canary = VariantStats(requests=100, errors=0)
    (verdict,) = run(slos, [canary])
    assert [c.evidence.threshold for c in verdict.checks if c.evidence] == [40.0, 40.0]


def latency(fast: float, between: float, slow: float) -> VariantStats:
    """A histogram with `fast` requests under 2 s, `between` in (2, 2.5], `slow` above 2.5 s."""
    buckets = ((1.0, fast), (2.0, fast), (2.5, fast + between), (math.inf, fast + between + slow))
    return VariantStats(requests=fast + between + slow, latency_buckets=buckets)


P95 = [{"metric": "latency_p95_seconds", "max": 2.2}]


def test_a_percentile_bound_fails_on_the_edge_above_it_and_passes_on_the_edge_below() -> None:
    """p95 <= 2.2 s between edges 2 and 2.5: failing needs more than 5% slower than 2.5 s,
    passing needs fewer than 5% slower than 2 s; 10% in (2, 2.5] proves neither."""
    stuck = run(P95, [latency(90, 10, 0)] * 30)
    assert {v.outcome for v in stuck} == {Outcome.INCONCLUSIVE}
    evidence = stuck[-1].checks[0].evidence
    assert evidence is not None and "slower than 2.5s (to fail) and than 2s (to pass)" in (
        evidence.test
    )
    assert run(P95, [latency(100, 0, 0)] * 10)[-1].outcome is Outcome.PASS
    assert run(P95, [latency(80, 0, 20)] * 10)[-1].outcome is Outcome.FAIL


def test_a_percentile_bound_above_every_finite_edge_is_judged_by_threshold() -> None:
    (verdict,) = run([{"metric": "latency_p95_seconds", "max": 3.0}], [latency(100, 0, 0)])
    assert "no latency bucket edge at or above 3s; judged by threshold" in (
        verdict.checks[0].reason
    )


def scores(count: float, mean: float) -> VariantStats:
    return VariantStats(requests=count, quality_sum=count * mean, quality_count=count)


def test_a_quality_minimum_is_the_same_test_on_the_shortfall() -> None:
    slos = [{"metric": "quality_score", "min": 0.8}]
    assert run(slos, [scores(200, 0.95)] * 5)[-1].outcome is Outcome.PASS
    low = run(slos, [scores(200, 0.6)] * 5)
    assert low[-1].outcome is Outcome.FAIL
    evidence = low[-1].checks[0].evidence
    assert evidence is not None and evidence.estimate == pytest.approx(0.6)


def test_a_cost_ceiling_passes_once_its_confidence_sequence_is_below_it() -> None:
    slos = [{"metric": "cost_per_query_usd", "max": 0.002}]
    rng = random.Random(5)
    cheap = [VariantStats(requests=200, cost_usd=200 * rng.uniform(0.0009, 0.0011))] * 6
    verdicts = run(slos, cheap)
    assert verdicts[1].outcome is Outcome.INCONCLUSIVE  # two intervals: says nothing yet
    assert verdicts[-1].outcome is Outcome.PASS
    dear = [VariantStats(requests=200, cost_usd=200 * 0.004 * rng.uniform(0.9, 1.1))] * 6
    assert run(slos, dear)[-1].outcome is Outcome.FAIL


def bursty_rollout(rng: random.Random, rate: float, cluster: int) -> float | None:
    """Minute of the rollback of a canary with error rate `rate`, its errors in clusters,
    judged against `error_rate max 0.02` over 40 one-minute looks at shares 1/5/25/50%."""
    test = BoundTest(0.02)
    for minute in range(40):
        requests = 3000 * (0.01, 0.05, 0.25, 0.5)[minute // 10]
        clusters = sum(rng.random() < rate / cluster for _ in range(int(requests)))
        test = test.observe(requests, cluster * clusters)
        if test.e_value_beyond() >= 20:
            return float(minute + 1)
    return None


def test_a_canary_at_its_budget_with_bursts_keeps_alpha_and_one_at_twice_it_is_caught() -> None:
    rng = random.Random(12)
    at_bound = sum(bursty_rollout(rng, 0.02, 10) is not None for _ in range(150))
    assert at_bound <= 0.05 * 150
    caught = [bursty_rollout(rng, 0.04, 1) for _ in range(20)]
    assert all(minute is not None for minute in caught)


def stand(evidence: Any, crossed: bool, unit: str) -> str:
    """What an absolute check says of its evidence, from the evidence's own numbers."""
    if evidence.e_value_within is not None:
        against = f", {evidence.e_value_within:.3g} that it is within"
    else:
        show = ["-" if v is None else f"{v:.4g}" for v in (evidence.lower, evidence.upper)]
        against = f" in [{show[0]}, {show[1]}]"
    estimate = "-" if evidence.estimate is None else f"{evidence.estimate:.4g}"
    return (
        f"e-value {evidence.e_value:.3g} {'>=' if crossed else '<'} {evidence.threshold:.3g} "
        f"that it is beyond{against}, estimate {estimate} over {evidence.samples:g} {unit}"
    )


def test_each_outcome_of_an_absolute_bound_explains_itself_with_its_evidence() -> None:
    """Not yet within, within, too few requests, beyond, and beyond earlier: each reason
    shows the e-values against the threshold and the estimate the SRE reads."""
    early, passed = run(BUDGET, [VariantStats(requests=100, errors=0)] * 3)[1:]
    for verdict, outcome, words, samples in (
        (early, Outcome.INCONCLUSIVE, "not yet shown within its bound", 200),
        (passed, Outcome.PASS, "the canary is within its bound", 300),
    ):
        check = verdict.checks[0]
        assert check.outcome is outcome and check.evidence is not None
        assert check.evidence.estimate == 0.0 and check.evidence.samples == samples
        within = within_direct([(100.0, 0.0)] * (samples // 100), 0.02)
        assert check.evidence.e_value_within == pytest.approx(within, rel=1e-9)
        assert (
            check.reason
            == f"error_rate <= 0.02: {words} ({stand(check.evidence, False, 'observations')})"
        )
    (few,) = run(BUDGET, [VariantStats(requests=50, errors=1)])
    check = few.checks[0]
    assert check.evidence is not None and check.evidence.estimate == pytest.approx(0.02)
    assert check.outcome is Outcome.INCONCLUSIVE
    assert check.reason == (
        "error_rate <= 0.02: too few requests for 'canary' (50 < 100); "
        + stand(check.evidence, False, "observations")
    )
    bad = [VariantStats(requests=200, errors=12)] * 4 + [VariantStats(requests=200, errors=0)]
    failed, later = run(BUDGET, bad)[3:]
    for check, crossed, after in (
        (failed.checks[0], True, ""),
        (later.checks[0], False, "; it crossed the threshold earlier in the run, which decided"),
    ):
        assert check.outcome is Outcome.FAIL and check.evidence is not None
        test = "error_rate <= 0.02, per interval to fail, per request to pass"
        assert check.evidence.test == test
        assert check.reason == (
            f"error_rate <= 0.02: the canary is beyond its bound ({test}: "
            f"{stand(check.evidence, crossed, 'observations')}{after})"
        )
    assert failed.checks[0].evidence.estimate == pytest.approx(0.06)
    assert (failed.window_start, failed.window_end) == (90.0, 120.0)


def test_a_canary_one_percent_under_budget_passes_at_the_first_look_the_evidence_allows() -> None:
    """1 error in 100 requests an interval against a 2% budget: the within e-value first
    reaches 1/alpha = 20 at the 13th interval (23.5, from 17.7): passed then, not before."""
    intervals = [VariantStats(requests=100, errors=1)] * 13
    assert within_direct([(100.0, 1.0)] * 12, 0.02) < 20 <= within_direct([(100.0, 1.0)] * 13, 0.02)
    outcomes = [v.outcome for v in run(BUDGET, intervals)]
    assert outcomes[11] is Outcome.INCONCLUSIVE and outcomes[12] is Outcome.PASS


def test_a_cost_ceiling_explains_its_confidence_sequence_and_never_passes_a_canary_over_it() -> (
    None
):
    slos = [{"metric": "cost_per_query_usd", "max": 0.002}]
    rng = random.Random(8)
    over = [
        VariantStats(requests=200, cost_usd=200 * rng.uniform(0.00205, 0.00215)) for _ in range(8)
    ]
    verdicts = run(slos, over)
    assert all(v.outcome is not Outcome.PASS for v in verdicts)
    first, last = verdicts[0].checks[0], verdicts[-1].checks[0]
    assert first.evidence is not None and (first.evidence.lower, first.evidence.upper) == (
        None,
        None,
    )
    assert first.evidence.samples == 1
    assert first.reason.startswith("cost_per_query_usd <= 0.002: not yet shown within its bound (")
    assert first.reason.endswith(f"({stand(first.evidence, False, 'intervals')})")
    assert (
        last.evidence is not None
        and last.evidence.lower is not None
        and last.evidence.upper is not None
    )
    assert (
        last.evidence.test
        == "cost_per_query_usd: mean minus the maximum, per interval, <= 0 (asymptotic)"
    )
    assert last.evidence.lower <= last.evidence.estimate <= last.evidence.upper
    crossed = last.evidence.e_value >= last.evidence.threshold
    assert stand(last.evidence, crossed, "intervals") in last.reason


def test_a_percentile_bound_is_not_passed_on_the_window_before_its_test_has_started() -> None:
    """The first look had requests but no histogram yet, the second (same window) has one:
    the window's p95 is within the bound, but no interval has given the test latencies (the
    histogram's buckets changed in between), so the check waits instead of passing."""
    specs = [SloSpec(**P95[0])]
    _, ledger = assess(
        specs, SEQUENTIAL, observe(VariantStats(requests=100), 0.0), {},
        baseline="baseline", canary="canary",
    )  # fmt: skip
    verdict, _ = assess(
        specs, SEQUENTIAL, observe(latency(200, 0, 0), 0.0), ledger,
        baseline="baseline", canary="canary",
    )  # fmt: skip
    check = verdict.checks[0]
    assert check.outcome is Outcome.INCONCLUSIVE and check.evidence is None
    assert check.reason == (
        "latency_p95_seconds <= 2.2: not tested yet (no interval with canary data)"
    )


def test_a_tokens_minimum_fails_below_it_and_passes_above_it() -> None:
    slos = [{"metric": "tokens_per_query", "min": 100}]
    rng = random.Random(9)

    def tokens(mean: float) -> list[VariantStats]:
        return [
            VariantStats(requests=100, completion_tokens=100 * mean * rng.uniform(0.95, 1.05))
            for _ in range(8)
        ]

    low = run(slos, tokens(50))[-1].checks[0]
    assert low.outcome is Outcome.FAIL and low.evidence is not None
    assert (
        low.evidence.test
        == "tokens_per_query: the minimum minus mean, per interval, <= 0 (asymptotic)"
    )
    assert low.evidence.estimate == pytest.approx(50, rel=0.05)  # 100 - 50 per interval
    assert run(slos, tokens(200))[-1].outcome is Outcome.PASS


def test_a_percentile_bound_on_a_bucket_edge_uses_that_edge_on_both_sides() -> None:
    (verdict,) = run([{"metric": "latency_p95_seconds", "max": 2.5}], [latency(90, 10, 0)])
    evidence = verdict.checks[0].evidence
    assert evidence is not None
    assert evidence.test == "share slower than 2.5s (to fail) and than 2.5s (to pass) against 0.05"
    assert evidence.samples == 100 and evidence.estimate == 0.0
    (below,) = run([{"metric": "latency_p95_seconds", "max": 0.5}], [latency(90, 10, 0)])
    assert below.checks[0].reason.endswith(
        "(no latency bucket edge at or below 0.5s; judged by threshold)"
    )


def test_a_histogram_that_changes_its_buckets_mid_window_adds_no_latencies() -> None:
    """Cumulative windows: the second look adds only what is new; a histogram whose bounds
    changed (a gateway redeployed with other buckets) gives nothing for that interval."""
    specs = [SloSpec(**P95[0])]
    ledger: dict[str, Any] = {}
    samples = []
    changed = VariantStats(requests=300, latency_buckets=((2.0, 290.0), (math.inf, 300.0)))
    for canary in (latency(90, 10, 0), latency(180, 15, 5), changed):
        verdict, ledger = assess(
            specs, SEQUENTIAL, observe(canary, 0.0), ledger, baseline="baseline", canary="canary"
        )
        samples.append(verdict.checks[0].evidence.samples)
    assert samples == [100, 200, 200]


def test_a_step_whose_window_looks_over_budget_passes_when_the_runs_evidence_is_within() -> None:
    """The window of one step (3 errors in 100, over 2%) is not the decision: the run's
    confidence sequence (3 errors in 600) lies below the bound, so the check passes."""
    intervals = [VariantStats(requests=100, errors=0)] * 5 + [VariantStats(requests=100, errors=3)]
    last = run(BUDGET, intervals)[-1].checks[0]
    window_alone = run(BUDGET, intervals[-1:])[-1].checks[0]
    assert window_alone.outcome is Outcome.INCONCLUSIVE  # on its own: not shown either way
    assert last.outcome is Outcome.PASS and "within its bound" in last.reason
    assert last.evidence is not None and last.evidence.samples == 600
