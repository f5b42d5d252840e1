"""The run journal in one database: runs, their events, requests from other terminals, leases.

Written like chaostoolkit's journal: the run is opened (runbook copy, host, version, saved flag)
before the first percent moves, each event is written before its action and its result filled in
after, so a crash leaves an honest trail that `resume` and a person can read. Other terminals talk
to a running rollout by inserting approve/abort requests, which the runner polls.

The database is a SQLite file (one person, one machine; WAL mode lets one runner write while
other processes read status or post requests) or PostgreSQL (a team: controllers and terminals
on many machines), one schema for both (canaryctl/controller/schema.py). SQLAlchemy Core carries
the same SQL to both, with psycopg 3 for PostgreSQL; statements that differ (row locks) are
chosen here by dialect.

A run has one driver at a time: the process holding its lease (owner, expiry, heartbeat, epoch),
taken and renewed by compare-and-swap in the database, so it holds across machines. A controller
takes the runs that nobody holds or whose lease expired (`FOR UPDATE SKIP LOCKED` on PostgreSQL;
SQLite's single writer makes its `BEGIN IMMEDIATE` transaction the same guarantee).

**Fencing.** Each lease taken on a run raises the run's `epoch`; a driver's writes to its run
(state, events, flag version, finish, requests handled, hand-back) name the epoch it drives
under, and the transaction that writes first locks the run's row and compares the epoch: a
driver that stalled past its lease (a GC pause, SIGSTOP, a VM migration) and lost the run gets
LeaseLost and has written nothing.

**Bounded waits.** A transaction, and getting a connection for it, takes at most `timeout`
seconds (shorter than the lease): SQLite's busy timeout; PostgreSQL's `statement_timeout` and
`lock_timeout` on the server, `connect_timeout` and the pool's timeout on the way in, and a
watchdog that shuts the connection's socket when the server itself stops answering (a frozen
server never fires its own timeouts). The caller gets StateBackendError instead of a hang.

Nothing secret is stored: the runbook copy goes through the redaction policy
(canaryctl/redact.py) first, and a PostgreSQL URL is only ever shown without its userinfo.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from canaryctl import retry
from canaryctl.controller.defaults import DEFAULT_STATE_PATH
from canaryctl.controller.schema import migrate
from canaryctl.errors import InvalidInput, StateBackendError
from canaryctl.flags.base import FlagSnapshot
from canaryctl.redact import redact_document, redact_text, redact_url
from canaryctl.retry import BACKEND, Retryable, RetryPolicy

__all__ = [
    "DEFAULT_STATE_PATH",
    "STATEMENT_TIMEOUT",
    "EventRecord",
    "ExperimentRecord",
    "LeaseLost",
    "RequestRecord",
    "RunRecord",
    "RunReleased",
    "StateStore",
    "redacted_runbook",
    "state_engine",
    "state_file",
]

SUBMITTED = "submitted"
"""The phase of a run submitted for a controller (`rollout run --detach`) that none has begun."""

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_PING = "SELECT 1"

STATEMENT_TIMEOUT = 5.0
"""Seconds one transaction (and getting its connection) may take by default; a controller
passes a shorter one for a short lease (canaryctl/controller/defaults.py `wait_bound`)."""


class RunReleased(Exception):
    """This process no longer drives the run: the controller handed it back (SIGTERM) or its
    lease was lost. The flag is left as it is; the next driver continues from the journal."""


class LeaseLost(RunReleased):
    """Another driver holds the run's lease now (its epoch is newer than ours): this process
    stalled past its expiry, and the write it tried was refused."""


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
    prior_flag: FlagSnapshot | None
    """None while the run is submitted: no controller has read the flag yet."""
    flag_version: int
    state: dict[str, Any]
    final_split: dict[str, float] | None
    owner: str | None = None
    """The process holding the run's lease (see the module docstring), or None."""
    lease_until: float | None = None
    epoch: int = 0
    """The epoch of the run's latest lease: it grows with every lease taken."""

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
            "owner": self.owner,
            "lease_until": self.lease_until,
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
class ExperimentRecord:
    """An experiment as journaled; its observations are read apart (`observations`)."""

    id: int
    name: str
    document: dict[str, Any]
    design: dict[str, Any]
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
    winner: str | None
    prior_flag: FlagSnapshot
    flag_version: int
    final_weights: dict[str, float] | None


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


_LIBPQ_KEYWORDS = re.compile(
    r"^\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|connect_timeout|"
    r"options|application_name|target_session_attrs)\s*="
)
"""A keyword/value connection string (`host=db dbname=canary user=ops`) starts like this."""
_SHOWN_KEYWORDS = ("host", "hostaddr", "port", "dbname", "user")
_SQLITE_HEADER = b"SQLite format 3\x00"


def state_file(location: str | Path) -> Path | None:
    """The SQLite file `--state` names, or None when it names PostgreSQL (a postgresql:// URL
    or a keyword/value string). InvalidInput at once for a path that cannot hold a database (a
    directory, a FIFO, a device, a name too long, a file that is not SQLite): retrying would
    not change it."""
    given = str(location)
    if "://" in given or _LIBPQ_KEYWORDS.match(given):
        return None
    path = Path(given)
    shown = given if len(given) <= 100 else given[:99] + "…"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path  # a new database, created on open
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a loop
        reason = exc.strerror if isinstance(exc, OSError) else "not a valid file name"
        raise InvalidInput(f"--state {shown}: {reason or exc}") from None
    if stat.S_ISDIR(mode):
        raise InvalidInput(f"--state {shown}: is a directory, not a SQLite database")
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"--state {shown}: not a regular file (a FIFO, socket or device)")
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise InvalidInput(f"--state {shown}: {exc.strerror}") from None
    if header and header != _SQLITE_HEADER:
        raise InvalidInput(f"--state {shown}: not a SQLite database")
    return path


def state_engine(location: str | Path, timeout: float = STATEMENT_TIMEOUT) -> tuple[Engine, str]:
    """An engine for a SQLite path, a postgresql:// URL or a PostgreSQL keyword/value string,
    and how to name it in messages (the path; the URL without userinfo and query; the
    keywords without the password); its waits bounded by `timeout` seconds (see the module
    docstring)."""
    given = str(location)
    path = state_file(given)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot open the state database {path}: {exc}") from exc
        engine = create_engine(
            f"sqlite:///{path}",
            connect_args={"timeout": timeout, "check_same_thread": False},
            pool_size=10,
            max_overflow=200,  # a controller's runs each take one while they write
            pool_timeout=timeout,
        )
        event.listen(engine, "connect", _sqlite_connected)
        event.listen(engine, "begin", _sqlite_begin)
        return engine, str(path)
    if "://" not in given:
        return _keyword_engine(given, timeout)
    where = redact_url(given)
    scheme = given.split("://", 1)[0].lower()
    if scheme not in _POSTGRES_SCHEMES:
        raise InvalidInput(
            f"--state {where}: not a SQLite path nor a postgresql:// URL ({scheme}:// is not "
            "a database canaryctl keeps state in)"
        )
    try:
        url = make_url(given).set(drivername="postgresql+psycopg")
    except (ArgumentError, ValueError) as exc:
        raise InvalidInput(f"--state {where}: not a valid PostgreSQL URL") from exc
    # A controller drives each run from its own thread: the pool must serve them all. Stale
    # connections (a server restarted) are found by StateStore._connect's own ping, which the
    # watchdog bounds; SQLAlchemy's pre-ping would run before anything could bound it.
    engine = create_engine(
        url, pool_size=10, max_overflow=200, pool_timeout=timeout,
        connect_args=_postgres_timeouts(timeout),
    )  # fmt: skip
    return engine, where


def _postgres_timeouts(timeout: float) -> dict[str, Any]:
    """libpq's settings that bound a statement, a lock wait and a connection by `timeout`."""
    millis = max(int(timeout * 1000), 1)
    return {
        "options": f"-c statement_timeout={millis} -c lock_timeout={millis}",
        # libpq counts whole seconds, two at least: the watchdog bounds what this cannot.
        "connect_timeout": max(2, math.ceil(timeout)),
    }


def _keyword_engine(given: str, timeout: float) -> tuple[Engine, str]:
    """PostgreSQL from libpq's keyword/value form, handed to the driver as written (with the
    same bounded waits as a URL's); named by its host, port, database and user only."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(given)
    except psycopg.Error:  # its message may quote the string, password and all
        raise InvalidInput("--state: not a valid PostgreSQL keyword/value string") from None
    where = " ".join(f"{k}={params[k]}" for k in _SHOWN_KEYWORDS if k in params)
    bounds = _postgres_timeouts(timeout)
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(given, **bounds),
        pool_size=10,
        max_overflow=200,
        pool_timeout=timeout,
    )
    return engine, where or "PostgreSQL"


def _sqlite_connected(connection: Any, record: Any) -> None:
    """Transactions are ours to begin (pysqlite's own BEGIN would come too late to lock)."""
    connection.isolation_level = None
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _sqlite_begin(connection: Connection) -> None:
    """A write takes SQLite's one write lock at its start: two transactions never both read,
    then fight to write (what PostgreSQL's row locks do for it)."""
    read = connection.get_execution_options().get("canaryctl_read", False)
    connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


class _Watchdog:
    """Shuts a PostgreSQL connection's socket when its transaction outlives `timeout`: libpq
    waits for a stopped server forever, and the server's own timeouts cannot fire while it is
    stopped. The blocked call then fails as a lost connection (nothing committed unless the
    COMMIT itself had been sent, as with any connection lost mid-commit)."""

    def __init__(self, connection: Connection, timeout: float) -> None:
        self._lock = threading.Lock()
        self._armed = True
        self._fd = int(connection.connection.dbapi_connection.fileno())  # type: ignore[union-attr]
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self._armed = False
            try:
                with socket.socket(fileno=os.dup(self._fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the call it guarded has ended anyway

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
        self._timer.cancel()


class StateStore:
    """A handle on the state database; open one per process (or per terminal). Thread-safe:
    each call takes a pooled connection for one transaction."""

    def __init__(
        self,
        location: str | Path = DEFAULT_STATE_PATH,
        *,
        retry_policy: RetryPolicy = BACKEND,
        timeout: float = STATEMENT_TIMEOUT,
    ) -> None:
        self.retry_policy, self.timeout = retry_policy, timeout
        self._engine, self.where = state_engine(location, timeout)
        self.path = state_file(location)
        self.queries = 0
        """Statements sent to the database so far (benchmarks/controller_scale.py)."""
        event.listen(self._engine, "before_cursor_execute", self._count)
        try:
            # Opening is no lease's business: a loaded host may take longer than a short
            # lease's bound to migrate, and a controller must still start.
            with self._transaction(timeout=max(timeout, STATEMENT_TIMEOUT)) as connection:
                migrate(connection, self.where)
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    def _count(self, connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        """SQLite's BEGIN is ours to send (PostgreSQL's is implicit), the ping is the pool's
        check of a connection: neither is counted."""
        if not statement.startswith("BEGIN") and statement != _PING:
            self.queries += 1

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(
        self, *, read: bool = False, timeout: float | None = None
    ) -> Iterator[Connection]:
        """One transaction, committed on success, bounded by `timeout` (the store's by
        default); the database's errors become StateBackendError with the message redacted
        (a driver may quote the URL)."""
        bound = self.timeout if timeout is None else timeout
        try:
            with self._connect(bound) as connection:
                watchdog = _Watchdog(connection, bound) if self.postgres else None
                try:
                    connection.execution_options(canaryctl_read=read)
                    with connection.begin():
                        if self.postgres and bound != self.timeout:
                            millis = max(int(bound * 1000), 1)
                            for setting in ("statement_timeout", "lock_timeout"):
                                connection.exec_driver_sql(f"SET LOCAL {setting} = {millis}")
                        yield connection
                finally:
                    if watchdog is not None:
                        watchdog.disarm()
        except SQLAlchemyError as exc:
            detail = redact_text(str(getattr(exc, "orig", None) or exc)).splitlines()[0]
            raise StateBackendError(f"state database {self.where}: {detail}") from exc

    def _connect(self, timeout: float) -> Connection:
        """A pooled connection, retried with the backends' policy while the server cannot be
        reached (a restart, a failover): nothing was sent yet, so another attempt is safe. A
        PostgreSQL connection is pinged first under the watchdog (a connection the server
        dropped is replaced); attempts stop once `timeout` has passed."""
        deadline = time.monotonic() + timeout

        def attempt() -> Connection:
            try:
                connection = self._engine.connect()
            except (OperationalError, TimeoutError) as exc:
                raise self._retryable(exc, deadline, timeout) from exc
            if not self.postgres:
                return connection
            watchdog = _Watchdog(connection, timeout)
            try:
                connection.exec_driver_sql(_PING)
                connection.rollback()
            except DBAPIError as exc:
                connection.close()
                raise self._retryable(exc, deadline, timeout) from exc
            finally:
                watchdog.disarm()
            return connection

        try:
            return retry.call(attempt, self.retry_policy)
        except Retryable as exc:
            attempts = self.retry_policy.attempts
            raise StateBackendError(
                f"state database {self.where}: {exc.reason} (after {attempts} attempts)"
            ) from exc

    def _retryable(self, exc: Exception, deadline: float, timeout: float) -> Exception:
        """Another attempt while time remains; past the deadline, StateBackendError."""
        detail = redact_text(str(getattr(exc, "orig", None) or exc) or type(exc).__name__)
        detail = detail.splitlines()[0]
        if time.monotonic() >= deadline:
            return StateBackendError(
                f"state database {self.where}: {detail} (no answer within {timeout:g}s)"
            )
        return Retryable(detail)

    def _fence(self, connection: Connection, run_id: int, epoch: int | None) -> None:
        """Lock the run's row and check the writer still drives it at `epoch` (None: a write
        that no driver makes, such as a request from another terminal). Raises LeaseLost."""
        if epoch is None:
            return
        lock = " FOR SHARE" if self.postgres else ""
        found = connection.execute(
            text("SELECT epoch FROM runs WHERE id = :id" + lock), {"id": run_id}
        ).scalar()
        if found != epoch:
            raise LeaseLost(
                f"run {run_id}: its lease is at epoch {found}, this driver's is {epoch}: "
                "another driver took the run over; this one wrote nothing"
            )

    def _write(
        self, sql: str, *, fence: tuple[int, int | None] | None = None, **params: Any
    ) -> int:
        """Run one statement, fenced by (run id, epoch) when given; its row count."""
        with self._transaction() as connection:
            if fence is not None:
                self._fence(connection, *fence)
            return connection.execute(text(sql), params).rowcount

    def _insert(
        self, sql: str, *, fence: tuple[int, int | None] | None = None, **params: Any
    ) -> int:
        """Run one INSERT ... RETURNING id, fenced like `_write`; the new row's id."""
        with self._transaction() as connection:
            if fence is not None:
                self._fence(connection, *fence)
            return int(connection.execute(text(sql + " RETURNING id"), params).scalar_one())

    def _rows(self, sql: str, **params: Any) -> list[Mapping[str, Any]]:
        with self._transaction(read=True) as connection:
            return list(connection.execute(text(sql), params).mappings())

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
        owner: str | None = None,
        lease_until: float | None = None,
    ) -> int:
        """Open a run; with `owner`, already leased to it at epoch 1 (no controller may take
        it first)."""
        return self._insert(
            "INSERT INTO runs (name, runbook, host, pid, version, started_at, updated_at, phase,"
            " prior_flag, flag_version, state, owner, lease_until, heartbeat_at, epoch) VALUES"
            " (:name, :runbook, :host, :pid, :version, :at, :at, :phase, :prior, :flag_version,"
            " :state, :owner, :lease_until, :heartbeat_at, :epoch)",
            name=name,
            runbook=json.dumps(redacted_runbook(runbook)),
            host=host,
            pid=pid,
            version=version,
            at=started_at,
            phase=phase,
            prior=_snapshot_json(prior_flag),
            flag_version=prior_flag.version,
            state=json.dumps(state),
            owner=owner,
            lease_until=lease_until,
            heartbeat_at=None if owner is None else started_at,
            epoch=0 if owner is None else 1,
        )

    def submit_run(
        self, *, name: str, runbook: dict[str, Any], host: str, pid: int, version: str, at: float
    ) -> int:
        """A run for a controller to begin (`rollout run --detach`): journaled now, its flag
        read and claimed by whichever controller takes it."""
        return self._insert(
            "INSERT INTO runs (name, runbook, host, pid, version, started_at, updated_at, phase,"
            " prior_flag, flag_version, state) VALUES (:name, :runbook, :host, :pid, :version,"
            " :at, :at, :phase, 'null', 0, '{}')",
            name=name,
            runbook=json.dumps(redacted_runbook(runbook)),
            host=host,
            pid=pid,
            version=version,
            at=at,
            phase=SUBMITTED,
        )

    def begin_submitted(
        self,
        run_id: int,
        *,
        host: str,
        pid: int,
        version: str,
        started_at: float,
        prior_flag: FlagSnapshot,
        phase: str,
        state: dict[str, Any],
        epoch: int | None = None,
    ) -> None:
        """A controller's preflight passed: the submitted run becomes a run like any other."""
        self._write(
            "UPDATE runs SET host = :host, pid = :pid, version = :version, started_at = :at,"
            " updated_at = :at, phase = :phase, prior_flag = :prior, flag_version = :fv,"
            " state = :state WHERE id = :id",
            fence=(run_id, epoch),
            id=run_id,
            host=host,
            pid=pid,
            version=version,
            at=started_at,
            phase=phase,
            prior=_snapshot_json(prior_flag),
            fv=prior_flag.version,
            state=json.dumps(state),
        )

    def save_state(
        self,
        run_id: int,
        *,
        phase: str,
        state: dict[str, Any],
        at: float,
        reason: str = "",
        epoch: int | None = None,
    ) -> None:
        self._write(
            "UPDATE runs SET phase = :phase, state = :state, updated_at = :at, reason = :reason"
            " WHERE id = :id",
            fence=(run_id, epoch),
            phase=phase,
            state=json.dumps(state),
            at=at,
            reason=reason,
            id=run_id,
        )

    def set_flag_version(self, run_id: int, version: int, *, epoch: int | None = None) -> None:
        """The version our last write produced: what we expect to find on the next write."""
        self._write(
            "UPDATE runs SET flag_version = :v WHERE id = :id",
            fence=(run_id, epoch),
            v=version,
            id=run_id,
        )

    def claim(
        self, record: RunRecord, *, host: str, pid: int, at: float, epoch: int | None = None
    ) -> bool:
        """A resuming process names itself as the run's host and pid (what `status` shows).

        Compare-and-swap on the previous host and pid, so of two processes resuming the same
        run at once only one wins; the lease (`take_lease`) is what keeps drivers apart.
        """
        return (
            self._write(
                "UPDATE runs SET host = :host, pid = :pid, updated_at = :at"
                " WHERE id = :id AND host = :old_host AND pid = :old_pid",
                fence=(record.id, epoch),
                host=host,
                pid=pid,
                at=at,
                id=record.id,
                old_host=record.host,
                old_pid=record.pid,
            )
            == 1
        )

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
        epoch: int | None = None,
    ) -> None:
        self._write(
            "UPDATE runs SET phase = :phase, outcome = :outcome, reason = :reason,"
            " exit_code = :exit_code, ended_at = :at, updated_at = :at, final_split = :split,"
            " lease_until = NULL WHERE id = :id",
            fence=(run_id, epoch),
            phase=phase,
            outcome=outcome,
            reason=reason,
            exit_code=exit_code,
            at=at,
            split=None if final_split is None else json.dumps(final_split),
            id=run_id,
        )

    def run(self, run_id: int) -> RunRecord | None:
        rows = self._rows("SELECT * FROM runs WHERE id = :id", id=run_id)
        return _run_record(rows[0]) if rows else None

    def latest_run(self) -> RunRecord | None:
        rows = self._rows("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        return _run_record(rows[0]) if rows else None

    def runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self._rows("SELECT * FROM runs ORDER BY id DESC LIMIT :limit", limit=limit)
        return [_run_record(row) for row in rows]

    def unfinished_runs(self) -> list[RunRecord]:
        """Runs still driving a flag, or left mid-way by a process that died (to resume)."""
        rows = self._rows("SELECT * FROM runs WHERE ended_at IS NULL ORDER BY id")
        return [_run_record(row) for row in rows]

    # -- leases: one driver per run --

    def take_lease(
        self, run_id: int, owner: str, *, now: float, ttl: float, steal: str | None = None
    ) -> int | None:
        """Become (or stay) the driver of one unfinished run, if nobody else holds it now (or
        only `steal`, an owner known to be dead): the new lease's epoch, else None. The change
        of owner is journaled as a `lease` event."""
        with self._transaction() as connection:
            previous = connection.execute(
                text(
                    "SELECT owner FROM runs WHERE id = :id AND ended_at IS NULL AND (owner IS"
                    " NULL OR owner = :owner OR owner = :steal OR lease_until IS NULL"
                    " OR lease_until < :now)" + (" FOR UPDATE" if self.postgres else "")
                ),
                {"id": run_id, "owner": owner, "steal": steal, "now": now},
            ).first()
            if previous is None:
                return None
            return self._lease(connection, [(run_id, previous[0])], owner, now=now, ttl=ttl)[0]

    def acquire_runs(
        self, owner: str, *, now: float, ttl: float, limit: int, steal: Sequence[str] = ()
    ) -> list[RunRecord]:
        """Up to `limit` unfinished runs that nobody holds, whose lease expired, or held by one
        of `steal` (owners known to be dead), now leased to `owner`. Concurrent controllers
        never get the same run (see the module docstring)."""
        lock = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
        dead = {f"steal{i}": name for i, name in enumerate(steal)}
        stolen = "".join(f" OR owner = :{key}" for key in dead)
        with self._transaction() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, owner FROM runs WHERE ended_at IS NULL AND (owner IS NULL OR"
                    " lease_until IS NULL OR lease_until < :now" + stolen + ") ORDER BY id"
                    " LIMIT :limit" + lock
                ),
                {"now": now, "limit": limit, **dead},
            ).all()
            self._lease(connection, [(row[0], row[1]) for row in rows], owner, now=now, ttl=ttl)
            ids = [row[0] for row in rows]
            if not ids:
                return []
            found = connection.execute(
                text(
                    "SELECT * FROM runs WHERE id IN (" + ", ".join(map(str, ids)) + ") ORDER BY id"
                )
            ).mappings()
            return [_run_record(row) for row in found]

    def _lease(
        self,
        connection: Connection,
        runs: list[tuple[int, str | None]],
        owner: str,
        *,
        now: float,
        ttl: float,
    ) -> list[int]:
        """Lease each run to `owner` at a new epoch (the epochs, in order)."""
        epochs = []
        for run_id, previous in runs:
            epoch = connection.execute(
                text(
                    "UPDATE runs SET owner = :owner, lease_until = :until, heartbeat_at = :now,"
                    " epoch = epoch + 1 WHERE id = :id RETURNING epoch"
                ),
                {"owner": owner, "until": now + ttl, "now": now, "id": run_id},
            ).scalar_one()
            epochs.append(int(epoch))
            if previous != owner:
                connection.execute(
                    text(
                        "INSERT INTO events (run_id, at, type, data, result, ended_at)"
                        " VALUES (:id, :now, 'lease', :data, '{}', :now)"
                    ),
                    {
                        "id": run_id,
                        "now": now,
                        "data": json.dumps(
                            {"owner": owner, "previous": previous, "epoch": epochs[-1]}
                        ),
                    },
                )
        return epochs

    def lease_holders(self, *, now: float) -> dict[str, float]:
        """Every owner holding a lease on an unfinished run at `now`: when its earliest lease
        runs out (a controller's scan wakes then, and steals a dead owner's at once)."""
        with self._transaction(read=True) as connection:
            rows = connection.execute(
                text(
                    "SELECT owner, MIN(lease_until) FROM runs WHERE ended_at IS NULL AND owner IS"
                    " NOT NULL AND lease_until >= :now GROUP BY owner"
                ),
                {"now": now},
            ).all()
        return {str(row[0]): float(row[1]) for row in rows}

    def renew_leases(
        self, owner: str, runs: Mapping[int, int], *, now: float, ttl: float
    ) -> set[int]:
        """The heartbeat: extend the leases `owner` holds on `runs` (run id: epoch), the runs
        it drives and nothing else; the runs still held. A lease that expired unnoticed is
        renewed too while its epoch is unchanged: nobody else drove the run meanwhile."""
        if not runs:
            return set()
        held = " OR ".join(
            f"(id = {int(run_id)} AND epoch = {int(epoch)})" for run_id, epoch in runs.items()
        )
        with self._transaction() as connection:
            rows = connection.execute(
                text(
                    "UPDATE runs SET lease_until = :until, heartbeat_at = :now"
                    f" WHERE owner = :owner AND ended_at IS NULL AND ({held}) RETURNING id"
                ),
                {"owner": owner, "until": now + ttl, "now": now},
            ).all()
        return {row[0] for row in rows}

    def release_lease(self, run_id: int, owner: str, *, epoch: int) -> bool:
        """Hand a run back untouched: the next controller may take it at once. False when the
        lease was no longer ours at `epoch` (nothing changed)."""
        changed = self._write(
            "UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = :id AND owner = :owner"
            " AND epoch = :epoch",
            id=run_id,
            owner=owner,
            epoch=epoch,
        )
        return changed == 1

    # -- events --

    def begin_event(
        self,
        run_id: int,
        type_: str,
        data: dict[str, Any],
        *,
        at: float,
        epoch: int | None = None,
    ) -> int:
        """Write the intent before acting; `end_event` fills in what happened."""
        return self._insert(
            "INSERT INTO events (run_id, at, type, data) VALUES (:run_id, :at, :type, :data)",
            fence=(run_id, epoch),
            run_id=run_id,
            at=at,
            type=type_,
            data=json.dumps(data),
        )

    def end_event(
        self,
        event_id: int,
        result: dict[str, Any],
        *,
        at: float,
        run_id: int = 0,
        epoch: int | None = None,
    ) -> None:
        """The result of the event `begin_event` opened (fenced when `epoch` is given, with
        the `run_id` it belongs to)."""
        self._write(
            "UPDATE events SET result = :result, ended_at = :at WHERE id = :id",
            fence=(run_id, epoch),
            result=json.dumps(result),
            at=at,
            id=event_id,
        )

    def record_event(
        self,
        run_id: int,
        type_: str,
        data: dict[str, Any],
        *,
        at: float,
        epoch: int | None = None,
    ) -> int:
        """An event that is its own result (a phase change, a verdict)."""
        return self._insert(
            "INSERT INTO events (run_id, at, type, data, result, ended_at)"
            " VALUES (:run_id, :at, :type, :data, '{}', :at)",
            fence=(run_id, epoch),
            run_id=run_id,
            at=at,
            type=type_,
            data=json.dumps(data),
        )

    def events(self, run_id: int, type_: str | None = None) -> list[EventRecord]:
        query = "SELECT * FROM events WHERE run_id = :run_id"
        if type_ is not None:
            query += " AND type = :type"
        rows = self._rows(query + " ORDER BY id", run_id=run_id, type=type_)
        return [_event_record(row) for row in rows]

    # -- requests from other terminals --

    def request(self, run_id: int, kind: str, *, by: str, at: float) -> int:
        return self._insert(
            "INSERT INTO requests (run_id, kind, at, requested_by)"
            " VALUES (:run_id, :kind, :at, :by)",
            run_id=run_id,
            kind=kind,
            at=at,
            by=by,
        )

    def pending_requests(self, run_id: int) -> list[RequestRecord]:
        rows = self._rows(
            "SELECT id, run_id, kind, at, requested_by FROM requests"
            " WHERE run_id = :run_id AND handled_at IS NULL ORDER BY id",
            run_id=run_id,
        )
        return [RequestRecord(**row) for row in rows]

    def pending_requests_of(self, run_ids: Iterable[int]) -> list[RequestRecord]:
        """`pending_requests` for many runs in one statement (a controller's inbox)."""
        ids = sorted({int(i) for i in run_ids})
        if not ids:
            return []
        rows = self._rows(
            "SELECT id, run_id, kind, at, requested_by FROM requests WHERE handled_at IS NULL"
            " AND run_id IN (" + ", ".join(map(str, ids)) + ") ORDER BY id"
        )
        return [RequestRecord(**row) for row in rows]

    def mark_handled(
        self, request_id: int, *, at: float, run_id: int = 0, epoch: int | None = None
    ) -> None:
        """A request acted on (fenced by its run's epoch when given: a stale driver must not
        swallow an abort meant for the run's driver)."""
        self._write(
            "UPDATE requests SET handled_at = :at WHERE id = :id",
            fence=(run_id, epoch),
            at=at,
            id=request_id,
        )

    # -- experiments (canaryctl/experiment/): their own tables, never taken for a rollout --

    def create_experiment(
        self,
        *,
        name: str,
        document: dict[str, Any],
        design: dict[str, Any],
        host: str,
        pid: int,
        version: str,
        started_at: float,
        prior_flag: FlagSnapshot,
    ) -> int:
        """Open an experiment, with the flag as it was before its split (what a stop restores)
        and its analysis' design (what `status` judges the journaled intervals by)."""
        return self._insert(
            "INSERT INTO experiments (name, document, design, host, pid, version, started_at,"
            " updated_at, phase, prior_flag, flag_version) VALUES (:name, :document, :design,"
            " :host, :pid, :version, :at, :at, 'starting', :prior, :flag_version)",
            name=name,
            document=json.dumps(redacted_runbook(document)),
            design=json.dumps(design),
            host=host,
            pid=pid,
            version=version,
            at=started_at,
            prior=_snapshot_json(prior_flag),
            flag_version=prior_flag.version,
        )

    def update_experiment(
        self, experiment_id: int, *, phase: str, at: float, flag_version: int | None = None
    ) -> None:
        self._write(
            "UPDATE experiments SET phase = :phase, updated_at = :at,"
            " flag_version = COALESCE(:fv, flag_version) WHERE id = :id",
            phase=phase,
            at=at,
            fv=flag_version,
            id=experiment_id,
        )

    def record_observation(self, experiment_id: int, data: dict[str, Any], *, at: float) -> int:
        """One interval's counts (all traffic and per tier), as Observation.to_dict gives them."""
        with self._transaction() as connection:
            connection.execute(
                text("UPDATE experiments SET updated_at = :at WHERE id = :id"),
                {"at": at, "id": experiment_id},
            )
            return int(
                connection.execute(
                    text(
                        "INSERT INTO experiment_observations (experiment_id, at, data)"
                        " VALUES (:id, :at, :data) RETURNING id"
                    ),
                    {"id": experiment_id, "at": at, "data": json.dumps(data)},
                ).scalar_one()
            )

    def finish_experiment(
        self,
        experiment_id: int,
        *,
        outcome: str,
        reason: str,
        exit_code: int,
        winner: str | None,
        at: float,
        final_weights: dict[str, float] | None,
    ) -> None:
        self._write(
            "UPDATE experiments SET phase = 'finished', outcome = :outcome, reason = :reason,"
            " exit_code = :exit_code, winner = :winner, ended_at = :at, updated_at = :at,"
            " final_weights = :weights WHERE id = :id",
            outcome=outcome,
            reason=reason,
            exit_code=exit_code,
            winner=winner,
            at=at,
            weights=None if final_weights is None else json.dumps(final_weights),
            id=experiment_id,
        )

    def experiment(self, experiment_id: int | None = None) -> ExperimentRecord | None:
        """One experiment by id; the latest without one."""
        if experiment_id is None:
            rows = self._rows("SELECT * FROM experiments ORDER BY id DESC LIMIT 1")
        else:
            rows = self._rows("SELECT * FROM experiments WHERE id = :id", id=experiment_id)
        return _experiment_record(rows[0]) if rows else None

    def observations(self, experiment_id: int) -> list[tuple[float, dict[str, Any]]]:
        """Each interval's journaled counts, in order: (when, data)."""
        rows = self._rows(
            "SELECT at, data FROM experiment_observations WHERE experiment_id = :id ORDER BY id",
            id=experiment_id,
        )
        return [(row["at"], json.loads(row["data"])) for row in rows]


def _snapshot_json(snapshot: FlagSnapshot) -> str:
    return json.dumps({"key": snapshot.key, "version": snapshot.version, "raw": snapshot.raw})


def _run_record(row: Mapping[str, Any]) -> RunRecord:
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
        prior_flag=None
        if prior is None
        else FlagSnapshot(prior["key"], prior["version"], prior["raw"]),
        flag_version=row["flag_version"],
        state=json.loads(row["state"]),
        final_split=None if row["final_split"] is None else json.loads(row["final_split"]),
        owner=row["owner"],
        lease_until=row["lease_until"],
        epoch=row["epoch"],
    )


def _experiment_record(row: Mapping[str, Any]) -> ExperimentRecord:
    prior = json.loads(row["prior_flag"])
    return ExperimentRecord(
        id=row["id"],
        name=row["name"],
        document=json.loads(row["document"]),
        design=json.loads(row["design"]),
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
        winner=row["winner"],
        prior_flag=FlagSnapshot(prior["key"], prior["version"], prior["raw"]),
        flag_version=row["flag_version"],
        final_weights=None if row["final_weights"] is None else json.loads(row["final_weights"]),
    )


def _event_record(row: Mapping[str, Any]) -> EventRecord:
    return EventRecord(
        id=row["id"],
        run_id=row["run_id"],
        at=row["at"],
        type=row["type"],
        data=json.loads(row["data"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        ended_at=row["ended_at"],
    )
