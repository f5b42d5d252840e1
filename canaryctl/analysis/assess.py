"""One entry point for the controller: the verdict by the runbook's method, and what to remember.

The threshold method judges each window on its own; the sequential method carries a ledger
from one analysis to the next (a plain JSON-able dict, kept in the controller's state), so the
controller stores it without knowing what is inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canaryctl.analysis.guard import LEDGER_KEY, guard_canary
from canaryctl.analysis.judge import judge
from canaryctl.analysis.sequential import judge_sequential
from canaryctl.analysis.verdict import Verdict
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
    the baseline is judged as the absolute bound it is (SloSpec.judged)."""
    slos = [slo.judged() for slo in slos]
    seen = ledger.get(LEDGER_KEY, {})
    ledger = {key: value for key, value in ledger.items() if key != LEDGER_KEY}
    verdict, ledger = _judge(slos, analysis, observation, ledger, baseline, canary, baseline_served)
    verdict, seen = guard_canary(verdict, observation, seen, canary=canary)
    return verdict, {**ledger, LEDGER_KEY: seen}


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
