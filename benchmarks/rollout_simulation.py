"""How fast the pure decision core runs, and how it decides, on simulated traffic.

Drives `tick` and `assess` (no I/O, no sleeping) through many rollouts of the shipped runbook
shape: a healthy canary and one with a 4x error rate, judged by each analysis method. Prints
rollouts per second, the share of rollouts each case ends in each outcome, and the median
simulated time to decide; writes them to benchmarks/results/rollout_simulation.json.

    python benchmarks/rollout_simulation.py [--rollouts 2000] [--rate 50] [--seed 1]
        [--methods threshold,sequential]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from typing import Any

import record

from canaryctl.analysis import assess
from canaryctl.controller.step import (
    Analyze,
    Analyzed,
    Finish,
    Promote,
    Promoted,
    Rollback,
    RolledBack,
    RolloutState,
    SetWeight,
    Wait,
    WeightSet,
    tick,
)
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook import Rollout

LATENCY_SHARES = (0.1, 0.3, 0.3, 0.2, 0.09, 0.007, 0.002, 0.001, 0.0)
"""Share of requests per bucket: 1% slower than 2 s, so p95 is near 1.6 s, within its 2 s bound."""
NEAR_BOUND_SHARES = (0.1, 0.3, 0.3, 0.15, 0.12, 0.02, 0.005, 0.005, 0.0)
"""3% slower than 2 s: p95 near 1.8 s, healthy but close to its 2 s bound."""
CASES = {
    "healthy": (0.005, LATENCY_SHARES),
    "bad": (0.02, LATENCY_SHARES),
    "near-bound": (0.005, NEAR_BOUND_SHARES),
}
"""The canary's error rate and latency in each case; the baseline is the healthy one."""
BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, float("inf"))


def runbook(method: str) -> Rollout:
    return Rollout.model_validate(
        {
            "kind": "Rollout",
            "metadata": {"name": "simulated"},
            "spec": {
                "flag": {
                    "provider": "file",
                    "path": "/dev/null",
                    "key": "k",
                    "baseline": "base",
                    "canary": "cand",
                },
                "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:1/metrics"]},
                "slos": [
                    {"metric": "error_rate", "max": 0.03},
                    {"metric": "error_rate", "compare": "baseline", "max_increase": 0.01},
                    {"metric": "latency_p95_seconds", "max": 2.0},
                ],
                "analysis": {"interval": "30s", "min_requests": 200, "method": method},
                "steps": [
                    {"set_weight": 5},
                    {"pause": "5m"},
                    {"set_weight": 25},
                    {"pause": "10m"},
                    {"set_weight": 100},
                    {"pause": "10m"},
                ],
            },
        }
    )


def _around(rng: random.Random, n: float, p: float) -> float:
    """A binomial count by its normal approximation: the simulation must stay cheap at high
    request counts."""
    return max(0.0, round(rng.gauss(n * p, (n * p * (1 - p)) ** 0.5)))


def stats(
    rng: random.Random, requests: int, error_rate: float, shares: tuple[float, ...]
) -> VariantStats:
    errors = min(requests, _around(rng, requests, error_rate))
    cumulative, counts = [], 0.0
    for share in shares:
        counts += _around(rng, requests, share)
        cumulative.append(counts)
    return VariantStats(
        requests=requests,
        errors=errors,
        latency_buckets=tuple(zip(BUCKETS, cumulative, strict=True)),
    )


def _plus(total: VariantStats, more: VariantStats) -> VariantStats:
    buckets = tuple(
        (edge, a + b)
        for (edge, a), (_, b) in zip(
            total.latency_buckets or tuple((e, 0.0) for e in BUCKETS),
            more.latency_buckets,
            strict=True,
        )
    )
    return VariantStats(
        requests=total.requests + more.requests,
        errors=total.errors + more.errors,
        latency_buckets=buckets,
    )


def simulate(
    rollout: Rollout, rng: random.Random, rate: float, canary: tuple[float, tuple[float, ...]]
) -> tuple[str, float]:
    """One rollout on a simulated clock; returns (outcome, simulated seconds).

    The counts of a step's window only grow: each analysis adds what arrived since the last one,
    as a gateway's counters do."""
    spec = rollout.spec
    state, now, event = RolloutState(), 0.0, None
    weight, since, counted = 0.0, 0.0, 0.0
    window = {"cand": VariantStats(), "base": VariantStats()}
    while True:
        decision = tick(spec, state, now, event)
        state, action, event = decision.state, decision.action, None
        match action:
            case SetWeight(percent=percent):
                weight, since, counted = percent, now, now
                window = {"cand": VariantStats(), "base": VariantStats()}
                event = WeightSet(at=now)
            case Wait(until=until):
                now = until if until is not None else now
            case Analyze(since=start):
                seconds, counted = now - counted, now
                canary_n = max(int(rng.gauss(rate * seconds * weight / 100, 1) // 1), 0)
                base_n = int(rate * seconds * (100 - weight) / 100)
                window = {
                    "cand": _plus(window["cand"], stats(rng, canary_n, *canary)),
                    "base": _plus(window["base"], stats(rng, base_n, *CASES["healthy"])),
                }
                observation = Observation(start, now, window)
                verdict, ledger = assess(
                    spec.slos,
                    spec.analysis,
                    observation,
                    state.ledger,
                    baseline="base",
                    canary="cand",
                    baseline_served=weight < 100,
                )
                event = Analyzed(verdict, ledger)
            case Promote():
                event = Promoted()
            case Rollback():
                event = RolledBack()
            case Finish(outcome=outcome):
                return outcome, now - since if outcome != "promoted" else now


def measure(method: str, args: Any) -> dict[str, Any]:
    rollout, rng = runbook(method), random.Random(args.seed)
    cases = {}
    for name, canary in CASES.items():
        outcomes: Counter[str] = Counter()
        durations = []
        started = time.perf_counter()
        for _ in range(args.rollouts):
            outcome, seconds = simulate(rollout, rng, args.rate, canary)
            outcomes[outcome] += 1
            durations.append(seconds)
        elapsed = time.perf_counter() - started
        cases[name] = {
            "canary_error_rate": canary[0],
            "canary_slower_than_2s": 1 - sum(canary[1][:5]),
            "rollouts_per_second": args.rollouts / elapsed,
            "promoted": outcomes["promoted"] / args.rollouts,
            "rolled_back": outcomes["rolled_back"] / args.rollouts,
            "median_seconds_to_decide": statistics.median(durations),
        }
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--methods", type=lambda v: v.split(","), default=["threshold", "sequential"]
    )
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    results: dict[str, Any] = {
        "rollouts": args.rollouts,
        "requests_per_second": args.rate,
        "seed": args.seed,
        "baseline_error_rate": 0.005,
        "methods": {},
    }
    print(
        f"{'method':<12}{'case':<10}{'per second':>12}{'promoted':>10}{'rolled back':>13}"
        f"{'median s to decide':>20}"
    )
    for method in args.methods:
        results["methods"][method] = measure(method, args)
        for name, case in results["methods"][method].items():
            print(
                f"{method:<12}{name:<10}{case['rollouts_per_second']:>12.0f}"
                f"{case['promoted']:>10.1%}{case['rolled_back']:>13.1%}"
                f"{case['median_seconds_to_decide']:>20.0f}"
            )
    record.write("rollout_simulation", results, args, before=before)


if __name__ == "__main__":
    main()
