"""How the shadow step decides: detection of a worse candidate and false stops of an equal one.

Each simulated run drives the pure decision core (`tick`, with `assess` for every analysis, as
the controller does, no I/O and no sleeping) through a shadow step

    - shadow: {percent: P, until: decided, max: 30m, slos: [
        {metric: error_rate, compare: baseline, max_increase: 0.01},
        {metric: win_rate, compare: baseline, max_decrease: 0.05}]}

with `analysis: {interval: 1m, min_requests: 100, alpha: 0.05}` (sequential), until the step
stops the run (a failed SLO, or undecided at its max) or passes it on to its first live weight.
Traffic is 10M queries a month (about 231 a minute, Poisson), all served by the baseline; P% of
them are mirrored to the candidate and every pair is judged (win / tie / loss from the
candidate's side). Both models fail 0.5% of calls. Ties are 30% of pairs on average, wandering
minute to minute (the prompt mix); the candidate's win rate (wins + ties/2) / pairs is 0.5 when
equal, 0.45 at the SLO's margin, 0.40 when worse by 0.1.

    python benchmarks/shadow_step.py [--runs 2000] [--seed 1]
        # writes benchmarks/results/shadow_step.json
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from typing import Any

import record
from detection import binomial, clopper_pearson_upper

from canaryctl.analysis import assess
from canaryctl.controller.step import (
    Analyze,
    Analyzed,
    EndShadow,
    Finish,
    Rollback,
    RolledBack,
    RolloutState,
    SetShadow,
    SetWeight,
    ShadowEnded,
    ShadowSet,
    Wait,
    tick,
)
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook import Rollout

MONTHLY_QUERIES = 10_000_000
PER_MINUTE = MONTHLY_QUERIES / (30 * 24 * 60)
ERROR_RATE = 0.005
TIES = 0.3
TIE_DRIFT = 0.03
MARGIN = 0.05
ALPHA = 0.05
MAX_MINUTES = 30
SCENARIOS = {
    "equal": (0.5, "passed"),
    "at margin": (0.5 - MARGIN, None),
    "worse by 0.1": (0.4, "failed"),
    "worse by 0.2": (0.3, "failed"),
}
"""Each candidate's win rate and the right decision: passed on, stopped by an SLO, or none (at
the margin, where only a stop by an SLO is wrong: it must stay within alpha)."""
PERCENTS = (5, 20, 50, 100)


def runbook(percent: float) -> Rollout:
    return Rollout.model_validate(
        {
            "kind": "Rollout",
            "metadata": {"name": "simulated"},
            "spec": {
                "flag": {"provider": "file", "path": "/dev/null", "key": "live",
                         "baseline": "base", "canary": "cand"},
                "shadow_flag": {"provider": "file", "path": "/dev/null", "key": "shadow",
                                "baseline": "off", "canary": "cand"},
                "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:1/metrics"]},
                "slos": [{"metric": "error_rate", "max": 0.03}],
                "analysis": {"interval": "1m", "min_requests": 100, "alpha": ALPHA},
                "steps": [
                    {"shadow": {
                        "percent": percent, "until": "decided", "max": f"{MAX_MINUTES}m",
                        "slos": [
                            {"metric": "error_rate", "compare": "baseline", "max_increase": 0.01},
                            {"metric": "win_rate", "compare": "baseline",
                             "max_decrease": MARGIN},
                        ],
                    }},
                    {"set_weight": 10},
                ],
            },
        }
    )  # fmt: skip


def poisson(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


class Traffic:
    """Counts since the shadow window began, growing minute by minute as a gateway's do."""

    def __init__(self, rng: random.Random, percent: float, win_rate: float) -> None:
        self.rng, self.percent, self.win_rate = rng, percent, win_rate
        self.base = [0, 0]  # requests, errors
        self.cand = [0, 0, 0, 0, 0]  # requests, errors, pairs, wins, ties

    def minute(self) -> None:
        rng = self.rng
        served = poisson(rng, PER_MINUTE)
        mirrored = binomial(rng, served, self.percent / 100)
        self.base[0] += served
        self.base[1] += binomial(rng, served, ERROR_RATE)
        failed = binomial(rng, mirrored, ERROR_RATE)
        ties_share = min(0.6, max(0.0, TIES + rng.gauss(0, TIE_DRIFT)))
        win_share = self.win_rate - ties_share / 2
        judged = mirrored - failed  # a failed shadow call has no answer to judge
        wins = binomial(rng, judged, win_share)
        ties = binomial(rng, judged - wins, ties_share / (1 - win_share))
        self.cand[0] += mirrored
        self.cand[1] += failed
        self.cand[2] += judged
        self.cand[3] += wins
        self.cand[4] += ties

    def observation(self, start: float, end: float) -> Observation:
        requests, errors, pairs, wins, ties = self.cand
        return Observation(
            start,
            end,
            {
                "base": VariantStats(requests=self.base[0], errors=self.base[1]),
                "cand": VariantStats(
                    requests=requests, errors=errors, pairs=pairs, pair_wins=wins, pair_ties=ties
                ),
            },
        )


def simulate(rollout: Rollout, rng: random.Random, win_rate: float) -> tuple[str, float, int]:
    """One shadow step on a simulated clock: ("passed" | "failed" | "undecided", minutes,
    pairs judged by then)."""
    spec = rollout.spec
    state, now, event = RolloutState(), 0.0, None
    traffic = Traffic(rng, spec.steps[0].shadow.percent, win_rate)  # type: ignore[union-attr]
    counted, verdict_reason = 0.0, ""
    while True:
        decision = tick(spec, state, now, event)
        state, action, event = decision.state, decision.action, None
        match action:
            case SetShadow():
                counted = now
                event = ShadowSet(at=now)
            case Wait(until=until):
                now = until if until is not None else now
            case Analyze(since=start, shadow=True):
                while counted < now:
                    traffic.minute()
                    counted += 60
                verdict, ledger = assess(
                    spec.steps[0].shadow.slos,  # type: ignore[union-attr]
                    spec.analysis,
                    traffic.observation(start, now),
                    state.shadow_ledger,
                    baseline="base",
                    canary="cand",
                )
                event = Analyzed(verdict, ledger)
            case EndShadow():
                event = ShadowEnded()
            case SetWeight():
                return "passed", now / 60, traffic.cand[2]
            case Rollback(reason=reason):
                verdict_reason = reason
                event = RolledBack()
            case Finish():
                outcome = "undecided" if "undecided" in verdict_reason else "failed"
                return outcome, now / 60, traffic.cand[2]


def measure(runs: int, seed: int) -> dict[str, Any]:
    report: dict[str, Any] = {
        "runs": runs,
        "monthly_queries": MONTHLY_QUERIES,
        "queries_per_minute": PER_MINUTE,
        "alpha": ALPHA,
        "margin": MARGIN,
        "max_minutes": MAX_MINUTES,
        "cells": [],
    }
    for percent in PERCENTS:
        rollout = runbook(percent)
        for name, (win_rate, right) in SCENARIOS.items():
            rng = random.Random(f"{seed}/{percent}/{name}")
            results = [simulate(rollout, rng, win_rate) for _ in range(runs)]
            failed = [r for r in results if r[0] == "failed"]
            undecided = sum(1 for r in results if r[0] == "undecided")
            passed = [r for r in results if r[0] == "passed"]
            decided = {"passed": passed, "failed": failed, None: []}[right]
            report["cells"].append(
                {
                    "percent": percent,
                    "scenario": name,
                    "win_rate": win_rate,
                    "failed": len(failed) / runs,
                    "failed_upper_95": clopper_pearson_upper(len(failed), runs),
                    "undecided": undecided / runs,
                    "passed": len(passed) / runs,
                    "median_minutes": statistics.median(r[1] for r in decided) if decided else None,
                    "median_pairs": statistics.median(r[2] for r in decided) if decided else None,
                }
            )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="simulated runs per cell")
    parser.add_argument("--seed", type=int, default=1)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    started = time.perf_counter()
    report = measure(args.runs, args.seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["seed"] = args.seed
    print(f"{args.runs} runs per cell, {PER_MINUTE:.0f} queries a minute, alpha {ALPHA}")
    print(
        f"{'shadow %':>8}  {'candidate':<14}{'stopped (SLO)':>14}{'95% upper':>10}"
        f"{'undecided':>10}{'passed':>8}{'median min':>11}{'median pairs':>13}"
    )
    for cell in report["cells"]:
        minutes = "-" if cell["median_minutes"] is None else f"{cell['median_minutes']:g}"
        pairs = "-" if cell["median_pairs"] is None else f"{cell['median_pairs']:g}"
        print(
            f"{cell['percent']:>8}  {cell['scenario']:<14}{cell['failed']:>14.2%}"
            f"{cell['failed_upper_95']:>10.2%}{cell['undecided']:>10.1%}{cell['passed']:>8.1%}"
            f"{minutes:>11}{pairs:>13}"
        )
    print(f"({report['seconds']} s)")
    record.write("shadow_step", report, args, before=before)


if __name__ == "__main__":
    main()
