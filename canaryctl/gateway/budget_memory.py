"""Budget counters in the gateway's memory, saved to a SQLite file: for a single gateway.

The check-and-add runs without an `await` inside it, so on the gateway's one event loop it is
atomic. Counters are saved every `save_interval` and at shutdown (a crash loses at most that
interval's spend) and loaded at start, expired buckets dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from canaryctl.gateway.budgets import BudgetStoreError, Slot

__all__ = ["MemoryStore"]

log = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER, expires REAL)"


def _load(path: Path, now: float) -> dict[str, tuple[int, float]]:
    """key -> (value, expires) of the live counters saved at `path` (none if no file)."""
    if not path.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute(_SCHEMA)
            rows = db.execute("SELECT key, value, expires FROM counters WHERE expires > ?", (now,))
            return {key: (int(value), float(expires)) for key, value, expires in rows}
    except sqlite3.Error as exc:
        raise BudgetStoreError(f"budgets: cannot read {path}: {exc}") from exc


def _save(path: Path, counters: dict[str, tuple[int, float]]) -> None:
    try:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute(_SCHEMA)
            db.execute("DELETE FROM counters")
            db.executemany(
                "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?)",
                [(key, value, expires) for key, (value, expires) in counters.items()],
            )
    except sqlite3.Error as exc:
        raise BudgetStoreError(f"budgets: cannot save {path}: {exc}") from exc


class MemoryStore:
    """A BudgetStore in a dict; `path=None` keeps nothing across restarts."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        save_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._clock = clock
        self._counters = _load(path, clock()) if path else {}
        self._dirty = False
        self._saver = (
            asyncio.get_running_loop().create_task(self._save_every(save_interval))
            if path
            else None
        )

    def _used(self, slot: Slot, now: float) -> int:
        total = 0
        for bucket in slot.buckets:
            value, expires = self._counters.get(bucket, (0, 0.0))
            if expires > now:
                total += value
        return total

    def _add(self, slots: Sequence[Slot], amounts: Sequence[int], now: float) -> list[int]:
        for slot, amount in zip(slots, amounts, strict=True):
            bucket = slot.buckets[0]
            value, expires = self._counters.get(bucket, (0, 0.0))
            value = value if expires > now else 0
            self._counters[bucket] = (value + amount, now + slot.ttl)
        self._dirty = True
        return [self._used(slot, now) for slot in slots]

    async def reserve(
        self, slots: Sequence[Slot], amounts: Sequence[int]
    ) -> tuple[int | None, list[int]]:
        now = self._clock()
        used = [self._used(slot, now) for slot in slots]
        for i, (slot, amount) in enumerate(zip(slots, amounts, strict=True)):
            if used[i] + amount > slot.limit:
                return i, used
        return None, self._add(slots, amounts, now)

    async def add(self, slots: Sequence[Slot], amounts: Sequence[int]) -> list[int]:
        return self._add(slots, amounts, self._clock())

    async def counters(self) -> dict[str, int]:
        now = self._clock()
        return {key: value for key, (value, expires) in self._counters.items() if expires > now}

    async def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        now = self._clock()
        live = {key: entry for key, entry in self._counters.items() if entry[1] > now}
        self._counters = live
        self._dirty = False
        await asyncio.to_thread(_save, self._path, dict(live))

    async def _save_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.save()
            except BudgetStoreError as exc:
                self._dirty = True
                log.warning("%s", exc)

    async def close(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        await self.save()
