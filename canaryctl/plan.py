"""`canaryctl plan`: a runbook's operating characteristic at a given traffic, before it runs.

For canaries equal to the baseline, worse by 1.5x, 2x and 4x, and at the runbook's own bounds,
the chance that the rollout promotes, rolls back or pauses for a human, and how long each step
takes to decide: by simulated rollouts through the controller's own tick and analysis
(canaryctl/simulation.py), so the plan cannot disagree with the controller's logic. A step whose
hold is too short for a canary equal to the baseline to be decided at that traffic is named, with
the hold that would be long enough.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canaryctl.controller.step import WeightItem, plan
from canaryctl.errors import InvalidInput
from canaryctl.runbook.rollout import Rollout, RolloutSpec
from canaryctl.simulation import (
    OUTCOMES,
    RunResult,
    Traffic,
    cost_per_query,
    holds,
    simulate,
    simulated_spec,
    summary,
)

__all__ = ["Case", "CaseResult", "HoldWarning", "Plan", "operating_characteristic"]

DECIDED_SHARE = 0.95
"""A hold is long enough when this share of canaries equal to the baseline pass by its end."""
PROBE_WAIT = 24 * 3600.0
"""How long the probe for a long-enough hold lets a step wait for its first passing analysis."""


@dataclass(frozen=True)
class Case:
    """One canary the plan simulates: `name` for JSON, `label` for people."""

    name: str
    label: str
    canary: Traffic


@dataclass(frozen=True)
class StepTime:
    """A weight step: how many rollouts reached it, and the seconds they took to decide it."""

    index: int
    weight: float
    hold: float | None
    reached: int
    seconds: dict[str, Any]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    runs: int
    counts: dict[str, int]
    asked: int
    seconds: dict[str, Any]
    steps: tuple[StepTime, ...]

    def share(self, outcome: str) -> float:
        return self.counts[outcome] / self.runs

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.case.name,
            "label": self.case.label,
            "canary": {"error_rate": self.case.canary.error_rate, "p95": self.case.canary.p95},
            "runs": self.runs,
            **{outcome: self.share(outcome) for outcome in OUTCOMES},
            "counts": self.counts,
            "asked_a_human": self.asked / self.runs,
            "seconds_to_decide": self.seconds,
            "steps": [
                {
                    "plan_index": s.index,
                    "weight": s.weight,
                    "hold_seconds": s.hold,
                    "reached": s.reached,
                    "seconds_to_decide": s.seconds,
                }
                for s in self.steps
            ],
        }


@dataclass(frozen=True)
class HoldWarning:
    """A weight step whose hold a canary equal to the baseline outlasts more than 5% of the time:
    `needed` is the hold that would be long enough (None: not within PROBE_WAIT)."""

    weight: float
    hold: float
    needed: float | None
    decided_in_hold: float

    def message(self, rps: float) -> str:
        head = (
            f"the hold at {self.weight:g}% ({_duration(self.hold)}) is too short to decide at "
            f"{rps:g} req/s: a canary equal to the baseline passes within it in "
            f"{self.decided_in_hold:.0%} of rollouts"
        )
        if self.needed is None:
            return (
                f"{head}, and more than {1 - DECIDED_SHARE:.0%} are still undecided after "
                f"{_duration(PROBE_WAIT)}: no hold is long enough at this traffic"
            )
        return (
            f"{head}; a hold of {_duration(self.needed)} would be long enough "
            f"({DECIDED_SHARE:.0%} decided)"
        )

    def to_dict(self, rps: float) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "hold_seconds": self.hold,
            "needed_seconds": self.needed,
            "decided_in_hold": self.decided_in_hold,
            "message": self.message(rps),
        }


@dataclass(frozen=True)
class Plan:
    runbook: str
    rps: float
    baseline: Traffic
    runs: int
    seed: int
    cases: tuple[CaseResult, ...]
    warnings: tuple[HoldWarning, ...]
    not_simulated: tuple[str, ...]
    elapsed: float = field(default=0.0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "rps": self.rps,
            "baseline": {"error_rate": self.baseline.error_rate, "p95": self.baseline.p95},
            "runs": self.runs,
            "seed": self.seed,
            "cases": [case.to_dict() for case in self.cases],
            "warnings": [warning.to_dict(self.rps) for warning in self.warnings],
            "not_simulated": list(self.not_simulated),
            "elapsed_seconds": self.elapsed,
        }

    def render(self) -> str:
        """The plan as a table for a terminal."""
        lines = [
            f"plan for {self.runbook} at {self.rps:g} req/s (baseline "
            f"{_pct(self.baseline.error_rate)} errors, p95 {self.baseline.p95:g}s): "
            f"{self.runs} simulated rollouts per canary, seed {self.seed}",
            "",
        ]
        steps = self.cases[0].steps if self.cases else ()
        head = ["canary", "promoted", "rolled back", "paused", "median s to decide"]
        head += [f"at {s.weight:g}%" for s in steps]
        rows = [head]
        for result in self.cases:
            row = [result.case.label]
            row += [_pct(result.share(outcome)) for outcome in OUTCOMES]
            row.append(_seconds(result.seconds["median"]))
            row += [_seconds(s.seconds["median"]) if s.reached else "—" for s in result.steps]
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        lines += [
            "",
            "at N%: median seconds from setting that weight to the step's end, among rollouts "
            "that reached it; paused: undecided until max_wait with no one to approve or abort",
        ]
        if self.not_simulated:
            lines.append(f"not simulated (left out): {', '.join(self.not_simulated)}")
        lines += [f"warning: {w.message(self.rps)}" for w in self.warnings]
        return "\n".join(lines)


def cases(spec: RolloutSpec, baseline: Traffic) -> tuple[Case, ...]:
    """Equal to the baseline; 1.5x, 2x, 4x its errors; 1.5x, 2x its latency (with a latency SLO);
    at the tightest error-rate and p95 bounds."""
    found = [Case("equal", "equal to the baseline", baseline)]
    for factor in (1.5, 2.0, 4.0):
        canary = Traffic(min(baseline.error_rate * factor, 1.0), baseline.p95, baseline.cost)
        found.append(
            Case(f"errors_x{factor:g}", f"{factor:g}x errors ({_pct(canary.error_rate)})", canary)
        )
    latency = [slo for slo in spec.slos if slo.metric == "latency_p95_seconds"]
    if latency:
        for factor in (1.5, 2.0):
            canary = Traffic(baseline.error_rate, baseline.p95 * factor, baseline.cost)
            found.append(Case(f"p95_x{factor:g}", f"{factor:g}x p95 ({canary.p95:g}s)", canary))
    rate = _tightest(spec, "error_rate", baseline.error_rate)
    if rate is not None:
        canary = Traffic(rate, baseline.p95, baseline.cost)
        found.append(Case("errors_at_bound", f"errors at the bound ({_pct(rate)})", canary))
    p95 = _tightest(spec, "latency_p95_seconds", baseline.p95)
    if p95 is not None:
        canary = Traffic(baseline.error_rate, p95, baseline.cost)
        found.append(Case("p95_at_bound", f"p95 at the bound ({p95:g}s)", canary))
    return tuple(found)


def _tightest(spec: RolloutSpec, metric: str, base: float) -> float | None:
    """The lowest maximum the runbook allows `metric`, absolute or relative to `base`."""
    bounds = []
    for slo in spec.slos:
        if slo.metric != metric:
            continue
        if slo.max is not None:
            bounds.append(slo.max)
        if slo.max_increase is not None:
            bounds.append(base + slo.max_increase)
        if slo.max_ratio is not None:
            bounds.append(base * slo.max_ratio)
    return min(bounds) if bounds else None


def operating_characteristic(
    rollout: Rollout,
    *,
    rps: float,
    error_rate: float = 0.005,
    p95: float = 1.0,
    runs: int = 30,
    seed: int = 1,
) -> Plan:
    """Simulate `runs` rollouts of `rollout` per canary at `rps` requests per second."""
    started = time.perf_counter()
    spec, not_simulated = simulated_spec(rollout.spec)
    if not spec.slos:
        raise InvalidInput(
            f"{rollout.metadata.name}: none of its SLOs ({', '.join(not_simulated)}) is on a "
            "metric the plan simulates (error rates, latency percentiles, cost per query)"
        )
    baseline = Traffic(error_rate, p95, cost_per_query(rollout.spec))
    rng = np.random.default_rng(seed)
    results = []
    equal: list[RunResult] = []
    for case in cases(spec, baseline):
        done = [simulate(spec, rng, rps, case.canary, baseline) for _ in range(runs)]
        if case.name == "equal":
            equal = done
        results.append(_result(spec, case, done))
    warnings = _hold_warnings(spec, rng, rps, baseline, equal, runs)
    return Plan(
        runbook=rollout.metadata.name,
        rps=rps,
        baseline=baseline,
        runs=runs,
        seed=seed,
        cases=tuple(results),
        warnings=warnings,
        not_simulated=not_simulated,
        elapsed=time.perf_counter() - started,
    )


def _result(spec: RolloutSpec, case: Case, done: list[RunResult]) -> CaseResult:
    items = plan(spec)
    held = holds(spec)
    steps = []
    for index, hold in held.items():
        item = items[index]
        assert isinstance(item, WeightItem)
        times = [r.step_seconds[index] for r in done if index in r.step_seconds]
        steps.append(StepTime(index, item.weight, hold, len(times), summary(times)))
    counts = {outcome: sum(r.outcome == outcome for r in done) for outcome in OUTCOMES}
    return CaseResult(
        case,
        len(done),
        counts,
        sum(r.asked for r in done),
        summary([r.seconds for r in done]),
        tuple(steps),
    )


def _hold_warnings(
    spec: RolloutSpec,
    rng: np.random.Generator,
    rps: float,
    baseline: Traffic,
    equal: list[RunResult],
    runs: int,
) -> tuple[HoldWarning, ...]:
    """Steps whose timed hold is too short for canaries equal to the baseline, with the hold
    that would be long enough: the 95th percentile of the first passing analysis, measured on
    rollouts whose undecided steps wait up to a day (so no step is cut short)."""
    items = plan(spec)
    short = {}
    for index, hold in holds(spec).items():
        if hold is None:
            continue
        reached = [r.first_pass[index] for r in equal if index in r.first_pass]
        decided = sum(1 for at in reached if at is not None and at <= hold)
        if reached and decided < DECIDED_SHARE * len(reached):
            short[index] = (hold, decided / len(reached))
    if not short:
        return ()
    patient = spec.model_copy(
        update={
            "analysis": spec.analysis.model_copy(
                update={"on_inconclusive": "pause", "max_wait": PROBE_WAIT}
            )
        }
    )
    probes = [simulate(patient, rng, rps, baseline, baseline) for _ in range(runs)]
    interval = spec.analysis.interval
    warnings = []
    for index, (hold, share) in short.items():
        firsts = sorted(
            math.inf if (at := r.first_pass.get(index)) is None else at
            for r in probes
            if index in r.first_pass
        )
        needed: float | None = None
        if firsts:
            at = firsts[min(len(firsts) - 1, math.ceil(DECIDED_SHARE * len(firsts)) - 1)]
            if math.isfinite(at):
                needed = math.ceil(at / interval) * interval
        if needed is not None and needed <= hold:
            continue  # the rollouts above fell short by chance: the probe finds the hold enough
        item = items[index]
        assert isinstance(item, WeightItem)
        warnings.append(HoldWarning(item.weight, hold, needed, share))
    return tuple(warnings)


def _pct(share: float) -> str:
    return f"{share * 100:.3g}%"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
