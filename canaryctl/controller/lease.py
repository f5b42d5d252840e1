"""Leases: which process drives a run, held in the state database so it holds across machines.

A driver (a `rollout run` process, a controller) has one owner id and leases each run it drives
for `ttl` seconds, renewed by a heartbeat every third of that. Before each flag write it checks
that the lease is still its own: a process that stalled past its lease and lost the run to
another driver stops without touching the flag. A driver that dies stops renewing; after `ttl`
anyone may take its runs. On its own host, a driver whose process is gone loses its leases at
once (its owner id names host and pid), so `resume` after a crash need not wait.

Lease times are wall-clock seconds (time.time), whatever clock the rollout itself runs on: they
are compared across processes and machines.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from canaryctl.controller.defaults import DEFAULT_LEASE_TTL
from canaryctl.controller.store import RunRecord, StateStore
from canaryctl.errors import CanaryError, InvalidInput
from canaryctl.flags.base import process_alive

__all__ = ["DEFAULT_LEASE_TTL", "LeaseLost", "Leases", "RunReleased"]

log = logging.getLogger(__name__)


class RunReleased(Exception):
    """This process no longer drives the run: the controller handed it back (SIGTERM) or its
    lease was lost. The flag is left as it is; the next driver continues from the journal."""


class LeaseLost(RunReleased):
    """Another driver holds the run's lease now: this process stalled past its expiry."""


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_gone(owner: str) -> bool:
    """Is `owner` a process of this host that no longer runs (so its leases are void)?"""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return pid.isdigit() and process_alive(host, int(pid)) is False


class Leases:
    """One driver's leases; `start()` runs the heartbeat, `close()` stops it (the leases stay
    until released or expired)."""

    def __init__(
        self,
        store: StateStore,
        *,
        ttl: float = DEFAULT_LEASE_TTL,
        owner: str | None = None,
        now: Callable[[], float] = time.time,
        on_lost: Callable[[set[int]], None] = lambda lost: None,
    ) -> None:
        self.store, self.ttl, self._now, self._on_lost = store, ttl, now, on_lost
        self.owner = owner if owner is not None else _owner_id()
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def until(self) -> float:
        """When a lease taken now ends (for a run created already leased)."""
        return self._now() + self.ttl

    def held(self) -> set[int]:
        with self._lock:
            return set(self._held)

    def adopt(self, run_id: int) -> None:
        with self._lock:
            self._held.add(run_id)

    def take(self, record: RunRecord) -> None:
        """Become the driver of `record`'s run or raise InvalidInput naming who drives it."""
        steal = record.owner if record.owner and _owner_gone(record.owner) else None
        if not self.store.take_lease(
            record.id, self.owner, now=self._now(), ttl=self.ttl, steal=steal
        ):
            current = self.store.run(record.id)
            if current is None or current.finished:
                raise InvalidInput(f"run {record.id} ended meanwhile")
            until = datetime.fromtimestamp(current.lease_until or 0, UTC)
            raise InvalidInput(
                f"run {record.id} is still driven by {current.owner} (its lease runs until "
                f"{until:%H:%M:%SZ} unless renewed): stop that process (its flag is restored) "
                f"or `canaryctl rollout abort {record.id}`"
            )
        self.adopt(record.id)

    def acquire(self, limit: int) -> list[RunRecord]:
        """Runs nobody drives, now ours (a controller's scan)."""
        records = self.store.acquire_runs(self.owner, now=self._now(), ttl=self.ttl, limit=limit)
        for record in records:
            self.adopt(record.id)
        return records

    def ensure(self, run_id: int) -> None:
        """Before a flag write: raise LeaseLost unless the run is still ours."""
        if not self.store.holds_lease(run_id, self.owner, now=self._now()):
            with self._lock:
                self._held.discard(run_id)
            raise LeaseLost(f"run {run_id}: another driver holds its lease now")

    def release(self, run_id: int) -> None:
        """Hand the run back: another driver may take it at once."""
        with self._lock:
            self._held.discard(run_id)
        self.store.release_lease(run_id, self.owner)

    def forget(self, run_id: int) -> None:
        """The run ended: nothing to renew any more."""
        with self._lock:
            self._held.discard(run_id)

    def beat(self) -> set[int]:
        """Renew every lease; the runs lost since the last beat (told to `on_lost` too)."""
        renewed = self.store.renew_leases(self.owner, now=self._now(), ttl=self.ttl)
        with self._lock:
            lost = self._held - renewed
            self._held -= lost
        if lost:
            self._on_lost(lost)
        return lost

    def start(self) -> Leases:
        self._thread = threading.Thread(target=self._heartbeat, name="leases", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.beat()
            except CanaryError as exc:  # the database is away: the next beat tries again
                log.warning("lease heartbeat failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
