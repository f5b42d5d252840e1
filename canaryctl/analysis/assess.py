"""One entry point for the controller: the verdict by the runbook's method, and what to remember.

The threshold method judges each window on its own; the sequential method carries a ledger
from one analysis to the next (a plain JSON-able dict, kept in the controller's state), so the
controller stores it without knowing what is inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    """The verdict on `observation` and the ledger for the next analysis ({} to begin a run)."""
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
