"""Rollout runbooks that move each tier from today's split to the plan's, one safe move at a time.

A Rollout moves traffic between two variations of a flag, so a tier's move is one or two runs:

- the plan serves one model M: one run, today's main model -> M, promoted at 100%;
- the plan mixes two models H (the more accurate) and L: if today's main model is one of them,
  one run from it to the other, ending at the plan's share with `finish: keep`; otherwise first
  today's -> H (promoted: H alone meets the tier's p95 bound and is the more accurate), then
  H -> L ending at L's share (`finish: keep`).

Each run steps through the template's weights (cut at its final share), holding `pause` after
each and judging the template's SLOs (by default error_rate <= 0.02, the tier's p95 bound and
quality_score at least the accuracy the plan assumed of the canary: the floor holds only while
the canary answers as well as its eval said), so a move that breaks the tier's latency or the
plan's accuracy rolls itself back. The runs of one tier must run in
order; tiers are independent. Pure: documents are built and validated here, written by the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canaryctl.cost.optimize import TierPlan
from canaryctl.errors import InvalidInput
from canaryctl.runbook.common import API_VERSION
from canaryctl.runbook.optimize import RolloutTemplate
from canaryctl.runbook.rollout import Rollout

__all__ = ["Move", "missing_variations", "moves", "rollout_documents"]


@dataclass(frozen=True)
class Move:
    """One Rollout: `canary` ends at `percent` of the tier, `baseline` keeps the rest."""

    baseline: str
    canary: str
    percent: float

    @property
    def keeps(self) -> bool:
        return self.percent < 100


def _percent(share: float) -> float:
    return round(share * 100, 3)


def moves(
    today: Mapping[str, float], plan: TierPlan, accuracy: Mapping[str, float | None]
) -> list[Move]:
    """The runs that take a tier from `today` (model -> share) to `plan.split`."""
    target = plan.split
    if {m: round(s, 5) for m, s in today.items()} == {m: round(s, 5) for m, s in target.items()}:
        return []
    main = max(today, key=lambda m: today[m])
    if len(target) == 1:
        (model,) = target
        return [] if main == model and len(today) == 1 else [Move(main, model, 100.0)]
    high, low = sorted(target, key=lambda m: -(accuracy.get(m) or 0.0))[:2]
    if main in target:
        other = low if main == high else high
        return [Move(main, other, _percent(target[other]))]
    return [Move(main, high, 100.0), Move(high, low, _percent(target[low]))]


def _steps(template: RolloutTemplate, percent: float) -> list[dict[str, Any]]:
    weights = [w for w in template.weights if w < percent] + [percent]
    steps: list[dict[str, Any]] = []
    for weight in weights:
        steps += [{"set_weight": weight}, {"pause": f"{template.pause:g}s"}]
    return steps


def _scoped(
    template: RolloutTemplate, tier: str, rule: str | None, multi: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template's flag and metrics, narrowed to the tier: its LaunchDarkly rule (named by
    description) or its Split rule (`tier=NAME`, the attribute the gateway sends), and a `tier`
    label matcher for Prometheus."""
    flag, metrics = dict(template.flag), dict(template.metrics)
    if flag.get("provider") == "launchdarkly":
        flag["rule"] = rule or f"tier {tier}"
    elif flag.get("provider") == "split":
        flag["rule"] = rule or f"tier={tier}"
    elif multi:
        raise InvalidInput(
            "spec.rollout.flag: a file flag's rollout moves its default rule only, so it cannot "
            "move one tier of several; plan one tier, or use provider launchdarkly or split (a "
            "targeting rule per tier)"
        )
    if metrics.get("provider") == "prometheus":
        metrics["selector"] = {**(metrics.get("selector") or {}), "tier": tier}
    return flag, metrics


def _default_slos(plan: TierPlan, canary_accuracy: float | None) -> list[dict[str, Any]]:
    slos: list[dict[str, Any]] = [{"metric": "error_rate", "max": 0.02}]
    if plan.goal.max_p95_seconds is not None:
        slos.append({"metric": "latency_p95_seconds", "max": plan.goal.max_p95_seconds})
    if canary_accuracy is not None:
        # Rounded down: a floor of 0.84449 must not fail a canary the plan counted at 0.8445.
        floor = math.floor(canary_accuracy * 10_000) / 10_000
        slos.append({"metric": "quality_score", "min": floor})
    return slos


def missing_variations(
    documents: Sequence[Mapping[str, Any]], variations: Sequence[Any]
) -> list[str]:
    """The models the runbooks move traffic to or from that the flag cannot serve, in order."""
    have = {str(v) for v in variations}
    missing: list[str] = []
    for document in documents:
        flag = document["spec"]["flag"]
        for model in (flag["baseline"], flag["canary"]):
            if model not in have and model not in missing:
                missing.append(model)
    return missing


def rollout_documents(
    name: str,
    template: RolloutTemplate,
    plan: TierPlan,
    today: Mapping[str, float],
    accuracy: Mapping[str, float | None],
    *,
    rule: str | None = None,
    multi_tier: bool = True,
    slug: str | None = None,
) -> list[dict[str, Any]]:
    """The tier's Rollout documents in the order to run them, each validated by Rollout."""
    tier = plan.goal.name
    flag, metrics = _scoped(template, tier, rule, multi_tier)
    documents = []
    planned = moves(today, plan, accuracy)
    for i, move in enumerate(planned, start=1):
        spec: dict[str, Any] = {
            "flag": {**flag, "baseline": move.baseline, "canary": move.canary},
            "metrics": metrics,
            "slos": template.slos or _default_slos(plan, accuracy.get(move.canary)),
            "steps": _steps(template, move.percent),
        }
        if template.analysis is not None:
            spec["analysis"] = template.analysis
        if move.keeps:
            spec["finish"] = "keep"
        suffix = f"-{i}" if len(planned) > 1 else ""
        document = {
            "apiVersion": API_VERSION,
            "kind": "Rollout",
            "metadata": {"name": f"{name}-{slug or tier}{suffix}"[-63:].lstrip("-.")},
            "spec": spec,
        }
        Rollout.model_validate(document)  # a runbook canaryctl would refuse is a bug here
        documents.append(document)
    return documents
