"""The versioned flag-write protocol of one run: how the runner moves a flag without ever
overwriting a human's change.

Every write is journaled before it is made (`flag_changed` with the target and the version we
expect) and its result after; it is made with that expected version, so a flag someone else moved
is a FlagConflict, not an overwrite. A write journaled without its result was in flight when the
process died: a flag found at a newer version serving that write's target is ours (the write
landed), anything else is a human's. Before each write the run's lease must still be ours at
the epoch this driver took it (canaryctl/controller/lease.py); the journal refuses a stale
epoch, and the flag store refuses a write once the claim on the flag names a newer epoch
(ClaimFenced, raised here as LeaseLost), so a driver that lost its run never writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from canaryctl.clock import Clock
from canaryctl.controller.events import ObserverFanout
from canaryctl.controller.lease import LeaseLost, Leases
from canaryctl.controller.store import StateStore
from canaryctl.errors import ClaimFenced, FlagConflict, StateBackendError
from canaryctl.flags.base import FlagSnapshot, FlagStore, Split

__all__ = ["FlagWrites", "split_dict"]

_T = TypeVar("_T")


def split_dict(split: Split) -> dict[str, float]:
    return {"baseline": split.baseline, "canary": split.canary, "other": split.other}


class FlagWrites:
    """One run's writes to its flag: `begin` once the run is journaled, then `write`,
    `restore`; `ours` tells whether the flag is where this run left it.

    A shadow step's flag is written the same way, with `live=False`: journaled as `event`
    (not `flag_changed`, which resume reads for the live flag), its version kept in those events
    rather than in the run's row, and no weight announced to observers (users see no change)."""

    def __init__(
        self,
        flags: FlagStore,
        store: StateStore,
        leases: Leases,
        clock: Clock,
        observers: ObserverFanout,
        *,
        name: str,
        event: str = "flag_changed",
        live: bool = True,
    ) -> None:
        self.flags, self.store, self.leases, self.clock = flags, store, leases, clock
        self._observers, self._name = observers, name
        self._event, self._live = event, live
        self.run_id = 0
        self.epoch = 0
        """The epoch of the lease this driver writes under."""
        self.prior: FlagSnapshot | None = None
        """The flag as the run found it: what a rollback restores."""
        self.version = 0
        """The version our last write produced: what we expect to find."""
        self.in_flight: float | None = None
        """The canary weight a write journaled without its result was taking the flag to."""
        self.split: Split | None = None
        """The split as last read or written."""
        self.journal_error: StateBackendError | None = None
        """Why a restore made without the state database could not be journaled."""

    def begin(
        self,
        run_id: int,
        prior: FlagSnapshot,
        *,
        version: int,
        epoch: int,
        in_flight: float | None = None,
    ) -> None:
        self.run_id, self.prior, self.version, self.in_flight = run_id, prior, version, in_flight
        self.epoch = epoch

    def write(self, action: str, target_canary: float) -> FlagSnapshot:
        """Journal the intent, write with the version we expect, then journal the result.

        A restore goes ahead when the state database cannot be reached: the journal is there to
        make the flag's state known, and the baseline is the state that needs no journal. The
        version check still guards a human's (or a new driver's) change."""
        run = f"canaryctl run {self.run_id} ({self._name})"
        if not self._live:
            run += " shadow"
        journal = self._best_effort if action == "restore" else _strict
        journal(self.leases.ensure, self.run_id, self.epoch)
        before = self.split
        event_id = journal(
            self.store.begin_event,
            self.run_id,
            self._event,
            {
                "action": action,
                "target_canary": target_canary,
                "expect_version": self.version,
                "before": None if before is None else split_dict(before),
                "epoch": self.epoch,
            },
            at=self.clock.now(),
            epoch=self.epoch,
        )
        self.in_flight = target_canary
        try:
            snapshot = self._move(action, target_canary, run)
        except ClaimFenced as exc:
            raise LeaseLost(str(exc)) from exc
        self.in_flight = None
        self.version = snapshot.version
        if self._live:
            journal(self.store.set_flag_version, self.run_id, snapshot.version, epoch=self.epoch)
        self.split = after = self.flags.split(snapshot)
        if event_id is not None:
            journal(
                self.store.end_event,
                event_id,
                {"after": split_dict(after), "version": snapshot.version},
                at=self.clock.now(),
                run_id=self.run_id,
                epoch=self.epoch,
            )
        if before is not None and self._live:
            self._observers.on_weight(self.run_id, before, after)
        return snapshot

    def _move(self, action: str, target_canary: float, run: str) -> FlagSnapshot:
        """The flag write itself (fenced by the flag's claim in the store)."""
        if action == "set_weight":
            comment = f"{run}: canary to {target_canary:g}%"
            snapshot = self.flags.set_canary_weight(
                target_canary, expect_version=self.version, comment=comment
            )
        elif action == "promote":
            snapshot = self.flags.promote(expect_version=self.version, comment=f"{run}: promote")
        else:
            assert self.prior is not None
            snapshot = self.flags.restore(
                self.prior, expect_version=self.version, comment=f"{run}: restore"
            )
        return snapshot

    def ours(self, current: FlagSnapshot) -> bool:
        """Is the flag where we left it, or where our interrupted write was taking it?"""
        if current.version == self.version:
            return True
        if self.in_flight is None or current.version < self.version:
            return False
        if self.flags.split(current).canary != self.in_flight:
            return False
        self.version, self.in_flight = current.version, None
        if self._live:
            self.store.set_flag_version(self.run_id, current.version, epoch=self.epoch)
        return True

    def restore(self) -> None:
        """Put the saved snapshot back; a flag we never moved needs no write."""
        assert self.prior is not None
        current = self.flags.snapshot()
        if not self.ours(current):
            raise FlagConflict(
                f"flag '{current.key}' is at version {current.version}, expected "
                f"{self.version}: someone else changed it"
            )
        if current.version == self.prior.version:
            return
        self.write("restore", self.flags.split(self.prior).canary)

    def _best_effort(self, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
        """`call`, or None when the state database is down (remembered in `journal_error`,
        after which it is not tried again: a restore does not wait on a database that failed)."""
        if self.journal_error is not None:
            return None
        try:
            return call(*args, **kwargs)
        except StateBackendError as exc:
            self.journal_error = exc
            return None


def _strict(call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    return call(*args, **kwargs)
