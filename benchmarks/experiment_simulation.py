"""How experiments decide: false winners among equal variations, the intervals' coverage, and the
time to find a better one, through the functions `canaryctl experiment run` calls.

Each simulated experiment feeds per-minute counts through canaryctl.analysis.experiment
(interval_values, interval_floors, Evidence.observe, decide), deciding every minute for at most
four hours (`until: decided, max: 4h`): 10 million queries a month split evenly, half the answers
scored (0 or 1), a common quality that drifts minute to minute for every arm (prompt mix), 1%
errors. Primary metric `quality_score`, guard `{metric: error_rate, max_increase: 0.01}`, alpha
0.05. A row's "wrong winner" is any winner other than the truly best variation (any winner at
all among equal ones); "missed" is a run whose interval for B - A excluded the true difference
at some look.

    python benchmarks/experiment_simulation.py [--quick] [--seed 1]
        # writes benchmarks/results/experiment_simulation.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import record
from detection import binomial, clopper_pearson_upper

from canaryctl.analysis.experiment import (
    Design,
    Evidence,
    MetricRule,
    decide,
    interval_floors,
    interval_values,
)
from canaryctl.metrics.base import Observation, VariantStats

REQUESTS_PER_MINUTE = round(10_000_000 / (30 * 24 * 60))
"""10 million queries a month: 231 a minute, split between the variations."""
FEEDBACK = 0.5
BASE_QUALITY = 0.85
DRIFT = 0.02
ERRORS = 0.01
MAX_MINUTES = 240
QUALITY = MetricRule("quality_score", higher_is_better=True, builtin="quality_score")
GUARD = MetricRule("error_rate", higher_is_better=False, builtin="error_rate", margin=0.01)
SCENARIOS: dict[str, dict[str, tuple[float, float]]] = {
    # variation -> (quality above the common level, error rate)
    "A/A": {"A": (0.0, ERRORS), "B": (0.0, ERRORS)},
    "A/A/A": {"A": (0.0, ERRORS), "B": (0.0, ERRORS), "C": (0.0, ERRORS)},
    "B +0.02": {"A": (0.0, ERRORS), "B": (0.02, ERRORS)},
    "B +0.05": {"A": (0.0, ERRORS), "B": (0.05, ERRORS)},
    "B +0.05, C +0.02": {"A": (0.0, ERRORS), "B": (0.05, ERRORS), "C": (0.02, ERRORS)},
    "B +0.05, errors +2 points": {"A": (0.0, ERRORS), "B": (0.05, ERRORS + 0.02)},
}


def experiment(rng: random.Random, arms: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """One run: its winner (or None), the minutes it took, and whether B - A was ever missed."""
    names = tuple(arms)
    design = Design(names, names[0], QUALITY, (GUARD,), alpha=0.05, min_samples=10)
    truth = arms["B"][0] - arms["A"][0]
    evidence, common, missed = Evidence(), BASE_QUALITY, False
    for minute in range(1, MAX_MINUTES + 1):
        # Bounded below 1 - the largest lift, so every arm's true quality is common + lift.
        common = min(0.92, max(0.5, common + rng.gauss(0, DRIFT)))
        variants = {}
        for name, (lift, error_rate) in arms.items():
            n = binomial(rng, REQUESTS_PER_MINUTE, 1 / len(arms))
            scored = binomial(rng, n, FEEDBACK)
            variants[name] = VariantStats(
                requests=n,
                errors=binomial(rng, n, error_rate),
                quality_sum=binomial(rng, scored, common + lift),
                quality_count=scored,
            )
        observation = Observation(minute * 60.0 - 60, minute * 60.0, variants)
        evidence = evidence.observe(
            design,
            interval_values(design, observation),
            {},
            {None: interval_floors(design, observation)},
        )
        effect = evidence.interval("quality_score", None, "B", "A", design.alpha_each)
        missed = missed or not effect.low <= truth <= effect.high
        winner = decide(design, evidence).winner
        if winner is not None:
            return {"winner": winner, "minutes": minute, "missed": missed}
    return {"winner": None, "minutes": None, "missed": missed}


def measure(runs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    report: dict[str, Any] = {"runs": runs, "alpha": 0.05, "max_minutes": MAX_MINUTES,
                              "requests_per_minute": REQUESTS_PER_MINUTE,
                              "feedback": FEEDBACK, "scenarios": {}}  # fmt: skip
    for name, arms in SCENARIOS.items():
        best = max(arms, key=lambda v: (arms[v][0], v == "A"))
        guarded = arms["B"][1] - arms["A"][1] > GUARD.margin  # type: ignore[operator]
        right = None if all(lift == 0 for lift, _ in arms.values()) or guarded else best
        results = [experiment(rng, arms) for _ in range(runs)]
        wrong = sum(r["winner"] is not None and r["winner"] != right for r in results)
        decided = [r["minutes"] for r in results if r["winner"] == right and right is not None]
        missed = sum(r["missed"] for r in results)
        report["scenarios"][name] = {
            "variations": len(arms),
            "right_winner": right,
            "wrong_winner": wrong / runs,
            "wrong_upper_95": clopper_pearson_upper(wrong, runs),
            "decided": len(decided) / runs,
            "median_minutes": statistics.median(decided) if decided else None,
            "missed": missed / runs,
            "missed_upper_95": clopper_pearson_upper(missed, runs),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 runs per row, not 500")
    parser.add_argument("--seed", type=int, default=1)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    started = time.perf_counter()
    report = measure(100 if args.quick else 500, args.seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["seed"], report["quick"] = args.seed, args.quick
    print(f"{report['runs']} experiments per row, alpha 0.05, at most {MAX_MINUTES} minutes")
    print(f"{'scenario':<28}{'wrong winner':>13}{'decided':>9}{'median min':>11}{'missed':>8}")
    for name, row in report["scenarios"].items():
        minutes = "-" if row["median_minutes"] is None else f"{row['median_minutes']:g}"
        print(f"{name:<28}{row['wrong_winner']:>13.1%}{row['decided']:>9.1%}{minutes:>11}"
              f"{row['missed']:>8.1%}")  # fmt: skip
    print(f"({report['seconds']} s)")
    record.write("experiment_simulation", report, args, before=before)


if __name__ == "__main__":
    main()
