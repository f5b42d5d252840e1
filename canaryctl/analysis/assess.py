"""One entry point for the controller: the verdict by the runbook's method, and what to remember.

The threshold method judges each window on its own; the sequential method carries a ledger
from one analysis to the next (a plain JSON-able dict, kept in the controller's state), so the
controller stores it without knowing what is inside. Whatever the method, the ledger also keeps
the baseline's last window, against which relative SLOs are judged where the baseline serves
nothing (last_window.py), and the built-in guard's memory (guard.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canaryctl.analysis import last_window
from canaryctl.analysis.guard import LEDGER_KEY, guard_canary
from canaryctl.analysis.judge import judge, judge_slo
from canaryctl.analysis.last_window import Kept
from canaryctl.analysis.sequential import judge_sequential, sequential_metric
from canaryctl.analysis.verdict import Check, Verdict
from canaryctl.metrics.base import Observation
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

__all__ = ["assess"]


def assess(
    slos: Sequence[SloSpec],
    analysis: AnalysisSpec,
    observation: Observation,
    ledger: dict[str, Any],
    *,
    baseline: str,
    canary: str,
    baseline_served: bool = True,
) -> tuple[Verdict, dict[str, Any]]:
    """The verdict on `observation` and the ledger for the next analysis ({} to begin a run).

    Whatever the method, the built-in check on the canary's own model (guard.py) is applied
    too; it keeps its memory in the ledger under its own key. A paired metric's bound against
    the baseline is judged as the absolute bound it is (SloSpec.judged). With
    `baseline_served=False` (the canary at 100%) a relative SLO is judged against the
    baseline's last window before (last_window.py), or says by name that it cannot be."""
    slos = [slo.judged() for slo in slos]
    seen = ledger.get(LEDGER_KEY, {})
    kept = Kept.from_dict(ledger.get(last_window.LEDGER_KEY))
    ours = (LEDGER_KEY, last_window.LEDGER_KEY)
    ledger = {key: value for key, value in ledger.items() if key not in ours}
    if baseline_served:
        verdict, ledger = _judge(slos, analysis, observation, ledger, baseline, canary, True)
        kept = last_window.keep(observation, baseline, kept)
    else:
        verdict, ledger = _judge_unserved(
            slos, analysis, observation, ledger, kept, baseline, canary
        )
    verdict, seen = guard_canary(verdict, observation, seen, canary=canary, baseline=baseline)
    remembered = {} if kept is None else {last_window.LEDGER_KEY: kept.to_dict()}
    return verdict, {**ledger, LEDGER_KEY: seen, **remembered}


def _judge_unserved(
    slos: Sequence[SloSpec],
    analysis: AnalysisSpec,
    observation: Observation,
    ledger: dict[str, Any],
    kept: Kept | None,
    baseline: str,
    canary: str,
) -> tuple[Verdict, dict[str, Any]]:
    """Every SLO judged where the baseline serves nothing: each relative one through the
    absolute bound the kept window gives it, in its place, so the sequential tests keep their
    keys; one without a kept value says so by name."""
    alpha = analysis.alpha / max(sum(sequential_metric(slo) for slo in slos), 1)
    judged: list[SloSpec] = []
    stand_ins: dict[int, tuple[SloSpec, float]] = {}
    unjudged: dict[int, Check] = {}
    for index, slo in enumerate(slos):
        found = None
        if slo.relative and kept is not None:
            found = last_window.stand_in(slo, kept, analysis.method, alpha)
        if found is not None:
            stand_ins[index] = found
            judged.append(found[0])
            continue
        judged.append(slo)  # absolute, or relative and skipped by the judges
        if slo.relative:
            why = (
                "the run kept no window of it from an earlier weight"
                if kept is None
                else f"its last window before this weight has no value of {slo.subject}"
            )
            unjudged[index] = last_window.cannot_judge(slo, observation, canary, why)
    verdict, ledger = _judge(judged, analysis, observation, ledger, baseline, canary, False)
    checks = list(last_window.merged(judged, verdict, unjudged))
    for index, (stand_in, value) in stand_ins.items():
        assert kept is not None
        window = judge_slo(
            stand_in, analysis.min_requests, observation, baseline=baseline, canary=canary
        )
        checks[index] = last_window.as_judged(slos[index], checks[index], kept, value, window)
    return Verdict.of(tuple(checks), observation.start, observation.end), ledger


def _judge(
    slos: Sequence[SloSpec],
    analysis: AnalysisSpec,
    observation: Observation,
    ledger: dict[str, Any],
    baseline: str,
    canary: str,
    baseline_served: bool,
) -> tuple[Verdict, dict[str, Any]]:
    if analysis.method == "sequential":
        return judge_sequential(
            slos,
            analysis,
            observation,
            ledger,
            baseline=baseline,
            canary=canary,
            baseline_served=baseline_served,
        )
    verdict = judge(
        slos,
        analysis,
        observation,
        baseline=baseline,
        canary=canary,
        baseline_served=baseline_served,
    )
    return verdict, ledger
