"""Pins on the decision core that a mutation run found loose (docs/mutation.md), each against a
value computed here from the formula or the literature (docs/analysis.md states the constants),
never the code's own output read back."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from canaryctl.analysis import Check, Evidence, Outcome, Verdict, assess
from canaryctl.analysis.experiment import Decision as ExperimentDecision
from canaryctl.analysis.experiment import (
    Design,
    Effect,
    MetricRule,
    decide,
    interval_floors,
    interval_values,
)
from canaryctl.analysis.experiment import Evidence as ExperimentEvidence
from canaryctl.analysis.last_window import (
    Kept,
    as_judged,
    cannot_judge,
    keep,
    rate_upper_bound,
    stand_in,
)
from canaryctl.analysis.mean_difference import MeanDifference
from canaryctl.analysis.rate_difference import RateDifference
from canaryctl.controller.phases import Phase
from canaryctl.controller.step import (
    Analyze,
    Analyzed,
    Decision,
    EndShadow,
    Event,
    Finish,
    MetricsFailed,
    Promote,
    Resumed,
    Rollback,
    RolloutState,
    SetShadow,
    SetWeight,
    ShadowEnded,
    ShadowSet,
    Wait,
    WeightSet,
    plan,
    tick,
)
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook import Rollout
from canaryctl.runbook.rollout import AnalysisSpec, RolloutSpec, SloSpec

# -- absolute bounds (bound.py) --------------------------------------------------------------------
# docs/analysis.md: the within side's alternatives are b/1.5, b/2, b/4, b/8; a judge's pairwise
# verdicts (`near`) are held to b/1.05, b/1.1, b/1.2, b/1.5 within and b + h(1 - b),
# h = 0.05, 0.1, 0.2, 0.4, beyond; the bets' scales are 0.1, 0.2, 0.35, 0.6, 1, 1.7, 3.

DOC_SCALES = (0.1, 0.2, 0.35, 0.6, 1.0, 1.7, 3.0)


def likelihood_mixture(rates: list[float], bound: float, trials: float, events: float) -> float:
    """The mean over alternatives p of (p/b)^S ((1 - p)/(1 - b))^(n - S)."""
    return sum(
        (p / bound) ** events * ((1 - p) / (1 - bound)) ** (trials - events) for p in rates
    ) / len(rates)


def test_the_within_side_mixes_the_documented_alternatives() -> None:
    from canaryctl.analysis.bound import BoundTest

    bound, trials, events = 0.02, 400.0, 2.0
    test = BoundTest(bound).observe(trials, events)
    rates = [bound / g for g in (1.5, 2.0, 4.0, 8.0)]
    assert test.e_value_within() == pytest.approx(
        likelihood_mixture(rates, bound, trials, events), rel=1e-9
    )


def test_near_bets_above_the_bound_beyond_and_a_little_under_it_within() -> None:
    """A win rate's shortfall 1 - x against 0.55 (a minimum of 0.45): beyond, the alternatives
    sit above the bound (a rate of 0.5725 at h = 0.05, not 0.5275 below it)."""
    from canaryctl.analysis.bound import BoundTest

    bound = 0.55
    rates_above = [bound + h * (1 - bound) for h in (0.05, 0.1, 0.2, 0.4)]
    assert rates_above[0] == pytest.approx(0.5725) and min(rates_above) > bound
    rates_under = [bound / g for g in (1.05, 1.1, 1.2, 1.5)]
    for trials, events in ((60.0, 45.0), (80.0, 30.0)):
        test = BoundTest.near(bound).observe(trials, events)
        assert test.e_value_beyond() == pytest.approx(
            likelihood_mixture(rates_above, bound, trials, events), rel=1e-9
        )
        assert test.e_value_within() == pytest.approx(
            likelihood_mixture(rates_under, bound, trials, events), rel=1e-9
        )
    # 45 shortfalls in 60 (a rate of 0.75) is evidence beyond 0.55; 30 in 80, within.
    assert BoundTest.near(bound).observe(60.0, 45.0).e_value_beyond() > 20
    assert BoundTest.near(bound).observe(80.0, 30.0).e_value_within() > 20


def test_a_default_bounds_ledger_entry_keeps_the_shape_written_before_near_existed() -> None:
    """The within side's default alternatives are not written out (a ledger from before `near`
    reads back the same); `near`'s are, both sides."""
    from canaryctl.analysis.bound import BoundTest

    plain = BoundTest(0.02).observe(10.0, 1.0).to_dict()
    assert sorted(plain) == ["beyond", "bound", "events", "trials", "within"]
    near = BoundTest.near(0.55).observe(10.0, 6.0).to_dict()
    assert near["alternatives"] == [1.05, 1.1, 1.2, 1.5]
    assert near["above"] == [0.05, 0.1, 0.2, 0.4]
    assert BoundTest.from_dict(near) == BoundTest.near(0.55).observe(10.0, 6.0)


# -- the bets (betting.py) -------------------------------------------------------------------------


def test_the_beyond_side_bets_at_the_documented_scales() -> None:
    """One interval of 100 requests with 9 events against 2%: the mean over a of
    1 + λ (X - b), λ = n·a / (1 + b·n·a)."""
    from canaryctl.analysis.bound import BoundTest

    bound, trials, events = 0.02, 100.0, 9.0
    direct = sum(
        1 + trials * a / (1 + bound * trials * a) * (events / trials - bound) for a in DOC_SCALES
    ) / len(DOC_SCALES)
    assert BoundTest(bound).observe(trials, events).e_value_beyond() == pytest.approx(
        direct, rel=1e-12
    )


# -- the rate ratio's grid (rate_ratio.py) ---------------------------------------------------------


def test_the_ratio_grid_ends_at_sixty_four_times_the_margin() -> None:
    """docs/analysis.md: the grid runs from margin/4 to margin·64 in steps of 2^(1/4). A ratio
    past its last point gets no evidence (1); at that point, the bets against θ(64·margin)."""
    from canaryctl.analysis.rate_ratio import RateRatio

    margin, share, canary, baseline = 1.5, 0.5, 30.0, 1.0
    test = RateRatio(margin).observe(canary, baseline, share)
    top = 64 * margin
    theta = share * top / (share * top + 1 - share)
    events = canary + baseline
    direct = sum(
        1 + events * a / (1 + theta * events * a) * (canary / events - theta) for a in DOC_SCALES
    ) / len(DOC_SCALES)
    assert test.e_value_above(top) == pytest.approx(direct, rel=1e-9)
    assert direct != pytest.approx(1.0)
    assert test.e_value_above(top * 2 ** (1 / 8)) == 1.0
    assert test.e_value_above(top * 2 ** (1 / 4)) == 1.0


def test_an_interval_of_one_event_is_one_bet() -> None:
    """One canary event on an even split at margin 1: θ = 1/2, and each scale's wealth is
    1 + λ (1 - θ) with λ = a / (1 + θ a)."""
    from canaryctl.analysis.rate_ratio import RateRatio

    direct = sum(1 + a / (1 + 0.5 * a) * (1 - 0.5) for a in DOC_SCALES) / len(DOC_SCALES)
    one = RateRatio(1.0).observe(1.0, 0.0, 0.5)
    assert one.e_value() == pytest.approx(direct, rel=1e-12) and one.events == 1


# -- the mean difference (mean_difference.py) ----------------------------------------------------


def robbins(total: float, intervals: int, spread: float, prior: float = 10.0) -> float:
    """Robbins' normal mixture with prior spread r = 10 intervals:
    2 √(r/(n+r)) exp(z²/2) Φ(z), z = Σd / (s √(n+r)), s the spread."""
    z = total / (spread * math.sqrt(intervals + prior))
    phi = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return 2 * math.sqrt(prior / (intervals + prior)) * math.exp(z * z / 2) * phi


def half_width(intervals: int, spread: float, alpha: float, prior: float = 10.0) -> float:
    """The confidence sequence's half width: s √(2 (n+r) log(√((n+r)/r) / alpha)) / n."""
    boundary = math.log(math.sqrt((intervals + prior) / prior) / alpha)
    return spread * math.sqrt(2 * (intervals + prior) * boundary) / intervals


def test_the_spread_is_the_sample_standard_deviation() -> None:
    """n - 1 in the denominator (statistics.stdev), not n, nor n·(n - 1)."""
    from canaryctl.analysis.mean_difference import MeanDifference

    differences = [0.4, -0.1, 0.9, 0.2]
    test = MeanDifference()
    for d in differences:
        test = test.observe(d)
    spread = statistics.stdev(differences)
    assert test.e_value() == pytest.approx(robbins(sum(differences), 4, spread), rel=1e-9)
    mean, half = statistics.fmean(differences), half_width(4, spread, 0.05)
    assert test.bounds(0.05) == pytest.approx((mean - half, mean + half), rel=1e-9)


def test_a_binomial_floor_keeps_identical_differences_from_being_certain() -> None:
    """Three intervals each 0.1 apart, each with a least variance of 0.04 (its binomial noise):
    the spread is √0.04 = 0.2, not the 1e-3 · 0.1 of identical differences."""
    from canaryctl.analysis.mean_difference import MeanDifference

    test = MeanDifference()
    for _ in range(3):
        test = test.observe(0.1, floor=0.04)
    assert test.e_value() == pytest.approx(robbins(0.3, 3, 0.2), rel=1e-9)
    assert test.bounds(0.05) == pytest.approx(
        (0.1 - half_width(3, 0.2, 0.05), 0.1 + half_width(3, 0.2, 0.05)), rel=1e-9
    )
    # A floor below the differences' own variance changes nothing.
    spread = statistics.stdev([0.0, 0.3, 0.6])
    low = MeanDifference().observe(0.0, 0.01).observe(0.3, 0.01).observe(0.6, 0.01)
    assert low.e_value() == pytest.approx(robbins(0.9, 3, spread), rel=1e-9)


def test_the_floor_survives_the_ledger_and_an_old_ledger_has_none() -> None:
    """Read back from its ledger entry, a test with floors gives the same evidence; an entry
    written before floors existed (no `total_floor`) reads as no floor at all."""
    from canaryctl.analysis.mean_difference import MeanDifference

    floored = MeanDifference()
    for _ in range(3):
        floored = floored.observe(0.1, floor=0.04)
    back = MeanDifference.from_dict(floored.to_dict())
    assert back == floored
    assert back.e_value() == pytest.approx(robbins(0.3, 3, 0.2), rel=1e-9)
    old = {"intervals": 3, "total": 0.9, "total_squares": 0.0 + 0.09 + 0.36}
    read = MeanDifference.from_dict(old)
    assert read.total_floor == 0.0
    assert read.e_value() == pytest.approx(
        robbins(0.9, 3, statistics.stdev([0.0, 0.3, 0.6])), rel=1e-9
    )


# -- the guard (guard.py) --------------------------------------------------------------------------


def guard_check(canary: VariantStats) -> Check:
    from canaryctl.analysis.guard import guard_canary

    empty = Verdict.of((), 0.0, 30.0)
    verdict, _ = guard_canary(
        empty, Observation(0, 30, {"canary": canary, "baseline": VariantStats(100)}), {},
        canary="canary",
    )  # fmt: skip
    (check,) = verdict.checks
    assert (verdict.window_start, verdict.window_end) == (0.0, 30.0)  # the window judged
    return check


def test_the_guard_check_shows_the_failed_share_of_judged_requests() -> None:
    """failed / (requests - rejected): 1 of 1 is 1.0, 2 of 5 judged (3 rejected, 3 filtered) is
    0.4; with no judged request there is no value; the check has no baseline requests."""
    one = guard_check(VariantStats(1, errors=1))
    assert one.outcome is Outcome.INCONCLUSIVE
    assert one.canary_value == 1.0 and one.canary_requests == 1
    assert one.baseline_requests == 0.0 and one.baseline_value is None and one.bound is None
    some = guard_check(VariantStats(8, errors=1, fallbacks=1, rejected=3, filtered=3))
    assert some.canary_value == pytest.approx(2 / 5) and some.canary_requests == 8
    for nothing in (VariantStats(0), VariantStats(4, rejected=4)):
        check = guard_check(nothing)
        assert check.canary_value is None and check.baseline_requests == 0.0


# -- assess: a paired metric's bound against the baseline (assess.py) -----------------------------


@pytest.mark.parametrize("method", ["threshold", "sequential"])
def test_a_win_rate_against_the_baseline_is_the_absolute_minimum_even_minus_the_margin(
    method: str,
) -> None:
    """`win_rate` with `compare: baseline, max_decrease: 0.05` is a minimum of 0.5 - 0.05 = 0.45
    on the candidate's share of won pairs (the baseline is even with itself, and has no pairs):
    30 wins and 10 ties in 100 pairs is 0.35, below it."""
    slo = SloSpec(metric="win_rate", compare="baseline", max_decrease=0.05)
    canary = VariantStats(100, pairs=100, pair_wins=30, pair_ties=10)
    observation = Observation(0, 30, {"canary": canary, "baseline": VariantStats(100)})
    verdict, _ = assess(
        [slo], AnalysisSpec(min_requests=10, method=method), observation, {},
        baseline="baseline", canary="canary",
    )  # fmt: skip
    check = next(c for c in verdict.checks if c.metric == "win_rate")
    assert check.bound == pytest.approx(0.5 - 0.05)
    assert check.canary_value == pytest.approx((30 + 10 / 2) / 100)
    if method == "threshold":
        assert check.outcome is Outcome.FAIL


# -- the sequential judge: whether an estimate is within its bound (sequential.py) ----------------

SEQUENTIAL = AnalysisSpec(interval=30, min_requests=1, method="sequential", alpha=0.05)


def sequential_checks(
    slo: SloSpec, windows: list[tuple[VariantStats, VariantStats]]
) -> list[Check]:
    """The SLO's check after each analysis, one window each (canary, baseline), the ledger
    carried from one to the next."""
    ledger: dict[str, object] = {}
    checks = []
    for index, (canary, baseline) in enumerate(windows):
        observation = Observation(30 * index, 30 * index + 30, {"c": canary, "b": baseline})
        verdict, ledger = assess([slo], SEQUENTIAL, observation, ledger, baseline="b", canary="c")
        checks.append(next(c for c in verdict.checks if c.metric == slo.metric))
    return checks


def test_a_rate_increase_is_within_on_the_canarys_rate_over_the_whole_run() -> None:
    """`error_rate <= baseline + 0.01`: 1 error in 100, then 4 in 100, is 5/200 = 0.025 on the
    canary against 20/2000 + 0.01 = 0.02: beyond; after the first window alone, 0.01 is within."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    baseline = VariantStats(1000, errors=10)
    first, second = sequential_checks(
        slo, [(VariantStats(100, errors=1), baseline), (VariantStats(100, errors=4), baseline)]
    )
    assert first.evidence is not None and first.evidence.within is True
    assert second.evidence is not None and second.evidence.within is False
    assert 5 / 200 > 20 / 2000 + 0.01


BET_SCALES = (0.1, 0.2, 0.35, 0.6, 1.0, 1.7, 3.0)
"""docs/analysis.md's bet scales, typed here: a changed scale changes the e-values below."""


def difference_e_value(margin: float, intervals: list[tuple[int, int, int, int]]) -> float:
    """The e-value of "canary rate - baseline rate <= margin" after (canary events, canary
    requests, baseline events, baseline requests) per interval, from rate_difference.py's
    docstring, as a product of wealth rather than a sum of logs: each interval with both arms
    served bets on X = C / (C + B + margin·n_b) against π = n_c / (n_c + n_b) with weight
    w = max(n_c·rate_c + n_b·(rate_b + margin), 1), the rates those of the intervals before."""
    wealth = [1.0] * len(BET_SCALES)
    canary_events = canary_requests = baseline_events = baseline_requests = 0
    for c_events, c_requests, b_events, b_requests in intervals:
        if c_requests == 0 or b_requests == 0:
            continue
        share = c_requests / (c_requests + b_requests)
        total = c_events + b_events + margin * b_requests
        if total > 0:
            statistic = c_events / total
            rate_c = canary_events / canary_requests if canary_requests else 0.0
            rate_b = baseline_events / baseline_requests if baseline_requests else 0.0
            weight = max(c_requests * rate_c + b_requests * (rate_b + margin), 1.0)
            wealth = [
                w * (1 + weight * a / (1 + share * weight * a) * (statistic - share))
                for w, a in zip(wealth, BET_SCALES, strict=True)
            ]
        canary_events, canary_requests = canary_events + c_events, canary_requests + c_requests
        baseline_events += b_events
        baseline_requests += b_requests
    return sum(wealth) / len(wealth)


def test_a_rate_increase_on_one_request_or_none_is_judged_on_what_there_is() -> None:
    """One canary request that failed against 10 errors in 1000: the Mantel-Haenszel difference
    (1·1000 - 10·1)/1001 over 1·1000/1001 is 0.99, beyond 0.01, and the one bet's e-value is
    computed by hand; a canary that served nothing yet has no evidence, and is inconclusive."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    baseline = VariantStats(1000, errors=10)
    (one,) = sequential_checks(slo, [(VariantStats(1, errors=1), baseline)])
    assert one.evidence is not None and one.evidence.within is False
    assert one.evidence.estimate == pytest.approx(0.99)
    assert one.evidence.test == "error rate difference canary - baseline <= 0.01"
    assert one.evidence.e_value == pytest.approx(difference_e_value(0.01, [(1, 1, 10, 1000)]))
    assert one.evidence.samples == 1 and one.outcome is Outcome.PASS
    (none,) = sequential_checks(slo, [(VariantStats(0), baseline)])
    assert none.evidence is None and none.outcome is Outcome.INCONCLUSIVE


def test_a_cost_allowance_is_within_on_the_mean_difference_and_unknown_is_within() -> None:
    """`cost_per_query_usd <= baseline x 1.5`: the canary at $0.02 a request against $0.01 x 1.5 is
    $0.005 over its allowance, so its estimate is beyond it; with no canary request yet there is
    no estimate, and nothing is beyond."""
    slo = SloSpec(metric="cost_per_query_usd", compare="baseline", max_ratio=1.5)
    baseline = VariantStats(1000, cost_usd=10.0)
    (over,) = sequential_checks(slo, [(VariantStats(100, cost_usd=2.0), baseline)])
    assert over.evidence is not None
    assert over.evidence.estimate == pytest.approx(2.0 / 100 - 10.0 / 1000 * 1.5)
    assert over.evidence.within is False
    (unknown,) = sequential_checks(slo, [(VariantStats(0), baseline)])
    assert unknown.evidence is not None and unknown.evidence.estimate is None
    assert unknown.evidence.within is True


def test_a_rate_increase_over_a_baseline_of_one_request_is_judged_on_it() -> None:
    """A baseline of one request without error is a rate of 0: the canary's 5 in 100 is beyond
    0 + 0.01."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    (check,) = sequential_checks(slo, [(VariantStats(100, errors=5), VariantStats(1))])
    assert check.evidence is not None and check.evidence.within is False


@pytest.mark.parametrize(
    ("margin", "intervals"),
    [
        (0.0, [(0, 100, 0, 1000)]),  # margin 0, no events: no bet, yet an interval
        (0.01, [(0, 50, 0, 50)]),  # C + B + margin·n_b = 0.5: a bet, its weight 0.5 floored to 1
        (0.01, [(1, 1, 0, 1000), (0, 100, 10, 1000)]),  # a canary rate of 1 after one request
        (0.01, [(0, 100, 1, 1), (5, 100, 10, 1000)]),  # a baseline rate of 1 after one request
    ],
)
def test_a_rate_difference_at_its_edges_is_the_hand_computed_e_value(
    margin: float, intervals: list[tuple[int, int, int, int]]
) -> None:
    """RateDifference at the edges of its bet: no events to bet on, a weight under one event,
    the rates so far resting on a single request; and no estimate before any interval."""
    test = RateDifference(margin)
    assert test.estimate() is None
    for interval in intervals:
        test = test.observe(*interval)
    assert test.intervals == len(intervals)
    assert test.e_value() == pytest.approx(difference_e_value(margin, intervals), rel=1e-12)


def test_a_rate_increase_once_shown_beyond_stays_failed_through_the_ledger() -> None:
    """30% errors against none for two intervals rejects (e-value 23.6 >= 20); a clean third
    interval bets the e-value back under 20, yet the rejection read back from the ledger holds.
    A first look where the canary served nothing leaves no test in the ledger, and the next
    starts one."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    bad, clean = (
        (VariantStats(100, errors=30), VariantStats(1000)),
        (VariantStats(100), VariantStats(1000)),
    )
    checks = sequential_checks(slo, [bad, bad, clean])
    after = difference_e_value(0.01, [(30, 100, 0, 1000)] * 2 + [(0, 100, 0, 1000)])
    assert checks[1].outcome is Outcome.FAIL and after < 20
    assert checks[2].evidence is not None and checks[2].evidence.e_value == pytest.approx(after)
    assert checks[2].outcome is Outcome.FAIL
    idle = (VariantStats(0), VariantStats(1000, errors=10))
    later = sequential_checks(
        slo, [idle, (VariantStats(100, errors=1), VariantStats(1000, errors=10))]
    )
    assert later[1].evidence is not None and later[1].evidence.samples == 1


def test_a_rate_increases_bet_weighs_each_interval_by_the_rates_so_far() -> None:
    """The second interval's bet weight is 100·(30/100) + 1000·(10/1000 + 0.01) = 50 events, not
    the first interval's 1000·0.01 = 10: the e-value after both is the hand-computed product."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    windows = [(VariantStats(100, errors=30), VariantStats(1000, errors=10))] * 2
    evidence = evidence_of(slo, windows)
    expected = difference_e_value(0.01, [(30, 100, 10, 1000)] * 2)
    assert evidence.e_value == pytest.approx(expected, rel=1e-9)
    assert evidence.estimate == pytest.approx(0.30 - 0.01) and evidence.samples == 2


# -- the shadow step's tick (controller/step.py) ---------------------------------------------------
# Driven as the runner drives it, on a fake clock with scripted verdicts: the step starts at T0,
# analyses every 30 s, gives up at its max of 300 s.

T0 = 1_000.0


def shadow_spec(
    until: object = "decided",
    finish: str = "promote",
    after: tuple[dict[str, object], ...] = ({"set_weight": 10},),
    **analysis: object,
) -> RolloutSpec:
    shadow = {
        "percent": 20,
        "until": until,
        "max": 300,
        "slos": [{"metric": "error_rate", "compare": "baseline", "max_increase": 0.02}],
    }
    flag = {"provider": "file", "path": "/tmp/flags.json", "baseline": "old", "canary": "new"}
    return Rollout.model_validate({
        "kind": "Rollout",
        "metadata": {"name": "pins"},
        "spec": {
            "flag": {**flag, "key": "live"},
            "shadow_flag": {**flag, "key": "mirror", "baseline": "off"},
            "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
            "slos": [{"metric": "error_rate", "max": 0.05}],
            "analysis": {"interval": 30, "min_requests": 1, **analysis},
            "steps": [{"shadow": shadow}, *after],
            "finish": finish,
        },
    }).spec  # fmt: skip


def scripted(outcome: Outcome, why: str = "") -> Verdict:
    check = Check("slo", "error_rate", outcome, why or outcome.value, None, None, None, 0, 0)
    return Verdict(outcome, (check,), T0, T0)


def shadowing(spec: RolloutSpec) -> RolloutState:
    """The state once the shadow flag mirrors: the first analysis is due at T0 + 30."""
    assert tick(spec, RolloutState(), T0, None).action == SetShadow(20)
    started = tick(spec, tick(spec, RolloutState(), T0, None).state, T0, ShadowSet(T0))
    assert started.action == Wait(T0 + 30)
    return started.state


def analysed(
    spec: RolloutSpec, state: RolloutState, now: float, event: Event, closing: bool = True
) -> Decision:
    """The analysis due at `now` (asked for by a look without news), then its outcome. With
    `until: decided` every analysis may close the step."""
    asked = tick(spec, state, now, None)
    assert asked.action == Analyze(T0, closing, True)
    return tick(spec, asked.state, now, event)


def test_a_shadow_failure_within_the_failure_limit_is_tolerated_and_the_next_stops_it() -> None:
    """failure_limit 1: the first failed analysis is the one allowed, the second stops the run,
    rolled back with the verdict's reason."""
    spec = shadow_spec(failure_limit=1)
    state = shadowing(spec)
    first = analysed(spec, state, T0 + 30, Analyzed(scripted(Outcome.FAIL, "worse")))
    assert first.action == Wait(T0 + 60) and first.state.failures == 1
    second = analysed(spec, first.state, T0 + 60, Analyzed(scripted(Outcome.FAIL, "worse again")))
    reason = "stopped in shadow: SLO failed: worse again"
    assert second.action == Rollback("rolled_back", reason)
    assert second.state.outcome == "rolled_back" and second.state.failures == 2
    at_zero = analysed(
        shadow_spec(failure_limit=0), shadowing(shadow_spec(failure_limit=0)), T0 + 30,
        Analyzed(scripted(Outcome.FAIL, "worse")),
    )  # fmt: skip
    assert at_zero.action == Rollback("rolled_back", "stopped in shadow: SLO failed: worse")


def test_a_shadow_analysis_that_reads_metrics_resets_the_count_of_errors_in_a_row() -> None:
    """consecutive_error_limit 1: an error, an inconclusive analysis, an error: never two in a
    row, so the step goes on."""
    spec = shadow_spec(consecutive_error_limit=1)
    state = shadowing(spec)
    failed = analysed(spec, state, T0 + 30, MetricsFailed("down"))
    assert failed.action == Wait(T0 + 60) and failed.state.metrics_errors == 1
    read = analysed(spec, failed.state, T0 + 60, Analyzed(scripted(Outcome.INCONCLUSIVE)))
    assert read.action == Wait(T0 + 90) and read.state.metrics_errors == 0
    again = analysed(spec, read.state, T0 + 90, MetricsFailed("down"))
    assert again.action == Wait(T0 + 120) and again.state.metrics_errors == 1


def test_a_resume_starts_the_shadow_step_again_even_once_it_had_passed() -> None:
    """A resume mid-step, or after the step passed but before the shadow flag was put back,
    sets the shadow flag again: a look without news waits on that, never on the old window."""
    spec = shadow_spec()
    state = shadowing(spec)
    mid = analysed(spec, state, T0 + 30, Analyzed(scripted(Outcome.INCONCLUSIVE))).state
    passed = analysed(spec, mid, T0 + 60, Analyzed(scripted(Outcome.PASS)))
    assert passed.action == EndShadow()
    for before in (mid, passed.state):
        resumed = tick(spec, before, T0 + 70, Resumed(T0 + 70))
        assert resumed.action == SetShadow(20)
        assert tick(spec, resumed.state, T0 + 71, None) == Decision(resumed.state, SetShadow(20))
    ended = tick(spec, passed.state, T0 + 61, ShadowEnded())
    assert ended.action == SetWeight(10)


def within_check(slo: str, outcome: Outcome, within: bool | None, reason: str = "") -> Check:
    evidence = Evidence("ratio <= 1", 1.0, 20.0, 1.5, 0.5, 3.0, 10, within=within)
    return Check(slo, "error_rate", outcome, reason or outcome.value, None, None, None, 0, 0,
                 evidence=evidence)  # fmt: skip


def test_a_shadow_step_describes_its_until() -> None:
    items = plan(shadow_spec(until=60))
    assert items[0].describe() == "shadow 20% until 60s (max 300s)"
    assert plan(shadow_spec())[0].describe() == "shadow 20% until decided (max 300s)"


def test_until_a_duration_closes_at_exactly_that_time_and_a_pass_then_ends_the_step() -> None:
    """until 60 s: the analysis at T0 + 30 cannot end the step, the one at T0 + 60 can; the
    shadow flag goes back, and a look without news before it is back asks again."""
    spec = shadow_spec(until=60)
    state = shadowing(spec)
    early = analysed(spec, state, T0 + 30, Analyzed(scripted(Outcome.PASS)), closing=False)
    assert early.action == Wait(T0 + 60)
    ends = analysed(spec, early.state, T0 + 60, Analyzed(scripted(Outcome.PASS)))
    assert ends.action == EndShadow()
    assert tick(spec, ends.state, T0 + 61, None) == Decision(ends.state, EndShadow())
    assert tick(spec, ends.state, T0 + 61, ShadowEnded()).action == SetWeight(10)


def test_the_shadow_analyses_carry_their_own_ledger_and_a_resume_starts_a_fresh_one() -> None:
    spec = shadow_spec()
    state = shadowing(spec)
    kept = analysed(spec, state, T0 + 30, Analyzed(scripted(Outcome.INCONCLUSIVE), {"n": 1}))
    assert kept.state.shadow_ledger == {"n": 1} and kept.state.ledger == {}
    unchanged = analysed(spec, kept.state, T0 + 60, Analyzed(scripted(Outcome.INCONCLUSIVE)))
    assert unchanged.state.shadow_ledger == {"n": 1}
    resumed = tick(spec, unchanged.state, T0 + 70, Resumed(T0 + 70))
    again = tick(spec, resumed.state, T0 + 70, ShadowSet(T0 + 70))
    assert again.action == Wait(T0 + 100) and again.state.shadow_ledger == {}


def test_undecided_at_the_max_stops_the_run_at_exactly_the_max_with_the_reason() -> None:
    """Inconclusive analyses every 30 s: the tenth, at T0 + 300 (the max), stops the run, saying
    why: the verdict's reason, or that no analysis passed when it has none."""
    spec = shadow_spec()
    state = shadowing(spec)
    for n in range(1, 10):
        decision = analysed(spec, state, T0 + 30 * n, Analyzed(scripted(Outcome.INCONCLUSIVE)))
        assert decision.action == Wait(T0 + 30 * (n + 1))
        state = decision.state
    last = analysed(spec, state, T0 + 300, Analyzed(scripted(Outcome.INCONCLUSIVE, "few")))
    assert last.action == Rollback(
        "rolled_back", "stopped in shadow: undecided at the step's max (few)"
    )
    assert last.state.outcome == "rolled_back"
    silent = analysed(spec, state, T0 + 300, Analyzed(Verdict.of((), T0, T0 + 300)))
    assert silent.action == Rollback(
        "rolled_back", "stopped in shadow: undecided at the step's max (no analysis passed)"
    )


def test_at_the_max_a_pass_without_evidence_of_being_within_names_those_slos() -> None:
    """A pass whose checks against the baseline have estimates beyond their bounds does not end
    the step: at the max it stops, naming them; a verdict short of a pass says its own reason,
    whatever its passing checks' estimates."""
    spec = shadow_spec()
    state = shadowing(spec)
    for n in range(1, 10):
        state = analysed(spec, state, T0 + 30 * n, Analyzed(scripted(Outcome.INCONCLUSIVE))).state
    unshown = Verdict.of(
        (
            within_check("errors", Outcome.PASS, False),
            within_check("latency", Outcome.PASS, False),
            within_check("cost", Outcome.PASS, True),
        ),
        T0,
        T0 + 300,
    )
    last = analysed(spec, state, T0 + 300, Analyzed(unshown))
    assert last.action == Rollback(
        "rolled_back",
        "stopped in shadow: undecided at the step's max (the estimate is beyond the bound of "
        "errors, latency)",
    )
    short = Verdict.of(
        (
            within_check("errors", Outcome.PASS, False),
            within_check("pairs", Outcome.INCONCLUSIVE, None, "too few pairs"),
        ),
        T0,
        T0 + 300,
    )
    assert analysed(spec, state, T0 + 300, Analyzed(short)).action == Rollback(
        "rolled_back", "stopped in shadow: undecided at the step's max (too few pairs)"
    )


# -- the sequential judge: counts, edges, means and levels at their edges (sequential.py) ---------


def check_of(slo: SloSpec, windows: list[tuple[VariantStats, VariantStats]]) -> Check:
    return sequential_checks(slo, windows)[-1]


def evidence_of(slo: SloSpec, windows: list[tuple[VariantStats, VariantStats]]) -> Evidence:
    evidence = check_of(slo, windows).evidence
    assert evidence is not None
    return evidence


def hist(*buckets: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    return (*buckets, (math.inf, buckets[-1][1]))


def test_an_interval_one_arm_did_not_serve_adds_nothing_to_a_rate_increase() -> None:
    """The canary's 1 in 100 against the baseline's 10 in 1000 is a difference of 0, one bet: an
    interval where the canary served nothing (the baseline 500 errors in 1000), or the baseline
    nothing (the canary 50 in 100), adds no bet and changes neither estimate nor e-value."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    first = (VariantStats(100, errors=1), VariantStats(1000, errors=10))
    for later in (
        (VariantStats(0), VariantStats(1000, errors=500)),
        (VariantStats(100, errors=50), VariantStats(0)),
    ):
        evidence = evidence_of(slo, [first, later])
        assert evidence.test == "error rate difference canary - baseline <= 0.01"
        assert evidence.samples == 1 and evidence.estimate == pytest.approx(0.0)
        assert evidence.e_value == pytest.approx(difference_e_value(0.01, [(1, 100, 10, 1000)]))
        assert evidence.within is True


def test_a_rate_increase_exactly_at_its_allowance_is_within() -> None:
    """2 in 100 against 10 in 1000 + 0.01: 0.02 <= 0.02."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    evidence = evidence_of(slo, [(VariantStats(100, errors=2), VariantStats(1000, errors=10))])
    assert 2 / 100 == 10 / 1000 + 0.01 and evidence.within is True


def test_a_rate_ratio_is_within_on_the_mantel_haenszel_estimate() -> None:
    """max_ratio 1.5 on equal traffic: 15 errors against 10 is exactly 1.5, within; 10 against 10
    is 1, within; 1 against none is no estimate, beyond while the canary has errors, within
    without."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_ratio=1.5)
    for canary_errors, baseline_errors, within in ((15, 10, True), (10, 10, True), (16, 10, False),
                                                   (1, 0, False), (0, 0, True)):  # fmt: skip
        windows = [
            (VariantStats(1000, errors=canary_errors), VariantStats(1000, errors=baseline_errors))
        ]
        assert evidence_of(slo, windows).within is within, (canary_errors, baseline_errors)


def test_a_rate_ratios_evidence_shows_its_finite_upper_bound() -> None:
    """Equal error rates over many intervals: the confidence sequence's upper end is finite,
    above the estimate of 1 and well inside the grid's top of 64 times the margin."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_ratio=1.5)
    windows = [(VariantStats(1000, errors=50), VariantStats(1000, errors=50))] * 8
    evidence = evidence_of(slo, windows)
    assert evidence.estimate == pytest.approx(1.0)
    assert evidence.upper is not None and 1.0 < evidence.upper < 64 * 1.5


def test_a_rate_increase_fails_against_a_baseline_that_never_fails() -> None:
    """A canary failing 30 of 100 requests against a baseline failing none of 1000, margin 0.01:
    the hand-computed e-value after the first interval is below 1/alpha = 20 (passes, not yet
    shown), after the second above it (fails); the estimate is 0.3."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    window = (VariantStats(100, errors=30), VariantStats(1000))
    one = difference_e_value(0.01, [(30, 100, 0, 1000)])
    two = difference_e_value(0.01, [(30, 100, 0, 1000)] * 2)
    assert one < 20 <= two
    first, second = sequential_checks(slo, [window, window])
    assert first.evidence is not None and first.evidence.e_value == pytest.approx(one)
    assert first.outcome is Outcome.PASS
    assert second.evidence is not None and second.evidence.e_value == pytest.approx(two)
    assert second.outcome is Outcome.FAIL and second.evidence.estimate == pytest.approx(0.3)


def test_latency_against_the_baseline_edges_and_what_cannot_be_held() -> None:
    """The baseline's p95 edge is 0.5 s; `max_increase: 0` holds the canary to that same edge;
    `max_ratio: 3` needs an edge at or above 1.5 s, which the histogram lacks; a baseline with
    only the +Inf bucket has no edge yet; a later canary histogram without its edge adds
    nothing."""
    baseline = VariantStats(100, latency_buckets=hist((0.5, 96), (1.0, 100)))
    canary = VariantStats(100, latency_buckets=hist((0.5, 90), (1.0, 100)))
    same = SloSpec(metric="latency_p95_seconds", compare="baseline", max_increase=0)
    evidence = evidence_of(same, [(canary, baseline), (canary, baseline)])
    assert evidence.test == "ratio of shares slower than 0.5s (canary) and 0.5s (baseline) <= 1"
    far = SloSpec(metric="latency_p95_seconds", compare="baseline", max_ratio=3)
    check = check_of(far, [(canary, baseline)])
    assert check.reason.endswith(
        "(no latency bucket edge at or above 1.5s to hold the canary to; judged by threshold)"
    )
    only_inf = VariantStats(100, latency_buckets=((math.inf, 100),))
    assert check_of(same, [(canary, only_inf)]).evidence is None
    bare = VariantStats(100)
    two = evidence_of(same, [(canary, baseline), (canary, baseline)])
    three = evidence_of(same, [(canary, baseline), (canary, baseline), (bare, baseline)])
    assert three == two


def test_an_absolute_latency_bound_skips_an_interval_without_either_of_its_edges() -> None:
    """A p95 bound of 0.7 s sits between the edges 0.5 s and 1 s: a later canary histogram
    without buckets, or without the 1 s edge, adds nothing."""
    slo = SloSpec(metric="latency_p95_seconds", max=0.7)
    canary = VariantStats(100, latency_buckets=hist((0.5, 99), (1.0, 100)))
    baseline = VariantStats(100)
    before = evidence_of(slo, [(canary, baseline)])
    for later in (VariantStats(100), VariantStats(100, latency_buckets=hist((0.5, 99)))):
        assert evidence_of(slo, [(canary, baseline), (later, baseline)]) == before


def test_means_count_an_interval_of_one_request_and_skip_one_of_none() -> None:
    """Cost against the baseline: one canary request at $0.05 against $0.01 x 1.5 is one
    interval 0.035 over; one baseline request at $0.01 likewise; none on either side, nothing."""
    slo = SloSpec(metric="cost_per_query_usd", compare="baseline", max_ratio=1.5)
    big = VariantStats(1000, cost_usd=10.0)
    one_canary = evidence_of(slo, [(VariantStats(1, cost_usd=0.05), big)])
    assert one_canary.samples == 1 and one_canary.estimate == pytest.approx(0.05 - 0.015)
    one_baseline = evidence_of(
        slo, [(VariantStats(100, cost_usd=5.0), VariantStats(1, cost_usd=0.01))]
    )
    assert one_baseline.samples == 1 and one_baseline.estimate == pytest.approx(0.05 - 0.015)
    for canary, baseline in (
        (VariantStats(0), big),
        (VariantStats(100, cost_usd=5.0), VariantStats(0)),
    ):
        assert evidence_of(slo, [(canary, baseline)]).estimate is None


def test_a_cost_increase_of_zero_allows_the_baseline_mean_and_its_evidence_says_what() -> None:
    """max_increase 0: $0.02 a request against $0.01 is 0.01 over; at exactly the allowance
    ($0.02 against $0.01 + $0.01) it is within; quality's shortfall reads the other way."""
    zero = SloSpec(metric="cost_per_query_usd", compare="baseline", max_increase=0)
    over = evidence_of(zero, [(VariantStats(100, cost_usd=2.0), VariantStats(1000, cost_usd=10.0))])
    assert over.estimate == pytest.approx(0.01)
    assert over.test == (
        "mean of cost_per_query_usd minus its allowance, per interval, <= 0 (asymptotic)"
    )
    cent = SloSpec(metric="cost_per_query_usd", compare="baseline", max_increase=0.01)
    at = evidence_of(cent, [(VariantStats(100, cost_usd=2.0), VariantStats(1000, cost_usd=10.0))])
    assert at.estimate == 0.0 and at.within is True
    quality = SloSpec(metric="quality_score", compare="baseline", max_decrease=0.1)
    scored = VariantStats(100, quality_sum=60.0, quality_count=100)
    assert evidence_of(quality, [(scored, scored)]).test.startswith(
        "allowance minus mean of quality_score"
    )


def test_an_absolute_bound_and_a_level_count_one_request_and_wait_for_the_first() -> None:
    """error_rate max 0.02: one request is one observation of evidence, none is not tested yet;
    cost max $0.01: one request at $0.05 is one interval 0.04 over; tokens min 0: the shortfall
    is 0 minus the mean."""
    bound = SloSpec(metric="error_rate", max=0.02)
    baseline = VariantStats(1000)
    assert evidence_of(bound, [(VariantStats(1), baseline)]).samples == 1
    assert check_of(bound, [(VariantStats(0), baseline)]).evidence is None
    level = SloSpec(metric="cost_per_query_usd", max=0.01)
    one = evidence_of(level, [(VariantStats(1, cost_usd=0.05), baseline)])
    assert one.samples == 1 and one.estimate == pytest.approx(0.04)
    tokens = SloSpec(metric="tokens_per_query", min=0)
    used = VariantStats(100, prompt_tokens=3000.0, completion_tokens=2000.0)
    assert evidence_of(tokens, [(used, baseline)]).estimate == pytest.approx(0 - 50.0)


@pytest.mark.parametrize(
    ("slo", "canary"),
    [
        (SloSpec(metric="cost_per_query_usd", compare="baseline", max_ratio=1.5),
         VariantStats(100, cost_usd=1.0)),
        (SloSpec(metric="cost_per_query_usd", max=0.05), VariantStats(100, cost_usd=1.0)),
    ],
)  # fmt: skip
def test_a_mean_test_rejected_earlier_stays_rejected_when_read_back(
    slo: SloSpec, canary: VariantStats
) -> None:
    """The ledger's `rejected` is the test's memory: an entry that says so fails the check even
    on an interval that shows nothing against the canary."""
    baseline = VariantStats(1000, cost_usd=10.0)
    window = Observation(0, 30, {"c": canary, "b": baseline})
    verdict, ledger = assess([slo], SEQUENTIAL, window, {}, baseline="b", canary="c")
    assert verdict.outcome is not Outcome.FAIL
    for test in ledger["tests"].values():
        test["rejected"] = True
    later = Observation(30, 60, {"c": canary, "b": baseline})
    verdict, _ = assess([slo], SEQUENTIAL, later, ledger, baseline="b", canary="c")
    assert verdict.outcome is Outcome.FAIL


@pytest.mark.parametrize("finish", ["keep", "promote"])
def test_after_the_last_hold_finish_keep_ends_promoted_at_the_last_weight(finish: str) -> None:
    """`finish: keep`: the run ends promoted where it stands, 10%, with no write to 100%; the
    default promotes."""
    spec = shadow_spec(finish=finish)
    state = shadowing(spec)
    ends = analysed(spec, state, T0 + 30, Analyzed(scripted(Outcome.PASS)))
    weight = tick(spec, ends.state, T0 + 31, ShadowEnded())
    assert weight.action == SetWeight(10)
    held = tick(spec, weight.state, T0 + 32, WeightSet(T0 + 32))
    assert held.action == Wait(T0 + 62)
    asked = tick(spec, held.state, T0 + 62, None)
    assert asked.action == Analyze(T0 + 32, True)
    last = tick(spec, asked.state, T0 + 62, Analyzed(scripted(Outcome.PASS)))
    if finish == "promote":
        assert last.action == Promote()
        return
    reason = "kept the canary at 10% (finish: keep)"
    assert last.action == Finish("promoted", reason)
    assert (last.state.phase, last.state.outcome, last.state.reason) == (
        Phase.PROMOTED, "promoted", reason,
    )  # fmt: skip
    assert last.state.weight == 10


# -- experiments: the design, the evidence and the decision (analysis/experiment.py) --------------

QUALITY_RULE = MetricRule("quality", higher_is_better=True, builtin="quality_score")
ERRORS_RULE = MetricRule("errors", higher_is_better=False, builtin="error_rate", margin=0.01)


def differences(mean: float, variance: float, n: int = 10) -> MeanDifference:
    """Sufficient statistics of n differences with this mean and sample variance."""
    return MeanDifference(n, n * mean, n * mean * mean + variance * (n - 1))


def test_a_design_reads_back_and_splits_alpha_over_its_sequences() -> None:
    """Two treatments and a guard: 3 primary pairs and 2 guards against the control, so each
    of the 5 sequences is tested at 0.1 / 5."""
    design = Design(("a", "b", "c"), "a", QUALITY_RULE, (ERRORS_RULE,), ("gold",), 0.1, 25.0)
    assert Design.from_dict(json.loads(json.dumps(design.to_dict()))) == design
    assert design.pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    assert design.family_size == 5 and design.alpha_each == pytest.approx(0.02)
    assert QUALITY_RULE.worse(0.3) == -0.3 and ERRORS_RULE.worse(0.3) == 0.3


def test_an_effect_and_a_decision_as_json() -> None:
    effect = Effect("errors", "gold", "b", "a", 0.5, -math.inf, 2.0, 4)
    assert effect.to_dict() == {
        "metric": "errors", "tier": "gold", "variation": "b", "against": "a",
        "estimate": 0.5, "low": None, "high": 2.0, "intervals": 4,
    }  # fmt: skip
    decision = ExperimentDecision("b", "why", {"a": "lost", "b": "won"})
    assert decision.to_dict() == {
        "winner": "b",
        "reason": "why",
        "standing": {"a": "lost", "b": "won"},
    }


def test_interval_floors_are_binomial_noise_at_the_shrunk_rate() -> None:
    """(k + 1/2) / (n + 1) for k failures in n judged requests, times 1 - that, over n; an arm
    under min_samples has none, and a score has no floor."""
    design = Design(("a", "b", "c"), "a", QUALITY_RULE, (ERRORS_RULE,), min_samples=20)
    observation = Observation(0.0, 30.0, {
        "a": VariantStats(100, errors=3, fallbacks=1),
        "b": VariantStats(40, rejected=10),
        "c": VariantStats(19, errors=1),
    })  # fmt: skip
    floors = interval_floors(design, observation)
    rate_a, rate_b = (4 + 0.5) / (100 + 1), (0 + 0.5) / (30 + 1)
    assert floors == {
        "errors": {
            "a": pytest.approx(rate_a * (1 - rate_a) / 100),
            "b": pytest.approx(rate_b * (1 - rate_b) / 30),
        }
    }
    values = interval_values(design, observation)
    assert values["errors"] == {"a": pytest.approx(0.04), "b": 0.0}


def test_evidence_pairs_each_metrics_values_per_interval_for_all_traffic_and_its_tiers() -> None:
    """Primary differences a - b (every pair), guard differences b - a (treatment - control),
    levels as per-interval means; a tier the design does not list is not kept."""
    design = Design(("a", "b"), "a", QUALITY_RULE, (ERRORS_RULE,), ("gold",))
    evidence = ExperimentEvidence()
    a_q, b_q = [0.8, 0.7, 0.9], [0.6, 0.65, 0.5]
    a_e, b_e = [0.01, 0.02, 0.0], [0.03, 0.01, 0.02]
    for i in range(3):
        overall = {"quality": {"a": a_q[i], "b": b_q[i]}, "errors": {"a": a_e[i], "b": b_e[i]}}
        floors = {None: {"errors": {"a": 0.001, "b": 0.002}}}
        tiers = {"gold": {"quality": {"a": a_q[i]}}, "tin": overall}
        evidence = evidence.observe(design, overall, tiers, floors)
    assert evidence.intervals == 3
    assert evidence.level("quality", None, "a") == pytest.approx(0.8)
    assert evidence.level("quality", "gold", "a") == pytest.approx(0.8)
    assert evidence.level("quality", "gold", "b") is None
    assert evidence.level("quality", "tin", "a") is None
    quality = evidence.differences[("quality", None, "a", "b")]
    assert quality.mean() == pytest.approx(
        statistics.fmean(a - b for a, b in zip(a_q, b_q, strict=True))
    )
    errors = evidence.differences[("errors", None, "b", "a")]
    assert errors.mean() == pytest.approx(
        statistics.fmean(b - a for a, b in zip(a_e, b_e, strict=True))
    )
    assert errors.total_floor == pytest.approx(3 * 0.003)
    assert set(evidence.differences) == {("quality", None, "a", "b"), ("errors", None, "b", "a")}


def test_an_effects_interval_is_infinite_until_ten_intervals_then_mirrors_its_pair() -> None:
    evidence = ExperimentEvidence({("quality", None, "a", "b"): differences(0.2, 0.01, 9)})
    early = evidence.interval("quality", None, "b", "a", 0.05)
    assert (early.estimate, early.low, early.high, early.intervals) == (
        pytest.approx(-0.2), -math.inf, math.inf, 9,
    )  # fmt: skip
    evidence = ExperimentEvidence({("quality", None, "a", "b"): differences(0.2, 0.01, 10)})
    half = half_width(10, 0.1, 0.05)
    forward = evidence.interval("quality", None, "a", "b", 0.05)
    assert (forward.low, forward.high) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    mirror = evidence.interval("quality", None, "b", "a", 0.05)
    assert (mirror.estimate, mirror.low, mirror.high) == (
        pytest.approx(-0.2), pytest.approx(-0.2 - half), pytest.approx(-0.2 + half),
    )  # fmt: skip
    assert (mirror.variation, mirror.against, mirror.metric, mirror.tier) == (
        "b", "a", "quality", None,
    )  # fmt: skip
    none = evidence.interval("quality", None, "a", "c", 0.05)
    assert none.estimate is None and none.intervals == 0


def decided(
    quality_a_minus_b: tuple[float, float], errors_b_minus_a: tuple[float, float]
) -> ExperimentDecision:
    design = Design(("a", "b"), "a", QUALITY_RULE, (ERRORS_RULE,))
    evidence = ExperimentEvidence({
        ("quality", None, "a", "b"): differences(*quality_a_minus_b),
        ("errors", None, "b", "a"): differences(*errors_b_minus_a),
    })  # fmt: skip
    return decide(design, evidence)


def test_the_winner_is_better_on_the_primary_with_every_guard_within_its_margin() -> None:
    """Spreads of 0.001 give intervals about ±0.0013 wide at 0.05 / 2: b is 0.2 better on
    quality, and its errors 0.002 over the control's, within 0.01."""
    won = decided((-0.2, 1e-6), (0.002, 1e-6))
    assert won == ExperimentDecision(
        "b",
        "b is better on quality than every other variation with every guard within its margin",
        {"a": "not shown better on quality than b",
         "b": "better on quality than every other variation"},
    )  # fmt: skip
    control = decided((0.2, 1e-6), (0.002, 1e-6))
    assert control.winner == "a" and control.reason == (
        "a is better on quality than every other variation (the control)"
    )
    assert control.standing["b"] == "not shown better on quality than a"


def test_a_guard_shown_worse_or_not_yet_within_its_margin_keeps_the_winner_out() -> None:
    worse = decided((-0.2, 1e-6), (0.05, 1e-6))
    assert worse.winner is None
    assert worse.reason == "no variation is shown better than all others yet"
    assert worse.standing["b"] == (
        "better on quality, but errors shown worse than the control by more than 0.01"
    )
    unsure = decided((-0.2, 1e-6), (0.01, 0.01))
    assert unsure.standing["b"] == (
        "better on quality, but errors not yet shown within 0.01 of the control"
    )
    tied = decided((0.0, 0.01), (0.0, 1e-6))
    assert tied.winner is None and tied.standing == {
        "a": "not shown better on quality than b", "b": "not shown better on quality than a",
    }  # fmt: skip


def test_a_guard_where_higher_is_better_reads_its_interval_the_other_way() -> None:
    """Primary errors (lower is better), guard quality (higher is better, margin 0.05): b has
    fewer errors; its quality 0.02 under the control's is within, 0.2 under is not."""
    guard = MetricRule("quality", higher_is_better=True, builtin="quality_score", margin=0.05)
    primary = MetricRule("errors", higher_is_better=False, builtin="error_rate")
    design = Design(("a", "b"), "a", primary, (guard,))
    for quality_b_minus_a, winner in ((-0.02, "b"), (-0.2, None), (0.3, "b")):
        evidence = ExperimentEvidence({
            ("errors", None, "a", "b"): differences(0.05, 1e-6),
            ("quality", None, "b", "a"): differences(quality_b_minus_a, 1e-6),
        })  # fmt: skip
        decision = decide(design, evidence)
        assert decision.winner == winner, quality_b_minus_a
        assert decision.standing["a"] == "not shown better on errors than b"
        if quality_b_minus_a == -0.2:
            assert decision.standing["b"] == (
                "better on errors, but quality shown worse than the control by more than 0.05"
            )


def test_interval_values_keep_an_arm_at_min_samples_and_finite_values_only() -> None:
    """min_samples 20: an arm of 19 judged requests listed first is skipped and the others are
    still read; 20 is enough; a custom query's infinite value is no value. A custom metric has
    no floor, and an arm of one request under min_samples 0 has one."""
    custom = MetricRule("judge", higher_is_better=True)
    design = Design(("thin", "a", "b"), "a", custom, (ERRORS_RULE,), min_samples=20)
    observation = Observation(
        0.0, 30.0,
        {"thin": VariantStats(19), "a": VariantStats(20, errors=1), "b": VariantStats(25)},
        {"judge": {"thin": 0.5, "a": math.inf, "b": 0.7}},
    )  # fmt: skip
    values = interval_values(design, observation)
    assert values == {"judge": {"b": 0.7}, "errors": {"a": 0.05, "b": 0.0}}
    assert set(interval_floors(design, observation)) == {"errors"}
    none = Design(("a", "b"), "a", QUALITY_RULE, (ERRORS_RULE,), min_samples=0)
    single = Observation(0.0, 30.0, {"a": VariantStats(1, errors=1), "b": VariantStats(0)})
    shrunk = (1 + 0.5) / (1 + 1)
    assert interval_floors(none, single) == {
        "errors": {"a": pytest.approx(shrunk * (1 - shrunk) / 1)}
    }


def test_every_standing_is_said_when_three_compete_and_two_guards_fail() -> None:
    """b is shown better than a and c on quality, but worse than the control on both guards;
    a and c are not shown better than the others. A guard without a margin allows nothing."""
    cost = MetricRule("cost", higher_is_better=False)
    design = Design(("a", "b", "c"), "a", QUALITY_RULE, (ERRORS_RULE, cost))
    evidence = ExperimentEvidence({
        ("quality", None, "a", "b"): differences(-0.2, 1e-6),
        ("quality", None, "a", "c"): differences(0.0, 0.01),
        ("quality", None, "b", "c"): differences(0.2, 1e-6),
        ("errors", None, "b", "a"): differences(0.05, 1e-6),
        ("cost", None, "b", "a"): differences(0.002, 1e-6),
        ("errors", None, "c", "a"): differences(0.0, 1e-6),
        ("cost", None, "c", "a"): differences(0.0, 1e-6),
    })  # fmt: skip
    assert decide(design, evidence) == ExperimentDecision(
        None,
        "no variation is shown better than all others yet",
        {
            "a": "not shown better on quality than b, c",
            "b": "better on quality, but errors shown worse than the control by more than "
            "0.01; cost shown worse than the control by more than 0",
            "c": "not shown better on quality than a, b",
        },
    )


def test_without_guards_the_winner_is_named_on_the_primary_alone() -> None:
    design = Design(("a", "b"), "a", QUALITY_RULE)
    evidence = ExperimentEvidence({("quality", None, "a", "b"): differences(-0.2, 1e-6)})
    assert decide(design, evidence).reason == ("b is better on quality than every other variation")


def test_a_pause_after_the_shadow_step_is_a_plain_wait_from_when_the_flag_is_back() -> None:
    """Before any weight a pause judges nothing: the shadow flag back at T0 + 31, a 60 s pause
    waits until T0 + 91, then the first weight."""
    spec = shadow_spec(after=({"pause": 60}, {"set_weight": 10}))
    ends = analysed(spec, shadowing(spec), T0 + 30, Analyzed(scripted(Outcome.PASS)))
    paused = tick(spec, ends.state, T0 + 31, ShadowEnded())
    assert paused.action == Wait(T0 + 91)
    assert tick(spec, paused.state, T0 + 91, None).action == SetWeight(10)


def test_floors_count_an_arm_at_exactly_min_samples_and_each_tier_has_its_own() -> None:
    design = Design(("a", "b"), "a", QUALITY_RULE, (ERRORS_RULE,), ("gold",), min_samples=20)
    at_min = Observation(0.0, 30.0, {"a": VariantStats(20), "b": VariantStats(21, errors=1)})
    shrunk = 0.5 / 21
    assert interval_floors(design, at_min)["errors"]["a"] == pytest.approx(
        shrunk * (1 - shrunk) / 20
    )
    values = {"errors": {"a": 0.01, "b": 0.03}}
    floors = {None: {"errors": {"a": 0.001, "b": 0.001}}, "gold": {"errors": {"a": 0.004}}}
    evidence = ExperimentEvidence().observe(design, values, {"gold": values}, floors)
    overall = evidence.differences[("errors", None, "b", "a")]
    gold = evidence.differences[("errors", "gold", "b", "a")]
    assert (overall.total_floor, gold.total_floor) == (pytest.approx(0.002), pytest.approx(0.004))
    assert overall.total == gold.total == pytest.approx(0.02)


# -- a relative SLO where the baseline serves nothing (last_window.py) ----------------------------

KEPT = Kept(100.0, 400.0, VariantStats(600, errors=6, latency_buckets=hist((0.5, 540), (1.0, 600))),
            {"csat": 0.8})  # fmt: skip
"""The baseline's last window: 600 requests over 300 s, 1% errors, a csat of 0.8."""
CSAT = SloSpec(name="csat", query='avg(csat{variant="{{variant}}"})', compare="baseline",
               max_decrease=0.1)  # fmt: skip


def standing_in(slo: SloSpec, kept: Kept, method: str) -> tuple[object, ...]:
    """The stand-in's (metric, name, query, min, max) and the kept value it rests on."""
    found = stand_in(slo, kept, method, 0.05)
    assert found is not None
    spec, value = found
    return spec.metric, spec.name, spec.query, spec.min, spec.max, value


def test_a_rate_stands_in_as_its_chernoff_bound_sequentially_as_its_rate_otherwise() -> None:
    """Without errors in 600 requests the sequential bound is 1 - alpha^(1/600) (trials · KL(0 ||
    p) = -600·ln(1 - p) = ln(1/alpha)); on one request 1 - alpha; the threshold method takes the
    rate itself. The margin is added, or multiplies; a rate's bound never passes 1."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    clean = Kept(0.0, 300.0, VariantStats(600), {})
    chernoff = 1 - 0.05 ** (1 / 600)
    assert standing_in(slo, clean, "sequential") == pytest.approx(
        ("error_rate", None, None, None, chernoff + 0.01, 0.0), abs=1e-12
    )
    one = Kept(0.0, 300.0, VariantStats(1), {})
    assert standing_in(slo, one, "sequential")[4] == pytest.approx(0.95 + 0.01, abs=1e-12)
    assert standing_in(slo, KEPT, "threshold")[4:] == pytest.approx((0.01 + 0.01, 0.01))
    tripled = SloSpec(metric="error_rate", compare="baseline", max_ratio=3)
    half = Kept(0.0, 300.0, VariantStats(600, errors=300), {})
    assert standing_in(tripled, half, "threshold")[4:] == (1.0, 0.5)
    quality = SloSpec(metric="quality_score", compare="baseline", max_decrease=0.1)
    scored = Kept(0.0, 300.0, VariantStats(600, quality_sum=540, quality_count=600), {})
    assert standing_in(quality, scored, "threshold")[3:] == pytest.approx((0.8, None, 0.9))


def test_a_latency_or_a_custom_value_stands_in_with_its_margin_unclamped() -> None:
    """p90 of the kept histogram is 0.5 s: `max_increase: 0` holds the canary to exactly 0.5 s,
    `max_ratio: 3` to 1.5 s (a latency is no rate: above 1 stays); a named custom query keeps its
    name and query, held to 0.8 - 0.1."""
    same = SloSpec(metric="latency_p90_seconds", compare="baseline", max_increase=0)
    assert standing_in(same, KEPT, "threshold")[3:] == (None, 0.5, 0.5)
    tripled = SloSpec(metric="latency_p90_seconds", compare="baseline", max_ratio=3)
    assert standing_in(tripled, KEPT, "sequential")[3:] == (None, 1.5, 0.5)
    assert standing_in(CSAT, KEPT, "sequential") == pytest.approx(
        (None, "csat", CSAT.query, 0.7, None, 0.8)
    )


def test_a_rate_bound_of_more_events_than_trials_is_one() -> None:
    """Counts that say more events than trials (a counter reset between reads) are a rate of 1,
    whose bound is 1 however many trials: not the 2 they divide to."""
    assert rate_upper_bound(7, 5, 0.05) == 1.0
    assert rate_upper_bound(2000, 1000, 0.05) == 1.0


def test_a_window_is_kept_once_the_baseline_served_one_request() -> None:
    """One baseline request is a window to keep; none keeps the window kept before."""
    before = Kept(0.0, 30.0, VariantStats(500), {})
    one = Observation(30, 60, {"b": VariantStats(1), "c": VariantStats(9)})
    assert keep(one, "b", before) == Kept(30, 60, VariantStats(1), {})
    none = Observation(60, 90, {"b": VariantStats(0), "c": VariantStats(9)})
    assert keep(none, "b", before) is before


def stood_in(outcome: Outcome, estimate: float | None, bound: float | None) -> Check:
    evidence = Evidence("error rate <= 0.05", 2.5, 20.0, estimate, None, None, 3)
    return Check("error_rate <= 0.05", "error_rate", outcome, "as judged", 0.02, None, bound, 50,
                 0, evidence=evidence)  # fmt: skip


def test_a_stand_ins_check_names_its_window_and_passes_once_the_window_has_data() -> None:
    """An inconclusive stand-in over a window with data passes, saying so with its evidence's
    numbers (an estimate it lacks shown as `-`); the kept window's requests, length and value
    and the bound held are named; a failed check keeps its own reason."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    window = stood_in(Outcome.PASS, None, 0.05)
    where = ("error_rate <= baseline + 0.01: judged against the baseline's last window before "
             "this weight (600 requests over 300 s, error_rate 0.01 there)")  # fmt: skip
    shown = as_judged(slo, stood_in(Outcome.INCONCLUSIVE, 0.0123, 0.05), KEPT, 0.01, window)
    assert shown.outcome is Outcome.PASS and shown.slo == "error_rate <= baseline + 0.01"
    assert shown.reason == (
        f"{where}, held to 0.05: no evidence the canary is beyond it (e-value 2.5 < 20, "
        "estimate 0.0123 over 3 observations)"
    )
    assert (shown.baseline_value, shown.baseline_requests) == (0.01, 600)
    unknown = as_judged(slo, stood_in(Outcome.INCONCLUSIVE, None, None), KEPT, 0.01, window)
    assert unknown.reason == (
        f"{where}: no evidence the canary is beyond it (e-value 2.5 < 20, estimate - over 3 "
        "observations)"
    )
    failed = as_judged(slo, stood_in(Outcome.FAIL, 0.2, 0.05), KEPT, 0.01, window)
    assert failed.outcome is Outcome.FAIL and failed.reason == f"{where}, held to 0.05: as judged"


def test_a_relative_slo_that_cannot_be_judged_says_so_by_its_name() -> None:
    observation = Observation(0, 30, {"c": VariantStats(42), "b": VariantStats(0)})
    for slo, metric in ((CSAT, "csat"), (SloSpec(metric="error_rate", compare="baseline",
                                                 max_increase=0.01), "error_rate")):  # fmt: skip
        check = cannot_judge(slo, observation, "c", "why")
        assert check == Check(
            slo=slo.describe(), metric=metric, outcome=Outcome.INCONCLUSIVE,
            reason=f"{slo.describe()}: cannot be judged at this weight: the baseline serves no "
            "traffic here, and why",
            canary_value=None, baseline_value=None, bound=None, canary_requests=42,
            baseline_requests=0.0,
        )  # fmt: skip


# -- assess where the baseline serves nothing (assess.py) -----------------------------------------


def at_full(
    slos: list[SloSpec], method: str, kept: VariantStats | None, canary: VariantStats,
    straggling: VariantStats = VariantStats(0),  # noqa: B008 (frozen)
) -> Verdict:  # fmt: skip
    """The verdict at 100% after one window at a lower weight whose baseline was `kept` (or
    none), judged like the runner does: the ledger carried, `baseline_served=False`."""
    analysis = AnalysisSpec(interval=30, min_requests=1, method=method, alpha=0.05)
    ledger: dict[str, object] = {}
    if kept is not None:
        before = Observation(0, 300, {"c": VariantStats(600), "b": kept})
        _, ledger = assess(slos, analysis, before, ledger, baseline="b", canary="c")
    window = Observation(300, 330, {"c": canary, "b": straggling})
    verdict, _ = assess(slos, analysis, window, ledger, baseline="b", canary="c",
                        baseline_served=False)  # fmt: skip
    return verdict


def test_at_full_the_rates_bound_is_chernoffs_at_alpha_over_the_sequential_slos() -> None:
    """The kept window had no error in 600 requests: alone, the SLO is held to
    1 - 0.05^(1/600) + 0.01; beside a second sequential SLO, alpha is split in two:
    1 - 0.025^(1/600) + 0.01. The threshold method holds it to the kept rate + 0.01."""
    errors = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    cost = SloSpec(metric="cost_per_query_usd", max=1.0)
    clean = VariantStats(100)
    verdict = at_full([errors], "sequential", VariantStats(600), clean)
    assert (verdict.window_start, verdict.window_end) == (300, 330)
    (alone,) = verdict.checks
    assert alone.bound == pytest.approx(1 - 0.05 ** (1 / 600) + 0.01, abs=1e-9)
    paired, _ = at_full([errors, cost], "sequential", VariantStats(600), clean).checks
    assert paired.bound == pytest.approx(1 - 0.025 ** (1 / 600) + 0.01, abs=1e-9)
    (threshold,) = at_full([errors], "threshold", VariantStats(600, errors=6), clean).checks
    assert threshold.bound == pytest.approx(0.02)


@pytest.mark.parametrize("method", ["threshold", "sequential"])
def test_at_full_an_unjudgeable_slo_says_why_in_its_place_beside_the_others(method: str) -> None:
    """No kept window: the relative SLO says so, first, and the absolute one after it is its
    own check, the stragglers the baseline still served counted; a kept window without the custom
    query's value names the value it lacks."""
    errors = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    latency = SloSpec(metric="latency_p95_seconds", max=2.0)
    canary = VariantStats(42, latency_buckets=hist((0.5, 42)))
    first, second = at_full([errors, latency], method, None, canary, VariantStats(3)).checks
    assert first.reason == (
        "error_rate <= baseline + 0.01: cannot be judged at this weight: the baseline serves no "
        "traffic here, and the run kept no window of it from an earlier weight"
    )
    assert first.canary_requests == 42
    assert second.slo == "latency_p95_seconds <= 2" and second.outcome is not Outcome.FAIL
    assert second.baseline_requests == 3
    (custom,) = at_full([CSAT], method, VariantStats(600), canary).checks
    assert custom.reason.endswith(
        "the baseline serves no traffic here, and its last window before this weight has no "
        "value of csat"
    )


def test_a_ledger_from_before_the_streaming_histograms_reads_as_none_seen() -> None:
    """A ledger written before first-token and per-token histograms were kept has no such keys
    in what it saw: read back, they are empty, and the look goes on as before."""
    slo = SloSpec(metric="error_rate", compare="baseline", max_ratio=1.5)
    window = Observation(0, 30, {"c": VariantStats(100, errors=1), "b": VariantStats(1000)})
    _, ledger = assess([slo], SEQUENTIAL, window, {}, baseline="b", canary="c")
    for stats in ledger["seen"].values():
        del stats["ttft_buckets"], stats["tpot_buckets"]
    later = Observation(0, 60, {"c": VariantStats(200, errors=2), "b": VariantStats(2000)})
    verdict, _ = assess([slo], SEQUENTIAL, later, ledger, baseline="b", canary="c")
    (check,) = verdict.checks
    assert check.canary_requests == 200 and check.outcome is not Outcome.FAIL


def test_a_served_window_without_baseline_traffic_keeps_the_window_kept_before() -> None:
    """The baseline served 600 requests, then nothing in a window still at a lower weight: at
    100% the SLO is judged against the 600, not left without a window."""
    errors = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    analysis = AnalysisSpec(interval=30, min_requests=1, method="threshold")
    ledger: dict[str, object] = {}
    for start, baseline in ((0, VariantStats(600, errors=6)), (300, VariantStats(0))):
        window = Observation(start, start + 300, {"c": VariantStats(60), "b": baseline})
        _, ledger = assess([errors], analysis, window, ledger, baseline="b", canary="c")
    full = Observation(600, 630, {"c": VariantStats(100), "b": VariantStats(0)})
    verdict, _ = assess([errors], analysis, full, ledger, baseline="b", canary="c",
                        baseline_served=False)  # fmt: skip
    (check,) = verdict.checks
    assert "(600 requests over 300 s, error_rate 0.01 there)" in check.reason
    assert check.bound == pytest.approx(0.02)
