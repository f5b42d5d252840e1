"""The controller service: one process drives every run submitted to a shared state database.

A scan takes the runs nobody drives (submitted ones, and those whose driver's lease ran out)
and drives each on its own thread with the same RolloutRunner as `rollout run`: a submitted run
begins with the full preflight, a run taken over from a dead driver goes through `resume`'s
checks (the flag where the journal left it, else stop and leave it alone). Several controllers
on one database share the runs through the leases (canaryctl/controller/lease.py); the journal
records each owner as a `lease` event.

Stopping (SIGTERM, Ctrl-C) hands every run back: each runner stops before its next action (a
wait, an analysis, a weight change) with the flag where it is, its lease is released and another
controller continues it at once. A deploy of the controller rolls nothing back. A run whose
lease is lost (this process stalled past it) stops the same way, without writing anything: its
lease's epoch is stale, so the journal and the flag's claim refuse it. A run whose thread ended
any other way is no longer renewed, so its lease lapses within one lease time and the run is
taken up again (by this controller or another) once the database answers.

The HTTP side is a Starlette app built by `create_app(controller, routes)`: `/healthz` here, and
whatever routes the caller mounts beside it.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from canaryctl.controller.events import RolloutObserver
from canaryctl.controller.lease import DEFAULT_LEASE_TTL, LeaseLost, Leases, RunReleased
from canaryctl.controller.phases import Phase
from canaryctl.controller.result import EXIT_CODES
from canaryctl.controller.runner import RolloutRunner
from canaryctl.controller.store import SUBMITTED, RequestRecord, RunRecord, StateStore
from canaryctl.controller.wiring import stored_rollout, wired
from canaryctl.errors import CanaryError, StateBackendError
from canaryctl.flags.base import FlagStore
from canaryctl.metrics.base import MetricsSource
from canaryctl.metrics.scrape_cache import ScrapeCache
from canaryctl.request_limits import ServerLimits
from canaryctl.runbook.rollout import Rollout
from canaryctl.serving import limited, server_for

ExceptionHandlers = Mapping[Any, Callable[[Request, Exception], Awaitable[Response]]]

__all__ = ["Controller", "ReleasingClock", "RequestInbox", "create_app", "serve"]

log = logging.getLogger(__name__)

_LAPSE_MARGIN = 0.01
"""Seconds past a lease's end that a scan wakes: the database takes a lease only once it ended."""

Backends = Callable[[Rollout, "ReleasingClock"], tuple[FlagStore, MetricsSource]]
"""The flag store and metrics source for a run: the runbook's own unless a test or a benchmark
gives fakes."""


class ReleasingClock:
    """The system clock, whose sleep raises RunReleased once the run is to be handed back:
    runners only wait in sleeps, so a hand-back never cuts a flag write in two."""

    def __init__(self, release: threading.Event) -> None:
        self._release = release

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if self._release.wait(max(seconds, 0.0)):
            raise RunReleased("handed back")


class RequestInbox:
    """The approve/abort requests of every run a controller drives, read in one statement per
    poll interval for all of them instead of one per run: 100 runs polling each second would
    be 100 statements a second. A run the last read did not cover is read at once, so a run
    just taken over sees an abort posted while nobody drove it before anything moves."""

    def __init__(self, store: StateStore, runs: Callable[[], list[int]], interval: float) -> None:
        self._store, self._runs, self._interval = store, runs, interval
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._covered: set[int] = set()
        self._pending: dict[int, list[RequestRecord]] = {}

    def pending(self, run_id: int) -> list[RequestRecord]:
        with self._lock:
            stale = time.monotonic() - self._read_at >= self._interval
            if stale or run_id not in self._covered:
                runs = {*self._runs(), run_id}
                found: dict[int, list[RequestRecord]] = {}
                for request in self._store.pending_requests_of(runs):
                    found.setdefault(request.run_id, []).append(request)
                self._pending, self._covered = found, runs
                self._read_at = time.monotonic()
            return list(self._pending.get(run_id, []))


@dataclass
class _Drive:
    record: RunRecord
    release: threading.Event
    thread: threading.Thread


class Controller:
    """Drives up to `capacity` runs at once; `start()` begins scanning, `stop()` hands back."""

    def __init__(
        self,
        store: StateStore,
        *,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        capacity: int = 500,
        poll_interval: float = 1.0,
        backends: Backends | None = None,
        observers: Sequence[RolloutObserver] = (),
    ) -> None:
        self.store = store
        self.leases = Leases(store, ttl=lease_ttl, on_lost=self._lost)
        self.capacity, self.poll_interval = capacity, poll_interval
        self.scan_interval = min(max(lease_ttl / 6, 0.2), 5.0)
        """Seconds between scans, at most: a scan also wakes as the earliest lease another
        driver holds runs out, so a takeover comes as that lease lapses (at once when its
        driver was a process of this host that is gone)."""
        self._backends = backends
        self.scrapes = ScrapeCache()
        """The scrapes every run shares: one per target per analysis interval."""
        self._observers = list(observers)
        self._drives: dict[int, _Drive] = {}
        self._lock = threading.Lock()
        self.inbox = RequestInbox(store, self.driving, poll_interval)
        self._stopping = threading.Event()
        self._scanner: threading.Thread | None = None

    @property
    def owner(self) -> str:
        return self.leases.owner

    def driving(self) -> list[int]:
        with self._lock:
            return sorted(self._drives)

    def start(self) -> Controller:
        self.leases.start()
        self._scanner = threading.Thread(target=self._scan_loop, name="scan", daemon=True)
        self._scanner.start()
        return self

    def scan(self) -> list[int]:
        """Take and start what nobody drives; the run ids started."""
        room = self.capacity - len(self.driving())
        if room <= 0 or self._stopping.is_set():
            return []
        started = []
        for record in self.leases.acquire(room):
            release = threading.Event()
            thread = threading.Thread(
                target=self._drive, args=(record, release), name=f"run-{record.id}", daemon=True
            )
            with self._lock:
                self._drives[record.id] = _Drive(record, release, thread)
            thread.start()
            started.append(record.id)
        return started

    def _scan_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.scan()
            except CanaryError as exc:  # the database is away: scan again later
                log.warning("controller scan failed: %s", exc)
            self._stopping.wait(self.next_scan_in())

    def next_scan_in(self) -> float:
        """Seconds to the next scan: one period, or less when a lease lapses sooner."""
        lapse, now = self.leases.next_lapse, time.time()
        if lapse is None or lapse <= now:  # none, or seen before a scan that had no room
            return self.scan_interval
        return min(self.scan_interval, lapse - now + _LAPSE_MARGIN)

    def _lost(self, run_ids: set[int]) -> None:
        """The heartbeat found runs another driver holds now: stop them, flag untouched."""
        with self._lock:
            for run_id in run_ids:
                if run_id in self._drives:
                    self._drives[run_id].release.set()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Hand every run back: runners stop at their next wait, leases are released."""
        self._stopping.set()
        if self._scanner is not None:
            self._scanner.join()
        with self._lock:
            drives = list(self._drives.values())
        for drive in drives:
            drive.release.set()
        deadline = time.monotonic() + timeout
        for drive in drives:
            drive.thread.join(max(deadline - time.monotonic(), 0.0))
        self.leases.close()

    # -- one run --

    def _drive(self, record: RunRecord, release: threading.Event) -> None:
        clock = ReleasingClock(release)
        epoch = record.epoch
        try:
            rollout = stored_rollout(record.runbook, original="")
            given = self._backends(rollout, clock) if self._backends is not None else (None, None)
            with wired(rollout, clock, *given, scrapes=self.scrapes) as wiring:
                runner = RolloutRunner(
                    rollout,
                    flags=wiring.flags,
                    metrics=wiring.metrics,
                    store=self.store,
                    clock=clock,
                    observers=[*self._observers, *wiring.notifiers],
                    hooks=wiring.hooks,
                    poll_interval=self.poll_interval,
                    leases=self.leases,
                    pending=self.inbox.pending,
                    shadow_flags=wiring.shadow_flags,
                    released=release.is_set,
                )
                if record.phase == SUBMITTED:
                    runner.run(submitted=record.id)
                else:
                    runner.resume(record.id)
        except LeaseLost as exc:  # another driver has it: nothing to write, nothing to release
            log.warning("run %d: %s", record.id, exc)
        except RunReleased as exc:
            self._hand_back(record.id, epoch, str(exc))
        except StateBackendError as exc:
            # The runner restored the flag if it could; the run is taken up again (and the
            # restore journaled) once the database answers and the lease has lapsed.
            log.warning("run %d: %s", record.id, exc)
        except CanaryError as exc:
            self._refuse(record, epoch, str(exc), exc.exit_code)
        except Exception as exc:
            log.exception("run %d: unexpected error", record.id)
            reason = f"unexpected {type(exc).__name__}: {exc}"
            self._refuse(record, epoch, reason, EXIT_CODES["error"])
        finally:
            self.leases.forget(record.id, epoch)  # not driven any more: never renewed again
            with self._lock:
                self._drives.pop(record.id, None)

    def _hand_back(self, run_id: int, epoch: int, why: str) -> None:
        at = time.time()
        data = {"owner": self.owner, "why": why, "epoch": epoch}
        try:
            self.store.record_event(run_id, "handed_back", data, at=at, epoch=epoch)
            self.leases.release(run_id, epoch)
        except (CanaryError, LeaseLost) as exc:  # the lease runs out by itself, or is gone
            log.warning("run %d: handing back failed: %s", run_id, exc)

    def _refuse(self, record: RunRecord, epoch: int, reason: str, exit_code: int) -> None:
        """A run that could not begin (its preflight refused it) or not go on: ended with the
        reason, its flag as the runner left it (fenced: only while the run is still ours)."""
        log.warning("run %d (%s) ended: %s", record.id, record.name, reason)
        try:
            at = time.time()
            message = {"source": "run", "message": reason}
            self.store.record_event(record.id, "error", message, at=at, epoch=epoch)
            self.store.finish_run(
                record.id,
                phase=Phase.FAILED.value,
                outcome="error",
                reason=reason,
                exit_code=exit_code,
                at=at,
                final_split=None,
                epoch=epoch,
            )
        except (CanaryError, LeaseLost) as exc:
            log.warning("run %d: journaling its end failed: %s", record.id, exc)


def create_app(
    controller: Controller,
    routes: Sequence[BaseRoute] = (),
    exception_handlers: ExceptionHandlers | None = None,
) -> Starlette:
    """The controller's HTTP app: `GET /healthz`, then `routes` (the API, the live page)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "owner": controller.owner,
                "host": socket.gethostname(),
                "driving": controller.driving(),
                "lease_ttl": controller.leases.ttl,
            }
        )

    app = Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"]), *routes],
        exception_handlers=dict(exception_handlers or {}),
    )
    return limited(app, ServerLimits())


def serve(
    controller: Controller,
    listener: socket.socket,
    *,
    routes: Sequence[BaseRoute] = (),
    exception_handlers: ExceptionHandlers | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Drive runs and serve `create_app(controller, routes)` on `listener` until SIGTERM,
    Ctrl-C or `stop`; then hand every run back. The server runs on a thread so that the
    signals stay ours: a signal asks for the hand-back, it never interrupts it."""
    stop = stop if stop is not None else threading.Event()

    def asked(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, asked) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = server_for(
        create_app(controller, routes, exception_handlers), lifespan="off", grace=None
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    controller.start()
    thread.start()
    try:
        while not stop.wait(0.5):
            if not thread.is_alive():
                break
    finally:
        controller.stop()
        server.should_exit = True
        thread.join(10.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
