"""One flag's entry in a JSON flag file, written the way a watching SDK must see it.

Two file formats keep a rollout's flag in a local JSON file an SDK watches: LaunchDarkly's
file data source (flags/file.py) and flagd's flag definitions (flags/flagd.py). Both keep their
flags under a top-level `flags` object, both reload the whole file on a change, and a file may
hold many flags that other runs or people edit while we run. What a write must guarantee does
not depend on the format, so it lives here once; a format only says how to read its flag, where
its version lives and what a write changes.

A write is a read-modify-write of this flag's entry alone, under a lock (`flock` on
`.FILE.canaryctl-lock` beside the file, honoured by every canaryctl process): read the file,
check this entry is where we left it, splice the new members into the entry's own text, and land
the whole file with os.replace, so the SDK's watcher only ever sees the old file or the new one.
Every other byte of the file, other flags' entries included, is what the file held the moment we
read it. Editors and SDKs do not take the lock, so an edit landing between our read and our
rename can still be lost; that window is a few milliseconds.

A snapshot is the exact text of this flag's entry. A restore writes that text back with only its
version raised above any the flag had. An edit that kept the version (a human's hand edit) is
found by comparing the entry with what our last write left, and is never overwritten.

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
from collections.abc import Callable, Iterator
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
    check_claim,
    check_fence,
    releasable,
)
from canaryctl.runbook.reading import parse_json, read_text

__all__ = [
    "JsonFlagFile",
    "entry_span",
    "find_flag",
    "parse_entry",
    "read_exact",
    "with_nested_value",
    "with_values",
]

log = logging.getLogger(__name__)

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


def entry_span(text: str, key: str) -> tuple[int, int]:
    """Where flag `key`'s entry lies in a flag file's text that parsed, with `flags.KEY` an
    object."""
    flags_at = _members(text, 0)["flags"][0]
    return _members(text, flags_at)[key]


def with_values(entry: str, values: dict[str, Any]) -> str:
    """`entry` (one JSON object's text) with these members' values replaced, else added first;
    every other byte stays as it was."""
    spans = _members(entry, 0)
    missing = {name: value for name, value in values.items() if name not in spans}
    replaced = sorted(((spans[n], v) for n, v in values.items() if n in spans), reverse=True)
    for (begin, end), value in replaced:  # from the end, so earlier offsets stay valid
        entry = entry[:begin] + json.dumps(value, ensure_ascii=False) + entry[end:]
    if missing:
        opening = _skip_space(entry, 0) + 1
        added = ", ".join(
            f"{json.dumps(n)}: {json.dumps(v, ensure_ascii=False)}" for n, v in missing.items()
        )
        comma = ", " if spans else ""  # an empty object takes no separator after them
        entry = entry[:opening] + added + comma + entry[opening:]
    return entry


def with_nested_value(entry: str, member: str, name: str, value: Any) -> str:
    """`entry` with `member.name` set to `value`, splicing into `member`'s own text when it is
    an object (its other bytes kept), else setting `member` to `{name: value}`."""
    spans = _members(entry, 0)
    if member in spans and isinstance(json.loads(entry[slice(*spans[member])]), dict):
        begin, end = spans[member]
        return entry[:begin] + with_values(entry[begin:end], {name: value}) + entry[end:]
    return with_values(entry, {member: {name: value}})


def parse_entry(path: Path, key: str, entry: str) -> dict[str, Any]:
    """One flag's entry text (a snapshot's `raw`) as an object."""
    try:
        flag = json.loads(entry)
    except json.JSONDecodeError as exc:
        raise FlagMismatch(f"{path}: the saved flag '{key}' is not JSON ({exc.msg})") from exc
    if not isinstance(flag, dict):
        raise FlagMismatch(f"{path}: the saved flag '{key}' is not a JSON object")
    return flag


def find_flag(
    path: Path, text: str, key: str, form: str, elsewhere: Callable[[Any], str | None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole document and the flag `key` under its `flags`, or FlagMismatch saying what is
    missing; `form` names the format canaryctl reads, `elsewhere(doc)` may say where the flag
    is instead."""
    try:
        doc = parse_json(text, str(path))
    except InvalidDocument as exc:
        raise FlagMismatch(f"{exc}; canaryctl reads and writes {form}") from None
    flags = doc.get("flags") if isinstance(doc, dict) else None
    flag = flags.get(key) if isinstance(flags, dict) else None
    if isinstance(flag, dict):
        return doc, flag
    if (instead := elsewhere(doc)) is not None:
        raise FlagMismatch(f"{path}: {instead}")
    known = ", ".join(sorted(flags)) if isinstance(flags, dict) and flags else "none"
    raise FlagMismatch(f"{path}: no flag '{key}' under 'flags' (flags there: {known})")


def read_exact(path: Path) -> str:
    """The file's exact text, line endings kept: a snapshot must give back the bytes it found."""
    try:
        return read_text(path)
    except InvalidDocument as exc:
        raise FlagMismatch(str(exc)) from None


class JsonFlagFile:
    """The locked, versioned, claimed read-modify-write of one flag in a JSON flag file.

    A format subclasses it and says how to read its flag (`_parse`), where the version lives
    (`_version`, `_stamp`), whether the flag serves its default rule at all (`_check_live`),
    which of its variations are the two sides (`_sides`, `_shares`, `_value`) and what members
    a split or a promotion sets (`_canary_at`, `_everyone`); other writes call `_write` with
    the members they change.
    """

    def __init__(self, path: str | Path, key: str) -> None:
        self.path, self.key = Path(path), key
        self.lock_path = self.path.with_name(f".{self.path.name}.canaryctl-lock")
        self.claim_path = self.path.with_name(
            f"{self.path.name}.{quote(key, safe='._-')}.canaryctl-claim"
        )
        self._written: dict[str, Any] | None = None
        """The entry as our last write left it: an edit that kept its version still shows."""
        self._fence: FlagClaim | None = None
        """The claim this store wrote last: every write checks it is still on the flag."""

    # What a format says.

    def _parse(self, text: str) -> dict[str, Any]:
        """The flag `key` in the file's text, or FlagMismatch saying what is missing."""
        raise NotImplementedError

    def _version(self, flag: dict[str, Any]) -> int:
        raise NotImplementedError

    def _stamp(self, entry: str, version: int) -> str:
        """`entry`'s text with its version set to `version`, every other byte kept."""
        raise NotImplementedError

    def _check_live(self, flag: dict[str, Any]) -> None:
        """FlagMismatch if the flag, as it is, cannot serve a rollout (off, a variation gone)."""

    def _entry_text(self, raw: str) -> str:
        """A snapshot's entry text (a format may read older snapshots differently)."""
        return raw

    def _sides(self, flag: dict[str, Any]) -> tuple[Any, Any]:
        """How the flag names the baseline and the canary (FlagMismatch if one is missing)."""
        raise NotImplementedError

    def _shares(self, flag: dict[str, Any]) -> dict[Any, float]:
        """Percent of the default rule's traffic per variation, named as `_sides` names them."""
        raise NotImplementedError

    def _value(self, flag: dict[str, Any], side: Any) -> str:
        """The value a variation serves: what the gateway labels its metrics with."""
        raise NotImplementedError

    def _canary_at(
        self, flag: dict[str, Any], baseline: Any, canary: Any, percent: float
    ) -> dict[str, Any]:
        """The members that serve `canary` to `percent`% and `baseline` to the rest."""
        raise NotImplementedError

    def _everyone(self, flag: dict[str, Any], side: Any) -> dict[str, Any]:
        """The members that serve `side` to everyone the default rule serves."""
        raise NotImplementedError

    # The machinery, the same for every format.

    def split(self, snapshot: FlagSnapshot) -> Split:
        flag = self._flag_of(snapshot)
        baseline, canary = self._sides(flag)
        shares = self._shares(flag)
        base, can = shares.get(baseline, 0.0), shares.get(canary, 0.0)
        return Split(baseline=base, canary=can, other=sum(shares.values()) - base - can)

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        flag = self._flag_of(snapshot)
        baseline, canary = self._sides(flag)
        return self._value(flag, baseline), self._value(flag, canary)

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        if not 0 <= percent <= 100:
            raise FlagMismatch(f"canary weight {percent} is outside 0..100")

        def change(flag: dict[str, Any]) -> dict[str, Any]:
            return self._canary_at(flag, *self._sides(flag), percent)

        return self._write(expect_version, comment, change)

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Make the canary the variation everyone gets by default."""

        def change(flag: dict[str, Any]) -> dict[str, Any]:
            return self._everyone(flag, self._sides(flag)[1])

        return self._write(expect_version, comment, change)

    def snapshot(self) -> FlagSnapshot:
        """The flag as it is now; FlagConflict if it was edited since our last write without a
        new version (a human's hand edit): the runner checks this before every analysis, so
        no analysis judges a split the run did not set."""
        text = read_exact(self.path)
        flag = self._parse(text)
        written = self._written
        if (
            written is not None
            and self._version(written) == self._version(flag)
            and (flag != written)
        ):
            raise FlagConflict(self._edited(flag, written))
        self._check_live(flag)
        begin, end = entry_span(text, self.key)
        return FlagSnapshot(self.key, self._version(flag), text[begin:end])

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Write the entry `saved` holds back, byte for byte but for a new, higher version.

        Only the key and the version are checked: this is the safety path, and it must work even
        if the flag now lacks a variation.
        """
        if saved.key != self.key:
            raise FlagMismatch(f"{self.path}: cannot restore flag '{saved.key}' into '{self.key}'")
        return self._write(expect_version, comment, None, entry=self._entry_text(saved.raw))

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
            if not releasable(self._held(), claim):
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
        check_claim(held, claim, take_over=take_over, where=where)
        if held is None and not take_over:
            raise FlagMismatch(
                f"{where} has a claim file {self.claim_path} canaryctl cannot read (a run that "
                "died while writing it?): --break-claim replaces it if no run drives the flag"
            )
        if held is not None and held.token != claim.token:
            log.warning("%s: taking over the claim of %s", where, held.to_json())
        self._replace(self.claim_path, claim.to_json(), "claim")
        return held

    def _edited(self, flag: dict[str, Any], written: dict[str, Any]) -> str:
        """The hand edit in words: which members changed (their values may be long)."""
        changed = sorted(k for k in {*flag, *written} if flag.get(k) != written.get(k))
        return (
            f"{self.path}: flag '{self.key}' was edited since our last write without changing "
            f"its version ({self._version(flag)}): {', '.join(changed)} changed"
        )

    def _flag_of(self, snapshot: FlagSnapshot) -> dict[str, Any]:
        return parse_entry(self.path, self.key, self._entry_text(snapshot.raw))

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
            text = read_exact(self.path)
            flag = self._parse(text)
            current = self._version(flag)
            if current != expect_version:
                raise FlagConflict(
                    f"{self.path}: flag '{self.key}' moved from version {expect_version} to "
                    f"{current} behind our back: someone else changed it; not overwriting"
                )
            written = self._written
            if written is not None and self._version(written) == current and flag != written:
                raise FlagConflict(f"{self._edited(flag, written)}; not overwriting")
            begin, end = entry_span(text, self.key)
            if change is not None:
                new_entry = self._stamp(with_values(text[begin:end], change(flag)), current + 1)
            else:
                assert entry is not None
                old = self._version(parse_entry(self.path, self.key, entry))
                new_entry = self._stamp(entry, max(current, old) + 1)
            written = json.loads(new_entry)
            self._replace(self.path, text[:begin] + new_entry + text[end:], comment)
        self._written = written
        return FlagSnapshot(self.key, self._version(written), new_entry)

    def _replace(self, path: Path, text: str, comment: str) -> None:
        """Write `text` to a temp file beside `path`, fsync it, rename it over `path`."""
        log.debug("writing %s (flag %s): %s", path, self.key, comment)
        directory = path.parent
        with _write_errors(path):
            before = path.stat()
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, before.st_mode & 0o7777)
                # Watchers that poll the file (flagd's providers, the LaunchDarkly SDK's file
                # source) reload it only when its modification time moves forward; two writes
                # in one tick of the file system's coarse clock (or a file stamped in the
                # future) would leave it where it was, and the second write unseen.
                stamped = os.stat(tmp).st_mtime_ns
                if stamped <= before.st_mtime_ns:
                    later = before.st_mtime_ns + 1_000_000  # a float of seconds still sees 1 ms
                    os.utime(tmp, ns=(later, later))
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
