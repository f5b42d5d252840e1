"""The run journal in one SQLite file: runs, their events, and requests from other terminals.

Written like chaostoolkit's journal: the run is opened (runbook copy, host, version, saved flag)
before the first percent moves, each event is written before its action and its result filled in
after, so a crash leaves an honest trail that `resume` and a person can read. Other terminals talk
to a running rollout by inserting approve/abort requests, which the runner polls.

WAL mode lets one runner write while other processes read status or post requests. Nothing secret
is stored: the runbook copy goes through the redaction policy (canaryctl/redact.py) first.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canaryctl.errors import InvalidInput
from canaryctl.flags.base import FlagSnapshot
from canaryctl.redact import redact_document

__all__ = [
    "DEFAULT_STATE_PATH",
    "EventRecord",
    "RequestRecord",
    "RunRecord",
    "StateStore",
    "redacted_runbook",
]

DEFAULT_STATE_PATH = Path(".canaryctl/state.db")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    runbook TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL,
    phase TEXT NOT NULL,
    outcome TEXT,
    reason TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    prior_flag TEXT NOT NULL,
    flag_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    final_split TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    at REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    result TEXT,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id, id);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL CHECK (kind IN ('approve', 'abort')),
    at REAL NOT NULL,
    requested_by TEXT NOT NULL,
    handled_at REAL
);
"""


@dataclass(frozen=True)
class RunRecord:
    id: int
    name: str
    runbook: dict[str, Any]
    host: str
    pid: int
    version: str
    started_at: float
    updated_at: float
    ended_at: float | None
    phase: str
    outcome: str | None
    reason: str
    exit_code: int | None
    prior_flag: FlagSnapshot
    flag_version: int
    state: dict[str, Any]
    final_split: dict[str, float] | None

    @property
    def finished(self) -> bool:
        return self.ended_at is not None

    def to_dict(self) -> dict[str, Any]:
        """For `status -o json`: the run without the runbook copy and the raw flag."""
        return {
            "run_id": self.id,
            "name": self.name,
            "phase": self.phase,
            "outcome": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "ended_at": self.ended_at,
            "weight": self.state.get("weight"),
            "step": self.state.get("item"),
            "final_split": self.final_split,
        }


@dataclass(frozen=True)
class EventRecord:
    id: int
    run_id: int
    at: float
    type: str
    data: dict[str, Any]
    result: dict[str, Any] | None
    ended_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "at": self.at,
            "type": self.type,
            "data": self.data,
            "result": self.result,
            "ended_at": self.ended_at,
        }


@dataclass(frozen=True)
class RequestRecord:
    id: int
    run_id: int
    kind: str
    at: float
    requested_by: str


def redacted_runbook(runbook: dict[str, Any]) -> dict[str, Any]:
    """The runbook as dumped to JSON, minus anything that may be a secret: URLs without
    credentials or query, webhook URLs without path, header values replaced."""
    redacted: dict[str, Any] = redact_document(json.loads(json.dumps(runbook)))
    return redacted


class StateStore:
    """One connection to the state file; open one per process (or per terminal)."""

    def __init__(self, path: str | Path = DEFAULT_STATE_PATH) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidInput(f"cannot open the state database {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs --

    def create_run(
        self,
        *,
        name: str,
        runbook: dict[str, Any],
        host: str,
        pid: int,
        version: str,
        started_at: float,
        prior_flag: FlagSnapshot,
        phase: str,
        state: dict[str, Any],
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO runs (name, runbook, host, pid, version, started_at, updated_at, phase,"
            " prior_flag, flag_version, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                json.dumps(redacted_runbook(runbook)),
                host,
                pid,
                version,
                started_at,
                started_at,
                phase,
                json.dumps(
                    {"key": prior_flag.key, "version": prior_flag.version, "raw": prior_flag.raw}
                ),
                prior_flag.version,
                json.dumps(state),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def save_state(
        self, run_id: int, *, phase: str, state: dict[str, Any], at: float, reason: str = ""
    ) -> None:
        self._db.execute(
            "UPDATE runs SET phase = ?, state = ?, updated_at = ?, reason = ? WHERE id = ?",
            (phase, json.dumps(state), at, reason, run_id),
        )

    def set_flag_version(self, run_id: int, version: int) -> None:
        """The version our last write produced: what we expect to find on the next write."""
        self._db.execute("UPDATE runs SET flag_version = ? WHERE id = ?", (version, run_id))

    def claim(self, record: RunRecord, *, host: str, pid: int, at: float) -> bool:
        """A resuming process takes the run over from the owner `record` names.

        Compare-and-swap on the owner, so of two processes resuming the same run at once only
        one wins; the other gets False and must not touch the flag.
        """
        cursor = self._db.execute(
            "UPDATE runs SET host = ?, pid = ?, updated_at = ?"
            " WHERE id = ? AND host = ? AND pid = ?",
            (host, pid, at, record.id, record.host, record.pid),
        )
        return cursor.rowcount == 1

    def finish_run(
        self,
        run_id: int,
        *,
        phase: str,
        outcome: str,
        reason: str,
        exit_code: int,
        at: float,
        final_split: dict[str, float] | None,
    ) -> None:
        self._db.execute(
            "UPDATE runs SET phase = ?, outcome = ?, reason = ?, exit_code = ?, ended_at = ?,"
            " updated_at = ?, final_split = ? WHERE id = ?",
            (
                phase,
                outcome,
                reason,
                exit_code,
                at,
                at,
                None if final_split is None else json.dumps(final_split),
                run_id,
            ),
        )

    def run(self, run_id: int) -> RunRecord | None:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _run_record(row)

    def latest_run(self) -> RunRecord | None:
        row = self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else _run_record(row)

    def runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        return [_run_record(row) for row in rows]

    def unfinished_runs(self) -> list[RunRecord]:
        """Runs still driving a flag, or left mid-way by a process that died (to resume)."""
        rows = self._db.execute("SELECT * FROM runs WHERE ended_at IS NULL ORDER BY id")
        return [_run_record(row) for row in rows]

    # -- events --

    def begin_event(self, run_id: int, type_: str, data: dict[str, Any], *, at: float) -> int:
        """Write the intent before acting; `end_event` fills in what happened."""
        cursor = self._db.execute(
            "INSERT INTO events (run_id, at, type, data) VALUES (?, ?, ?, ?)",
            (run_id, at, type_, json.dumps(data)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def end_event(self, event_id: int, result: dict[str, Any], *, at: float) -> None:
        self._db.execute(
            "UPDATE events SET result = ?, ended_at = ? WHERE id = ?",
            (json.dumps(result), at, event_id),
        )

    def record_event(self, run_id: int, type_: str, data: dict[str, Any], *, at: float) -> int:
        """An event that is its own result (a phase change, a verdict)."""
        event_id = self.begin_event(run_id, type_, data, at=at)
        self.end_event(event_id, {}, at=at)
        return event_id

    def events(self, run_id: int, type_: str | None = None) -> list[EventRecord]:
        query, args = "SELECT * FROM events WHERE run_id = ?", [run_id]
        if type_ is not None:
            query, args = query + " AND type = ?", [*args, type_]
        return [_event_record(row) for row in self._db.execute(query + " ORDER BY id", args)]

    # -- requests from other terminals --

    def request(self, run_id: int, kind: str, *, by: str, at: float) -> int:
        cursor = self._db.execute(
            "INSERT INTO requests (run_id, kind, at, requested_by) VALUES (?, ?, ?, ?)",
            (run_id, kind, at, by),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def pending_requests(self, run_id: int) -> list[RequestRecord]:
        rows = self._db.execute(
            "SELECT id, run_id, kind, at, requested_by FROM requests"
            " WHERE run_id = ? AND handled_at IS NULL ORDER BY id",
            (run_id,),
        )
        return [RequestRecord(**dict(row)) for row in rows]

    def mark_handled(self, request_id: int, *, at: float) -> None:
        self._db.execute("UPDATE requests SET handled_at = ? WHERE id = ?", (at, request_id))


def _run_record(row: sqlite3.Row) -> RunRecord:
    prior = json.loads(row["prior_flag"])
    return RunRecord(
        id=row["id"],
        name=row["name"],
        runbook=json.loads(row["runbook"]),
        host=row["host"],
        pid=row["pid"],
        version=row["version"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
        phase=row["phase"],
        outcome=row["outcome"],
        reason=row["reason"],
        exit_code=row["exit_code"],
        prior_flag=FlagSnapshot(prior["key"], prior["version"], prior["raw"]),
        flag_version=row["flag_version"],
        state=json.loads(row["state"]),
        final_split=None if row["final_split"] is None else json.loads(row["final_split"]),
    )


def _event_record(row: sqlite3.Row) -> EventRecord:
    return EventRecord(
        id=row["id"],
        run_id=row["run_id"],
        at=row["at"],
        type=row["type"],
        data=json.loads(row["data"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        ended_at=row["ended_at"],
    )
