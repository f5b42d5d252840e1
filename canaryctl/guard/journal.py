"""A guard's journal: one JSON object per line, appended, never rewritten.

It is the guard's state as well as its history: a guard is tripped when the last `tripped` or
`rearmed` entry is a `tripped` one, so `canaryctl guard rearm` (another process, perhaps days
later) re-arms a running guard by appending a line, and a guard that restarts comes back
tripped if it was. Lines are short and written with one `write` on a file opened for appending,
so two writers never interleave inside a line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from canaryctl import fastjson
from canaryctl.errors import InvalidInput

__all__ = ["DEFAULT_GUARD_DIR", "GuardJournal"]

DEFAULT_GUARD_DIR = Path(".canaryctl/guards")


class GuardJournal:
    def __init__(self, path: Path, echo: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.echo = echo
        """Told each entry once it is written (the CLI prints them)."""

    @classmethod
    def for_guard(cls, name: str, directory: Path = DEFAULT_GUARD_DIR) -> GuardJournal:
        return cls(directory / f"{name}.jsonl")

    def append(self, event: str, *, at: float, **data: Any) -> dict[str, Any]:
        entry = {"at": at, "event": event, **data}
        line = json.dumps(entry, sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise InvalidInput(f"cannot write the guard journal {self.path}: {exc}") from exc
        if self.echo is not None:
            self.echo(entry)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every entry; a torn last line (a crash mid-write) is skipped, not fatal."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read the guard journal {self.path}: {exc}") from exc
        out = []
        for line in text.splitlines():
            try:
                entry = fastjson.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("event"), str):
                out.append(entry)
        return out

    def last_trip(self) -> dict[str, Any] | None:
        """The `tripped` entry in force, or None when the guard is armed."""
        for entry in reversed(self.entries()):
            if entry["event"] == "rearmed":
                return None
            if entry["event"] == "tripped":
                return entry
        return None
