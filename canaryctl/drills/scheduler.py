"""`drills serve`: chaos scenarios on their cron `schedule`, with APScheduler 3.

Jobs live in SQLite through APScheduler's SQLAlchemyJobStore, so a restarted server keeps each
drill's next fire time; a fire time missed while it was down runs once on restart (misfires are
coalesced) if within the grace period. A job is only a reference to `run_drill` and the
scenario's path: the document is re-read at every run, so edits apply without a restart.

One run at a time per proxy target (a lock per target URL; a drill finding it taken is skipped),
never during a rollout, never outside the scenario's window. Stopping the server interrupts a
running drill the way Ctrl-C interrupts `chaos run`: its faults are removed before it returns.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from canaryctl.chaos.client import ChaosClient, token_from_env
from canaryctl.chaos.journal import Journal
from canaryctl.chaos.scenario import hypothesis_metrics, run_scenario
from canaryctl.clock import SystemClock
from canaryctl.drills.guard import blocked_by, latest_fire_time, unfinished_rollouts
from canaryctl.drills.history import DrillHistory, DrillRun
from canaryctl.errors import CanaryError, InvalidDocument, InvalidInput
from canaryctl.redact import redact_url
from canaryctl.runbook.loader import load_document
from canaryctl.runbook.reading import document_files
from canaryctl.runbook.scenario import ChaosScenario, cron_trigger

__all__ = ["DrillHome", "DrillStatus", "discover", "drill_status", "run_drill", "serve"]

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class DrillHome:
    """Where drills keep their state: APScheduler's jobs, the run history, the journals."""

    root: Path
    state: str
    """The rollout state database consulted before every drill (a SQLite path or a URL)."""
    misfire_grace: float = 300.0

    @property
    def jobs_url(self) -> str:
        return f"sqlite:///{(self.root / 'jobs.db').resolve()}"

    @property
    def history(self) -> Path:
        return self.root / "history.db"

    @property
    def journals(self) -> Path:
        return self.root / "journals"


class _Runtime:
    """What jobs share within one server process (jobs themselves hold only plain arguments)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.emit: Emit = lambda event: None
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock_for(self, target: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(target, threading.Lock())


_RUNTIME = _Runtime()


class _StoppableClock(SystemClock):
    """Sleeps end early when the server stops, raising KeyboardInterrupt: the scenario then
    takes Ctrl-C's path and removes its faults."""

    def sleep(self, seconds: float) -> None:
        if _RUNTIME.stop.wait(max(seconds, 0.0)):
            raise KeyboardInterrupt


def discover(directory: Path) -> dict[str, Path]:
    """Scheduled ChaosScenario documents in `directory` by name; other documents are ignored,
    invalid ones are errors (a drill that silently never runs is worse than no drill)."""
    found: dict[str, Path] = {}
    problems = []
    for path in document_files(directory):
        try:
            document = load_document(path)
        except InvalidDocument as exc:
            problems.extend(exc.problems)
            continue
        if not isinstance(document, ChaosScenario) or document.spec.schedule is None:
            continue
        name = document.metadata.name
        if name in found:
            raise InvalidInput(f"{path}: metadata.name '{name}' is also used by {found[name]}")
        found[name] = path.resolve()
    if problems:
        raise InvalidDocument(problems)
    return found


def run_drill(scenario_path: str, root: str, state: str, misfire_grace: float) -> None:
    """The job APScheduler runs (module level, so the job store can keep a reference to it)."""
    home = DrillHome(Path(root), state, misfire_grace)
    emit = _RUNTIME.emit
    try:
        scenario = load_document(scenario_path, expect=ChaosScenario)
    except InvalidDocument as exc:
        emit({"event": "drill", "path": scenario_path, "outcome": "error", "reason": str(exc)})
        return
    name, spec = scenario.metadata.name, scenario.spec
    started = datetime.now(UTC)
    trigger = cron_trigger(spec.schedule or "* * * * *")
    slot = latest_fire_time(trigger, started, misfire_grace) or started
    with DrillHistory(home.history) as history:
        run_id = history.claim(name, slot.timestamp(), at=started.timestamp())
        if run_id is None:
            emit({"event": "drill", "drill": name, "outcome": "duplicate", "slot": str(slot)})
            return

        def finish(outcome: str, reason: str, journal: Path | None = None) -> None:
            at = time.time()
            history.finish(
                run_id, outcome=outcome, reason=reason, at=at, journal=journal and str(journal)
            )
            emit(
                {"event": "drill", "drill": name, "slot": slot.isoformat(), "outcome": outcome}
                | {"reason": reason}
            )

        reason = blocked_by(spec, started, unfinished_rollouts(home.state))
        if reason is not None:
            finish("skipped", reason)
            return
        lock = _RUNTIME.lock_for(spec.target.url)
        if not lock.acquire(blocking=False):
            finish("skipped", f"another drill is running against {redact_url(spec.target.url)}")
            return
        try:
            stamp = started.strftime("%Y%m%dT%H%M%SZ")
            path = home.journals / f"{name}-{stamp}.json"
            emit({"event": "drill", "drill": name, "slot": slot.isoformat(), "outcome": "started"})
            try:
                client = ChaosClient(spec.target.url, token_from_env(spec.target.token_env))
                result = run_scenario(
                    scenario,
                    injector=client,
                    metrics=hypothesis_metrics(scenario),
                    journal=Journal(scenario, path),
                    clock=_StoppableClock(),
                )
            except CanaryError as exc:
                outcome = "interrupted" if exc.exit_code == 130 else "error"
                finish(outcome, str(exc), path)
                return
            finish(result.outcome, result.reason, path)
        finally:
            lock.release()


@contextmanager
def _started(home: DrillHome) -> Iterator[BackgroundScheduler]:
    """A scheduler on the home's job store, started paused. Starting creates the jobs table if
    it is missing, which two processes (`drills serve` and `drills list` on a new home) could
    both try at once: the second got "table apscheduler_jobs already exists" and a crash, so
    starts are taken one at a time under a lock beside the database."""
    scheduler = _scheduler(home)
    with (home.root / "jobs.db.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            scheduler.start(paused=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    yield scheduler


def _scheduler(home: DrillHome) -> BackgroundScheduler:
    home.root.mkdir(parents=True, exist_ok=True)
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=home.jobs_url)},
        executors={"default": ThreadPoolExecutor(4)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(home.misfire_grace),
        },
        timezone=UTC,
    )


def _reconcile(scheduler: BackgroundScheduler, drills: dict[str, Path], home: DrillHome) -> None:
    """Make the stored jobs match DIR, keeping unchanged jobs (and their next fire time)."""
    for job in scheduler.get_jobs():
        if job.id not in drills:
            scheduler.remove_job(job.id)
    for name, path in drills.items():
        spec = load_document(path, expect=ChaosScenario).spec
        trigger = cron_trigger(spec.schedule or "")
        state = home.state if "://" in home.state else str(Path(home.state).resolve())
        args = (str(path), str(home.root.resolve()), state, home.misfire_grace)
        job = scheduler.get_job(name)
        if job is not None and str(job.trigger) == str(trigger) and tuple(job.args) == args:
            continue
        scheduler.add_job(run_drill, trigger, args=args, id=name, name=name, replace_existing=True)


def serve(directory: Path, home: DrillHome, *, stop: threading.Event, emit: Emit) -> None:
    """Schedule DIR's drills until `stop` is set; then interrupt running drills and return."""
    drills = discover(directory)
    _RUNTIME.stop.clear()
    _RUNTIME.emit = emit
    with _started(home) as scheduler:
        try:
            _reconcile(scheduler, drills, home)
            for job in scheduler.get_jobs():
                next_run = _iso(job.next_run_time)
                emit({"event": "scheduled", "drill": job.id, "next_run": next_run})
            scheduler.resume()
            stop.wait()
        finally:
            _RUNTIME.stop.set()
            scheduler.shutdown(wait=True)


@dataclass(frozen=True)
class DrillStatus:
    name: str
    path: Path
    schedule: str
    next_run: datetime | None
    last: DrillRun | None

    def to_dict(self) -> dict[str, Any]:
        last = self.last
        return {
            "drill": self.name,
            "path": str(self.path),
            "schedule": self.schedule,
            "next_run": _iso(self.next_run),
            "last_outcome": last.outcome if last else None,
            "last_reason": last.reason if last else None,
            "last_started_at": last.started_at if last else None,
        }


def drill_status(directory: Path, home: DrillHome) -> list[DrillStatus]:
    """Each drill's next fire time as the job store has it, and its last run."""
    drills = discover(directory)
    with _started(home) as scheduler:
        try:
            jobs = {job.id: job for job in scheduler.get_jobs()}
        finally:
            scheduler.shutdown(wait=False)
    statuses = []
    with DrillHistory(home.history) as history:
        for name, path in drills.items():
            schedule = load_document(path, expect=ChaosScenario).spec.schedule or ""
            job = jobs.get(name)
            if job is not None:
                next_run = job.next_run_time
            else:  # not served yet: when it would first fire
                next_run = cron_trigger(schedule).get_next_fire_time(None, datetime.now(UTC))
            statuses.append(DrillStatus(name, path, schedule, next_run, history.last(name)))
    return statuses


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
