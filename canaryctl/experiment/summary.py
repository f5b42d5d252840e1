"""From an Experiment document and its journaled intervals to where it stands: pure functions
that `experiment run` calls each interval and `status` and `report` call on the journal, so all
three say the same thing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from canaryctl.analysis.experiment import (
    Decision,
    Design,
    Evidence,
    MetricRule,
    decide,
    effects,
    interval_floors,
    interval_values,
)
from canaryctl.metrics.base import Observation
from canaryctl.runbook.experiment import ExperimentSpec

__all__ = ["add_interval", "design_of", "standing", "summarize"]


def design_of(spec: ExperimentSpec, values: Sequence[str]) -> Design:
    """The analysis' design; `values` are what the flag serves for each of the document's
    variations, in order (a LaunchDarkly variation may be named by its name)."""
    by_name = dict(zip((v.value for v in spec.variations), values, strict=True))
    primary = MetricRule(spec.primary.subject, spec.primary.better_higher, spec.primary.metric)
    guards = tuple(
        MetricRule(g.subject, g.better_higher, g.metric, margin=g.margin) for g in spec.guards
    )
    return Design(
        variations=tuple(values),
        control=by_name[spec.control],
        primary=primary,
        guards=guards,
        tiers=tuple(spec.tiers),
        alpha=spec.alpha,
        min_samples=float(spec.min_samples),
    )


def add_interval(design: Design, evidence: Evidence, data: Mapping[str, Any]) -> Evidence:
    """One journaled interval ({"all": Observation.to_dict(), "tiers": {tier: ...}}) added."""
    observations: dict[str | None, Observation] = {None: Observation.from_dict(data["all"])}
    for tier, counts in (data.get("tiers") or {}).items():
        observations[tier] = Observation.from_dict(counts)
    values = {scope: interval_values(design, o) for scope, o in observations.items()}
    floors = {scope: interval_floors(design, o) for scope, o in observations.items()}
    overall = values.pop(None)
    return evidence.observe(design, overall, values, floors)


def standing(design: Design, intervals: Iterable[Mapping[str, Any]]) -> tuple[Evidence, Decision]:
    evidence = Evidence()
    for data in intervals:
        evidence = add_interval(design, evidence, data)
    return evidence, decide(design, evidence)


def _requests(intervals: Sequence[Mapping[str, Any]], design: Design) -> dict[str, float]:
    totals = dict.fromkeys(design.variations, 0.0)
    for data in intervals:
        for variation, stats in data["all"]["variants"].items():
            if variation in totals:
                totals[variation] += float(stats.get("requests", 0.0))
    return totals


def summarize(design: Design, intervals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Where the experiment stands, as JSON: the decision, each variation's mean level and
    requests, and every effect (variation - control) with its interval, overall and per tier."""
    evidence, decision = standing(design, intervals)
    levels = {
        rule.name: {
            tier or "all": {v: evidence.level(rule.name, tier, v) for v in design.variations}
            for tier in (None, *design.tiers)
        }
        for rule in design.metrics
    }
    return {
        "variations": list(design.variations),
        "control": design.control,
        "primary": design.primary.name,
        "metrics": [
            {
                "name": r.name,
                "higher_is_better": r.higher_is_better,
                "margin": r.margin,
                "role": "primary" if r is design.primary else "guard",
            }
            for r in design.metrics
        ],
        "tiers": list(design.tiers),
        "alpha": design.alpha,
        "alpha_each": design.alpha_each,
        "intervals": evidence.intervals,
        "requests": _requests(intervals, design),
        "levels": levels,
        "effects": [e.to_dict() for e in effects(design, evidence)],
        **decision.to_dict(),
    }
