"""How fast each canary judge detects a worse canary, and how often it rolls back a good one.

A simulator feeds one stream of per-minute counts per rollout to every judge, so they are
compared on the same data: stepped canary shares (1/5/25/50%, ten minutes each), a diurnal request
rate, a common error rate that drifts and bursts (both arms at once), and optionally errors that
come in correlated clusters. The judges, all looking once a minute:

- sequential: canaryctl's anytime-valid rate-ratio e-process (canaryctl.analysis.rate_ratio, the
  object the sequential analysis keeps per SLO), rejecting "canary rate <= baseline rate" at
  e-value >= 1/alpha;
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

    python benchmarks/detection.py [--quick] [--json] [--seed 1]
    python benchmarks/detection.py --markdown docs/detection.json   # the tables in docs/analysis.md
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

from canaryctl.analysis.rate_ratio import RateRatio

ALPHA = 0.05
SHARES = (0.01, 0.05, 0.25, 0.50)
MINUTES_PER_STEP = 10
RATE = 50.0  # mean requests per second, both arms together
BASE_ERROR_RATE = 0.01
DRIFT = 0.1  # standard deviation of the common error rate's log, per minute
BURST_CHANCE, BURST_FACTOR = 0.03, 4.0  # a minute when the common error rate is 4x, both arms
THRESHOLD_RATIO = 1.5  # Flagger/Argo-style: a check fails if canary rate > 1.5x baseline's
MIN_CHECK_REQUESTS = 100  # ... on at least this many requests per arm, else it is skipped
LATENCY_SIGMA = 0.45  # log-normal latencies, median 1 s: p95 near 2.1 s
LATENCY_EDGE = 2.0  # the gateway's bucket edge nearest the baseline's p95
METHODS = ("sequential", "naive-z", "flagger-t1", "flagger-t5", "argo-fl2", "kayenta-mw")


@dataclass(frozen=True)
class Scenario:
    name: str
    error_ratio: float = 1.0
    slowdown: float = 1.0  # latency: the canary's latencies are the baseline's times this
    cluster: int = 1  # errors arrive in clusters of this size, all in one arm


REGRESSIONS = (
    Scenario("errors x1.5", error_ratio=1.5),
    Scenario("errors x2", error_ratio=2.0),
    Scenario("errors x3", error_ratio=3.0),
    Scenario("p95 +30%", slowdown=1.3),
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


def slow_share(scale: float) -> float:
    """P(latency > LATENCY_EDGE) for log-normal latencies with median `scale` seconds."""
    z = (math.log(LATENCY_EDGE) - math.log(scale)) / LATENCY_SIGMA
    return 0.5 * math.erfc(z / math.sqrt(2))


# -- one rollout, every judge ------------------------------------------------------------------


def rollout(rng: random.Random, scenario: Scenario) -> dict[str, tuple[float, float] | None]:
    """(seconds, canary requests) at which each judge rolled back, None if it never did."""
    detected: dict[str, tuple[float, float] | None] = dict.fromkeys(METHODS)
    ratio = RateRatio(1.0)
    phase = rng.uniform(0, 2 * math.pi)
    drift = 0.0
    canary_requests = 0
    totals = [0, 0, 0, 0]  # canary requests, canary events, baseline requests, baseline events
    flagger_failures = argo_failures = 0
    window: list[tuple[int, int, int, int]] = []
    step_rates: tuple[list[float], list[float]] = ([], [])
    latency = scenario.slowdown != 1.0
    for minute in range(len(SHARES) * MINUTES_PER_STEP):
        share = SHARES[minute // MINUTES_PER_STEP]
        mean = RATE * 60 * (1 + 0.5 * math.sin(phase + 2 * math.pi * minute / 1440))
        total = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        n_c = binomial(rng, total, share)
        n_b = total - n_c
        drift += rng.gauss(0, DRIFT)
        if latency:
            load = math.exp(drift / 10)  # latency follows load more gently than errors do
            p_b, p_c = slow_share(load), slow_share(load * scenario.slowdown)
        else:
            common = min(0.2, BASE_ERROR_RATE * math.exp(drift))
            if rng.random() < BURST_CHANCE:
                common = min(0.2, common * BURST_FACTOR)
            p_b, p_c = common, min(1.0, common * scenario.error_ratio)
        k = scenario.cluster
        e_c = k * binomial(rng, n_c, p_c / k)
        e_b = k * binomial(rng, n_b, p_b / k)
        canary_requests += n_c
        now = (minute + 1) * 60.0

        def mark(method: str, *, now: float = now, served: int = canary_requests) -> None:
            if detected[method] is None:
                detected[method] = (now, served)

        if total > 0:
            ratio = ratio.observe(e_c, e_b, n_c / total)
        if ratio.e_value() >= 1 / ALPHA:
            mark("sequential")
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
    target, accrued, events, served = math.log(1 / ALPHA), 0.0, 0.0, 0.0
    for minute in range(10_000):
        share = SHARES[min(minute // MINUTES_PER_STEP, len(SHARES) - 1)]
        theta0 = share
        theta1 = share * p_c / (share * p_c + (1 - share) * p_b)
        kl = theta1 * math.log(theta1 / theta0) + (1 - theta1) * math.log(
            (1 - theta1) / (1 - theta0)
        )
        per_minute_events = RATE * 60 * (share * p_c + (1 - share) * p_b)
        gain = per_minute_events * kl
        if accrued + gain >= target:
            part = (target - accrued) / gain
            return {
                "seconds": (minute + part) * 60,
                "events": events + part * per_minute_events,
                "requests": served + part * RATE * 60 * share,
            }
        accrued += gain
        events += per_minute_events
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


def false_rollbacks(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary = {}
    for method in METHODS:
        failures = sum(1 for r in results if r[method] is not None)
        summary[method] = {
            "false_rollbacks": failures,
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


def delays(results: list[dict[str, Any]], bound: dict[str, float]) -> dict[str, dict[str, Any]]:
    summary = {}
    for method in METHODS:
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


def run(scenario: Scenario, rollouts: int, rng: random.Random) -> list[dict[str, Any]]:
    return [rollout(rng, scenario) for _ in range(rollouts)]


# -- the report ---------------------------------------------------------------------------------


def measure(quick: bool, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    sizes = (
        {"aa": 2_000, "regression": 300, "overdispersed": 500}
        if quick
        else {"aa": 10_000, "regression": 2_000, "overdispersed": 3_000}
    )
    rng = random.Random(seed)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
            "alpha": ALPHA,
            "shares": SHARES,
            "minutes_per_step": MINUTES_PER_STEP,
            "mean_requests_per_second": RATE,
            "base_error_rate": BASE_ERROR_RATE,
            "threshold_ratio": THRESHOLD_RATIO,
            "min_check_requests": MIN_CHECK_REQUESTS,
            "rollouts": sizes,
            "seed": seed,
            "quick": quick,
        }
    }
    progress(f"A/A, {sizes['aa']} rollouts")
    report["aa"] = false_rollbacks(run(Scenario("A/A"), sizes["aa"], rng))
    report["regressions"] = {}
    for scenario in REGRESSIONS:
        progress(f"{scenario.name}, {sizes['regression']} rollouts")
        bound = sprt_bound(scenario)
        results = run(scenario, sizes["regression"], rng)
        report["regressions"][scenario.name] = {"sprt": bound, "methods": delays(results, bound)}
    report["overdispersed"] = {}
    for cluster in (2, 5, 10):
        progress(f"A/A with errors in clusters of {cluster}, {sizes['overdispersed']} rollouts")
        results = run(Scenario("A/A", cluster=cluster), sizes["overdispersed"], rng)
        report["overdispersed"][str(cluster)] = false_rollbacks(results)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _show(value: float | None, digits: str = ".0f") -> str:
    return "not detected" if value is None else format(value, digits)


def print_tables(report: dict[str, Any]) -> None:
    aa = report["aa"]
    n = report["config"]["rollouts"]["aa"]
    print(f"A/A: false rollbacks over {n} rollouts (alpha {ALPHA}; upper = one-sided 95% CP)")
    print(f"{'method':<12}{'rate':>9}{'upper':>9}")
    for method, row in aa.items():
        print(f"{method:<12}{row['rate']:>9.4f}{row['upper95']:>9.4f}")
    for name, data in report["regressions"].items():
        bound = data["sprt"]
        print(
            f"\n{name}: SPRT bound {bound['seconds']:.0f} s, {bound['requests']:.0f} canary "
            f"requests, {bound['events']:.0f} events"
        )
        print(
            f"{'method':<12}{'detected':>9}{'median s':>14}{'p90 s':>14}{'median req':>14}"
            f"{'p90 req':>14}{'x SPRT':>8}{'A/A rate':>10}"
        )
        for method, row in data["methods"].items():
            ratio = row["ratio_to_sprt"]
            print(
                f"{method:<12}{row['detected']:>9.1%}{_show(row['median_seconds']):>14}"
                f"{_show(row['p90_seconds']):>14}{_show(row['median_requests']):>14}"
                f"{_show(row['p90_requests']):>14}{_show(ratio, '.2f'):>8}"
                f"{aa[method]['rate']:>10.4f}"
            )
    print("\nA/A with errors in correlated clusters: false-rollback rate (upper 95%)")
    print(f"{'method':<12}" + "".join(f"{'size ' + k:>18}" for k in report["overdispersed"]))
    for method in METHODS:
        cells = "".join(
            f"{rows[method]['rate']:>9.4f} ({rows[method]['upper95']:.4f})"
            for rows in report["overdispersed"].values()
        )
        print(f"{method:<12}{cells}")
    print(f"\n{report['seconds']} s")


def _cell(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_markdown(report: dict[str, Any]) -> None:
    """The tables of docs/analysis.md, from a report printed by --json."""
    config, aa = report["config"], report["aa"]
    print(f"A/A over {config['rollouts']['aa']:,} rollouts, alpha {config['alpha']}:\n")
    print("| judge | false rollbacks | rate | 95% upper bound (Clopper-Pearson) |")
    print("| --- | ---: | ---: | ---: |")
    for method, row in aa.items():
        print(
            f"| {method} | {row['false_rollbacks']:,} | {row['rate']:.4f} | {row['upper95']:.4f} |"
        )
    for name, data in report["regressions"].items():
        bound = data["sprt"]
        print(
            f"\n**{name}** — SPRT bound: {bound['seconds']:.0f} s, {bound['requests']:,.0f} canary "
            f"requests, {bound['events']:.0f} events ({config['rollouts']['regression']:,} "
            "rollouts)\n"
        )
        print(
            "| judge | detected | median s | p90 s | median canary requests "
            "| p90 canary requests | median / SPRT (s) | median / SPRT (requests) | A/A rate |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for method, row in data["methods"].items():
            print(
                f"| {method} | {row['detected']:.1%} | {_cell(row['median_seconds'])} "
                f"| {_cell(row['p90_seconds'])} | {_cell(row['median_requests'])} "
                f"| {_cell(row['p90_requests'])} | {_cell(row['ratio_to_sprt'], 2)} "
                f"| {_cell(row['requests_ratio_to_sprt'], 2)} | {aa[method]['rate']:.4f} |"
            )
    sizes = list(report["overdispersed"])
    print(
        f"\nA/A with errors in correlated clusters ({config['rollouts']['overdispersed']:,} "
        "rollouts each): false-rollback rate (95% upper bound)\n"
    )
    print("| judge | " + " | ".join(f"clusters of {k}" for k in sizes) + " |")
    print("| --- |" + " ---: |" * len(sizes))
    for method in aa:
        cells = " | ".join(
            f"{report['overdispersed'][k][method]['rate']:.4f} "
            f"({report['overdispersed'][k][method]['upper95']:.4f})"
            for k in sizes
        )
        print(f"| {method} | {cells} |")
    print(f"\nMeasured in {report['seconds']} s (seed {config['seed']}, quick={config['quick']}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--markdown", metavar="JSON", help="print the Markdown tables of a stored --json report"
    )
    args = parser.parse_args()
    if args.markdown:
        with open(args.markdown) as stored:
            print_markdown(json.load(stored))
        return

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = measure(args.quick, args.seed, progress)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_tables(report)


if __name__ == "__main__":
    main()
