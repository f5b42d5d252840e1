"""Backtest on a past run: its journaled counts judged by another runbook's analysis. Pure.

Every analysis of a run journals the counts it judged (the window since its weight was set).
The replay keeps the run's steps, since counts exist only for the weights the run served and
while it served them, and takes the other runbook's SLOs and `analysis:` (thresholds, method,
alpha, limits, interval). Its interval must be a whole multiple of the run's, so each of its
analyses falls on one the run made: the replay judges the run's window as it stood then.

A replay that would have moved on sooner waits for the run's next weight (there are no counts
of it before); one that would have held a weight longer than the run did, or gone on after the
run ended, ends undecided at that point, saying so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canaryctl.backtest.replay import Replay, replay
from canaryctl.controller.store import EventRecord, RunRecord
from canaryctl.errors import InvalidInput
from canaryctl.metrics.base import Observation
from canaryctl.runbook.common import parse_duration
from canaryctl.runbook.rollout import RolloutSpec, Step
from canaryctl.times import when

__all__ = ["JournalHistory", "RunBacktest", "backtest_run"]

_SAME_START = 1.5
"""Seconds within which two analyses' windows start together: for runs journaled without the
window's `since`, a Prometheus window starts at `now - ceil(now - since)`, up to a second
before the weight was set."""


_SAME_MOMENT = 1e-3
"""Seconds of float noise between a replayed analysis' time and the run's window end."""


@dataclass(frozen=True)
class _Window:
    """One weight's window in the run: when it began and each analysis' counts in it."""

    weight: float
    start: float
    observations: tuple[Observation, ...]


class JournalHistory:
    """A run's analyses, answering the replay's questions; `interval` is the run's."""

    def __init__(self, windows: Sequence[_Window], interval: float) -> None:
        self._windows = tuple(windows)
        self._slack = interval / 2

    @classmethod
    def from_events(cls, events: Sequence[EventRecord], interval: float) -> JournalHistory:
        windows: list[_Window] = []
        for event in events:
            if event.type != "analysis":
                continue
            observation = Observation.from_dict(event.data["observation"])
            weight = float(event.data["weight"])
            # When the weight was set; a Prometheus window starts up to a second before.
            start = float(event.data.get("since", observation.start))
            last = windows[-1] if windows else None
            if last is None or last.weight != weight or abs(start - last.start) > _SAME_START:
                windows.append(_Window(weight, start, (observation,)))
            else:
                windows[-1] = _Window(weight, last.start, (*last.observations, observation))
        return cls(windows, interval)

    def weight_set(self, percent: float, now: float) -> float | None:
        """The run's window at `percent` that began at or after `now` (or within half an
        interval before it: the replay closed its last hold just after the run did)."""
        for window in self._windows:
            if window.weight == percent and window.start >= now - self._slack:
                return window.start
        return None

    def observe(self, since: float, now: float, percent: float) -> Observation | str:
        """The run's analysis due at `now`: the first it made then or later. A run that woke
        late made it late, and the replay takes it then (its clock follows the run's), never
        the one before again: that window was judged already, and judging it twice counted its
        verdict twice (a failure_limit reached on one failing window)."""
        window = next((w for w in self._windows if _holds(w, percent, since)), None)
        if window is None:
            return f"the run has no analysis at {percent:g}% from {when(since)}"
        due = next((o for o in window.observations if o.end >= now - _SAME_MOMENT), None)
        if due is None:
            last = window.observations[-1]
            return (
                f"the run stopped judging {percent:g}% at {when(last.end)}, "
                f"{now - last.end:.0f}s before this analysis would have"
            )
        return due


def _holds(window: _Window, percent: float, since: float) -> bool:
    """Is `window` the run's window at `percent` that the replay's window from `since` is?"""
    return window.weight == percent and abs(window.start - since) <= _SAME_START


@dataclass(frozen=True)
class RunBacktest:
    """What the run did beside what the replayed analysis would have done."""

    run_id: int
    name: str
    run_outcome: str | None
    run_reason: str
    run_decided_at: float | None
    run_analyses: int
    run_shadow_analyses: int
    run_first_failures: dict[str, float]
    started_at: float
    replay: Replay
    slos: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        first = {}
        for slo in self.slos:
            failed = self.replay.first_failure(slo)
            first[slo] = (
                None
                if failed is None
                else {
                    "at": failed.at,
                    "after_seconds": failed.at - self.started_at,
                    "analysis": self.replay.analyses.index(failed) + 1,
                    "weight": failed.weight,
                }
            )
        return {
            "run_id": self.run_id,
            "name": self.name,
            "run": {
                "outcome": self.run_outcome,
                "reason": self.run_reason,
                "decided_at": self.run_decided_at,
                "analyses": self.run_analyses,
                "shadow_analyses": self.run_shadow_analyses,
                "first_failures": self.run_first_failures,
            },
            "replay": self.replay.to_dict(),
            "first_failures": first,
        }


def backtest_run(
    spec: RolloutSpec, record: RunRecord, events: Sequence[EventRecord]
) -> RunBacktest:
    """Replay run `record` (its journal `events`) through `spec`'s SLOs and analysis;
    InvalidInput when the run kept no counts or the intervals do not line up."""
    judged = [e for e in events if e.type == "analysis"]
    # A shadow step's analyses judged mirrored traffic, which the replay does not replay: the
    # run's count, its windows and its first failures are its live analyses'.
    analyses = [e for e in judged if not e.data.get("shadow")]
    events = [e for e in events if not (e.type == "analysis" and e.data.get("shadow"))]
    if not analyses:
        raise InvalidInput(f"run {record.id} made no analysis: there is nothing to replay")
    if any("observation" not in e.data for e in analyses):
        raise InvalidInput(
            f"run {record.id} was journaled without its analyses' counts (by a canaryctl "
            "from before backtests): there is nothing to replay"
        )
    try:
        stored = record.runbook["spec"]
        run_interval = parse_duration(stored.get("analysis", {}).get("interval", 30.0))
        steps = [Step.model_validate(step) for step in stored["steps"]]
        history = JournalHistory.from_events(events, run_interval)
    except (KeyError, TypeError, ValueError) as exc:
        damage = f"{type(exc).__name__}: {exc}"
        raise InvalidInput(f"run {record.id}: a damaged journal ({damage})") from None
    multiple = spec.analysis.interval / run_interval
    if multiple < 1 - 1e-9 or not math.isclose(multiple, round(multiple), rel_tol=1e-6):
        raise InvalidInput(
            f"spec.analysis.interval: {spec.analysis.interval:g}s is not a whole multiple of "
            f"run {record.id}'s interval ({run_interval:g}s), so its analyses would not fall on "
            "the run's"
        )
    replayed_spec = spec.model_copy(update={"steps": steps})
    first = analyses[0].data
    end = record.ended_at if record.ended_at is not None else analyses[-1].at
    replayed = replay(
        replayed_spec,
        history,
        record.started_at,
        baseline=str(first["baseline"]),
        canary=str(first["canary"]),
        until=end + run_interval,
    )
    return RunBacktest(
        run_id=record.id,
        name=record.name,
        run_outcome=record.outcome,
        run_reason=record.reason,
        run_decided_at=_decided_at(events),
        run_analyses=len(analyses),
        run_shadow_analyses=len(judged) - len(analyses),
        run_first_failures=_first_failures(analyses),
        started_at=record.started_at,
        replay=replayed,
        slos=tuple(slo.describe() for slo in spec.slos),
    )


def _decided_at(events: Sequence[EventRecord]) -> float | None:
    """When the run decided to roll back or promote: its phase event."""
    for event in events:
        if event.type == "phase" and event.data.get("to") in ("rolling_back", "promoting"):
            return event.at
    return None


def _first_failures(analyses: Sequence[EventRecord]) -> dict[str, float]:
    first: dict[str, float] = {}
    for event in analyses:
        for check in event.data.get("checks", []):
            if check.get("outcome") == "fail":
                first.setdefault(str(check.get("slo")), event.at)
    return first
