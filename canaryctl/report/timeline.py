"""A finished rollout's story, read back from its journal: weight, error rate and p95 over time,
step boundaries, the rollback or promotion, and every analysis. Pure: records in, data out.

The journal is the only source, so a report can be drawn on any machine that has the state
database, long after the run; metric values are the canary's and baseline's as each analysis
judged them, so only metrics the runbook's SLOs name can appear. An absolute SLO's check
carries no baseline value (the baseline is not judged), so the baseline's is measured from the
counts the analysis journaled with it, by the same formula: the chart compares the two arms
whatever kind of bound the runbook set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from canaryctl.controller.store import EventRecord, RunRecord
from canaryctl.metrics.base import Observation
from canaryctl.metrics.measures import measure

__all__ = ["Analysis", "Marker", "Timeline", "timeline"]

Point = tuple[float, float]
"""(seconds since the run started, value)"""

_ENDINGS = {
    "rolling_back": "rollback",
    "rolled_back": "rolled back",
    "promoting": "promotion",
    "promoted": "promoted",
    "aborted": "aborted",
    "failed": "failed",
    "interrupted": "interrupted",
}


@dataclass(frozen=True)
class Marker:
    at: float
    label: str
    kind: str
    """`step`, or the phase that ends a run: rolling_back, rolled_back, promoting, promoted..."""


@dataclass(frozen=True)
class Analysis:
    at: float
    weight: float
    outcome: str
    reason: str
    checks: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Timeline:
    run_id: int
    name: str
    baseline: str
    canary: str
    phase: str
    outcome: str | None
    reason: str
    exit_code: int | None
    started_at: float
    ended_at: float | None
    duration: float
    weight: tuple[Point, ...]
    metrics: dict[str, dict[str, tuple[Point, ...]]] = field(default_factory=dict)
    """metric -> variant role (canary, baseline) -> points, for error_rate and p95 latency"""
    steps: tuple[Marker, ...] = ()
    shadows: tuple[tuple[float, float], ...] = ()
    """(start, end) of each shadow step: the candidate judged on mirrored traffic, at weight 0."""
    endings: tuple[Marker, ...] = ()
    analyses: tuple[Analysis, ...] = ()
    events: tuple[EventRecord, ...] = ()

    @property
    def last_analysis(self) -> Analysis | None:
        return self.analyses[-1] if self.analyses else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "baseline": self.baseline,
            "canary": self.canary,
            "phase": self.phase,
            "outcome": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_seconds": self.duration,
            "weight": [list(p) for p in self.weight],
            "metrics": {
                metric: {role: [list(p) for p in points] for role, points in roles.items()}
                for metric, roles in self.metrics.items()
            },
            "steps": [{"at": m.at, "label": m.label} for m in self.steps],
            "shadows": [list(span) for span in self.shadows],
            "endings": [{"at": m.at, "label": m.label, "kind": m.kind} for m in self.endings],
            "analyses": [
                {"at": a.at, "weight": a.weight, "outcome": a.outcome, "reason": a.reason,
                 "checks": list(a.checks)}
                for a in self.analyses
            ],
        }  # fmt: skip


CHARTED = ("error_rate", "latency_p95_seconds")


def _measured(metric: str, data: dict[str, Any], role: str) -> float | None:
    """`role`'s (baseline or canary) value of `metric` from the counts an analysis journaled;
    None where the record has no counts for it (older runs, a damaged record)."""
    variant = data.get(role)
    observation = data.get("observation")
    if not isinstance(variant, str) or not isinstance(observation, dict):
        return None
    try:
        stats = Observation.from_dict(observation).variants.get(variant)
    except (KeyError, TypeError, ValueError):
        return None
    return None if stats is None or stats.requests <= 0 else measure(metric, stats)


def timeline(record: RunRecord, events: Sequence[EventRecord]) -> Timeline:
    start = record.started_at
    flag = record.runbook.get("spec", {}).get("flag", {})
    last = max([record.ended_at or record.updated_at, *(e.ended_at or e.at for e in events)])

    weight: list[Point] = []
    changes = [e for e in events if e.type == "flag_changed" and e.result is not None]
    first_before = (changes[0].data.get("before") or {}).get("canary") if changes else None
    weight.append((0.0, float(first_before if first_before is not None else 0.0)))
    for change in changes:
        assert change.result is not None
        at = (change.ended_at or change.at) - start
        weight.append((at, weight[-1][1]))  # a step function: hold, then jump
        weight.append((at, float(change.result["after"]["canary"])))
    weight.append((last - start, weight[-1][1]))

    metrics: dict[str, dict[str, list[Point]]] = {
        m: {"canary": [], "baseline": []} for m in CHARTED
    }
    analyses: list[Analysis] = []
    for event in (e for e in events if e.type == "analysis"):
        data = event.data
        at = event.at - start
        analyses.append(
            Analysis(at, float(data.get("weight", 0)), data["outcome"], data.get("reason", ""),
                     tuple(data.get("checks", [])))
        )  # fmt: skip
        for metric in CHARTED:
            check = next((c for c in data.get("checks", []) if c["metric"] == metric), None)
            if check is None:
                continue
            if check.get("canary_value") is not None:
                metrics[metric]["canary"].append((at, check["canary_value"]))
            baseline_value = check.get("baseline_value")
            if baseline_value is None:
                baseline_value = _measured(metric, data, "baseline")
            if baseline_value is not None:
                metrics[metric]["baseline"].append((at, baseline_value))

    steps = tuple(
        Marker(e.at - start, e.data.get("describe", ""), "step")
        for e in events
        if e.type == "step_started"
    )
    shadows = tuple(
        (step.at, steps[i + 1].at if i + 1 < len(steps) else last - start)
        for i, step in enumerate(steps)
        if step.label.startswith("shadow")
    )
    endings = tuple(
        Marker(e.at - start, _ENDINGS[e.data["to"]], e.data["to"])
        for e in events
        if e.type == "phase" and e.data.get("to") in _ENDINGS
    )
    return Timeline(
        run_id=record.id,
        name=record.name,
        baseline=str(flag.get("baseline", "baseline")),
        canary=str(flag.get("canary", "canary")),
        phase=record.phase,
        outcome=record.outcome,
        reason=record.reason,
        exit_code=record.exit_code,
        started_at=start,
        ended_at=record.ended_at,
        duration=last - start,
        weight=tuple(weight),
        metrics={m: {r: tuple(p) for r, p in roles.items() if p} for m, roles in metrics.items()},
        steps=steps,
        shadows=shadows,
        endings=endings,
        analyses=tuple(analyses),
        events=tuple(events),
    )
