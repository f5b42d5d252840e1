"""A flag kept in a file in the LaunchDarkly SDK's file-data-source format: the embedded default.

The gateway's SDK watches the file (`Files.new_data_source(paths=[...], auto_update=True)`) and
reloads it whole on every change, so moving traffic is rewriting one flag's `fallthrough` (the
default rule). The file looks like::

    {"flags": {"support-bot-model": {"key": "support-bot-model", "version": 3, "on": true,
               "variations": ["gpt-4-turbo", "gpt-4o-mini"], "fallthrough": {"variation": 0},
               "offVariation": 0, "salt": "...", "targets": [], "rules": [], ...}},
     "segments": {}}

Only the JSON form is read and written: the SDK also accepts YAML, but rewriting YAML would drop
its comments and layout, and the restore path must give back the exact bytes it found.

Writes are compare-and-swap on the flag's `version` and land with os.replace, so the SDK's watcher
(which reloads on any mtime change) only ever sees the old file or the new one. Two writers racing
between our version check and the rename are not excluded: that would need a lock the SDK and
editors do not honour, and the version check already catches every edit made before ours reads.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from canaryctl.errors import FlagBackendError, FlagConflict, FlagMismatch, InvalidDocument
from canaryctl.flags.base import FlagSnapshot, Split
from canaryctl.flags.shape import check_flag_shape
from canaryctl.runbook.reading import parse_json, read_text

__all__ = ["WEIGHT_SCALE", "FileFlagStore", "default_rule_weights", "read_flag"]

log = logging.getLogger(__name__)

WEIGHT_SCALE = 100_000
"""LaunchDarkly rollout weights are in thousandths of a percent: 100000 is everyone."""


@contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """Turn the OS's errors into FlagBackendError naming the file, the original chained."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or exc
        raise FlagBackendError(f"{path}: cannot write the flag file: {reason}") from exc


def _parse(path: Path, text: str, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole document and the flag `key` in it, or FlagMismatch saying what is missing."""
    try:
        doc = parse_json(text, str(path))
    except InvalidDocument as exc:
        raise FlagMismatch(
            f"{exc}; canaryctl reads and writes the JSON form of the LaunchDarkly file data source"
        ) from None
    flags = doc.get("flags") if isinstance(doc, dict) else None
    flag = flags.get(key) if isinstance(flags, dict) else None
    if not isinstance(flag, dict):
        if isinstance(doc, dict) and key in (doc.get("flagValues") or {}):
            raise FlagMismatch(
                f"{path}: flag '{key}' is a fixed value under 'flagValues'; a rollout needs the "
                "full flag (variations, fallthrough) under 'flags'"
            )
        known = ", ".join(sorted(flags)) if isinstance(flags, dict) and flags else "none"
        raise FlagMismatch(f"{path}: no flag '{key}' under 'flags' (flags there: {known})")
    check_flag_shape(path, key, flag)
    return doc, flag


def _read_text(path: Path) -> str:
    # The exact text, line endings kept: the snapshot must give back the bytes it found.
    try:
        return read_text(path)
    except InvalidDocument as exc:
        raise FlagMismatch(str(exc)) from None


def read_flag(path: str | Path, key: str) -> tuple[str, dict[str, Any]]:
    """The file's exact text and the flag `key` in it, for anything that only looks."""
    path = Path(path)
    text = _read_text(path)
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


class FileFlagStore:
    """One flag in a LaunchDarkly file-data-source JSON file; variations are picked by value.

    The SDK's flag format has no variation names (those live only in LaunchDarkly's REST
    representation), so a value maps to its index in `variations` and nothing else can.
    """

    def __init__(self, path: str | Path, key: str, baseline: str, canary: str) -> None:
        self.path, self.key, self.baseline, self.canary = Path(path), key, baseline, canary

    def snapshot(self) -> FlagSnapshot:
        text = _read_text(self.path)
        _, flag = _parse(self.path, text, self.key)
        self._indices(flag)
        if flag.get("on") is not True:
            raise FlagMismatch(
                f"{self.path}: flag '{self.key}' is off, so every request gets its off variation "
                "and moving the default rule would change nothing; turn it on first"
            )
        return FlagSnapshot(self.key, _version(flag), text)

    def split(self, snapshot: FlagSnapshot) -> Split:
        _, flag = _parse(self.path, snapshot.raw, self.key)
        baseline_idx, canary_idx = self._indices(flag)
        weights = default_rule_weights(flag)
        baseline, canary = weights.get(baseline_idx, 0.0), weights.get(canary_idx, 0.0)
        other = sum(weights.values()) - baseline - canary
        return Split(baseline=baseline, canary=canary, other=other)

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        _, flag = _parse(self.path, snapshot.raw, self.key)
        baseline_idx, canary_idx = self._indices(flag)
        return str(flag["variations"][baseline_idx]), str(flag["variations"][canary_idx])

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        if not 0 <= percent <= 100:
            raise FlagMismatch(f"canary weight {percent} is outside 0..100")
        doc, flag = self._load_for_write(expect_version)
        baseline_idx, canary_idx = self._indices(flag)
        canary_weight = round(percent * WEIGHT_SCALE / 100)
        # The SDK hashes each context key to a fixed bucket in [0, 1) (from the flag key and salt)
        # and walks the rollout's variations in order, serving the first whose running total of
        # weight exceeds the bucket. With the canary listed first its share is always [0, p): a
        # user served the canary at 5% has a bucket below 0.05, which is still below 0.25, so they
        # keep it when the step grows. Any order that never changed would do; we fix this one so
        # the cohort never depends on variation indices or weights (sorting by weight would flip
        # the order at 50% and reshuffle half the users). The salt is left alone for the same
        # reason. A rollout already keyed on another context kind or a seed keeps both.
        previous = (flag.get("fallthrough") or {}).get("rollout") or {}
        rollout: dict[str, Any] = {
            "variations": [
                {"variation": canary_idx, "weight": canary_weight},
                {"variation": baseline_idx, "weight": WEIGHT_SCALE - canary_weight},
            ],
            "bucketBy": "key",
        }
        rollout.update({k: previous[k] for k in ("contextKind", "seed") if k in previous})
        flag["fallthrough"] = {"rollout": rollout}
        return self._write_flag(doc, flag, comment)

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        doc, flag = self._load_for_write(expect_version)
        flag["fallthrough"] = {"variation": self._indices(flag)[1]}
        return self._write_flag(doc, flag, comment)

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Write `saved.raw` back byte for byte, so the flag's version returns to `saved.version`.

        Only the key and the version are checked: this is the safety path, and it must work even
        if the flag now lacks a variation. The SDK's file source replaces all data on reload, so
        the version going backwards is harmless to it.
        """
        if saved.key != self.key:
            raise FlagMismatch(f"{self.path}: cannot restore flag '{saved.key}' into '{self.key}'")
        self._load_for_write(expect_version)
        self._replace(saved.raw, comment)
        return FlagSnapshot(self.key, saved.version, saved.raw)

    def _indices(self, flag: dict[str, Any]) -> tuple[int, int]:
        variations = flag.get("variations")
        if not isinstance(variations, list):
            raise FlagMismatch(f"{self.path}: flag '{self.key}' has no 'variations' list")
        indices = []
        for value in (self.baseline, self.canary):
            if value not in variations:
                known = ", ".join(json.dumps(v) for v in variations) or "none"
                raise FlagMismatch(
                    f"{self.path}: flag '{self.key}' has no variation '{value}' "
                    f"(variations: {known}; a flag file in the SDK's format holds variation "
                    "values only, so name them by value, not by their LaunchDarkly name)"
                )
            indices.append(variations.index(value))
        return indices[0], indices[1]

    def _load_for_write(self, expect_version: int) -> tuple[dict[str, Any], dict[str, Any]]:
        doc, flag = _parse(self.path, _read_text(self.path), self.key)
        current = _version(flag)
        if current != expect_version:
            raise FlagConflict(
                f"{self.path}: flag '{self.key}' moved from version {expect_version} to "
                f"{current} behind our back: someone else changed it; not overwriting"
            )
        return doc, flag

    def _write_flag(self, doc: dict[str, Any], flag: dict[str, Any], comment: str) -> FlagSnapshot:
        flag["version"] = _version(flag) + 1
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        self._replace(text, comment)
        return FlagSnapshot(self.key, flag["version"], text)

    def _replace(self, text: str, comment: str) -> None:
        """Write `text` to a temp file beside the flag file, fsync it, rename it over the file."""
        log.debug("writing %s (flag %s): %s", self.path, self.key, comment)
        directory = self.path.parent
        with _write_errors(self.path):
            mode = self.path.stat().st_mode & 0o7777
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
            # Make the rename itself durable: without this a crash could bring the old file back.
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
