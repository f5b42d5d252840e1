"""Sequential analysis: the statistics against closed forms and exact enumeration, the A/A
guarantee and the power on a small seeded simulation, and the ledger's bookkeeping."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from dataclasses import replace
from typing import Any

import pytest

from canaryctl.analysis import Outcome, Verdict, assess
from canaryctl.analysis.betting import SCALES, bet
from canaryctl.analysis.guard import LEDGER_KEY
from canaryctl.analysis.mean_difference import MIN_INTERVALS, MeanDifference
from canaryctl.analysis.rate_ratio import GRID, STEP, RateRatio
from canaryctl.analysis.sequential import sequential_metric
from canaryctl.errors import InvalidDocument
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook import Rollout
from canaryctl.runbook.loader import parse_document
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec


def binomial_pmf(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def canary_probability(ratio: float, share: float) -> float:
    """θ: the chance that an event came from the canary, given the rate ratio and its share."""
    return share * ratio / (share * ratio + 1 - share)


# -- the rate-ratio e-process ---------------------------------------------------------------------


def test_e_value_is_the_mixture_of_products_of_per_interval_bets() -> None:
    """Each interval bets λ = F·a / (1 + θ·F·a) on the canary's share of its F events against
    θ, the share a ratio at the margin gives; the e-value is the mean over the scales a."""
    margin = 1.5
    intervals = [(3, 2, 0.2), (5, 1, 0.5), (0, 4, 0.3), (7, 7, 0.05)]  # canary, baseline, π
    test = RateRatio(margin)
    for canary, baseline, share in intervals:
        test = test.observe(canary, baseline, share)

    def wealth(scale: float) -> float:
        product = 1.0
        for c, b, share in intervals:
            events, theta = c + b, canary_probability(margin, share)
            stake = events * scale / (1 + theta * events * scale)
            product *= 1 + stake * (c / events - theta)
        return product

    direct = sum(wealth(scale) for scale in SCALES) / len(SCALES)
    assert test.e_value() == pytest.approx(direct, rel=1e-9)
    assert test.events == 29 and test.canary_events == 15
    # The Mantel-Haenszel estimate: Σ C(1 - π) / Σ Bπ.
    assert test.estimate() == pytest.approx(
        (3 * 0.8 + 5 * 0.5 + 0 + 7 * 0.95) / (2 * 0.2 + 1 * 0.5 + 4 * 0.3 + 7 * 0.05)
    )


def test_one_event_bets_exactly_the_likelihood_ratio() -> None:
    """With a single event in an interval, the bet of scale a is the likelihood ratio of odds
    multiplied by 1 + a against the null: nothing is lost to the per-event test when sparse."""
    share, scale = 0.2, SCALES[4]
    theta = canary_probability(1.0, share)
    odds = (1 + scale) * theta / (1 - theta)
    alternative = odds / (1 + odds)
    for canary, ratio in ((1, alternative / theta), (0, (1 - alternative) / (1 - theta))):
        stake = bet(1, theta, scale)
        assert 1 + stake * (canary - theta) == pytest.approx(ratio, rel=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_every_scale_bets_the_likelihood_ratio_on_one_event_and_at_most_1_over_mu(
    scale: float,
) -> None:
    """λ = w·a / (1 + μ·w·a): on one event the likelihood ratio of odds times 1 + a; however
    many events an interval rests on, less than 1/μ, so a wholly adverse interval (X = 0)
    never takes the wealth to zero."""
    theta = canary_probability(1.0, 0.2)
    odds = (1 + scale) * theta / (1 - theta)
    assert 1 + bet(1, theta, scale) * (1 - theta) == pytest.approx(odds / (1 + odds) / theta)
    for weight in (7.0, 1e3, 1e9):
        assert bet(weight, theta, scale) == pytest.approx(
            weight * scale / (1 + theta * weight * scale), rel=1e-12
        )
        assert bet(weight, theta, scale) < 1 / theta
    assert bet(1e9, theta, scale) == pytest.approx(1 / theta, rel=1e-6)


@pytest.mark.parametrize("ratio, expected", [(1.0, "== 1"), (0.5, "< 1")])
def test_e_value_has_mean_at_most_one_under_the_null(ratio: float, expected: str) -> None:
    """Exactly: enumerate one interval of 12 events at the margin (1.0) and below it."""
    theta = canary_probability(ratio, 0.25)
    mean = sum(
        binomial_pmf(y, 12, theta) * RateRatio(1.0).observe(y, 12 - y, 0.25).e_value()
        for y in range(13)
    )
    if expected == "== 1":
        assert mean == pytest.approx(1.0, rel=1e-9)
    else:
        assert mean < 0.9


def test_confidence_sequence_covers_at_all_times_by_exact_enumeration() -> None:
    """Every outcome of four small intervals with changing shares, weighted by its probability:
    the chance that either bound ever excludes the true ratio stays below alpha on each side."""
    true_ratio, alpha = 1.3, 0.3  # 1.3 lies between grid points; a large alpha makes it bite
    intervals = [(6, 0.2), (6, 0.5), (6, 0.3), (6, 0.5)]
    totals = {"low": 0.0, "high": 0.0, "informative": 0.0}

    def walk(depth: int, probability: float, test: RateRatio, flags: tuple[bool, ...]) -> None:
        if depth == len(intervals):
            for name, flag in zip(totals, flags, strict=True):
                totals[name] += probability * flag
            return
        n, share = intervals[depth]
        for y in range(n + 1):
            after = test.observe(y, n - y, share)
            low, high = after.lower_bound(alpha), after.upper_bound(alpha)
            walk(
                depth + 1,
                probability * binomial_pmf(y, n, canary_probability(true_ratio, share)),
                after,
                (
                    flags[0] or low >= true_ratio,
                    flags[1] or high <= true_ratio,
                    flags[2] or low > 0 or high < math.inf,
                ),
            )

    walk(0, 1.0, RateRatio(1.0), (False, False, False))
    assert totals["low"] <= alpha and totals["high"] <= alpha
    assert totals["informative"] > 0.5  # not vacuous: the bounds usually say something


def test_estimate_and_bounds_bracket_a_clear_ratio() -> None:
    test = RateRatio(1.0)
    for _ in range(20):
        test = test.observe(canary_events=30, baseline_events=30, canary_share=0.25)  # ratio 3
    estimate = test.estimate()
    assert estimate is not None and estimate == pytest.approx(3.0, rel=0.05)
    low, high = test.lower_bound(0.05), test.upper_bound(0.05)
    assert 1.6 < low < 3 < high < 5

    def e_value_against(margin: float) -> float:
        """The same data tested against another margin: the bounds are where these cross 20."""
        other = RateRatio(margin)
        for _ in range(20):
            other = other.observe(30, 30, 0.25)
        return other.e_value()

    step = math.exp(STEP)
    assert e_value_against(low) >= 20 > e_value_against(low * step)


def test_confidence_sequence_bounds_match_the_closed_form_on_identical_intervals() -> None:
    """n identical intervals (share X of F events at π): the e-value against r <= g is
    mean_a (1 + λ_a (X - θ_g))^n, so each bound is the last (first) grid point where that, or its
    mirror on 1 - X, reaches 1/alpha; the width is the distance between them."""
    n, canary, baseline, share, alpha = 12, 9, 21, 0.2, 0.05
    test = RateRatio(1.0)
    for _ in range(n):
        test = test.observe(canary, baseline, share)
    events, x = canary + baseline, canary / (canary + baseline)

    def closed_form(statistic: float, null: float) -> float:
        return sum(
            (1 + events * a / (1 + null * events * a) * (statistic - null)) ** n for a in SCALES
        ) / len(SCALES)

    grid = [math.exp(k * STEP) for k in GRID]
    rejected_low = [g for g in grid if closed_form(x, canary_probability(g, share)) >= 1 / alpha]
    rejected_high = [
        g for g in grid if closed_form(1 - x, 1 - canary_probability(g, share)) >= 1 / alpha
    ]
    assert test.lower_bound(alpha) == pytest.approx(max(rejected_low))
    assert test.upper_bound(alpha) == pytest.approx(min(rejected_high))
    width = test.upper_bound(alpha) - test.lower_bound(alpha)
    assert width == pytest.approx(min(rejected_high) - max(rejected_low))
    # The ratio is 1.71: "r <= 1" is rejected, and the upper bound lies above the truth.
    assert test.lower_bound(alpha) == pytest.approx(1.0) and test.upper_bound(alpha) > 1.71


def test_no_events_is_no_evidence() -> None:
    test = RateRatio(1.0).observe(0, 0, 0.5).observe(5, 0, 1.0)  # nothing, then no baseline
    assert test.e_value() == pytest.approx(1.0) and test.events == 0 and test.estimate() is None
    assert (test.lower_bound(0.05), test.upper_bound(0.05)) == (0.0, math.inf)


def test_a_ratio_beyond_either_end_of_the_grid_is_tested_at_the_nearest_sound_point() -> None:
    """Above the last grid point no claim is made (e-value 1); at it, its own e-value. Below
    the first point the test is at the first, a wider null: never more evidence than due."""
    test = RateRatio(1.0)
    for _ in range(10):
        test = test.observe(40, 40, 0.25)  # ratio 3
    first, last = RateRatio(2 ** (GRID[0] / 4)), RateRatio(2 ** (GRID[-1] / 4))
    for _ in range(10):
        first, last = first.observe(40, 40, 0.25), last.observe(40, 40, 0.25)
    assert test.e_value_above(2 ** (GRID[-1] / 4)) == pytest.approx(last.e_value())
    assert test.e_value_above(2 ** ((GRID[-1] + 0.5) / 4)) == 1.0  # just past the last point
    assert test.e_value_above(2 ** ((GRID[-1] + 1) / 4)) == 1.0  # one step past it
    assert test.e_value_above(2 ** (GRID[0] / 4) / 10) == pytest.approx(first.e_value())
    assert first.e_value() > 1e6  # not vacuous: the first point is far below the ratio 3


def test_the_estimate_needs_events_on_both_arms() -> None:
    """Σ C(1 - π) / Σ Bπ: None while either sum is zero; one event on each arm at an even
    split is a ratio of 1, not an absence of one."""
    assert RateRatio(1.0).observe(0, 5, 0.5).estimate() is None
    assert RateRatio(1.0).observe(5, 0, 0.5).estimate() is None
    assert RateRatio(1.0).observe(1, 1, 0.5).estimate() == pytest.approx(1.0)
    assert RateRatio(1.0).observe(1, 1, 0.2).estimate() == pytest.approx(0.8 / 0.2)


@pytest.mark.parametrize("offsets", [GRID, (0,)])
def test_a_resumed_rate_ratio_keeps_all_its_evidence(offsets: tuple[int, ...]) -> None:
    """What the journal stores between analyses (JSON) gives back the same test, bounds and
    all, so a resume neither forgets nor invents evidence."""
    test = RateRatio(1.5, offsets=offsets)
    for canary, baseline, share in [(3, 2, 0.2), (5, 1, 0.5), (7, 7, 0.05)]:
        test = test.observe(canary, baseline, share)
    again = RateRatio.from_dict(json.loads(json.dumps(test.to_dict())))
    assert again == test
    assert (again.lower_bound(0.05), again.upper_bound(0.05)) == (
        test.lower_bound(0.05),
        test.upper_bound(0.05),
    )


# -- the mean-difference confidence sequence ------------------------------------------------------


def test_mean_difference_needs_intervals_then_weighs_them() -> None:
    test = MeanDifference().observe(1.0).observe(1.2)
    assert test.e_value() == 1.0 and test.bounds(0.05) == (-math.inf, math.inf)
    for value in (0.8, 1.1, 0.9, 1.0, 1.05, 0.95):
        test = test.observe(value)
    mean = test.mean()
    assert mean == pytest.approx(1.0)
    low, high = test.bounds(0.05)
    assert 0 < low < 1 < high
    # Robbins' one-sided normal mixture, written out: 2 sqrt(t0/(t+t0)) exp(z^2/2) Phi(z).
    n, t0 = 8, 10.0
    spread = math.sqrt(sum((v - 1.0) ** 2 for v in (1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.05, 0.95)) / 7)
    z = 8.0 / (spread * math.sqrt(n + t0))
    phi = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert test.e_value() == pytest.approx(2 * math.sqrt(t0 / (n + t0)) * math.exp(z * z / 2) * phi)


def robbins(differences: list[float], alpha: float) -> tuple[float, tuple[float, float]]:
    """The e-value and the confidence sequence of Waudby-Smith et al. written out from the
    differences themselves: s their sample standard deviation, t0 = 10 prior intervals."""
    n, t0 = len(differences), 10.0
    mean, s = statistics.fmean(differences), statistics.stdev(differences)
    z = sum(differences) / (s * math.sqrt(n + t0))
    phi = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    e_value = 2 * math.sqrt(t0 / (n + t0)) * math.exp(z * z / 2) * phi
    half = s / n * math.sqrt(2 * (n + t0) * math.log(math.sqrt((n + t0) / t0) / alpha))
    return e_value, (mean - half, mean + half)


@pytest.mark.parametrize(
    "differences",
    [
        [0.3, -0.2, 0.1],  # the first look that says anything: MIN_INTERVALS differences
        [0.3, -0.2, 0.1, -0.1, 0.05],  # a mean near 0: z near 0, where Φ(z) matters
        [-0.4, -0.1, -0.3, 0.1, -0.2, -0.25],  # below the allowance: z < 0, evidence under 1
        [1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.05, 0.95],
    ],
)
def test_mean_difference_e_value_and_bounds_match_the_closed_form(differences: list[float]) -> None:
    test = MeanDifference()
    for value in differences:
        test = test.observe(value)
    e_value, (low, high) = robbins(differences, 0.05)
    assert test.mean() == pytest.approx(statistics.fmean(differences))
    assert test.e_value() == pytest.approx(e_value, rel=1e-9)
    assert test.bounds(0.05) == pytest.approx((low, high), rel=1e-9)
    assert test.bounds(0.01)[0] < low and test.bounds(0.01)[1] > high  # smaller alpha: wider


def test_mean_difference_says_nothing_before_min_intervals_and_nothing_without_data() -> None:
    assert MeanDifference().mean() is None and MeanDifference().e_value() == 1.0
    early = MeanDifference()
    for value in [5.0] * (MIN_INTERVALS - 1):
        early = early.observe(value)
        assert early.e_value() == 1.0 and early.bounds(0.05) == (-math.inf, math.inf)
    assert early.observe(4.0).e_value() > 1.0  # at MIN_INTERVALS: evidence


def test_identical_differences_keep_finite_evidence_and_a_width_set_by_the_mean() -> None:
    """A deterministic price makes every difference equal: the spread is floored at 1e-3 of
    the mean, so the confidence sequence keeps that width; all zeros (exactly at the
    allowance) give the mixture's value at z = 0, sqrt(t0 / (n + t0)), and no error."""
    n, t0, alpha = 5, 10.0, 0.05
    same, zero = MeanDifference(), MeanDifference()
    for _ in range(n):
        same, zero = same.observe(0.5), zero.observe(0.0)
    half = 5e-4 / n * math.sqrt(2 * (n + t0) * math.log(math.sqrt((n + t0) / t0) / alpha))
    assert same.bounds(alpha) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-9)
    assert math.isfinite(same.e_value()) and same.e_value() > 1e300
    assert zero.e_value() == pytest.approx(math.sqrt(t0 / (n + t0)))
    assert zero.bounds(alpha) == pytest.approx((0.0, 0.0), abs=1e-9)


# -- a seeded simulation through assess(), looking at every interval ------------------------------

SHARES = (0.01, 0.05, 0.25, 0.50)
LOOKS_PER_STEP, INTERVAL = 6, 30.0
BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, math.inf)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact by inversion for small means, a rounded normal beyond (cheap and close enough)."""
    if n * p > 40:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    u, k = rng.random(), 0
    pk = (1 - p) ** n
    cumulative = pk
    while u > cumulative and k < n:
        pk *= (n - k) / (k + 1) * p / (1 - p)
        k += 1
        cumulative += pk
    return k


def latencies(rng: random.Random, n: int, scale: float) -> tuple[tuple[float, float], ...]:
    """A log-normal latency histogram with median `scale` (p95 near 2.2 s at scale 1)."""
    counts = [0] * len(BUCKETS)
    for _ in range(n):
        value = scale * math.exp(rng.gauss(0, 0.5))
        counts[next(i for i, b in enumerate(BUCKETS) if value <= b)] += 1
    return tuple(zip(BUCKETS, itertools.accumulate(counts), strict=True))


def simulate(
    slos: list[dict[str, Any]],
    rng: random.Random,
    *,
    error_ratio: float = 1.0,
    slowdown: float = 1.0,
    alpha: float = 0.1,
    with_latency: bool = False,
) -> tuple[bool, bool]:
    """One rollout with stepped shares, a drifting common error rate and a diurnal request rate;
    returns (sequential rolled back, naive repeated z-test rolled back) on the same data."""
    specs = [SloSpec(**slo) for slo in slos]
    analysis = AnalysisSpec(interval=INTERVAL, min_requests=1, method="sequential", alpha=alpha)
    ledger: dict[str, Any] = {}
    common, phase = 0.01, rng.uniform(0, 2 * math.pi)
    naive = False
    now = 0.0
    for share in SHARES:
        start, cumulative = now, {"canary": [0, 0, None], "baseline": [0, 0, None]}
        for _ in range(LOOKS_PER_STEP):
            now += INTERVAL
            common = min(0.05, common * math.exp(rng.gauss(0, 0.2)))
            requests = round(40 * INTERVAL * (1 + 0.5 * math.sin(phase + now / 600)))
            for arm, arm_share, ratio, scale in (
                ("canary", share, error_ratio, slowdown),
                ("baseline", 1 - share, 1.0, 1.0),
            ):
                n = binomial(rng, requests, arm_share)
                cumulative[arm][0] += n
                cumulative[arm][1] += binomial(rng, n, min(1.0, common * ratio))
                if with_latency:
                    new = latencies(rng, n, scale)
                    old = cumulative[arm][2] or tuple((b, 0) for b in BUCKETS)
                    cumulative[arm][2] = tuple(
                        (b, c + d) for (b, c), (_, d) in zip(old, new, strict=True)
                    )
            observation = Observation(
                start,
                now,
                {
                    arm: VariantStats(requests=r, errors=e, latency_buckets=h or ())
                    for arm, (r, e, h) in cumulative.items()
                },
            )
            verdict, ledger = assess(
                specs, analysis, observation, ledger, baseline="baseline", canary="canary"
            )
            ledger = json.loads(json.dumps(ledger))  # what the journal keeps between analyses
            if verdict.outcome is Outcome.FAIL:
                return True, naive
            naive |= naive_z_rejects(cumulative["canary"][:2], cumulative["baseline"][:2], alpha)
    return False, naive


def naive_z_rejects(canary: list[Any], baseline: list[Any], alpha: float) -> bool:
    """The positive control: a one-sided two-proportion z-test, as if each look were the last."""
    (nc, ec), (nb, eb) = canary, baseline
    if nc == 0 or nb == 0 or ec + eb == 0:
        return False
    pooled = (ec + eb) / (nc + nb)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nb))
    z_alpha = {0.1: 1.2816, 0.05: 1.6449}[alpha]
    return spread > 0 and (ec / nc - eb / nb) / spread > z_alpha


ERRORS_NO_WORSE = [{"metric": "error_rate", "compare": "baseline", "max_ratio": 1.0}]


def test_a_a_false_rollbacks_stay_under_alpha_while_a_naive_test_inflates() -> None:
    rng, runs, alpha = random.Random(20261126), 100, 0.1
    results = [simulate(ERRORS_NO_WORSE, rng, alpha=alpha) for _ in range(runs)]
    sequential = sum(s for s, _ in results)
    naive = sum(n for _, n in results)
    # 20 is Binomial(100, 0.1)'s 99.9% quantile: a valid test stays below it but for bad luck.
    assert sequential <= 20
    assert sequential / runs <= alpha
    assert naive / runs > 2 * alpha  # the same data with 24 looks: the control must inflate


PER_EVENT_RATIOS = tuple(2 ** (steps / 4) for steps in (1, 2, 3, 4, 6, 8, 12))
"""The alternatives of the e-process canaryctl used before (r = 1.19 to 8, equally weighted)."""


def per_event_log_ratios(
    log_ratios: list[float], canary: int, baseline: int, share: float
) -> list[float]:
    """That e-process: per-event binomial likelihood ratios of r against r = 1, which treat
    every event as independent evidence."""
    updated = []
    for log_ratio, ratio in zip(log_ratios, PER_EVENT_RATIOS, strict=True):
        theta = canary_probability(ratio, share)
        updated.append(
            log_ratio
            + canary * math.log(theta / share)
            + baseline * math.log((1 - theta) / (1 - share))
        )
    return updated


def clustered_rollout(rng: random.Random, cluster: int, error_ratio: float = 1.0) -> list[bool]:
    """40 one-minute intervals at shares 1/5/25/50%, 3,000 requests a minute, a 1% error rate
    that drifts, errors arriving in clusters of `cluster` that land on one arm. Whether (the
    per-interval test, the per-event e-process) ever reached 1/alpha, alpha 0.05."""
    test, log_ratios = RateRatio(1.0, offsets=(0,)), [0.0] * len(PER_EVENT_RATIOS)
    rejected, common = [False, False], 0.01
    for minute in range(40):
        share = SHARES[minute // 10]
        common = min(0.05, common * math.exp(rng.gauss(0, 0.1)))
        canary_requests = binomial(rng, 3000, share)
        rates = ((canary_requests, common * error_ratio), (3000 - canary_requests, common))
        canary, baseline = (cluster * binomial(rng, n, p / cluster) for n, p in rates)
        test = test.observe(canary, baseline, canary_requests / 3000)
        log_ratios = per_event_log_ratios(log_ratios, canary, baseline, canary_requests / 3000)
        rejected[0] |= test.e_value() >= 20
        rejected[1] |= sum(math.exp(v) for v in log_ratios) / len(log_ratios) >= 20
    return rejected


@pytest.mark.parametrize("cluster", [5, 20])
def test_clustered_errors_keep_alpha_where_the_per_event_e_process_breaks(cluster: int) -> None:
    """Healthy canaries whose errors come in bursts: the per-interval test rolls back at most
    alpha of them; the per-event e-process on the same data rolls back several times alpha."""
    rng, runs = random.Random(cluster), 300
    results = [clustered_rollout(rng, cluster) for _ in range(runs)]
    per_interval = sum(r[0] for r in results)
    per_event = sum(r[1] for r in results)
    # 26 is Binomial(300, 0.05)'s 99.9% quantile: a valid test stays below it but for bad luck.
    assert per_interval <= 26 and per_interval / runs <= 0.05
    assert per_event / runs > 0.15


def test_clustered_errors_still_let_a_three_fold_canary_be_caught() -> None:
    rng = random.Random(3)
    caught = sum(clustered_rollout(rng, 5, error_ratio=3.0)[0] for _ in range(50))
    assert caught >= 45


def test_a_three_fold_error_rate_is_rolled_back() -> None:
    rng = random.Random(7)
    caught = sum(simulate(ERRORS_NO_WORSE, rng, error_ratio=3.0)[0] for _ in range(40))
    assert caught >= 38


def test_a_slower_canary_is_caught_on_the_share_of_slow_requests() -> None:
    rng = random.Random(11)
    slos = [{"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.0}]
    slow = sum(simulate(slos, rng, slowdown=1.3, with_latency=True)[0] for _ in range(10))
    same = sum(simulate(slos, rng, with_latency=True)[0] for _ in range(10))
    assert slow >= 9 and same <= 2


# -- verdicts and the ledger ----------------------------------------------------------------------

SEQUENTIAL = AnalysisSpec(interval=30, min_requests=100, method="sequential", alpha=0.05)


def window(start: float, end: float, canary: VariantStats, baseline: VariantStats) -> Observation:
    return Observation(start, end, {"canary": canary, "baseline": baseline})


def judge(
    slos: list[dict[str, Any]], observation: Observation, ledger: dict[str, Any]
) -> tuple[Verdict, dict[str, Any]]:
    specs = [SloSpec(**slo) for slo in slos]
    return assess(specs, SEQUENTIAL, observation, ledger, baseline="baseline", canary="canary")


def test_a_window_seen_twice_adds_no_evidence_and_a_new_window_adds_all_of_it() -> None:
    slos = ERRORS_NO_WORSE
    first = window(0, 30, VariantStats(100, 4), VariantStats(900, 9))
    verdict, ledger = judge(slos, first, {})
    evidence = verdict.checks[0].evidence
    assert evidence is not None and evidence.samples == 13
    again, ledger = judge(slos, first, ledger)
    assert again.checks[0].evidence == evidence
    grown = window(0, 60, VariantStats(200, 8), VariantStats(1800, 18))
    verdict, ledger = judge(slos, grown, ledger)
    assert verdict.checks[0].evidence is not None
    assert verdict.checks[0].evidence.samples == 26  # only the new 13
    next_step = window(60, 90, VariantStats(500, 5), VariantStats(500, 5))
    verdict, _ = judge(slos, next_step, ledger)
    assert verdict.checks[0].evidence is not None
    assert verdict.checks[0].evidence.samples == 36  # a new window counts in full


def test_the_verdict_explains_a_rejection_and_it_is_final() -> None:
    slos = [
        {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.2},
        {"metric": "error_rate", "max": 0.5},  # absolute: tested too, so m = 2
    ]
    ledger: dict[str, Any] = {}
    # 6 times the baseline's errors at half the traffic: each interval can at most multiply the
    # evidence by X / θ = (60/70) / (1.2/2.2) = 1.57: 1.57^9 > 40 > 1.57^8.
    looks = 0
    while looks < 20:
        start = looks * 30
        bad = window(start, start + 30, VariantStats(1000, 60), VariantStats(1000, 10))
        verdict, ledger = judge(slos, bad, ledger)
        looks += 1
        if verdict.outcome is Outcome.FAIL:
            break
    assert looks == 9
    check = verdict.checks[0]
    assert verdict.outcome is Outcome.FAIL and check.outcome is Outcome.FAIL
    assert check.evidence is not None
    assert check.evidence.threshold == pytest.approx(2 / 0.05)  # m = 2 tested SLOs
    assert check.evidence.e_value >= check.evidence.threshold
    assert check.evidence.lower is not None and check.evidence.lower >= 1.2  # "r <= 1.2" rejected
    assert "the canary is worse than allowed" in check.reason and "e-value" in check.reason
    assert verdict.checks[1].outcome is Outcome.PASS  # 6% is shown to be within 50%
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict()))) == verdict
    fine = window(looks * 30, looks * 30 + 30, VariantStats(1000, 10), VariantStats(1000, 10))
    later, _ = judge(slos, fine, ledger)
    assert later.checks[0].outcome is Outcome.FAIL  # the e-process crossed: no way back
    for start in range(looks * 30, looks * 30 + 900, 30):  # the canary behaves from now on
        fine = window(start, start + 30, VariantStats(1000, 10), VariantStats(1000, 10))
        later, ledger = judge(slos, fine, ledger)
    assert later.checks[0].outcome is Outcome.FAIL
    assert later.checks[0].evidence is not None and later.checks[0].evidence.e_value < 40
    assert "crossed the threshold earlier in the run" in later.checks[0].reason


def test_without_evidence_a_check_passes_on_min_requests_and_not_before() -> None:
    slos = [{"metric": "error_rate", "compare": "baseline", "max_ratio": 1.0}]
    # The canary's point estimate is 1.5x the baseline's, on 3 vs 2 errors: noise, not a fail.
    few = window(0, 30, VariantStats(50, 3), VariantStats(50, 2))
    verdict, ledger = judge(slos, few, {})
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "too few requests" in verdict.reason and "e-value" in verdict.reason
    enough = window(0, 60, VariantStats(100, 3), VariantStats(100, 2))
    verdict, _ = judge(slos, enough, ledger)
    assert verdict.outcome is Outcome.PASS
    assert "no evidence the canary is worse" in verdict.checks[0].reason


def test_several_slos_share_alpha() -> None:
    slos = [
        {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.0},
        {"metric": "fallback_rate", "compare": "baseline", "max_ratio": 1.0},
        {"metric": "cost_per_query_usd", "compare": "baseline", "max_ratio": 1.1},
        {"metric": "latency_p95_seconds", "max": 2.0},
    ]
    observation = window(0, 30, VariantStats(100, 1), VariantStats(100, 1))
    verdict, _ = judge(slos, observation, {})
    thresholds = [c.evidence.threshold for c in verdict.checks if c.evidence is not None]
    assert thresholds == [pytest.approx(4 / 0.05)] * 3  # no latencies yet: no evidence there


def test_max_increase_on_a_rate_is_a_test_of_the_difference() -> None:
    """(It was a ratio 1 + max_increase / the baseline's rate, which against a clean baseline
    could never fail: issue 23.) The evidence is the difference test's, per interval."""
    slos = [{"metric": "error_rate", "compare": "baseline", "max_increase": 0.01}]
    first = window(0, 30, VariantStats(1000, 10), VariantStats(999, 9))
    verdict, ledger = judge(slos, first, {})
    evidence = verdict.checks[0].evidence
    assert evidence is not None and evidence.samples == 1  # one interval, one bet
    assert evidence.test == "error rate difference canary - baseline <= 0.01"
    assert evidence.estimate == pytest.approx((10 * 999 - 9 * 1000) / 1999 / (1000 * 999 / 1999))
    # 1% more than a baseline that turns out clean: the canary at 5% is beyond it.
    for look in range(2, 12):
        grown = window(0, 30 * look, VariantStats(1000 * look, 50 * look - 40),
                       VariantStats(1000 * look - 1, 9))  # fmt: skip
        verdict, ledger = judge(slos, grown, ledger)
    evidence = verdict.checks[0].evidence
    assert evidence is not None and evidence.samples == 11
    assert verdict.outcome is Outcome.FAIL and evidence.within is False


def test_a_moving_margin_tests_the_first_grid_point_at_or_above_it() -> None:
    test = RateRatio(1.0)
    for _ in range(10):
        test = test.observe(40, 40, 0.25)  # ratio 3
    on_grid = [RateRatio(2 ** (k / 4)) for k in (6, 7)]  # 2.83 and 3.36
    for i, other in enumerate(on_grid):
        for _ in range(10):
            other = other.observe(40, 40, 0.25)
        on_grid[i] = other
    assert test.e_value_above(2 ** (6 / 4)) == pytest.approx(on_grid[0].e_value())
    assert test.e_value_above(2.9) == pytest.approx(on_grid[1].e_value())  # rounded up
    assert test.e_value_above(1000.0) == 1.0  # beyond the grid: no evidence claimed


def test_cost_per_query_is_held_to_its_allowance() -> None:
    slos = [{"metric": "cost_per_query_usd", "compare": "baseline", "max_ratio": 1.2}]
    rng = random.Random(3)
    outcomes = {}
    for name, price in (("same", 1.0), ("double", 2.0)):
        ledger: dict[str, Any] = {}
        for look in range(12):
            cost = 0.002 * price * rng.uniform(0.9, 1.1)
            observation = window(
                look * 30,
                look * 30 + 30,
                VariantStats(200, cost_usd=200 * cost),
                VariantStats(200, cost_usd=200 * 0.002 * rng.uniform(0.9, 1.1)),
            )
            verdict, ledger = judge(slos, observation, ledger)
        outcomes[name] = verdict
    assert outcomes["same"].outcome is Outcome.PASS
    assert outcomes["double"].outcome is Outcome.FAIL
    assert "asymptotic" in outcomes["double"].reason


def test_latency_without_a_bucket_edge_to_hold_the_canary_to_falls_back_to_its_threshold() -> None:
    slos = [{"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 3.0}]
    histogram = ((1.0, 80.0), (2.0, 95.0), (math.inf, 100.0))
    observation = window(
        0,
        30,
        VariantStats(100, latency_buckets=histogram),
        VariantStats(100, latency_buckets=histogram),
    )
    verdict, _ = judge(slos, observation, {})
    assert verdict.outcome is Outcome.PASS
    assert "judged by threshold" in verdict.checks[0].reason


def test_threshold_method_keeps_no_tests_only_the_guard_and_the_baselines_window() -> None:
    specs = [SloSpec(**ERRORS_NO_WORSE[0])]
    observation = window(0, 30, VariantStats(100, 4), VariantStats(100, 1))
    verdict, ledger = assess(
        specs,
        AnalysisSpec(min_requests=100, method="threshold"),
        observation,
        {},
        baseline="baseline",
        canary="canary",
    )
    assert verdict.outcome is Outcome.FAIL  # today's behaviour: 4% > 1%
    # The built-in canary check's memory, and the baseline's window for a weight it serves not.
    assert ledger[LEDGER_KEY] == {"answered": True}
    assert ledger["baseline_window"]["stats"]["requests"] == 100
    assert set(ledger) == {LEDGER_KEY, "baseline_window"}
    assert verdict.checks[0].evidence is None


@pytest.mark.parametrize(
    ("analysis", "expected"),
    [
        ("{method: bayesian}", "spec.analysis.method"),
        ("{method: sequential, alpha: 0}", "spec.analysis.alpha"),
        ("{method: sequential, alpha: 1.5}", "spec.analysis.alpha"),
    ],
)
def test_bad_method_or_alpha_is_named_in_the_document(analysis: str, expected: str) -> None:
    text = f"""apiVersion: canaryctl/v1
kind: Rollout
metadata: {{name: demo}}
spec:
  flag: {{provider: file, path: flags.json, key: k, baseline: a, canary: b}}
  metrics: {{provider: scrape, targets: ["http://127.0.0.1:8080/metrics"]}}
  slos: [{{metric: error_rate, compare: baseline, max_ratio: 1.2}}]
  analysis: {analysis}
  steps: [{{set_weight: 100}}]
"""
    with pytest.raises(InvalidDocument) as caught:
        parse_document(text, "doc.yaml", expect=Rollout)
    assert any(expected in str(p) and ":8:" in str(p) for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]


def test_a_custom_query_slo_is_judged_by_threshold_and_not_counted_in_m() -> None:
    """A runbook's own PromQL gives one number per variant, no counts to test: it is judged as
    the threshold method judges it, and is not counted among the m tests sharing alpha."""
    slos = [
        SloSpec(name="refusals", query="refusal_rate{variant={{variant}}}", max_ratio=1.1),
        SloSpec(**ERRORS_NO_WORSE[0]),
    ]
    observation = Observation(
        0,
        30,
        {"canary": VariantStats(200, 2), "baseline": VariantStats(200, 2)},
        slo_values={"refusals": {"canary": 0.05, "baseline": 0.02}},
    )
    verdict, _ = assess(slos, SEQUENTIAL, observation, {}, baseline="baseline", canary="canary")
    custom, errors = verdict.checks
    assert custom.outcome is Outcome.FAIL and custom.evidence is None  # 5% > 2% x 1.1
    assert errors.evidence is not None and errors.evidence.threshold == pytest.approx(1 / 0.05)


def scored(rng: random.Random, requests: int, quality: float) -> VariantStats:
    """`requests` answers, half of them scored 1 (right, with probability `quality`) or 0."""
    scores = requests // 2
    right = binomial(rng, scores, quality)
    return VariantStats(requests, quality_sum=right, quality_count=scores)


def test_quality_is_held_to_the_baselines_mean_minus_the_margin() -> None:
    """Lower is worse: a canary answering right 70% of the time against a 90% baseline fails a
    0.05 margin; one as good as the baseline passes. Each window is a new 30 s interval."""
    slos = [{"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}]
    rng = random.Random(6)
    outcomes = {}
    for name, quality in (("same", 0.9), ("worse", 0.7)):
        ledger: dict[str, Any] = {}
        for look in range(12):
            observation = window(
                look * 30, look * 30 + 30, scored(rng, 300, quality), scored(rng, 300, 0.9)
            )
            verdict, ledger = judge(slos, observation, ledger)
        outcomes[name] = verdict
    assert outcomes["same"].outcome is Outcome.PASS
    worse = outcomes["worse"]
    assert worse.outcome is Outcome.FAIL
    evidence = worse.checks[0].evidence
    assert evidence is not None and evidence.lower is not None
    # The per-interval shortfall is 0.9 - 0.05 - 0.7 = 0.15; its confidence sequence excludes 0.
    assert evidence.lower > 0 and evidence.estimate == pytest.approx(0.15, abs=0.05)
    assert "allowance minus mean of quality_score" in worse.reason


def test_quality_without_enough_scores_is_inconclusive_not_a_pass() -> None:
    slos = [{"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}]
    few = VariantStats(500, quality_sum=5, quality_count=5)  # many requests, few scores
    verdict, _ = judge(slos, window(0, 30, few, few), {})
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "too few quality scores for 'canary' (5 < 100)" in verdict.reason


def quality_rollout(rng: random.Random, drop: float) -> bool:
    """One seeded rollout of the quality SLO through assess(); True when it was rolled back."""
    slos = [{"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}]
    ledger: dict[str, Any] = {}
    common, now = 0.85, 0.0
    for share in SHARES:
        start, counts = now, {"canary": [0, 0, 0], "baseline": [0, 0, 0]}
        for _ in range(LOOKS_PER_STEP):
            now += INTERVAL
            common = min(0.97, max(0.5, common + rng.gauss(0, 0.02)))
            for arm, arm_share, quality in (
                ("canary", share, common + drop),
                ("baseline", 1 - share, common),
            ):
                n = binomial(rng, 1500, arm_share)
                scores = binomial(rng, n, 0.5)
                counts[arm][0] += n
                counts[arm][1] += scores
                counts[arm][2] += binomial(rng, scores, quality)
            observation = Observation(
                start,
                now,
                {
                    arm: VariantStats(r, quality_sum=right, quality_count=s)
                    for arm, (r, s, right) in counts.items()
                },
            )
            verdict, ledger = judge(slos, observation, ledger)
            if verdict.outcome is Outcome.FAIL:
                return True
    return False


def test_quality_at_its_margin_is_rarely_rolled_back_and_a_clear_drop_is_caught() -> None:
    """A canary exactly max_decrease below the baseline (the hardest case that must pass) is
    rolled back at most about alpha of the time, looking at every interval; one 0.2 below is
    always caught."""
    rng = random.Random(20261126)
    at_margin = sum(quality_rollout(rng, -0.05) for _ in range(200))
    assert at_margin <= 20  # alpha 0.05: 10 expected at most; 20 leaves room for the seed
    assert all(quality_rollout(rng, -0.2) for _ in range(20))


def test_a_ledger_from_the_per_event_test_resumes_with_a_fresh_test() -> None:
    """A run started before the per-interval test keeps per-event likelihoods in its ledger:
    a resume starts that test afresh (skipping data keeps the guarantee) instead of failing."""
    first = window(0, 30, VariantStats(100, 4), VariantStats(900, 9))
    _, ledger = judge(ERRORS_NO_WORSE, first, {})
    (key,) = ledger["tests"]
    ledger["tests"][key]["ratio"] = {
        "margin": 1.0,
        "log_likelihood": [0.0] * 41,
        "events": 13.0,
        "canary_events": 4.0,
    }
    nxt = window(30, 60, VariantStats(100, 2), VariantStats(900, 8))
    verdict, ledger = judge(ERRORS_NO_WORSE, nxt, json.loads(json.dumps(ledger)))
    evidence = verdict.checks[0].evidence
    assert evidence is not None and evidence.samples == 10  # only the new interval's events
    assert "above" in ledger["tests"][key]["ratio"]


@pytest.mark.parametrize(
    ("slo", "sequential"),
    [
        ({"metric": "error_rate", "compare": "baseline", "max_ratio": 1.2}, True),
        ({"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.2}, True),
        ({"metric": "cost_per_query_usd", "compare": "baseline", "max_increase": 0.01}, True),
        ({"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}, True),
        ({"metric": "latency_p95_seconds", "max": 2.0}, True),
        ({"metric": "latency_p95_seconds", "max": 0}, False),
        ({"metric": "latency_p95_seconds", "min": 0.1}, False),
        ({"metric": "error_rate", "max": 0.02}, True),
        ({"metric": "error_rate", "max": 0}, False),
        ({"metric": "error_rate", "max": 1}, False),
        ({"metric": "error_rate", "min": 0.5, "max": 0.6}, False),
        ({"metric": "quality_score", "min": 0.8}, True),
        ({"metric": "quality_score", "min": 1}, False),
        ({"metric": "cost_per_query_usd", "max": 0.002}, True),
        ({"metric": "tokens_per_query", "max": 2000}, True),
        ({"name": "refusals", "query": "refusal_rate{variant={{variant}}}", "max": 0.1}, False),
    ],
)
def test_which_slos_are_tested_sequentially(slo: dict[str, Any], sequential: bool) -> None:
    """Counts behind the metric and a bound inside its range: tested, and counted in m;
    anything else keeps its threshold on the window."""
    assert sequential_metric(SloSpec(**slo)) is sequential


def relative_stand(evidence: Any, crossed: bool, unit: str) -> str:
    """What a relative check says of its evidence, from the evidence's own numbers."""
    show = [
        "-" if v is None else f"{v:.4g}"
        for v in (evidence.estimate, evidence.lower, evidence.upper)
    ]
    return (
        f"e-value {evidence.e_value:.3g} {'>=' if crossed else '<'} {evidence.threshold:.3g}, "
        f"estimate {show[0]} in [{show[1]}, {show[2]}] over {evidence.samples:g} {unit}"
    )


def test_each_outcome_of_a_relative_check_explains_itself_with_its_evidence() -> None:
    slos = [{"metric": "error_rate", "compare": "baseline", "max_ratio": 1.2}]
    few, ledger = judge(slos, window(0, 30, VariantStats(50, 3), VariantStats(50, 2)), {})
    check = few.checks[0]
    assert check.evidence is not None and check.evidence.upper is None  # no bound above yet
    assert check.reason == (
        "error_rate <= baseline x 1.2: too few requests for 'canary' (50 < 100); "
        + relative_stand(check.evidence, False, "events")
    )
    fine, _ = judge(slos, window(0, 60, VariantStats(100, 3), VariantStats(100, 3)), ledger)
    check = fine.checks[0]
    assert check.outcome is Outcome.PASS and check.evidence is not None
    assert check.reason == (
        "error_rate <= baseline x 1.2: canary 0.03 vs baseline 0.03, "
        "no evidence the canary is worse than allowed ("
        + relative_stand(check.evidence, False, "events")
        + ")"
    )
    ledger, verdicts = {}, []
    for look in range(40):  # 6 times the baseline's errors, then the same
        observation = window(
            look * 30,
            look * 30 + 30,
            VariantStats(1000, 60 if look < 9 else 10),
            VariantStats(1000, 10),
        )
        verdict, ledger = judge(slos, observation, ledger)
        verdicts.append(verdict.checks[0])
    crossed, later = verdicts[8], verdicts[-1]
    assert later.evidence is not None and later.evidence.e_value < later.evidence.threshold
    test = "error rate ratio canary/baseline <= 1.2"
    for check, was_crossed, after in (
        (crossed, True, ""),
        (later, False, "; it crossed the threshold earlier in the run, which decided"),
    ):
        assert check.evidence is not None and check.evidence.test == test
        assert check.reason == (
            f"error_rate <= baseline x 1.2: the canary is worse than allowed ({test}: "
            + relative_stand(check.evidence, was_crossed, "events")
            + after
            + ")"
        )
    assert verdicts[0].outcome is Outcome.PASS and verdicts[0].reason.endswith("events)")


def latency_stats(fast: float, middle: float, slow: float) -> VariantStats:
    """`fast` requests under 1 s, `middle` in (1, 2], `slow` in (2, 2.5], none beyond."""
    buckets = (
        (1.0, fast),
        (2.0, fast + middle),
        (2.5, fast + middle + slow),
        (math.inf, fast + middle + slow),
    )
    return VariantStats(requests=fast + middle + slow, latency_buckets=buckets)


def test_a_relative_latency_picks_its_edges_on_one_interval_and_tests_from_the_next() -> None:
    """The baseline's p95 sits at 2 s; `max_increase: 0.5` holds the canary to 2.5 s, and
    `max_ratio: 1` to 2 s. The interval that chose the edges is not tested on (the edge was
    picked looking at it); each later one counts the canary slower than its edge and the
    baseline slower than its own."""
    baseline = latency_stats(80, 16, 4)  # p95 in (1, 2]: the 2 s edge
    slos = [{"metric": "latency_p95_seconds", "compare": "baseline", "max_increase": 0.5}]
    first, ledger = judge(slos, window(0, 30, latency_stats(50, 40, 10), baseline), {})
    evidence = first.checks[0].evidence
    assert evidence is not None and evidence.samples == 0
    assert evidence.test == "ratio of shares slower than 2.5s (canary) and 2s (baseline) <= 1"
    second, _ = judge(slos, window(30, 60, latency_stats(50, 40, 10), baseline), ledger)
    assert second.checks[0].evidence.samples == 0 + 4  # none past 2.5 s, 4 baseline past 2 s
    slos = [{"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.0}]
    ledger, verdicts = {}, []
    for look in range(20):  # the canary twice as often slower than 2 s
        observation = window(
            look * 30, look * 30 + 30, latency_stats(800, 160, 40), latency_stats(800, 180, 20)
        )
        verdict, ledger = judge(slos, observation, ledger)
        verdicts.append(verdict)
    assert verdicts[0].checks[0].evidence.samples == 0
    assert verdicts[1].checks[0].evidence.samples == 60
    assert verdicts[-1].outcome is Outcome.FAIL


def test_a_cost_allowance_as_an_increase_and_its_confidence_sequence() -> None:
    slos = [{"metric": "cost_per_query_usd", "compare": "baseline", "max_increase": 0.001}]
    rng = random.Random(4)
    for extra, outcome in ((0.0005, Outcome.PASS), (0.003, Outcome.FAIL)):
        ledger: dict[str, Any] = {}
        checks = []
        for look in range(12):
            base = 0.002 * rng.uniform(0.9, 1.1)
            observation = window(
                look * 30,
                look * 30 + 30,
                VariantStats(200, cost_usd=200 * (base + extra)),
                VariantStats(200, cost_usd=200 * base),
            )
            verdict, ledger = judge(slos, observation, ledger)
            checks.append(verdict.checks[0])
        assert checks[-1].outcome is outcome
        assert checks[-1].evidence.estimate == pytest.approx(extra - 0.001)  # the paired difference
        first = checks[0].evidence
        assert (first.lower, first.upper) == (None, None) and first.samples == 1
        assert checks[0].reason.endswith("over 1 intervals)")
        assert checks[-1].evidence.lower < checks[-1].evidence.estimate < checks[-1].evidence.upper


def test_an_interval_with_a_single_request_per_variant_counts() -> None:
    verdict, _ = judge(ERRORS_NO_WORSE, window(0, 30, VariantStats(1, 1), VariantStats(1, 1)), {})
    assert verdict.checks[0].evidence.samples == 2


def test_a_look_that_brings_nothing_new_leaves_every_test_as_it_was() -> None:
    """The ledger read back from the journal and judged again on the same window: every test
    (rejected, untestable, latency edges, means, bounds) is stored and restored whole."""
    slos = [
        {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.0},
        {"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.0},
        {"metric": "latency_p99_seconds", "compare": "baseline", "max_ratio": 9.0},
        {"metric": "cost_per_query_usd", "compare": "baseline", "max_ratio": 1.1},
        {"metric": "error_rate", "max": 0.02},
        {"metric": "latency_p95_seconds", "max": 2.2},
        {"metric": "latency_p95_seconds", "max": 9.0},
        {"metric": "cost_per_query_usd", "max": 0.002},
    ]
    ledger: dict[str, Any] = {}
    for look in range(10):
        canary = replace(latency_stats(80, 10, 10), errors=30, cost_usd=0.5)
        baseline = replace(latency_stats(90, 8, 2), errors=1, cost_usd=0.2)
        observation = window(look * 30, look * 30 + 30, canary, baseline)
        _, ledger = judge(slos, observation, json.loads(json.dumps(ledger)))
    tests = ledger["tests"]
    assert tests["0:error_rate <= baseline x 1"]["rejected"] is True
    assert tests["2:latency_p99_seconds <= baseline x 9"]["untestable"] is not None
    assert tests["5:latency_p95_seconds <= 2.2"]["edges"] == [2.0, 2.5]
    assert any(t["rejected"] for t in tests.values() if t["kind"] in ("mean", "level", "bound"))
    _, again = judge(slos, observation, json.loads(json.dumps(ledger)))
    assert again == ledger


def test_a_relative_latency_check_is_not_passed_on_the_window_before_its_test_has_started() -> None:
    """The first look had requests but no histograms, the second (same window) has them: the
    window alone would pass, but no interval has given the test latencies (the buckets changed
    in between), so the check waits instead of passing on the point estimate."""
    slos = [{"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.2}]
    _, ledger = judge(slos, window(0, 30, VariantStats(100), VariantStats(100)), {})
    histogram = latency_stats(90, 10, 0)
    verdict, _ = judge(slos, window(0, 60, histogram, histogram), ledger)
    check = verdict.checks[0]
    assert check.outcome is Outcome.INCONCLUSIVE and check.evidence is None
    assert check.reason == (
        "latency_p95_seconds <= baseline x 1.2: not tested yet "
        "(no interval with data from both variants)"
    )


def test_bounds_at_the_low_end_of_the_grid_are_that_end() -> None:
    """A canary far better than its baseline: its upper bound is the grid's first point, not
    none; a ratio near 1/3 has its lower bound at that first point, not 0."""
    first = 2 ** (GRID[0] / 4)
    clean, third = RateRatio(1.0), RateRatio(1.0)
    for _ in range(30):
        clean, third = clean.observe(0, 40, 0.5), third.observe(10, 30, 0.5)
    assert clean.upper_bound(0.05) == pytest.approx(first) and clean.lower_bound(0.05) == 0.0
    assert third.lower_bound(0.05) == pytest.approx(first)
    assert third.upper_bound(0.05) == pytest.approx(2 ** ((GRID[0] + 4) / 4))


def test_a_ledger_that_tested_max_increase_as_a_ratio_starts_the_difference_test_afresh() -> None:
    """A run resumed from before issue 23 holds a ratio test under the SLO's key: it is
    replaced by a fresh difference test (skipping data keeps the guarantee), not misread."""
    slos = [{"metric": "error_rate", "compare": "baseline", "max_increase": 0.01}]
    old = {"kind": "count", "edges": None, "ratio": RateRatio(1.0).to_dict(),
           "rejected": False, "untestable": None}  # fmt: skip
    key = "0:error_rate <= baseline + 0.01"
    ledger = {"window": None, "seen": {}, "tests": {key: old}}
    verdict, after = judge(slos, window(0, 30, VariantStats(100, 1), VariantStats(900, 9)), ledger)
    evidence = verdict.checks[0].evidence
    assert evidence is not None and evidence.samples == 1
    assert after["tests"][key]["kind"] == "difference"
