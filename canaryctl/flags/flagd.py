"""A flag in a flagd flag-definition file: what any OpenFeature app on a flagd provider reads.

flagd (the CNCF flag daemon) and the in-process flagd providers of the OpenFeature SDKs (Go,
Java, JavaScript, Python, .NET...) watch a JSON file of flag definitions and reload it whole
when it changes, so moving traffic is rewriting one flag's `targeting`. The file looks like::

    {"$schema": "https://flagd.dev/schema/v0/flags.json",
     "flags": {"support-bot-model": {
         "state": "ENABLED",
         "variants": {"turbo": "gpt-4-turbo", "mini": "gpt-4o-mini"},
         "defaultVariant": "turbo",
         "targeting": {"fractional": [["mini", 30], ["turbo", 70]]},
         "metadata": {"canaryctlVersion": 4}}}}

A split is one `fractional` operation in the flag's default rule: the whole targeting, or, when
the targeting is a chain of `if` rules (free tier to one model, a team to another), the last
`else`, which serves whoever no condition catches, as LaunchDarkly's fallthrough does. The
conditions and what they serve are never touched. flagd hashes the
flag key with the evaluation context's `targetingKey` (murmur3 to a 32-bit bucket) and walks the
listed variants in order, serving the first whose running total of weight passes the bucket;
weights are relative integers. canaryctl lists the canary first, so its share is always the
lowest buckets and a user served the canary at 5% keeps it at 25%. The weights sum to 100 when
every percent is whole (what any flagd release reads) and to 100000 otherwise. A `fractional`
whose first argument is a bucketing expression (not a variant) keeps it. A request without a
targetingKey gets `defaultVariant`, which a rollout leaves alone: the baseline, as a rule.

flagd's flags have no version, and a flag entry with a member flagd does not know is refused by
its providers, so canaryctl keeps its version in the flag's own `metadata` (`canaryctlVersion`;
a flag without one is at version 0). A default rule canaryctl cannot read (a condition, a
`$ref`) is left to the person who wrote it: the store refuses such a flag instead of replacing
the rule.

Variants are named by their key (flagd's vocabulary) or by the value they serve, which the
gateway labels its metrics with; the locked, versioned, claimed write of the entry, its exact
restore and the refusal of a hand edit are flags/jsonfile.py's, the same as the LaunchDarkly
file store's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from canaryctl.errors import FlagMismatch
from canaryctl.flags.base import FlagSnapshot, integer_weights
from canaryctl.flags.jsonfile import JsonFlagFile, find_flag, read_exact, with_nested_value

__all__ = [
    "SCHEMA",
    "VERSION_KEY",
    "FlagdFlagStore",
    "default_rule_kind",
    "fractional_weights",
    "read_flag",
]

SCHEMA = "https://flagd.dev/schema/v0/flags.json"
"""The `$schema` of flagd's flag definitions."""

VERSION_KEY = "canaryctlVersion"
"""The member of a flag's `metadata` that holds canaryctl's version of it."""


class _Flag(BaseModel):
    """The members flagd's providers accept in a flag entry, as far as canaryctl reads them."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["ENABLED", "DISABLED"]
    variants: dict[str, Any] = Field(min_length=1)
    defaultVariant: StrictStr | StrictBool | None = None
    targeting: dict[str, Any] | None = None
    metadata: dict[str, StrictStr | StrictBool | int | float] | None = None
    source: StrictStr | None = None
    selector: StrictStr | None = None


def _parse(path: Path, text: str, key: str) -> dict[str, Any]:
    """The flag `key` in a flag-definition file's text, or FlagMismatch naming the field."""
    _, flag = find_flag(path, text, key, "flagd's flag definitions in JSON", lambda doc: None)
    try:
        _Flag.model_validate(flag)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"])
        raise FlagMismatch(f"{path}: flags.{key}.{where}: {error['msg']}") from None
    version = (flag.get("metadata") or {}).get(VERSION_KEY, 0)
    if type(version) is not int or version < 0:
        raise FlagMismatch(
            f"{path}: flags.{key}.metadata.{VERSION_KEY}: must be a whole number >= 0 "
            f"(canaryctl's version of the flag), not {json.dumps(version)}"
        )
    return flag


def read_flag(path: str | Path, key: str) -> dict[str, Any]:
    """The flag `key` in a flag-definition file, for anything that only looks (`flags show`)."""
    path = Path(path)
    return _parse(path, read_exact(path), key)


def _version(flag: dict[str, Any]) -> int:
    return int((flag.get("metadata") or {}).get(VERSION_KEY, 0))


def default_rule_kind(flag: dict[str, Any]) -> tuple[int, str]:
    """How many `if` conditions are tried before the default rule, and what that rule is:
    `fractional` (a split), `variant` (one variant) or `defaultVariant` (no rule)."""
    depth, rule = _default_rule(flag.get("targeting") or {})
    if isinstance(rule, str):
        return depth, "variant"
    if isinstance(rule, dict) and "fractional" in rule:
        return depth, "fractional"
    return depth, "defaultVariant"


def _default_rule(targeting: dict[str, Any]) -> tuple[int, Any]:
    """The rule that serves whoever no `if` condition catches, and how many `if`s deep its
    `else` lies (0: the whole targeting). flagd's `if` takes exactly a condition, a then and an
    else, and chains nest in the else."""
    depth, rule = 0, targeting
    while isinstance(rule, dict) and list(rule) == ["if"]:
        branches = rule["if"]
        if not isinstance(branches, list) or len(branches) != 3:
            return depth, rule  # refused by the reader
        depth, rule = depth + 1, branches[2]
    return depth, rule


def _in_default_rule(targeting: dict[str, Any], depth: int, rule: Any) -> dict[str, Any]:
    """`targeting` with the rule `depth` elses deep replaced by `rule`."""
    if depth == 0:
        return rule
    moved = json.loads(json.dumps(targeting))  # a copy: the flag read stays as read
    node = moved
    for _ in range(depth - 1):
        node = node["if"][2]
    node["if"][2] = rule
    return moved


def fractional_weights(path: object, key: str, flag: dict[str, Any]) -> dict[str, float]:
    """Percent of the default rule's traffic per variant key: its `fractional` split, the one
    variant it names, or (empty, or a null else) `defaultVariant`. FlagMismatch for a rule
    canaryctl does not move."""
    targeting = flag.get("targeting") or {}
    depth, rule = _default_rule(targeting)
    if rule is None or (rule == {} and depth == 0):
        default = flag.get("defaultVariant")
        if default is None:
            return {}
        # flagd reads a boolean defaultVariant as the variant key "true" or "false".
        return {str(default).lower() if isinstance(default, bool) else default: 100.0}
    where = f"{path}: flags.{key}.targeting" + ".if[2]" * depth
    if isinstance(rule, str):
        if rule not in flag["variants"]:
            raise FlagMismatch(f"{where}: no variant '{rule}'")
        return {rule: 100.0}
    args = (
        rule.get("fractional") if isinstance(rule, dict) and list(rule) == ["fractional"] else None
    )
    if not isinstance(args, list):
        raise FlagMismatch(
            f"{where} is a rule canaryctl does not move: the default rule (the targeting, or "
            "the last else of its `if` chain) must be a single 'fractional' split, a variant, "
            "null or empty"
        )
    buckets = args[1:] if args and not isinstance(args[0], list) else args
    weights: dict[str, int] = {}
    for index, bucket in enumerate(buckets):
        shaped = isinstance(bucket, list) and 1 <= len(bucket) <= 2 and isinstance(bucket[0], str)
        weight = bucket[1] if shaped and len(bucket) == 2 else 1
        if not shaped or type(weight) is not int:
            raise FlagMismatch(
                f"{where}.fractional[{index}]: must be [variant, weight] with a whole weight, "
                f"not {json.dumps(bucket)}"
            )
        if bucket[0] not in flag["variants"]:
            raise FlagMismatch(
                f"{where}.fractional[{index}]: no variant '{bucket[0]}' "
                f"(variants: {', '.join(flag['variants'])})"
            )
        weights[bucket[0]] = weights.get(bucket[0], 0) + weight
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise FlagMismatch(f"{where}.fractional: weights must be >= 0 and not all 0")
    return {variant: w * 100.0 / total for variant, w in weights.items()}


def _scale(percents: Mapping[str, float]) -> int:
    """100 when every percent is whole (readable by flagd releases that wanted weights summing
    to 100), else 100000: a thousandth of a percent, like LaunchDarkly's."""
    return 100 if all(float(p).is_integer() for p in percents.values()) else 100_000


class FlagdFlagStore(JsonFlagFile):
    """One flag in a flagd flag-definition file; variants named by key or by served value."""

    def __init__(self, path: str | Path, key: str, baseline: str, canary: str) -> None:
        super().__init__(path, key)
        self.baseline, self.canary = baseline, canary

    def _parse(self, text: str) -> dict[str, Any]:
        return _parse(self.path, text, self.key)

    def _version(self, flag: dict[str, Any]) -> int:
        return _version(flag)

    def _stamp(self, entry: str, version: int) -> str:
        return with_nested_value(entry, "metadata", VERSION_KEY, version)

    def _check_live(self, flag: dict[str, Any]) -> None:
        self._sides(flag)
        if flag["state"] != "ENABLED":
            raise FlagMismatch(
                f"{self.path}: flag '{self.key}' is DISABLED, so every evaluation gets the "
                "caller's default and moving its split would change nothing; enable it first"
            )
        fractional_weights(self.path, self.key, flag)

    def _sides(self, flag: dict[str, Any]) -> tuple[str, str]:
        baseline, canary = self._name_of(flag, self.baseline), self._name_of(flag, self.canary)
        if baseline == canary:  # one named by key, the other by the value that key serves
            raise FlagMismatch(
                f"{self.path}: flag '{self.key}': baseline '{self.baseline}' and canary "
                f"'{self.canary}' both name variant '{baseline}'"
            )
        return baseline, canary

    def _shares(self, flag: dict[str, Any]) -> dict[str, float]:
        return fractional_weights(self.path, self.key, flag)

    def _value(self, flag: dict[str, Any], side: str) -> str:
        return str(flag["variants"][side])

    def _canary_at(
        self, flag: dict[str, Any], baseline: str, canary: str, percent: float
    ) -> dict[str, Any]:
        return self._fractional(flag, {canary: percent, baseline: 100.0 - percent})

    def _everyone(self, flag: dict[str, Any], side: str) -> dict[str, Any]:
        targeting = flag.get("targeting") or {}
        depth, _ = _default_rule(targeting)
        if depth == 0:
            return {"defaultVariant": side, "targeting": {}}
        return {"targeting": _in_default_rule(targeting, depth, side)}

    def values(self, snapshot: FlagSnapshot, variations: Sequence[str]) -> tuple[str, ...]:
        flag = self._flag_of(snapshot)
        return tuple(str(flag["variants"][self._name_of(flag, v)]) for v in variations)

    def weights(self, snapshot: FlagSnapshot) -> dict[str, float]:
        flag = self._flag_of(snapshot)
        served = fractional_weights(self.path, self.key, flag)
        return {self._value(flag, name): w for name, w in served.items()}

    def set_split(
        self, weights: Mapping[str, float], *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        def change(flag: dict[str, Any]) -> dict[str, Any]:
            named = {self._name_of(flag, value): w for value, w in weights.items()}
            served = [name for name, w in named.items() if w > 0]
            if len(served) == 1:
                return self._everyone(flag, served[0])
            return self._fractional(flag, named)

        return self._write(expect_version, comment, change)

    def _fractional(self, flag: dict[str, Any], percents: Mapping[str, float]) -> dict[str, Any]:
        """The targeting whose default rule serves these percents per variant key, in the order
        given; a bucketing expression the rule's split already had is kept."""
        try:
            integer = integer_weights(percents, _scale(percents))
        except ValueError as exc:
            raise FlagMismatch(f"{self.path}: flag '{self.key}': {exc}") from None
        targeting = flag.get("targeting") or {}
        depth, rule = _default_rule(targeting)
        previous = (rule.get("fractional") if isinstance(rule, dict) else None) or []
        bucket_by = previous[:1] if previous and not isinstance(previous[0], list) else []
        split = [[name, weight] for name, weight in integer.items()]
        return {"targeting": _in_default_rule(targeting, depth, {"fractional": bucket_by + split})}

    def _name_of(self, flag: dict[str, Any], wanted: str) -> str:
        """The variant key `wanted` names: a key, or the value exactly one variant serves."""
        variants: dict[str, Any] = flag["variants"]
        if wanted in variants:
            return wanted
        serving = [name for name, value in variants.items() if value == wanted]
        if len(serving) == 1:
            return serving[0]
        known = ", ".join(f"{name} ({json.dumps(value)})" for name, value in variants.items())
        why = "several variants serve it" if serving else "no variant has that key or value"
        raise FlagMismatch(
            f"{self.path}: flag '{self.key}' has no variant '{wanted}': {why} (variants: {known})"
        )
