"""Per-tier splits in a flag of the LaunchDarkly SDK's format: read today's, write a plan's. Pure.

A tier is served by a targeting rule whose one clause is `tier in [NAME]` (the gateway puts the
requester's tier in the flag's context); a tier without such a rule gets the default rule. A
split is a rollout over the flag's variations. Writing a whole plan in one go is for labs and
tests, where no traffic matters; production moves each tier with the Rollout runbooks
(`canaryctl cost optimize --runbooks DIR`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from canaryctl.flags.file import WEIGHT_SCALE

__all__ = ["rule_id", "tier_splits", "with_plan"]


def rule_id(tier: str) -> str:
    return f"tier-{tier}"


def _tier_of(rule: Mapping[str, Any]) -> str | None:
    clauses = rule.get("clauses") or []
    if len(clauses) != 1 or not isinstance(clauses[0], dict):
        return None
    clause = clauses[0]
    values = clause.get("values") or []
    if clause.get("attribute") != "tier" or clause.get("op") != "in" or clause.get("negate"):
        return None
    return str(values[0]) if len(values) == 1 else None


def _split(served: Mapping[str, Any], variations: list[Any]) -> dict[str, float]:
    if "variation" in served:
        return {str(variations[int(served["variation"])]): 1.0}
    split: dict[str, float] = {}
    for entry in (served.get("rollout") or {}).get("variations", []):
        name = str(variations[int(entry["variation"])])
        split[name] = split.get(name, 0.0) + entry.get("weight", 0) / WEIGHT_SCALE
    return {name: share for name, share in split.items() if share > 0}


def tier_splits(flag: Mapping[str, Any], tiers: Iterable[str]) -> dict[str, dict[str, float]]:
    """Model -> share for each tier: its `tier in [..]` rule's, else the default rule's."""
    variations = list(flag.get("variations") or [])
    default = _split(flag.get("fallthrough") or {}, variations)
    by_rule = {
        tier: _split(rule, variations)
        for rule in flag.get("rules") or []
        if isinstance(rule, dict) and (tier := _tier_of(rule)) is not None
    }
    return {tier: by_rule.get(tier, default) for tier in tiers}


def _rollout(split: Mapping[str, float], variations: list[Any]) -> dict[str, Any]:
    names = list(split)
    weights = [round(split[n] * WEIGHT_SCALE) for n in names]
    weights[0] += WEIGHT_SCALE - sum(weights)  # rounding lands on the largest share
    entries = [
        {"variation": variations.index(n), "weight": w} for n, w in zip(names, weights, strict=True)
    ]
    return {"rollout": {"variations": entries, "bucketBy": "key"}}


def with_plan(flag: Mapping[str, Any], plan: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """A copy of `flag` serving each tier of `plan` its split through a rule of its own (other
    rules and the default rule kept); models missing from the variations are appended, so
    existing indices keep their meaning. The version goes up by one."""
    variations = list(flag.get("variations") or [])
    for split in plan.values():
        variations.extend(n for n in split if n not in variations)
    kept = [
        rule
        for rule in flag.get("rules") or []
        if not (isinstance(rule, dict) and _tier_of(rule) in plan)
    ]
    rules = [
        {
            "id": rule_id(tier),
            "description": f"tier {tier}",
            "clauses": [{"contextKind": "user", "attribute": "tier", "op": "in", "values": [tier]}],
            **_rollout(dict(sorted(split.items(), key=lambda kv: -kv[1])), variations),
            "trackEvents": False,
        }
        for tier, split in plan.items()
    ]
    return {
        **flag,
        "variations": variations,
        "rules": [*rules, *kept],
        "version": int(flag.get("version", 1)) + 1,
    }
