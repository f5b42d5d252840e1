"""A chaos run's story, read back from its journal (`chaos run --journal`, or a drill's under
.canaryctl/drills/journals/): each hypothesis check's values against its bounds over time, the
before/during/after phases, when faults went in and came out, and the outcome. Pure: JSON in,
data out.

The bounds come from the scenario the journal embeds, so the page shows what the run was judged
against even if the scenario file changed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaryctl.runbook.scenario import ChaosScenario, FaultSpec

__all__ = ["ChaosStory", "CheckSeries", "Fault", "Judged", "chaos_story"]


@dataclass(frozen=True)
class Judged:
    """One check's value in one judgement; `at` in seconds since the run started."""

    at: float
    phase: str
    value: float | None
    outcome: str


@dataclass(frozen=True)
class CheckSeries:
    check: str
    metric: str
    min: float | None
    max: float | None
    points: tuple[Judged, ...]


@dataclass(frozen=True)
class Fault:
    id: str | None
    """None when the run died before the proxy answered."""
    describe: str
    ttl: float
    injected_at: float
    removed_at: float | None
    removed: bool | None
    """True removed, False removal failed (the TTL ended it), None never attempted."""


@dataclass(frozen=True)
class ChaosStory:
    name: str
    status: str
    outcome: str | None
    reason: str
    exit_code: int | None
    started_at: float
    ended_at: float | None
    duration: float
    phases: tuple[tuple[str, float, float], ...]
    """(phase, start, end) in seconds since the start: the spans the chart shades."""
    faults: tuple[Fault, ...]
    series: tuple[CheckSeries, ...]
    judgements: tuple[dict[str, Any], ...]
    """Every check record as journaled, `at` made relative."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "chaos",
            "name": self.name,
            "status": self.status,
            "outcome": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_seconds": self.duration,
            "phases": [{"phase": p, "start": s, "end": e} for p, s, e in self.phases],
            "faults": [vars(f) for f in self.faults],
            "checks": [
                {
                    "check": s.check,
                    "metric": s.metric,
                    "min": s.min,
                    "max": s.max,
                    "points": [vars(p) for p in s.points],
                }
                for s in self.series
            ],
        }


def _phases(
    injections: list[dict[str, Any]], removals: list[dict[str, Any]], end: float
) -> tuple[tuple[str, float, float], ...]:
    if not injections:
        return (("before", 0.0, end),)
    injected = injections[0]["at"]
    if not removals:
        return (("before", 0.0, injected), ("during", injected, end))
    removed = max(r["ended_at"] or r["at"] for r in removals)
    return (("before", 0.0, injected), ("during", injected, removed), ("after", removed, end))


def chaos_story(journal: dict[str, Any], scenario: ChaosScenario) -> ChaosStory:
    """`scenario` is the journal's own, already validated (see report.source)."""
    start = journal["started_at"]
    records = journal["checks"]
    last = max([start, *(r["at"] for r in records), *(i["at"] for i in journal["injections"])])
    end = (journal.get("ended_at") or last) - start

    def rel(epoch: float | None) -> float | None:
        return None if epoch is None else epoch - start

    removals = {r["id"]: r for r in journal["removals"]}
    faults = []
    for injection in journal["injections"]:
        spec = FaultSpec.model_validate(injection["fault"])
        fault_id = (injection["result"] or {}).get("id")
        removal = removals.get(fault_id)
        result = (removal or {}).get("result") or {}
        faults.append(
            Fault(
                id=fault_id,
                describe=spec.describe(),
                ttl=spec.ttl,
                injected_at=injection["at"] - start,
                removed_at=None if removal is None else rel(removal["ended_at"] or removal["at"]),
                removed=None if removal is None else result.get("removed"),
            )
        )
    series = []
    for check in scenario.spec.hypothesis.checks:
        name = check.describe()
        points = tuple(
            Judged(r["at"] - start, r["phase"], c["value"], c["outcome"])
            for r in records
            for c in r["checks"]
            if c["check"] == name
        )
        series.append(CheckSeries(name, check.metric, check.min, check.max, points))
    judgements = tuple({**r, "at": r["at"] - start} for r in records)
    relative = [{**r, "at": r["at"] - start} for r in journal["removals"]]
    for r, original in zip(relative, journal["removals"], strict=True):
        r["ended_at"] = rel(original["ended_at"])
    injections = [{**i, "at": i["at"] - start} for i in journal["injections"]]
    return ChaosStory(
        name=journal["name"],
        status=journal["status"],
        outcome=journal["outcome"],
        reason=journal["reason"],
        exit_code=journal["exit_code"],
        started_at=start,
        ended_at=journal.get("ended_at"),
        duration=end,
        phases=_phases(injections, relative, end),
        faults=tuple(faults),
        series=tuple(series),
        judgements=judgements,
    )
