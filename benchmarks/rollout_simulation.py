"""How the shipped runbook decides on simulated traffic, and how fast the decision core runs.

Drives the controller's own `tick` and `assess` through canaryctl/simulation.py (the code behind
`canaryctl plan`; no I/O, no sleeping) over many rollouts of runbooks/support-bot-gpt4o-mini.yaml
at the lab's 40 requests/s (runbooks/lab.yaml), baseline at the lab's gpt-4-turbo (0.5% errors,
p95 1.4 s). Cases: a healthy canary equal to the baseline; a healthy one whose p95 sits near its
2 s bound (1.8 s: 3% of requests slower than 2 s); a bad one at 4x the baseline's error rate.
Each method (`threshold`, `sequential`) runs the runbook as shipped; `sequential, rollback` runs
it with `on_inconclusive: rollback`, to show what the pause is for, and `sequential, before` as
it shipped before (5 minutes at 5%, `inconclusive_limit: 3`, undecided rolled back). Prints,
and writes to benchmarks/results/rollout_simulation.json, the share of rollouts promoted,
rolled back and paused (undecided until max_wait: a human decides), with 95% Clopper-Pearson
upper bounds, the share that asked a human at some point, and the simulated time to decide.

    python benchmarks/rollout_simulation.py [--rollouts 200] [--rate 40] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import record
from scipy.stats import beta

from canaryctl.runbook import Rollout, load_document
from canaryctl.runbook.rollout import RolloutSpec, Step
from canaryctl.simulation import (
    OUTCOMES,
    Traffic,
    cost_per_query,
    simulate,
    simulated_spec,
    summary,
)

RUNBOOK = Path(__file__).resolve().parent.parent / "runbooks" / "support-bot-gpt4o-mini.yaml"
BASELINE_ERRORS, BASELINE_P95 = 0.005, 1.4
CASES = {
    "healthy": (BASELINE_ERRORS, BASELINE_P95),
    "near-bound": (BASELINE_ERRORS, 1.8),
    "bad": (4 * BASELINE_ERRORS, BASELINE_P95),
}
"""The canary's error rate and p95 in each case; the baseline is the healthy one."""
BEFORE_STEPS = [
    {"set_weight": 5},
    {"pause": 300},
    {"set_weight": 25},
    {"pause": 600},
    {"set_weight": 100},
    {"pause": 600},
]
"""The shipped runbook's steps before issue 23: five minutes at 5%."""
VARIANTS: dict[str, tuple[dict[str, Any], list[dict[str, Any]] | None]] = {
    "threshold": ({"method": "threshold"}, None),
    "sequential": ({"method": "sequential"}, None),
    "sequential, rollback": ({"method": "sequential", "on_inconclusive": "rollback"}, None),
    "sequential, before": (
        {"method": "sequential", "on_inconclusive": "rollback", "inconclusive_limit": 3},
        BEFORE_STEPS,
    ),
}
"""What each row changes in the shipped runbook: its `analysis`, and its steps (None: as
shipped). *rollback* undoes the pause; *before* is the runbook as it shipped before it paused
(5 minutes at 5%, `inconclusive_limit: 3`, undecided rolled back)."""


def upper_bound(hits: int, runs: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a share seen `hits` times in `runs`."""
    return 1.0 if hits >= runs else float(beta.ppf(confidence, hits + 1, runs - hits))


def variant(
    spec: RolloutSpec, changes: dict[str, Any], steps: list[dict[str, Any]] | None
) -> RolloutSpec:
    analysis = spec.analysis.model_dump()
    analysis.update(changes)
    if analysis["on_inconclusive"] == "rollback":
        analysis["max_wait"] = None
    update: dict[str, Any] = {"analysis": type(spec.analysis).model_validate(analysis)}
    if steps is not None:
        update["steps"] = [Step.model_validate(step) for step in steps]
    return spec.model_copy(update=update)


def measure(spec: RolloutSpec, args: Any, cost: float) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    baseline = Traffic(BASELINE_ERRORS, BASELINE_P95, cost)
    cases = {}
    for name, (errors, p95) in CASES.items():
        canary = Traffic(errors, p95, cost)
        started = time.perf_counter()
        runs = [simulate(spec, rng, args.rate, canary, baseline) for _ in range(args.rollouts)]
        elapsed = time.perf_counter() - started
        counts = {outcome: sum(r.outcome == outcome for r in runs) for outcome in OUTCOMES}
        cases[name] = {
            "canary_error_rate": errors,
            "canary_p95_seconds": p95,
            "canary_slower_than_2s": canary.slower_than(2.0),
            "rollouts_per_second": args.rollouts / elapsed,
            **{outcome: counts[outcome] / args.rollouts for outcome in OUTCOMES},
            **{
                f"{outcome}_upper_95": upper_bound(counts[outcome], args.rollouts)
                for outcome in OUTCOMES
            },
            "asked_a_human": sum(r.asked for r in runs) / args.rollouts,
            "seconds_to_decide": summary([r.seconds for r in runs]),
            "median_seconds_to_decide": summary([r.seconds for r in runs])["median"],
        }
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=1)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    rollout = load_document(RUNBOOK, Rollout)
    spec, left_out = simulated_spec(rollout.spec)
    cost = cost_per_query(rollout.spec)
    shipped = spec.analysis
    results: dict[str, Any] = {
        "rollouts": args.rollouts,
        "requests_per_second": args.rate,
        "seed": args.seed,
        "runbook": str(RUNBOOK.relative_to(RUNBOOK.parent.parent)),
        "steps": [step.model_dump(exclude_none=True) for step in spec.steps],
        "analysis": {
            "interval": shipped.interval,
            "inconclusive_limit": shipped.inconclusive_limit,
            "on_inconclusive": shipped.on_inconclusive,
            "max_wait": shipped.pause_limit,
        },
        "not_simulated": list(left_out),
        "baseline_error_rate": BASELINE_ERRORS,
        "baseline_p95_seconds": BASELINE_P95,
        "methods": {},
    }
    print(
        f"{'runbook analysis':<22}{'case':<12}{'promoted':>10}{'rolled back':>13}{'paused':>8}"
        f"{'asked':>8}{'median s':>10}{'p90 s':>8}"
    )
    for name, (changes, steps) in VARIANTS.items():
        cases = measure(variant(spec, changes, steps), args, cost)
        results["methods"][name] = cases
        for case_name, case in cases.items():
            seconds = case["seconds_to_decide"]
            print(
                f"{name:<22}{case_name:<12}{case['promoted']:>10.1%}{case['rolled_back']:>13.1%}"
                f"{case['paused']:>8.1%}{case['asked_a_human']:>8.1%}"
                f"{seconds['median']:>10.0f}{seconds['p90']:>8.0f}"
            )
    record.write("rollout_simulation", results, args, before=before)


if __name__ == "__main__":
    main()
