"""Replay a rollout on recorded counts: the pure tick and `assess`, driven by a virtual clock.

Nothing here decides anything of its own: each action of the tick is answered from a History
(counts already read, from a run's journal or from Prometheus), so a backtest decides exactly
as `rollout run` would have on the same counts. Where a real run would write the flag, the
replay asks the history when that weight served traffic; where it would sleep, time jumps;
an approval pause is taken as approved at once, a chaos step as held (faults cannot be
replayed) and a shadow step as skipped (its counts are not the user-facing ones replayed). When the
history has no counts for what the tick asks, the replay ends undecided and says why, rather
than judging counts that were never there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from canaryctl.analysis import Outcome, assess
from canaryctl.controller.phases import Phase
from canaryctl.controller.step import (
    Analyze,
    Analyzed,
    Approved,
    ChaosPlayed,
    Finish,
    Promote,
    Promoted,
    Rollback,
    RolledBack,
    RolloutState,
    RunChaos,
    SetShadow,
    SetWeight,
    Wait,
    WeightSet,
    tick,
)
from canaryctl.metrics.base import Observation
from canaryctl.runbook.rollout import RolloutSpec

__all__ = ["History", "Replay", "ReplayedAnalysis", "replay"]

UNDECIDED = "undecided"


class History(Protocol):
    """Recorded counts, asked as the tick would ask a flag store and a metrics source."""

    def weight_set(self, percent: float, now: float) -> float | None:
        """When the window of counts at `percent`% begins for a weight set at `now`: `now`
        itself, when the recording moved there (later, or a moment before); None when the
        recording never served it then."""
        ...

    def observe(self, since: float, now: float, percent: float) -> Observation | str:
        """The counts from `since` to `now` at `percent`%, or why there are none."""
        ...


@dataclass(frozen=True)
class ReplayedAnalysis:
    """One analysis of the replay: when, at which weight, and what each check said."""

    at: float
    weight: float
    closing: bool
    outcome: str
    reason: str
    checks: tuple[tuple[str, str], ...]
    """(SLO as described, outcome) per check."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "weight": self.weight,
            "closing": self.closing,
            "outcome": self.outcome,
            "reason": self.reason,
            "checks": [{"slo": slo, "outcome": outcome} for slo, outcome in self.checks],
        }


@dataclass(frozen=True)
class Replay:
    """How one replayed rollout ended: `promoted`, `rolled_back` or `undecided`, when
    (`decided_at`, None if undecided) and after which analyses."""

    start: float
    outcome: str
    reason: str
    decided_at: float | None
    analyses: tuple[ReplayedAnalysis, ...]

    @property
    def rolled_back(self) -> bool:
        return self.outcome == "rolled_back"

    def first_failure(self, slo: str) -> ReplayedAnalysis | None:
        """The first analysis in which `slo` failed."""
        return next((a for a in self.analyses if (slo, Outcome.FAIL.value) in a.checks), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "outcome": self.outcome,
            "reason": self.reason,
            "decided_at": self.decided_at,
            "analyses": [a.to_dict() for a in self.analyses],
        }


def replay(
    spec: RolloutSpec,
    history: History,
    start: float,
    *,
    baseline: str,
    canary: str,
    until: float,
) -> Replay:
    """The rollout `spec` started at `start` on `history`, up to `until` at the latest;
    `baseline`/`canary` are the variants as the counts name them."""
    state, now, event = RolloutState(), start, None
    analyses: list[ReplayedAnalysis] = []

    def undecided(reason: str) -> Replay:
        return Replay(start, UNDECIDED, reason, None, tuple(analyses))

    while True:
        decision = tick(spec, state, now, event)
        state, event = decision.state, None
        match decision.action:
            case Finish(outcome=outcome, reason=reason):
                return Replay(start, outcome, reason, now, tuple(analyses))
            case SetWeight(percent=percent):
                at = history.weight_set(percent, now)
                if at is None:
                    return undecided(f"the recording never served the canary {percent:g}% then")
                now = max(now, at)
                event = WeightSet(at)  # the window the counts cover starts when it did
            case SetShadow():
                # Not replayed (no shadow counts are recorded): the next step begins at once.
                state = replace(state, item=state.item + 1, phase=Phase.PENDING)
            case Analyze(since=since, closing=closing):
                observed = history.observe(since, now, state.weight)
                if isinstance(observed, str):
                    return undecided(observed)
                # A recorded analysis made late moves the clock as it moved the run's: the
                # next is due an interval after it, as the run scheduled it.
                now = max(now, observed.end)
                event = _analyze(spec, state, observed, baseline, canary)
                verdict = event.verdict
                analyses.append(
                    ReplayedAnalysis(
                        at=now,
                        weight=state.weight,
                        closing=closing,
                        outcome=verdict.outcome.value,
                        reason=verdict.reason,
                        checks=tuple((c.slo, c.outcome.value) for c in verdict.checks),
                    )
                )
            case Wait(until=None):
                event = Approved("backtest")
            case Wait(until=wake):
                now = wake
            case RunChaos():
                event = ChaosPlayed(held=True, reason="not replayed", at=now)
            case Promote():
                event = Promoted()
            case Rollback():
                event = RolledBack()
        if now > until:
            return undecided(f"the recording ends first ({len(analyses)} analyses in)")


def _analyze(
    spec: RolloutSpec, state: RolloutState, observed: Observation, baseline: str, canary: str
) -> Analyzed:
    verdict, ledger = assess(
        spec.slos,
        spec.analysis,
        observed,
        state.ledger,
        baseline=baseline,
        canary=canary,
        baseline_served=state.weight < 100,
    )
    return Analyzed(verdict, ledger)
