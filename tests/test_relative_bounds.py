"""Relative bounds, through `assess` as the controller calls it (issue 23).

A rate's `max_increase` is a test of canary rate - baseline rate: the measured cases of a canary
promoted against a clean baseline are rolled back, by both methods, and a canary within its
margin is not (alpha, with a Clopper-Pearson bound). Every weight is judged: at 100%, where the
baseline serves nothing, a relative SLO is judged against the baseline's last window before.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import pytest
from scipy.stats import beta

from canaryctl.analysis import Outcome, Verdict, assess
from canaryctl.analysis.betting import SCALES
from canaryctl.analysis.last_window import rate_upper_bound
from canaryctl.analysis.rate_difference import RateDifference
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

INTERVAL = 30.0


@dataclass(frozen=True)
class Arm:
    """A variant's chance per request of each outcome."""

    errors: float = 0.0
    fallbacks: float = 0.0
    filtered: float = 0.0
    rejected: float = 0.0


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n)) if p > 0 else 0


def _draw(rng: random.Random, n: int, arm: Arm) -> VariantStats:
    rejected = _binomial(rng, n, arm.rejected)
    errors = _binomial(rng, n - rejected, arm.errors)
    fallbacks = _binomial(rng, n - rejected - errors, arm.fallbacks)
    filtered = _binomial(rng, n - rejected - errors - fallbacks, arm.filtered)
    return VariantStats(n, errors, fallbacks, filtered=filtered, rejected=rejected)


def _add(a: VariantStats, b: VariantStats) -> VariantStats:
    return VariantStats(
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        fallbacks=a.fallbacks + b.fallbacks,
        filtered=a.filtered + b.filtered,
        rejected=a.rejected + b.rejected,
    )


def rollout(
    slo: dict[str, Any] | list[dict[str, Any]],
    method: str,
    canary: Arm,
    baseline: Arm,
    weights: list[tuple[float, int]],
    seed: int,
    at_full: Arm | None = None,
) -> tuple[Outcome, int, str]:
    """Run the steps (weight, intervals) at 40-60 requests/s, each step's window growing from
    its start as the gateway's counters do, through `assess`; (the last outcome, the analyses
    it took, the reason). A failed analysis rolls back (failure_limit 0). `at_full` is the
    canary at 100%, if not `canary`."""
    verdicts = analyses(slo, method, canary, baseline, weights, seed, at_full)
    verdict = verdicts[-1][1]
    return verdict.outcome, len(verdicts), verdict.reason


def analyses(
    slo: dict[str, Any] | list[dict[str, Any]],
    method: str,
    canary: Arm,
    baseline: Arm,
    weights: list[tuple[float, int]],
    seed: int,
    at_full: Arm | None = None,
) -> list[tuple[float, Verdict]]:
    """Every analysis of `rollout` with its weight, up to the first that fails."""
    rng = random.Random(seed)
    spec = AnalysisSpec(method=method, interval=INTERVAL, min_requests=100)
    slos = [SloSpec(**one) for one in (slo if isinstance(slo, list) else [slo])]
    ledger: dict[str, Any] = {}
    now = 0.0
    verdicts: list[tuple[float, Verdict]] = []
    for weight, intervals in weights:
        start = now
        arm = at_full if weight == 100 and at_full is not None else canary
        windows = {"canary": VariantStats(), "baseline": VariantStats()}
        for _ in range(intervals):
            now += INTERVAL
            requests = round(rng.uniform(40, 60) * INTERVAL)
            to_canary = sum(rng.random() < weight / 100 for _ in range(requests))
            windows = {
                "canary": _add(windows["canary"], _draw(rng, to_canary, arm)),
                "baseline": _add(windows["baseline"], _draw(rng, requests - to_canary, baseline)),
            }
            verdict, ledger = assess(
                slos, spec, Observation(start, now, dict(windows)), ledger,
                baseline="baseline", canary="canary", baseline_served=weight < 100,
            )  # fmt: skip
            verdicts.append((weight, verdict))
            if verdict.outcome is Outcome.FAIL:
                return verdicts
    return verdicts


ERRORS = {"metric": "error_rate", "compare": "baseline", "max_increase": 0.01}
METHODS = ["sequential", "threshold"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_canary_failing_half_its_requests_against_a_clean_baseline_is_rolled_back_at_once(
    method: str, seed: int
) -> None:
    """The issue's run: baseline answering 200 always, canary 500 on half its requests, 5% and
    then 50% of 40-60 requests/s. Before, every analysis said "no evidence the canary is worse"
    and it was promoted; now it is rolled back within three analyses of its first weight."""
    outcome, looks, reason = rollout(
        ERRORS, method, Arm(errors=0.5), Arm(), [(5, 10), (50, 10)], seed
    )
    assert outcome is Outcome.FAIL, reason
    assert looks <= 3
    assert "error_rate <= baseline + 0.01" in reason


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "slo, canary",
    [
        ({"metric": "filtered_rate", "compare": "baseline", "max_increase": 0.01},
         Arm(filtered=0.30)),
        # The README's own example of a relative rejected_rate; the canary refuses 11% (of 11-15%).
        ({"metric": "rejected_rate", "compare": "baseline", "max_increase": 0.01},
         Arm(rejected=0.11)),
        ({"metric": "fallback_rate", "compare": "baseline", "max_increase": 0.01},
         Arm(fallbacks=0.2)),
    ],
)  # fmt: skip
def test_every_rate_metric_with_max_increase_fails_a_canary_far_beyond_a_clean_baseline(
    method: str, slo: dict[str, Any], canary: Arm
) -> None:
    outcome, looks, reason = rollout(slo, method, canary, Arm(), [(5, 10), (50, 10)], seed=4)
    assert outcome is Outcome.FAIL, reason
    assert looks <= 4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [5, 6])
def test_a_canary_at_four_percent_against_none_is_rolled_back_at_30_then_50_percent(
    method: str, seed: int
) -> None:
    """The issue's 30% -> 50% run: the canary at 3.7-4.5% errors against 0%, max_increase 0.01."""
    rng = random.Random(seed)
    outcome, _, reason = rollout(
        ERRORS, method, Arm(errors=rng.uniform(0.037, 0.045)), Arm(), [(30, 10), (50, 10)], seed
    )
    assert outcome is Outcome.FAIL, reason


def clopper_pearson_upper(failures: int, runs: int, confidence: float = 0.95) -> float:
    """The one-sided upper confidence bound of a binomial proportion (Clopper & Pearson 1934)."""
    return 1.0 if failures >= runs else float(beta.ppf(confidence, failures + 1, runs - failures))


@pytest.mark.parametrize("baseline_rate", [0.0, 0.001])
def test_a_canary_exactly_at_its_margin_is_rolled_back_at_most_alpha_of_the_time(
    baseline_rate: float,
) -> None:
    """A canary at baseline + 0.01 exactly, through 5%, 25% and 50% (ten analyses each), over a
    seeded simulation: the rollbacks' 95% Clopper-Pearson upper bound stays under alpha."""
    runs, failed = 120, 0
    for seed in range(runs):
        outcome, _, _ = rollout(
            ERRORS, "sequential", Arm(errors=baseline_rate + 0.01), Arm(errors=baseline_rate),
            [(5, 10), (25, 10), (50, 10)], seed,
        )  # fmt: skip
        failed += outcome is Outcome.FAIL
    assert clopper_pearson_upper(failed, runs) <= AnalysisSpec().alpha, failed


def test_the_e_value_is_the_mixture_of_per_interval_bets_on_the_topped_up_share() -> None:
    """X = C / (C + B + margin·n_b) against π = n_c / N, each interval one bet of weight
    n_c·(the canary's rate before it) + n_b·(the baseline's rate before it + margin), computed
    here from the formulas."""
    margin = 0.01
    intervals = [(3, 100, 1, 900), (0, 200, 0, 800), (9, 500, 2, 500)]  # C, n_c, B, n_b
    test = RateDifference(margin)
    for interval in intervals:
        test = test.observe(*interval)

    def wealth(scale: float) -> float:
        product, seen = 1.0, [0, 0, 0, 0]  # canary errors, requests, baseline errors, requests
        for c, n_c, b, n_b in intervals:
            share = n_c / (n_c + n_b)
            rate_c = seen[0] / seen[1] if seen[1] else 0.0
            rate_b = seen[2] / seen[3] if seen[3] else 0.0
            weight = max(n_c * rate_c + n_b * (rate_b + margin), 1.0)
            stake = weight * scale / (1 + share * weight * scale)
            product *= 1 + stake * (c / (c + b + margin * n_b) - share)
            seen = [seen[0] + c, seen[1] + n_c, seen[2] + b, seen[3] + n_b]
        return product

    assert test.e_value() == pytest.approx(sum(map(wealth, SCALES)) / len(SCALES), rel=1e-9)
    difference = sum((c * nb - b * nc) / (nc + nb) for c, nc, b, nb in intervals)
    weights = sum(nc * nb / (nc + nb) for _, nc, _, nb in intervals)
    assert test.estimate() == pytest.approx(difference / weights)


def test_the_topped_up_share_has_mean_at_most_the_canarys_share_at_the_margin() -> None:
    """Exactly, by enumerating one interval of independent requests (Poisson counts) at the
    null's edge, p_c = p_b + margin, for a clean baseline and a failing one."""
    for p_b in (0.0, 0.02):
        n_c, n_b, margin = 40, 60, 0.05
        a, b = n_c * (p_b + margin), n_b * p_b

        def poisson(k: int, mean: float) -> float:
            return math.exp(-mean) * mean**k / math.factorial(k) if mean > 0 else float(k == 0)

        mean = sum(
            poisson(c, a) * poisson(k, b) * c / (c + k + margin * n_b)
            for c in range(40) for k in range(30)
        )  # fmt: skip
        assert mean <= n_c / (n_c + n_b) + 1e-12


# -- every weight is judged -----------------------------------------------------------------------

RELATIVE_ONLY = [
    ERRORS,
    {"metric": "filtered_rate", "compare": "baseline", "max_ratio": 2.0},
]


@pytest.mark.parametrize("method", METHODS)
def test_a_healthy_canary_with_only_relative_slos_is_judged_and_passes_at_100(
    method: str,
) -> None:
    """Before, at 100% the analysis had no check at all and ended `inconclusive: not enough
    data ()`, rolling a healthy canary back. Now each relative SLO is judged against the
    baseline's last window before that weight, and says so."""
    healthy = Arm(errors=0.005, filtered=0.01)
    verdicts = analyses(RELATIVE_ONLY, method, healthy, healthy, [(5, 10), (50, 10), (100, 10)], 7)
    at_full = [verdict for weight, verdict in verdicts if weight == 100]
    assert len(at_full) == 10
    assert all(v.outcome is not Outcome.FAIL for v in at_full), at_full[-1].reason
    assert at_full[-1].outcome is Outcome.PASS
    for check in at_full[-1].checks:
        assert "judged against the baseline's last window before this weight" in check.reason
        assert check.baseline_requests > 0 and check.baseline_value is not None


@pytest.mark.parametrize("method", METHODS)
def test_a_canary_that_fails_half_its_requests_at_100_is_rolled_back_there(method: str) -> None:
    healthy = Arm()  # (the threshold method rolls back noise at 5%: docs/analysis.md)
    verdicts = analyses(
        ERRORS, method, healthy, healthy, [(5, 10), (50, 10), (100, 10)], 8,
        at_full=Arm(errors=0.5),
    )  # fmt: skip
    weight, verdict = verdicts[-1]
    assert (weight, verdict.outcome) == (100, Outcome.FAIL)
    assert len(verdicts) <= 20 + 3  # within three analyses of reaching 100%
    assert verdict.reason.startswith("error_rate <= baseline + 0.01: judged against the baseline")


@pytest.mark.parametrize("method", METHODS)
def test_a_relative_slo_with_no_earlier_window_says_by_name_it_cannot_be_judged(
    method: str,
) -> None:
    verdicts = analyses(RELATIVE_ONLY, method, Arm(), Arm(), [(100, 3)], 9)
    for _, verdict in verdicts:
        assert verdict.outcome is Outcome.INCONCLUSIVE
        assert verdict.reason  # never `inconclusive: not enough data ()`
        for slo in ("error_rate <= baseline + 0.01", "filtered_rate <= baseline x 2"):
            assert f"{slo}: cannot be judged at this weight" in verdict.reason


def test_the_baseline_rate_bound_holds_by_chernoff() -> None:
    """The sequential stand-in holds the canary to an upper bound of the baseline's rate:
    trials · KL(observed || bound) = ln(1/alpha), computed here in closed form at 0 events."""
    assert rate_upper_bound(0, 600, 0.05) == pytest.approx(1 - math.exp(-math.log(20) / 600))
    bound = rate_upper_bound(6, 600, 0.05)
    kl = 0.01 * math.log(0.01 / bound) + 0.99 * math.log(0.99 / (1 - bound))
    assert bound > 0.01 and 600 * kl == pytest.approx(math.log(20), rel=1e-6)


def _latencies(requests: float, slow_share: float) -> tuple[tuple[float, float], ...]:
    """A histogram with a share of requests between 2 and 5 s, the rest under 0.5 s."""
    fast = requests * (1 - slow_share)
    edges = (0.25, 0.5, 1.0, 2.0, 5.0, math.inf)
    counts = (fast / 2, fast, fast, fast, requests, requests)
    return tuple(zip(edges, counts, strict=True))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "slo, healthy, worse",
    [
        ({"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.5},
         {"latency_buckets": _latencies(3000, 0.0)},
         {"latency_buckets": _latencies(3000, 0.5)}),
        ({"metric": "cost_per_query_usd", "compare": "baseline", "max_ratio": 1.2},
         {"cost_usd": 3000 * 0.001}, {"cost_usd": 3000 * 0.003}),
        ({"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05},
         {"quality_sum": 0.9 * 1000, "quality_count": 1000},
         {"quality_sum": 0.6 * 1000, "quality_count": 1000}),
    ],
)  # fmt: skip
def test_latency_cost_and_quality_at_100_are_held_to_the_baselines_last_window(
    method: str, slo: dict[str, Any], healthy: dict[str, Any], worse: dict[str, Any]
) -> None:
    """The baseline's window at 50% sets the bound; at 100% a canary like it passes and one
    far beyond it fails, every analysis for a minute apart."""
    spec = AnalysisSpec(method=method, interval=INTERVAL, min_requests=100)
    slos = [SloSpec(**slo)]
    baseline = VariantStats(3000, **healthy)
    outcomes = {}
    for name, canary in (("healthy", healthy), ("worse", worse)):
        ledger: dict[str, Any] = {}
        half = Observation(0, 60, {"canary": VariantStats(3000, **healthy), "baseline": baseline})
        _, ledger = assess(slos, spec, half, ledger, baseline="baseline", canary="canary")
        for minute in range(1, 11):
            scaled = {k: v if k == "latency_buckets" else v * minute for k, v in canary.items()}
            if "latency_buckets" in canary:
                scaled["latency_buckets"] = tuple(
                    (e, c * minute) for e, c in canary["latency_buckets"]
                )
            full = Observation(
                60, 60 + 60 * minute, {"canary": VariantStats(3000 * minute, **scaled)}
            )
            verdict, ledger = assess(slos, spec, full, ledger, baseline="baseline", canary="canary",
                                     baseline_served=False)  # fmt: skip
            if verdict.outcome is Outcome.FAIL:
                break
        outcomes[name] = verdict
    assert outcomes["healthy"].outcome is Outcome.PASS, outcomes["healthy"].reason
    assert outcomes["worse"].outcome is Outcome.FAIL, outcomes["worse"].reason
    assert "judged against the baseline's last window" in outcomes["worse"].reason


@pytest.mark.parametrize("method", METHODS)
def test_a_custom_query_against_the_baseline_is_held_to_its_last_window_at_100(
    method: str,
) -> None:
    slo = SloSpec(
        name="refusals", query='avg(refusal_share{variant="{{variant}}"})',
        compare="baseline", max_increase=0.05,
    )  # fmt: skip
    spec = AnalysisSpec(method=method, min_requests=100)
    both = {"canary": VariantStats(500), "baseline": VariantStats(500)}
    half = Observation(0, 60, both, {"refusals": {"canary": 0.1, "baseline": 0.1}})
    _, ledger = assess([slo], spec, half, {}, baseline="baseline", canary="canary")
    outcomes = {}
    for value in (0.12, 0.3):
        full = Observation(60, 120, {"canary": VariantStats(1000)}, {"refusals": {"canary": value}})
        verdict, _ = assess([slo], spec, full, ledger, baseline="baseline", canary="canary",
                            baseline_served=False)  # fmt: skip
        outcomes[value] = verdict
    assert outcomes[0.12].outcome is Outcome.PASS, outcomes[0.12].reason
    assert outcomes[0.3].outcome is Outcome.FAIL
    assert outcomes[0.3].reason.startswith(
        "refusals <= baseline + 0.05: judged against the baseline's last window before this "
        "weight (500 requests over 60 s, refusals 0.1 there), held to 0.15"
    )
