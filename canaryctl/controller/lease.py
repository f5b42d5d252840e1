"""Leases: which process drives a run, held in the state database so it holds across machines.

A driver (a `rollout run` process, a controller) has one owner id and leases each run it drives
for `ttl` seconds, renewed by a heartbeat every third of that, for the runs it drives and no
other (a run it dropped lapses within one lease). Each lease taken has an epoch that only grows;
the driver's every write names it and the store refuses a stale one (LeaseLost), so a process
that stalled past its lease and lost the run to another driver writes nothing: not to the
journal, and not to the flag, whose claim carries the epoch too. A driver that dies stops
renewing; after `ttl` anyone may take its runs. On its own host, a driver whose process is gone
loses its leases at once (its owner id names host, pid and PID namespace), so neither `resume`
after a crash nor a controller's scan need wait.

A driver knows when its lease was last confirmed (the heartbeat's last success): past the
lease time without one (the database is away, or the process was frozen) it asks the database
before it judges or writes again, and stops the run if the answer is not "still yours".

Lease times are wall-clock seconds (time.time), whatever clock the rollout itself runs on: they
are compared across processes and machines.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from canaryctl.controller.defaults import DEFAULT_LEASE_TTL, wait_bound
from canaryctl.controller.store import LeaseLost, RunRecord, RunReleased, StateStore
from canaryctl.errors import CanaryError, InvalidInput
from canaryctl.flags.base import process_alive

__all__ = ["DEFAULT_LEASE_TTL", "LeaseLost", "Leases", "RunReleased", "wait_bound"]

log = logging.getLogger(__name__)


@functools.cache
def _pid_namespace() -> str:
    """This process's PID namespace ('' where there is none to read): containers that share a
    host name (host networking) need not share their pids, and a pid names a process only
    within its namespace."""
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return ""


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_pid_namespace()}"


def _owner_gone(owner: str) -> bool:
    """Is `owner` a process of this host that no longer runs (so its leases are void)? Only
    one of our own PID namespace can be seen gone (an owner id without one predates them)."""
    host, pid, _, namespace, *_ = [*owner.split(":"), "", "", ""]
    if namespace and namespace != _pid_namespace():
        return False
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
        self._held: dict[int, int] = {}
        """Run id: the epoch of our lease on it."""
        self._confirmed: dict[int, float] = {}
        """Run id: when our lease on it was last known good (taken or renewed)."""
        self.next_lapse: float | None = None
        """When the earliest lease another live driver holds runs out, as the last `acquire`
        saw it (None: none held): a scan then takes that run over without waiting a period."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def until(self) -> float:
        """When a lease taken now ends (for a run created already leased)."""
        return self._now() + self.ttl

    def held(self) -> set[int]:
        with self._lock:
            return set(self._held)

    def epoch(self, run_id: int) -> int | None:
        """The epoch of our lease on `run_id`, None when we do not hold it."""
        with self._lock:
            return self._held.get(run_id)

    def adopt(self, run_id: int, epoch: int, *, at: float | None = None) -> None:
        """Drive `run_id` under the lease of `epoch` taken at `at` (now by default)."""
        with self._lock:
            self._held[run_id] = epoch
            self._confirmed[run_id] = self._now() if at is None else at

    def take(self, record: RunRecord) -> int:
        """Become the driver of `record`'s run (the lease's epoch) or raise InvalidInput
        naming who drives it."""
        steal = record.owner if record.owner and _owner_gone(record.owner) else None
        now = self._now()
        epoch = self.store.take_lease(record.id, self.owner, now=now, ttl=self.ttl, steal=steal)
        if epoch is None:
            current = self.store.run(record.id)
            if current is None or current.finished:
                raise InvalidInput(f"run {record.id} ended meanwhile")
            until = datetime.fromtimestamp(current.lease_until or 0, UTC)
            raise InvalidInput(
                f"run {record.id} is still driven by {current.owner} (its lease runs until "
                f"{until:%H:%M:%SZ} unless renewed): stop that process (its flag is restored) "
                f"or `canaryctl rollout abort {record.id}`"
            )
        self.adopt(record.id, epoch, at=now)
        return epoch

    def acquire(self, limit: int) -> list[RunRecord]:
        """Runs nobody drives, now ours (a controller's scan): those never leased or whose
        lease ran out, and at once those of a driver on this host whose process is gone. Sets
        `next_lapse`."""
        now = self._now()
        holders = self.store.lease_holders(now=now)
        dead = sorted(o for o in holders if o != self.owner and _owner_gone(o))
        live = [until for owner, until in holders.items() if owner not in (self.owner, *dead)]
        self.next_lapse = min(live, default=None)
        records = self.store.acquire_runs(
            self.owner, now=now, ttl=self.ttl, limit=limit, steal=dead
        )
        for record in records:
            self.adopt(record.id, record.epoch, at=now)
        return records

    def fresh(self, run_id: int) -> bool:
        """Was our lease on `run_id` confirmed within the lease time? No database call."""
        with self._lock:
            confirmed = self._confirmed.get(run_id)
        return confirmed is not None and self._now() - confirmed < self.ttl

    def ensure(self, run_id: int, epoch: int) -> None:
        """Renew our lease on `run_id` at `epoch` now, or raise LeaseLost: another driver took
        the run (or it ended). A lease that ran out while nobody took it is ours again: its
        epoch did not move, so nobody else wrote."""
        now = self._now()
        if run_id not in self.store.renew_leases(
            self.owner, {run_id: epoch}, now=now, ttl=self.ttl
        ):
            self.forget(run_id, epoch)
            raise LeaseLost(f"run {run_id}: another driver holds its lease now")
        with self._lock:
            if self._held.get(run_id) == epoch:
                self._confirmed[run_id] = now

    def confirm(self, run_id: int, epoch: int) -> None:
        """Before judging or writing: nothing to do while the heartbeat keeps the lease fresh;
        past the lease time without a confirmation, ask the database (LeaseLost, or
        StateBackendError while it is away)."""
        if not self.fresh(run_id):
            self.ensure(run_id, epoch)

    def release(self, run_id: int, epoch: int) -> None:
        """Hand the run back: another driver may take it at once."""
        self.forget(run_id, epoch)
        self.store.release_lease(run_id, self.owner, epoch=epoch)

    def forget(self, run_id: int, epoch: int | None = None) -> None:
        """The run ended or was dropped (the lease of `epoch`, or whichever we hold): nothing
        to renew any more, so the lease lapses within one lease time."""
        with self._lock:
            if epoch is None or self._held.get(run_id) == epoch:
                self._held.pop(run_id, None)
                self._confirmed.pop(run_id, None)

    def beat(self) -> set[int]:
        """Renew the leases of the runs we drive; the runs lost since the last beat (told to
        `on_lost` too)."""
        now = self._now()
        with self._lock:
            held = dict(self._held)
        renewed = self.store.renew_leases(self.owner, held, now=now, ttl=self.ttl)
        with self._lock:
            lost = {r for r, e in held.items() if r not in renewed and self._held.get(r) == e}
            for run_id in lost:
                self._held.pop(run_id, None)
                self._confirmed.pop(run_id, None)
            for run_id in renewed:
                if self._held.get(run_id) == held[run_id]:
                    self._confirmed[run_id] = now
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
