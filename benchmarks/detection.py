"""How fast each canary judge detects a worse canary, and how often it rolls back a good one.

A simulator feeds one stream of per-minute counts per rollout to every judge, so they are
compared on the same data: stepped canary shares (1/5/25/50%, ten minutes each), a diurnal request
rate, a common error rate that drifts and bursts (both arms at once), and optionally errors that
come in correlated clusters, shared outages or a stronger drift. The judges, all looking once a
minute:

- sequential: canaryctl's anytime-valid test on each interval's share of the errors
  (canaryctl.analysis.rate_ratio, the object the sequential analysis keeps per SLO, holding the
  margin's grid point only), rejecting "canary rate <= baseline rate" at e-value >= 1/alpha;
- per-event: the e-process canaryctl used before, a mixture of per-event binomial likelihood
  ratios (valid for independent errors only), to show what bursts did to it;
- naive-z: a one-sided two-proportion z-test on the cumulative counts at every look (the positive
  control: valid for one look, not for forty);
- flagger-t1, flagger-t5: Flagger-style checks on each 1-minute interval (the canary's rate above
  1.5x the baseline's fails the check; skipped under 100 requests an arm), rolling back at the
  1st / 5th failed check;
- argo-fl2: Argo-style measurements each minute over a 5-minute window with the same condition,
  `failureLimit: 2` (rolls back on the 3rd failed measurement);
- kayenta-mw: a Kayenta-style fixed-horizon judge: at the end of each step a one-sided
  Mann-Whitney test of the canary's per-minute rates against the baseline's, at alpha.

Regressions are compared with Wald's SPRT, which knows the true ratio: its expected log-likelihood
ratio reaches ln(1/alpha) after about ln(1/alpha) / KL events (the lower bound on the expected
sample size of any test with these error rates); each judge's median delay is reported as a
ratio to that bound.

Absolute bounds (`error_rate max 0.01`) are simulated on the canary alone, at the same shares:
a canary exactly at the bound (alone, with bursts of 5), then with outages as well (beyond the
bound during them), judged
by canaryctl's sequential bound test (canaryctl.analysis.bound) and by the threshold method
(the step's window against the bound at each look, from `min_requests` 100 on), with how often
the sequential test wrongly showed it within the bound (`sequential-within`); and a canary at
twice the bound, against the SPRT of 2x the bound against the bound on its requests.

Additive bounds against the baseline (`error_rate` within `max_increase: 0.01`) are simulated
against a baseline at 0 and at 0.1% errors (drifting and bursting as above, the canary's rate
the baseline's plus its excess in every minute): a canary exactly at the margin (alone, with
bursts of 5, with shared outages) and canaries far beyond it (the issue's 50% against 0%, 4%
against 0%, 3% against 0.1%), judged by canaryctl's difference test
(canaryctl.analysis.rate_difference), by the ratio test that read `max_increase` before as a
ratio 1 + 0.01 / (the baseline's rate so far) (`ratio-before`, which against a clean baseline
could never fail), and by the threshold method (the step's window: canary rate > baseline
rate + 0.01, from 100 requests an arm). The SPRT bound for them is Wald's test of the canary's
rate at the baseline's plus the margin against its true rate, knowing the baseline's rate.

The JSON it prints is one object:

    config        the simulation's constants and the number of rollouts per row
    aa            row name -> judge -> {false_rollbacks, rollouts, rate, upper95}
                  (upper95: one-sided 95% Clopper-Pearson upper bound on the rate)
    regressions   row name -> {sprt: {seconds, requests, events}, rollouts,
                               methods: judge -> {detected, median_seconds, p90_seconds,
                               median_requests, p90_requests, ratio_to_sprt,
                               requests_ratio_to_sprt}}
    absolute      {aa: rows as in aa, regressions: rows as in regressions}
    difference    {margin, rollouts: {aa, regression}, aa: rows as in aa,
                   regressions: rows as in regressions}
    seconds       wall-clock seconds of the run

    python benchmarks/detection.py [--quick] [--seed 1] > docs/detection.json
    python benchmarks/tables.py      # docs/analysis.md's tables and the README's summary from it
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from canaryctl.analysis.bound import BoundTest
from canaryctl.analysis.rate_difference import RateDifference
from canaryctl.analysis.rate_ratio import RateRatio

ALPHA = 0.05
SHARES = (0.01, 0.05, 0.25, 0.50)
MINUTES_PER_STEP = 10
RATE = 50.0  # mean requests per second, both arms together
BASE_ERROR_RATE = 0.01
DRIFT = 0.1  # standard deviation of the common error rate's log, per minute
BURST_CHANCE, BURST_FACTOR = 0.03, 4.0  # a minute when the common error rate is 4x, both arms
OUTAGE_RATE, OUTAGE_CLUSTER = 0.3, 20  # a shared outage: 30% errors, in bursts of 20, both arms
THRESHOLD_RATIO = 1.5  # Flagger/Argo-style: a check fails if canary rate > 1.5x baseline's
MIN_CHECK_REQUESTS = 100  # ... on at least this many requests per arm, else it is skipped
LATENCY_SIGMA = 0.45  # log-normal latencies, median 1 s: p95 near 2.1 s
LATENCY_EDGE = 2.0  # the gateway's bucket edge nearest the baseline's p95
BOUND = 0.01  # the absolute rows: error_rate max 0.01
METHODS = (
    "sequential",
    "per-event",
    "naive-z",
    "flagger-t1",
    "flagger-t5",
    "argo-fl2",
    "kayenta-mw",
)
BOUND_METHODS = ("sequential", "threshold")
BOUND_AA_METHODS = (*BOUND_METHODS, "sequential-within")
"""At the bound, `sequential-within` counts the rollouts shown within the bound at some look:
the passes a canary exactly at its bound should not get either (at most alpha of them)."""
PER_EVENT_RATIOS = tuple(2 ** (steps / 4) for steps in (1, 2, 3, 4, 6, 8, 12))
MARGIN = 0.01  # the difference rows: error_rate within max_increase 0.01 of the baseline
DIFFERENCE_METHODS = ("sequential", "ratio-before", "threshold")
DIFFERENCE_SIZES = {"aa": 1_000, "regression": 300}
"""Rollouts per difference row (fewer than the rows above: the machine is shared)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    error_ratio: float = 1.0
    slowdown: float = 1.0  # latency: the canary's latencies are the baseline's times this
    cluster: int = 1  # errors arrive in clusters of this size, all in one arm
    outage_chance: float = 0.0  # a minute of shared outage (OUTAGE_RATE, bursts, both arms)
    drift: float = DRIFT
    baseline_rate: float = BASE_ERROR_RATE  # the common error rate, before drift and bursts
    excess: float = 0.0  # the canary's rate is the baseline's times error_ratio, plus this


AA = (
    Scenario("independent"),
    Scenario("clusters of 2", cluster=2),
    Scenario("clusters of 5", cluster=5),
    Scenario("clusters of 10", cluster=10),
    Scenario("clusters of 50", cluster=50),
    Scenario("shared outages", outage_chance=0.05),
    Scenario("strong drift", drift=0.3),
)
REGRESSIONS = (
    Scenario("errors x1.5", error_ratio=1.5),
    Scenario("errors x2", error_ratio=2.0),
    Scenario("errors x3", error_ratio=3.0),
    Scenario("p95 +30%", slowdown=1.3),
)
BOUND_AA = (
    Scenario("at the bound"),
    Scenario("at the bound, clusters of 5", cluster=5),
    # Outages lift the canary's own rate to 30% in those minutes: beyond its bound then, which an
    # absolute bound (unlike a comparison with the baseline) rightly counts against it.
    Scenario("clusters of 5 and outages (beyond the bound in them)", cluster=5, outage_chance=0.05),
)
BOUND_REGRESSIONS = (Scenario("2x the bound", error_ratio=2.0),)
DIFFERENCE_AA = (
    Scenario("baseline 0%, canary at +0.01", baseline_rate=0.0, excess=MARGIN),
    Scenario("baseline 0.1%, canary at +0.01", baseline_rate=0.001, excess=MARGIN),
    Scenario("baseline 0.1%, equal canary", baseline_rate=0.001),
    Scenario("baseline 0.1%, at +0.01, clusters of 5", baseline_rate=0.001, excess=MARGIN,
             cluster=5),
    Scenario("baseline 0.1%, at +0.01, shared outages", baseline_rate=0.001, excess=MARGIN,
             outage_chance=0.05),
)  # fmt: skip
DIFFERENCE_REGRESSIONS = (
    Scenario("baseline 0%, canary 50%", baseline_rate=0.0, excess=0.5),
    Scenario("baseline 0%, canary 4%", baseline_rate=0.0, excess=0.04),
    Scenario("baseline 0.1%, canary 3%", baseline_rate=0.001, excess=0.029),
)


# -- random counts --------------------------------------------------------------------------------


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact by inversion for small means, a rounded normal beyond: cheap and close enough."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    mean = n * p
    if mean > 40:
        return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))
    u, k = rng.random(), 0
    pk = (1 - p) ** n
    cumulative = pk
    while u > cumulative and k < n:
        pk *= (n - k) / (k + 1) * p / (1 - p)
        k += 1
        cumulative += pk
    return k


def clustered(rng: random.Random, n: int, p: float, cluster: int) -> int:
    """Errors at rate p among n requests, arriving in whole clusters of `cluster`."""
    return cluster * binomial(rng, n, p / cluster)


def slow_share(scale: float) -> float:
    """P(latency > LATENCY_EDGE) for log-normal latencies with median `scale` seconds."""
    z = (math.log(LATENCY_EDGE) - math.log(scale)) / LATENCY_SIGMA
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass
class Minute:
    """One minute of one rollout: requests and errors (or slow requests) per arm."""

    share: float
    canary_requests: int
    canary_events: int
    baseline_requests: int
    baseline_events: int


def minutes(rng: random.Random, scenario: Scenario, *, canary_rate: float | None = None):
    """The rollout's minutes. With `canary_rate`, the canary's errors are at that fixed rate
    (the absolute rows); otherwise at the drifting common rate times `error_ratio`."""
    phase = rng.uniform(0, 2 * math.pi)
    drift = 0.0
    latency = scenario.slowdown != 1.0
    for minute in range(len(SHARES) * MINUTES_PER_STEP):
        share = SHARES[minute // MINUTES_PER_STEP]
        mean = RATE * 60 * (1 + 0.5 * math.sin(phase + 2 * math.pi * minute / 1440))
        total = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        n_c = binomial(rng, total, share)
        n_b = total - n_c
        drift += rng.gauss(0, scenario.drift)
        if latency:
            load = math.exp(drift / 10)  # latency follows load more gently than errors do
            p_b, p_c = slow_share(load), slow_share(load * scenario.slowdown)
        elif canary_rate is not None:
            p_b, p_c = BASE_ERROR_RATE, canary_rate
        else:
            common = min(0.2, scenario.baseline_rate * math.exp(drift))
            if rng.random() < BURST_CHANCE:
                common = min(0.2, common * BURST_FACTOR)
            p_b, p_c = common, min(1.0, common * scenario.error_ratio + scenario.excess)
        k = scenario.cluster
        e_c, e_b = clustered(rng, n_c, p_c, k), clustered(rng, n_b, p_b, k)
        if scenario.outage_chance and rng.random() < scenario.outage_chance:
            e_c = min(n_c, e_c + clustered(rng, n_c, OUTAGE_RATE, OUTAGE_CLUSTER))
            e_b = min(n_b, e_b + clustered(rng, n_b, OUTAGE_RATE, OUTAGE_CLUSTER))
        yield Minute(share, n_c, e_c, n_b, e_b)


# -- one rollout, every judge ------------------------------------------------------------------


def rollout(rng: random.Random, scenario: Scenario) -> dict[str, tuple[float, float] | None]:
    """(seconds, canary requests) at which each judge rolled back, None if it never did."""
    detected: dict[str, tuple[float, float] | None] = dict.fromkeys(METHODS)
    ratio = RateRatio(1.0, offsets=(0,))
    per_event = [0.0] * len(PER_EVENT_RATIOS)
    canary_requests = 0
    totals = [0, 0, 0, 0]  # canary requests, canary events, baseline requests, baseline events
    flagger_failures = argo_failures = 0
    window: list[tuple[int, int, int, int]] = []
    step_rates: tuple[list[float], list[float]] = ([], [])
    for minute, m in enumerate(minutes(rng, scenario)):
        n_c, e_c, n_b, e_b = (
            m.canary_requests,
            m.canary_events,
            m.baseline_requests,
            m.baseline_events,
        )
        canary_requests += n_c
        now = (minute + 1) * 60.0

        def mark(method: str, *, now: float = now, served: int = canary_requests) -> None:
            if detected[method] is None:
                detected[method] = (now, served)

        total = n_c + n_b
        if total > 0 and detected["sequential"] is None:
            ratio = ratio.observe(e_c, e_b, n_c / total)
            if ratio.e_value() >= 1 / ALPHA:
                mark("sequential")
        if total > 0 and 0 < n_c < total and detected["per-event"] is None:
            per_event = _per_event(per_event, e_c, e_b, n_c / total)
            if sum(math.exp(min(v, 700.0)) for v in per_event) / len(per_event) >= 1 / ALPHA:
                mark("per-event")
        totals = [totals[0] + n_c, totals[1] + e_c, totals[2] + n_b, totals[3] + e_b]
        if _z_test(*totals) > 1.6449:
            mark("naive-z")
        if _check_fails(n_c, e_c, n_b, e_b):
            flagger_failures += 1
            if flagger_failures >= 1:
                mark("flagger-t1")
            if flagger_failures >= 5:
                mark("flagger-t5")
        window = [*window[-4:], (n_c, e_c, n_b, e_b)]
        if _check_fails(*(sum(column) for column in zip(*window, strict=True))):
            argo_failures += 1
            if argo_failures > 2:
                mark("argo-fl2")
        if n_c > 0:
            step_rates[0].append(e_c / n_c)
        if n_b > 0:
            step_rates[1].append(e_b / n_b)
        if (minute + 1) % MINUTES_PER_STEP == 0:
            if _mann_whitney_z(*step_rates) > 1.6449:
                mark("kayenta-mw")
            step_rates = ([], [])
    return detected


def bound_rollout(rng: random.Random, scenario: Scenario) -> dict[str, tuple[float, float] | None]:
    """The absolute rows: a canary at `error_ratio` times BOUND against `error_rate max BOUND`."""
    detected: dict[str, tuple[float, float] | None] = dict.fromkeys(BOUND_AA_METHODS)
    test = BoundTest(BOUND)
    canary_requests = 0
    step = [0, 0]  # the step's window: canary requests, errors
    for minute, m in enumerate(minutes(rng, scenario, canary_rate=BOUND * scenario.error_ratio)):
        canary_requests += m.canary_requests
        now, served = (minute + 1) * 60.0, canary_requests
        if minute % MINUTES_PER_STEP == 0:
            step = [0, 0]
        step = [step[0] + m.canary_requests, step[1] + m.canary_events]
        test = test.observe(m.canary_requests, m.canary_events)
        if test.e_value_beyond() >= 1 / ALPHA and detected["sequential"] is None:
            detected["sequential"] = (now, served)
        if test.e_value_within() >= 1 / ALPHA and detected["sequential-within"] is None:
            detected["sequential-within"] = (now, served)
        failed = step[0] >= MIN_CHECK_REQUESTS and step[1] / step[0] > BOUND
        if failed and detected["threshold"] is None:
            detected["threshold"] = (now, served)
    return detected


def difference_rollout(
    rng: random.Random, scenario: Scenario
) -> dict[str, tuple[float, float] | None]:
    """The difference rows: the canary against `error_rate` within MARGIN of the baseline."""
    detected: dict[str, tuple[float, float] | None] = dict.fromkeys(DIFFERENCE_METHODS)
    difference = RateDifference(MARGIN)
    ratio = RateRatio(1.0)
    canary_requests = 0
    baseline_seen = [0, 0]  # the baseline's requests and errors so far: the old margin's
    step = [0, 0, 0, 0]  # the step's window: canary requests, errors, baseline requests, errors
    for minute, m in enumerate(minutes(rng, scenario)):
        canary_requests += m.canary_requests
        now, served = (minute + 1) * 60.0, canary_requests
        if minute % MINUTES_PER_STEP == 0:
            step = [0, 0, 0, 0]
        counts = (m.canary_requests, m.canary_events, m.baseline_requests, m.baseline_events)
        step = [a + b for a, b in zip(step, counts, strict=True)]
        difference = difference.observe(
            m.canary_events, m.canary_requests, m.baseline_events, m.baseline_requests
        )
        if difference.e_value() >= 1 / ALPHA and detected["sequential"] is None:
            detected["sequential"] = (now, served)
        total = m.canary_requests + m.baseline_requests
        if total > 0:
            ratio = ratio.observe(m.canary_events, m.baseline_events, m.canary_requests / total)
        baseline_seen = [baseline_seen[0] + m.baseline_requests,
                         baseline_seen[1] + m.baseline_events]  # fmt: skip
        margin = 1 + MARGIN / ((baseline_seen[1] + 1) / (baseline_seen[0] + 1))
        if ratio.e_value_above(margin) >= 1 / ALPHA and detected["ratio-before"] is None:
            detected["ratio-before"] = (now, served)
        n_c, e_c, n_b, e_b = step
        failed = min(n_c, n_b) >= MIN_CHECK_REQUESTS and e_c / n_c > e_b / n_b + MARGIN
        if failed and detected["threshold"] is None:
            detected["threshold"] = (now, served)
    return detected


def _per_event(log_ratios: list[float], canary: int, baseline: int, share: float) -> list[float]:
    """The per-event e-process: binomial likelihood ratios of r against r = 1, per event."""
    updated = []
    for log_ratio, ratio in zip(log_ratios, PER_EVENT_RATIOS, strict=True):
        theta = share * ratio / (share * ratio + 1 - share)
        updated.append(
            log_ratio
            + canary * math.log(theta / share)
            + baseline * math.log((1 - theta) / (1 - share))
        )
    return updated


def _z_test(n_c: int, e_c: int, n_b: int, e_b: int) -> float:
    if n_c == 0 or n_b == 0 or e_c + e_b == 0:
        return 0.0
    pooled = (e_c + e_b) / (n_c + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_b))
    return (e_c / n_c - e_b / n_b) / spread if spread > 0 else 0.0


def _check_fails(n_c: int, e_c: int, n_b: int, e_b: int) -> bool:
    """Too little traffic is no value: the check is skipped, not failed (like canaryctl's
    `min_requests`; without it the 1% step fails on any single canary error)."""
    if n_c < MIN_CHECK_REQUESTS or n_b < MIN_CHECK_REQUESTS:
        return False
    return e_c / n_c > THRESHOLD_RATIO * e_b / n_b


def _mann_whitney_z(canary: list[float], baseline: list[float]) -> float:
    """One-sided normal approximation of Mann-Whitney U with midranks and the tie correction;
    positive when the canary's values rank higher."""
    n, m = len(canary), len(baseline)
    if n == 0 or m == 0:
        return 0.0
    pooled = sorted([(v, 0) for v in canary] + [(v, 1) for v in baseline])
    ranks: list[float] = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        size = j - i + 1
        ties += size**3 - size
        i = j + 1
    rank_sum = sum(r for r, (_, arm) in zip(ranks, pooled, strict=True) if arm == 0)
    u = rank_sum - n * (n + 1) / 2
    total = n + m
    variance = n * m / 12 * ((total + 1) - ties / (total * (total - 1)))
    return (u - n * m / 2) / math.sqrt(variance) if variance > 0 else 0.0


# -- the bound and the summaries ----------------------------------------------------------------


def sprt_bound(scenario: Scenario) -> dict[str, float]:
    """When Wald's SPRT of r = 1 against the true r expects its log-likelihood ratio to reach
    ln(1/alpha), at the mean request rate and the nominal event rates."""
    if scenario.slowdown != 1.0:
        p_b, p_c = slow_share(1.0), slow_share(scenario.slowdown)
    else:
        p_b, p_c = BASE_ERROR_RATE, BASE_ERROR_RATE * scenario.error_ratio

    def per_minute(share: float) -> tuple[float, float]:
        theta0 = share
        theta1 = share * p_c / (share * p_c + (1 - share) * p_b)
        events = RATE * 60 * (share * p_c + (1 - share) * p_b)
        return events * _kl(theta1, theta0), events

    return _sprt(per_minute)


def sprt_bound_absolute(scenario: Scenario) -> dict[str, float]:
    """The same for an absolute bound: the SPRT of the canary's rate at BOUND against its true
    rate, on the canary's requests alone."""
    p0, p1 = BOUND, BOUND * scenario.error_ratio

    def per_minute(share: float) -> tuple[float, float]:
        requests = RATE * 60 * share
        return requests * _kl(p1, p0), requests * p1

    return _sprt(per_minute)


def sprt_bound_difference(scenario: Scenario) -> dict[str, float]:
    """The same for a bound against the baseline: the SPRT of the canary's rate at the
    baseline's plus MARGIN against its true rate, on the canary's requests, the baseline's rate
    known (an oracle: no test that must learn it can be faster)."""
    p0 = scenario.baseline_rate + MARGIN
    p1 = scenario.baseline_rate * scenario.error_ratio + scenario.excess

    def per_minute(share: float) -> tuple[float, float]:
        requests = RATE * 60 * share
        return requests * _kl(p1, p0), requests * p1

    return _sprt(per_minute)


def _kl(p: float, q: float) -> float:
    """Kullback-Leibler divergence of Bernoulli(p) from Bernoulli(q)."""
    return p * math.log(p / q) + (1 - p) * (math.log((1 - p) / (1 - q)) if p < 1 else 0.0)


def _sprt(per_minute: Callable[[float], tuple[float, float]]) -> dict[str, float]:
    """Walk the stepped shares until the expected log-likelihood ratio reaches ln(1/alpha);
    `per_minute(share)` is (expected gain, events) in a minute at that share."""
    target, accrued, events, served = math.log(1 / ALPHA), 0.0, 0.0, 0.0
    for minute in range(10_000):
        share = SHARES[min(minute // MINUTES_PER_STEP, len(SHARES) - 1)]
        gain, minute_events = per_minute(share)
        if accrued + gain >= target:
            part = (target - accrued) / gain
            return {
                "seconds": (minute + part) * 60,
                "events": events + part * minute_events,
                "requests": served + part * RATE * 60 * share,
            }
        accrued += gain
        events += minute_events
        served += RATE * 60 * share
    raise AssertionError("the SPRT bound is beyond 10,000 minutes")


def clopper_pearson_upper(failures: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound for a binomial rate, by bisection on the exact CDF."""
    if failures >= trials:
        return 1.0

    def cdf(p: float) -> float:
        log_q = math.log1p(-p)
        log_p = math.log(p)
        return sum(
            math.exp(
                math.lgamma(trials + 1)
                - math.lgamma(k + 1)
                - math.lgamma(trials - k + 1)
                + k * log_p
                + (trials - k) * log_q
            )
            for k in range(failures + 1)
        )

    low, high = failures / trials, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if cdf(middle) > 1 - confidence:
            low = middle
        else:
            high = middle
    return high


def false_rollbacks(
    results: list[dict[str, Any]], methods: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    summary = {}
    for method in methods:
        failures = sum(1 for r in results if r[method] is not None)
        summary[method] = {
            "false_rollbacks": failures,
            "rollouts": len(results),
            "rate": failures / len(results),
            "upper95": clopper_pearson_upper(failures, len(results)),
        }
    return summary


def _quantile(values: list[float], q: float) -> float | None:
    """Empirical quantile, counting misses as infinitely late; None if beyond every hit."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)
    value = ordered[index]
    return None if math.isinf(value) else value


def delays(
    results: list[dict[str, Any]], bound: dict[str, float], methods: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    summary = {}
    for method in methods:
        seconds = [math.inf if r[method] is None else r[method][0] for r in results]
        served = [math.inf if r[method] is None else r[method][1] for r in results]
        median, median_served = _quantile(seconds, 0.5), _quantile(served, 0.5)
        summary[method] = {
            "detected": sum(1 for s in seconds if math.isfinite(s)) / len(results),
            "median_seconds": median,
            "p90_seconds": _quantile(seconds, 0.9),
            "median_requests": median_served,
            "p90_requests": _quantile(served, 0.9),
            "ratio_to_sprt": None if median is None else median / bound["seconds"],
            "requests_ratio_to_sprt": (
                None if median_served is None else median_served / bound["requests"]
            ),
        }
    return summary


# -- the report ---------------------------------------------------------------------------------


def measure(quick: bool, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    sizes = {"aa": 2_000, "regression": 300} if quick else {"aa": 10_000, "regression": 2_000}
    rng = random.Random(seed)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
            "alpha": ALPHA,
            "shares": SHARES,
            "minutes_per_step": MINUTES_PER_STEP,
            "mean_requests_per_second": RATE,
            "base_error_rate": BASE_ERROR_RATE,
            "drift": DRIFT,
            "outage": {"error_rate": OUTAGE_RATE, "cluster": OUTAGE_CLUSTER},
            "threshold_ratio": THRESHOLD_RATIO,
            "min_check_requests": MIN_CHECK_REQUESTS,
            "bound": BOUND,
            "rollouts": sizes,
            "seed": seed,
            "quick": quick,
        },
        "aa": {},
        "regressions": {},
        "absolute": {"aa": {}, "regressions": {}},
        "difference": {
            "margin": MARGIN,
            "rollouts": DIFFERENCE_SIZES,
            "aa": {},
            "regressions": {},
        },
    }

    def timed(name: str, count: int, one: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
        begun = time.perf_counter()
        results = [one() for _ in range(count)]
        progress(f"{name}: {count} rollouts, {time.perf_counter() - begun:.0f} s")
        return results

    for scenario in AA:
        results = timed(scenario.name, sizes["aa"], lambda s=scenario: rollout(rng, s))
        report["aa"][scenario.name] = false_rollbacks(results, METHODS)
    for scenario in REGRESSIONS:
        bound = sprt_bound(scenario)
        results = timed(scenario.name, sizes["regression"], lambda s=scenario: rollout(rng, s))
        report["regressions"][scenario.name] = {
            "sprt": bound,
            "rollouts": len(results),
            "methods": delays(results, bound, METHODS),
        }
    for scenario in BOUND_AA:
        results = timed(scenario.name, sizes["aa"], lambda s=scenario: bound_rollout(rng, s))
        report["absolute"]["aa"][scenario.name] = false_rollbacks(results, BOUND_AA_METHODS)
    for scenario in BOUND_REGRESSIONS:
        bound = sprt_bound_absolute(scenario)
        results = timed(
            scenario.name, sizes["regression"], lambda s=scenario: bound_rollout(rng, s)
        )
        report["absolute"]["regressions"][scenario.name] = {
            "sprt": bound,
            "rollouts": len(results),
            "methods": delays(results, bound, BOUND_METHODS),
        }
    difference = report["difference"]
    for scenario in DIFFERENCE_AA:
        results = timed(
            scenario.name, DIFFERENCE_SIZES["aa"], lambda s=scenario: difference_rollout(rng, s)
        )
        difference["aa"][scenario.name] = false_rollbacks(results, DIFFERENCE_METHODS)
    for scenario in DIFFERENCE_REGRESSIONS:
        bound = sprt_bound_difference(scenario)
        results = timed(
            scenario.name,
            DIFFERENCE_SIZES["regression"],
            lambda s=scenario: difference_rollout(rng, s),
        )
        difference["regressions"][scenario.name] = {
            "sprt": bound,
            "rollouts": len(results),
            "methods": delays(results, bound, DIFFERENCE_METHODS),
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = measure(args.quick, args.seed, progress)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
