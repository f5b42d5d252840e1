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

A file may hold many flags, and other runs or people may edit other flags in it while we run. So a
write is a read-modify-write of this flag's entry alone, under a lock (`flock` on
`.FILE.canaryctl-lock` beside the file, honoured by every canaryctl process): read the file, check
this entry is where we left it, splice the new `fallthrough` and `version` values into the entry's
own text, and land the whole file with os.replace, so the SDK's watcher only ever sees the old file
or the new one. Every other byte of the file, other flags' entries included, is what the file held
the moment we read it. Editors and the SDK do not take the lock, so an edit landing between our
read and our rename can still be lost; that window is a few milliseconds.

A snapshot is the exact text of this flag's entry. A restore writes that text back with only its
`version` raised above any the flag had: SDKs keep the highest version they have seen.

The claim on a flag is a file beside it (`FILE.KEY.canaryctl-claim`) created with O_EXCL, holding
the run's FlagClaim as JSON; a second run, whatever its state database, finds it and is refused.
Claims are read and written under the same lock as the flag, and every write checks, under that
lock, that the claim file still holds the claim this store was given (its run, its lease epoch):
a driver that lost its run to a newer one cannot write between that one's claim and its writes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from json.decoder import scanstring
from pathlib import Path
from typing import Any
from urllib.parse import quote

from canaryctl.errors import FlagBackendError, FlagConflict, FlagMismatch, InvalidDocument
from canaryctl.flags.base import (
    FlagClaim,
    FlagSnapshot,
    Split,
    check_fence,
    integer_weights,
    may_take,
)
from canaryctl.flags.shape import check_flag_shape
from canaryctl.runbook.reading import parse_json, read_text

__all__ = ["WEIGHT_SCALE", "FileFlagStore", "default_rule_weights", "read_flag"]

log = logging.getLogger(__name__)

WEIGHT_SCALE = 100_000
"""LaunchDarkly rollout weights are in thousandths of a percent: 100000 is everyone."""

LOCK_TIMEOUT = 10.0
"""Seconds a write waits for another canaryctl process's write to the same file to finish."""


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


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _members(text: str, start: int) -> dict[str, tuple[int, int]]:
    """Where each member's value lies in the JSON object at `start`, as (begin, end) offsets.

    `text` already parsed, so its shape is trusted. A repeated name keeps its last span, the one
    json.loads keeps.
    """
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    i = _skip_space(text, _skip_space(text, start) + 1)  # past "{"
    while text[i] == '"':
        name, i = scanstring(text, i + 1)
        i = _skip_space(text, _skip_space(text, i) + 1)  # past ":"
        _, end = decoder.raw_decode(text, i)
        spans[name] = (i, end)
        i = _skip_space(text, end)
        if text[i] == ",":
            i = _skip_space(text, i + 1)
    return spans


def _entry_span(text: str, key: str) -> tuple[int, int]:
    """Where flag `key`'s entry lies in a flag file's text that _parse accepted."""
    flags_at = _members(text, 0)["flags"][0]
    return _members(text, flags_at)[key]


def _with_values(entry: str, values: dict[str, Any]) -> str:
    """`entry` (one flag's JSON text) with these members' values replaced, else added first;
    every other byte stays as it was."""
    spans = _members(entry, 0)
    missing = {name: value for name, value in values.items() if name not in spans}
    replaced = sorted(((spans[n], v) for n, v in values.items() if n in spans), reverse=True)
    for (begin, end), value in replaced:  # from the end, so earlier offsets stay valid
        entry = entry[:begin] + json.dumps(value, ensure_ascii=False) + entry[end:]
    if missing:
        opening = _skip_space(entry, 0) + 1
        added = "".join(
            f"{json.dumps(n)}: {json.dumps(v, ensure_ascii=False)}, " for n, v in missing.items()
        )
        entry = entry[:opening] + added + entry[opening:]
    return entry


def _parse_entry(path: Path, key: str, entry: str) -> dict[str, Any]:
    """One flag's entry text (a snapshot's `raw`) as an object."""
    try:
        flag = json.loads(entry)
    except json.JSONDecodeError as exc:
        raise FlagMismatch(f"{path}: the saved flag '{key}' is not JSON ({exc.msg})") from exc
    if not isinstance(flag, dict):
        raise FlagMismatch(f"{path}: the saved flag '{key}' is not a JSON object")
    return flag


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
        self.lock_path = self.path.with_name(f".{self.path.name}.canaryctl-lock")
        self.claim_path = self.path.with_name(
            f"{self.path.name}.{quote(key, safe='._-')}.canaryctl-claim"
        )
        self._written: dict[str, Any] | None = None
        """The entry as our last write left it: an edit that kept its version still shows."""
        self._fence: FlagClaim | None = None
        """The claim this store wrote last: every write checks it is still on the flag."""

    def snapshot(self) -> FlagSnapshot:
        """The flag as it is now; FlagConflict if it was edited since our last write without a
        new version (a human's hand edit): the runner checks this before every analysis, so
        no analysis judges a split the run did not set."""
        text = _read_text(self.path)
        _, flag = _parse(self.path, text, self.key)
        written = self._written
        if written is not None and _version(written) == _version(flag) and flag != written:
            raise FlagConflict(self._edited(flag, written))
        self._indices(flag)
        if flag.get("on") is not True:
            raise FlagMismatch(
                f"{self.path}: flag '{self.key}' is off, so every request gets its off variation "
                "and moving the default rule would change nothing; turn it on first"
            )
        begin, end = _entry_span(text, self.key)
        return FlagSnapshot(self.key, _version(flag), text[begin:end])

    def split(self, snapshot: FlagSnapshot) -> Split:
        flag = self._flag_of(snapshot)
        baseline_idx, canary_idx = self._indices(flag)
        weights = default_rule_weights(flag)
        baseline, canary = weights.get(baseline_idx, 0.0), weights.get(canary_idx, 0.0)
        other = sum(weights.values()) - baseline - canary
        return Split(baseline=baseline, canary=canary, other=other)

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        flag = self._flag_of(snapshot)
        baseline_idx, canary_idx = self._indices(flag)
        return str(flag["variations"][baseline_idx]), str(flag["variations"][canary_idx])

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        if not 0 <= percent <= 100:
            raise FlagMismatch(f"canary weight {percent} is outside 0..100")

        def change(flag: dict[str, Any]) -> dict[str, Any]:
            baseline_idx, canary_idx = self._indices(flag)
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
                    {"variation": canary_idx, "weight": canary_weight},
                    {"variation": baseline_idx, "weight": WEIGHT_SCALE - canary_weight},
                ],
                "bucketBy": "key",
            }
            rollout.update({k: previous[k] for k in ("contextKind", "seed") if k in previous})
            return {"fallthrough": {"rollout": rollout}}

        return self._write(expect_version, comment, change)

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        def change(flag: dict[str, Any]) -> dict[str, Any]:
            return {"fallthrough": {"variation": self._indices(flag)[1]}}

        return self._write(expect_version, comment, change)

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Write the entry `saved` holds back, byte for byte but for a new, higher version.

        Only the key and the version are checked: this is the safety path, and it must work even
        if the flag now lacks a variation.
        """
        if saved.key != self.key:
            raise FlagMismatch(f"{self.path}: cannot restore flag '{saved.key}' into '{self.key}'")
        return self._write(expect_version, comment, None, entry=self._entry_text(saved.raw))

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
                return {"fallthrough": {"variation": index[served[0]]}}
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

    def claim(self, claim: FlagClaim, *, take_over: bool = False) -> FlagClaim | None:
        with self._locked():
            try:
                fd = os.open(self.claim_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                held = self._retake(claim, take_over=take_over)
                self._fence = claim
                return held
            except OSError as exc:
                raise FlagBackendError(
                    f"{self.claim_path}: cannot claim flag '{self.key}': {exc.strerror or exc}"
                ) from exc
            with _write_errors(self.claim_path), os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(claim.to_json())
                out.flush()
                os.fsync(out.fileno())
            self._fence = claim
            return None

    def release(self, claim: FlagClaim) -> None:
        self._fence = None
        with self._locked():
            held = self._held()
            if held is None or held.token != claim.token or held.epoch > claim.epoch:
                log.warning("%s: not our claim, left in place", self.claim_path)
                return
            with _write_errors(self.claim_path):
                self.claim_path.unlink(missing_ok=True)

    def _held(self) -> FlagClaim | None:
        """The claim on the flag now; None if there is none or it is not a canaryctl claim."""
        try:
            return FlagClaim.from_json(self.claim_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None

    def _retake(self, claim: FlagClaim, *, take_over: bool) -> FlagClaim | None:
        """The claim file exists: ours again (or taken over) gets our record, else refused;
        the claim that was there."""
        where = f"flag '{self.key}' in {self.path}"
        held = self._held()
        if held is not None and held.token == claim.token:
            check_fence(held, claim, where)
        if held is None and not take_over:
            raise FlagMismatch(
                f"{where} has a claim file {self.claim_path} canaryctl cannot read (a run that "
                "died while writing it?): --break-claim replaces it if no run drives the flag"
            )
        if held is not None and not may_take(held, claim, take_over=take_over):
            raise held.refused(where)
        if held is not None and held.token != claim.token:
            log.warning("%s: taking over the claim of %s", where, held.to_json())
        self._replace(self.claim_path, claim.to_json(), "claim")
        return held

    def _edited(self, flag: dict[str, Any], written: dict[str, Any]) -> str:
        """The hand edit in words: which members changed (their values may be long)."""
        changed = sorted(k for k in {*flag, *written} if flag.get(k) != written.get(k))
        return (
            f"{self.path}: flag '{self.key}' was edited since our last write without changing "
            f"its version ({_version(flag)}): {', '.join(changed)} changed"
        )

    def _flag_of(self, snapshot: FlagSnapshot) -> dict[str, Any]:
        return _parse_entry(self.path, self.key, self._entry_text(snapshot.raw))

    def _entry_text(self, raw: str) -> str:
        """A snapshot's entry text; runs journaled before snapshots held one entry saved the
        whole file."""
        if '"flags"' in raw:
            doc = _parse_entry(self.path, self.key, raw)
            if "variations" not in doc and isinstance(doc.get("flags"), dict):
                _parse(self.path, raw, self.key)
                begin, end = _entry_span(raw, self.key)
                return raw[begin:end]
        return raw

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the file's write lock: one canaryctl read-modify-write of the file at a time."""
        with _write_errors(self.lock_path):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise FlagBackendError(
                            f"{self.path}: another process held {self.lock_path} for over "
                            f"{LOCK_TIMEOUT:g}s"
                        ) from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _write(
        self,
        expect_version: int,
        comment: str,
        change: Callable[[dict[str, Any]], dict[str, Any]] | None,
        *,
        entry: str | None = None,
    ) -> FlagSnapshot:
        """Under the lock: read, check this entry is ours, splice the new entry, replace.

        `change(flag)` gives the members to set; `entry` (a restore) is the text to write back.
        The version becomes one more than the highest the flag had, now or in `entry`.
        """
        with self._locked():
            if self._fence is not None:
                check_fence(self._held(), self._fence, f"flag '{self.key}' in {self.path}")
            text = _read_text(self.path)
            _, flag = _parse(self.path, text, self.key)
            current = _version(flag)
            if current != expect_version:
                raise FlagConflict(
                    f"{self.path}: flag '{self.key}' moved from version {expect_version} to "
                    f"{current} behind our back: someone else changed it; not overwriting"
                )
            written = self._written
            if written is not None and _version(written) == current and flag != written:
                raise FlagConflict(f"{self._edited(flag, written)}; not overwriting")
            begin, end = _entry_span(text, self.key)
            if change is not None:
                values = {**change(flag), "version": current + 1}
                new_entry = _with_values(text[begin:end], values)
            else:
                assert entry is not None
                old = _version(_parse_entry(self.path, self.key, entry))
                new_entry = _with_values(entry, {"version": max(current, old) + 1})
            written = json.loads(new_entry)
            self._replace(self.path, text[:begin] + new_entry + text[end:], comment)
        self._written = written
        return FlagSnapshot(self.key, _version(written), new_entry)

    def _replace(self, path: Path, text: str, comment: str) -> None:
        """Write `text` to a temp file beside `path`, fsync it, rename it over `path`."""
        log.debug("writing %s (flag %s): %s", path, self.key, comment)
        directory = path.parent
        with _write_errors(path):
            mode = path.stat().st_mode & 0o7777
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            # Make the rename itself durable: without this a crash could bring the old file back.
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
