"""What each drill did, in SQLite beside APScheduler's job table: one row per drill and fire
time. The row is claimed before the drill acts, and the pair is unique, so a fire time can never
run twice, even if a scheduler restarted mid-run were to hand it over again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from canaryctl.errors import InvalidInput

__all__ = ["DrillHistory", "DrillRun"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drill_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    drill TEXT NOT NULL,
    scheduled_for REAL NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL DEFAULT 'running',
    reason TEXT NOT NULL DEFAULT '',
    journal TEXT,
    UNIQUE (drill, scheduled_for)
);
"""


@dataclass(frozen=True)
class DrillRun:
    id: int
    drill: str
    scheduled_for: float
    started_at: float
    ended_at: float | None
    outcome: str
    reason: str
    journal: str | None


class DrillHistory:
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidInput(f"cannot open the drills database {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DrillHistory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def claim(self, drill: str, scheduled_for: float, *, at: float) -> int | None:
        """The new run's id, or None if this fire time of this drill was already claimed."""
        try:
            cursor = self._db.execute(
                "INSERT INTO drill_runs (drill, scheduled_for, started_at) VALUES (?, ?, ?)",
                (drill, scheduled_for, at),
            )
        except sqlite3.IntegrityError:
            return None
        return cursor.lastrowid

    def finish(
        self, run_id: int, *, outcome: str, reason: str, at: float, journal: str | None = None
    ) -> None:
        self._db.execute(
            "UPDATE drill_runs SET outcome = ?, reason = ?, ended_at = ?, journal = ? WHERE id = ?",
            (outcome, reason, at, journal, run_id),
        )

    def runs(self, drill: str | None = None) -> list[DrillRun]:
        query, args = "SELECT * FROM drill_runs", ()
        if drill is not None:
            query, args = query + " WHERE drill = ?", (drill,)
        rows = self._db.execute(query + " ORDER BY id", args)
        return [DrillRun(**dict(row)) for row in rows]

    def last(self, drill: str) -> DrillRun | None:
        row = self._db.execute(
            "SELECT * FROM drill_runs WHERE drill = ? ORDER BY id DESC LIMIT 1", (drill,)
        ).fetchone()
        return None if row is None else DrillRun(**dict(row))
