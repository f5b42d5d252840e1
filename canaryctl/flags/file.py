"""A flag kept in a file in the LaunchDarkly SDK's file-data-source format: the embedded default.

The gateway's SDK watches the file (`Files.new_data_source(paths=[...], auto_update=True)`) and
reloads it whole on every change, so moving traffic is rewriting one flag's `fallthrough` (the
default rule). The file looks like::

    {"flags": {"support-bot-model": {"key": "support-bot-model", "version": 3, "on": true,
               "variations": ["gpt-4-turbo", "gpt-4o-mini"], "fallthrough": {"variation": 0},
               "offVariation": 0, "salt": "...", "targets": [], "rules": [], ...}},
     "segments": {}}

Only the JSON form is read and written: the SDK also accepts YAML, but rewriting YAML would drop
its comments and layout.

A write changes this flag's `fallthrough` (and `version`) alone; the locked, versioned,
claimed read-modify-write that every JSON flag file gets, and how a restore and a hand edit are
handled, is flags/jsonfile.py's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from canaryctl.errors import FlagMismatch
from canaryctl.flags.base import FlagSnapshot, integer_weights
from canaryctl.flags.jsonfile import (
    JsonFlagFile,
    entry_span,
    find_flag,
    parse_entry,
    read_exact,
    with_values,
)
from canaryctl.flags.shape import check_flag_shape

__all__ = ["WEIGHT_SCALE", "FileFlagStore", "default_rule_weights", "read_flag"]

WEIGHT_SCALE = 100_000
"""LaunchDarkly rollout weights are in thousandths of a percent: 100000 is everyone."""


def _parse(path: Path, text: str, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole document and the flag `key` in it, or FlagMismatch saying what is missing."""

    def fixed_value(doc: Any) -> str | None:
        if isinstance(doc, dict) and key in (doc.get("flagValues") or {}):
            return (
                f"flag '{key}' is a fixed value under 'flagValues'; a rollout needs the full "
                "flag (variations, fallthrough) under 'flags'"
            )
        return None

    form = "the JSON form of the LaunchDarkly file data source"
    doc, flag = find_flag(path, text, key, form, fixed_value)
    check_flag_shape(path, key, flag)
    return doc, flag


def read_flag(path: str | Path, key: str) -> tuple[str, dict[str, Any]]:
    """The file's exact text and the flag `key` in it, for anything that only looks."""
    path = Path(path)
    text = read_exact(path)
    return text, _parse(path, text, key)[1]


def _version(flag: dict[str, Any]) -> int:
    # The SDK treats a flag without a version as version 1 (_sanitize_json_item); so do we.
    return int(flag.get("version", 1))


def default_rule_weights(flag: dict[str, Any]) -> dict[int, float]:
    """Percent of default-rule (fallthrough) traffic per variation index; empty if malformed."""
    fallthrough = flag.get("fallthrough") or {}
    if "variation" in fallthrough:
        return {int(fallthrough["variation"]): 100.0}
    weights: dict[int, float] = {}
    for entry in (fallthrough.get("rollout") or {}).get("variations", []):
        index = int(entry["variation"])
        weights[index] = weights.get(index, 0.0) + entry.get("weight", 0) * 100.0 / WEIGHT_SCALE
    return weights


class FileFlagStore(JsonFlagFile):
    """One flag in a LaunchDarkly file-data-source JSON file; variations are picked by value.

    The SDK's flag format has no variation names (those live only in LaunchDarkly's REST
    representation), so a value maps to its index in `variations` and nothing else can.
    """

    def __init__(self, path: str | Path, key: str, baseline: str, canary: str) -> None:
        super().__init__(path, key)
        self.baseline, self.canary = baseline, canary

    def _parse(self, text: str) -> dict[str, Any]:
        return _parse(self.path, text, self.key)[1]

    def _version(self, flag: dict[str, Any]) -> int:
        return _version(flag)

    def _stamp(self, entry: str, version: int) -> str:
        return with_values(entry, {"version": version})

    def _check_live(self, flag: dict[str, Any]) -> None:
        self._indices(flag)
        if flag.get("on") is not True:
            raise FlagMismatch(
                f"{self.path}: flag '{self.key}' is off, so every request gets its off variation "
                "and moving the default rule would change nothing; turn it on first"
            )

    def _sides(self, flag: dict[str, Any]) -> tuple[int, int]:
        return self._indices(flag)

    def _shares(self, flag: dict[str, Any]) -> dict[int, float]:
        return default_rule_weights(flag)

    def _value(self, flag: dict[str, Any], side: int) -> str:
        return str(flag["variations"][side])

    def _canary_at(
        self, flag: dict[str, Any], baseline: int, canary: int, percent: float
    ) -> dict[str, Any]:
        canary_weight = round(percent * WEIGHT_SCALE / 100)
        # The SDK hashes each context key to a fixed bucket in [0, 1) (from the flag key and
        # salt) and walks the rollout's variations in order, serving the first whose running
        # total of weight exceeds the bucket. With the canary listed first its share is
        # always [0, p): a user served the canary at 5% has a bucket below 0.05, which is
        # still below 0.25, so they keep it when the step grows. Any order that never changed
        # would do; we fix this one so the cohort never depends on variation indices or
        # weights (sorting by weight would flip the order at 50% and reshuffle half the
        # users). The salt is left alone for the same reason. A rollout already keyed on
        # another context kind or a seed keeps both.
        previous = (flag.get("fallthrough") or {}).get("rollout") or {}
        rollout: dict[str, Any] = {
            "variations": [
                {"variation": canary, "weight": canary_weight},
                {"variation": baseline, "weight": WEIGHT_SCALE - canary_weight},
            ],
            "bucketBy": "key",
        }
        rollout.update({k: previous[k] for k in ("contextKind", "seed") if k in previous})
        return {"fallthrough": {"rollout": rollout}}

    def _everyone(self, flag: dict[str, Any], side: int) -> dict[str, Any]:
        return {"fallthrough": {"variation": side}}

    def values(self, snapshot: FlagSnapshot, variations: Sequence[str]) -> tuple[str, ...]:
        flag = self._flag_of(snapshot)
        for value in variations:
            self._index_of(flag, value)
        return tuple(variations)  # named by value: a file has nothing else to name them by

    def weights(self, snapshot: FlagSnapshot) -> dict[str, float]:
        flag = self._flag_of(snapshot)
        return {str(flag["variations"][i]): w for i, w in default_rule_weights(flag).items()}

    def set_split(
        self, weights: Mapping[str, float], *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        try:
            integer = integer_weights(weights, WEIGHT_SCALE)
        except ValueError as exc:
            raise FlagMismatch(f"{self.path}: flag '{self.key}': {exc}") from None

        def change(flag: dict[str, Any]) -> dict[str, Any]:
            index = {value: self._index_of(flag, value) for value in integer}
            served = [value for value, weight in integer.items() if weight > 0]
            if len(served) == 1:
                return self._everyone(flag, index[served[0]])
            # In the order given, which an experiment keeps fixed, so each user keeps an arm.
            previous = (flag.get("fallthrough") or {}).get("rollout") or {}
            rollout: dict[str, Any] = {
                "variations": [
                    {"variation": index[value], "weight": weight}
                    for value, weight in integer.items()
                ],
                "bucketBy": "key",
            }
            rollout.update({k: previous[k] for k in ("contextKind", "seed") if k in previous})
            return {"fallthrough": {"rollout": rollout}}

        return self._write(expect_version, comment, change)

    def _indices(self, flag: dict[str, Any]) -> tuple[int, int]:
        return self._index_of(flag, self.baseline), self._index_of(flag, self.canary)

    def _index_of(self, flag: dict[str, Any], value: str) -> int:
        variations = flag.get("variations")
        if not isinstance(variations, list):
            raise FlagMismatch(f"{self.path}: flag '{self.key}' has no 'variations' list")
        if value not in variations:
            known = ", ".join(json.dumps(v) for v in variations) or "none"
            raise FlagMismatch(
                f"{self.path}: flag '{self.key}' has no variation '{value}' "
                f"(variations: {known}; a flag file in the SDK's format holds variation "
                "values only, so name them by value, not by their LaunchDarkly name)"
            )
        return variations.index(value)

    def _entry_text(self, raw: str) -> str:
        """A snapshot's entry text; runs journaled before snapshots held one entry saved the
        whole file."""
        if '"flags"' in raw:
            doc = parse_entry(self.path, self.key, raw)
            if "variations" not in doc and isinstance(doc.get("flags"), dict):
                _parse(self.path, raw, self.key)
                begin, end = entry_span(raw, self.key)
                return raw[begin:end]
        return raw
