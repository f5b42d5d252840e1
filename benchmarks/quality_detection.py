"""How the quality SLO decides: false rollbacks of a canary at its margin, and detection delay.

Each simulated rollout feeds per-minute counts through canaryctl.analysis.assess, the function
the controller calls, looking every minute: stepped canary shares (1/5/25/50%, ten minutes
each), 50 requests per second with half the answers scored (0 or 1), and a common quality that
drifts minute to minute for both arms (prompt mix). The SLO is
`{metric: quality_score, compare: baseline, max_decrease: 0.05}` with `min_requests: 100`
(scored answers), judged by the threshold method (each window on its own, `failure_limit: 0`)
and by the sequential method (alpha 0.05).

Scenarios: the canary exactly at its margin (0.05 below the baseline: the hardest case that must
not be rolled back), equal to the baseline, and 0.10 / 0.20 below it.

    python benchmarks/quality_detection.py [--quick] [--seed 1]
        # writes benchmarks/results/quality_detection.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import record
from detection import binomial, clopper_pearson_upper

from canaryctl.analysis import Outcome, assess
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

SHARES = (0.01, 0.05, 0.25, 0.50)
MINUTES_PER_STEP = 10
REQUESTS_PER_MINUTE = 50 * 60
FEEDBACK = 0.5
BASE_QUALITY = 0.85
DRIFT = 0.02  # the common quality's minute-to-minute wander, both arms
MARGIN = 0.05
SLO = SloSpec(metric="quality_score", compare="baseline", max_decrease=MARGIN)
SCENARIOS = {"at margin": -MARGIN, "equal": 0.0, "-0.10": -0.10, "-0.20": -0.20}


def rollout(rng: random.Random, drop: float, method: str) -> float | None:
    """Minutes until the rollback, None when the canary got through."""
    analysis = AnalysisSpec(interval=60, min_requests=100, method=method, alpha=0.05)
    ledger: dict[str, Any] = {}
    minute, common = 0, BASE_QUALITY
    for share in SHARES:
        start = minute * 60.0
        window = {"canary": [0, 0, 0], "baseline": [0, 0, 0]}  # requests, scored, right
        for _ in range(MINUTES_PER_STEP):
            minute += 1
            common = min(0.97, max(0.5, common + rng.gauss(0, DRIFT)))
            for arm, arm_share, quality in (
                ("canary", share, common + drop),
                ("baseline", 1 - share, common),
            ):
                n = binomial(rng, REQUESTS_PER_MINUTE, arm_share)
                scored = binomial(rng, n, FEEDBACK)
                counts = window[arm]
                counts[0] += n
                counts[1] += scored
                counts[2] += binomial(rng, scored, quality)
            observation = Observation(
                start,
                minute * 60.0,
                {
                    arm: VariantStats(requests=r, quality_sum=right, quality_count=s)
                    for arm, (r, s, right) in window.items()
                },
            )
            verdict, ledger = assess(
                [SLO], analysis, observation, ledger, baseline="baseline", canary="canary"
            )
            if verdict.outcome is Outcome.FAIL:
                return float(minute)
    return None


def measure(quick: bool, seed: int) -> dict[str, Any]:
    runs = 300 if quick else 2000
    report: dict[str, Any] = {"rollouts": runs, "alpha": 0.05, "margin": MARGIN, "scenarios": {}}
    for name, drop in SCENARIOS.items():
        per_method = {}
        for method in ("threshold", "sequential"):
            rng = random.Random(f"{seed}/{name}/{method}")
            results = [rollout(rng, drop, method) for _ in range(runs)]
            caught = [r for r in results if r is not None]
            per_method[method] = {
                "rolled_back": len(caught) / runs,
                "upper_95": clopper_pearson_upper(len(caught), runs),
                "median_minutes": statistics.median(caught) if caught else None,
            }
        report["scenarios"][name] = per_method
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 rollouts per cell, not 2000")
    parser.add_argument("--seed", type=int, default=1)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    started = time.perf_counter()
    report = measure(args.quick, args.seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["seed"], report["quick"] = args.seed, args.quick
    print(f"{report['rollouts']} rollouts per cell, margin {MARGIN}, alpha 0.05")
    print(
        f"{'canary vs baseline':<20}{'method':<12}{'rolled back':>12}{'95% upper':>11}"
        f"{'median min':>12}"
    )
    for name, methods in report["scenarios"].items():
        for method, cell in methods.items():
            minutes = "-" if cell["median_minutes"] is None else f"{cell['median_minutes']:g}"
            print(
                f"{name:<20}{method:<12}{cell['rolled_back']:>12.1%}{cell['upper_95']:>11.1%}"
                f"{minutes:>12}"
            )
    print(f"({report['seconds']} s)")
    record.write("quality_detection", report, args, before=before)


if __name__ == "__main__":
    main()
