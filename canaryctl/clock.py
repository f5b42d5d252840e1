"""Time as a seam: the rollout runner, chaos scenarios and drills ask a Clock, so tests and
simulations run in milliseconds. It sits below every package that waits, not in one of them."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """Sleeping advances time instantly; `call_at` plays what happens elsewhere meanwhile.

    A callback scheduled with `call_at(t, fn)` runs once time reaches `t` during a sleep, which is
    how tests act as another terminal (approve, abort) or as a crash at a chosen moment.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        until = self._now + max(seconds, 0.0)
        while self._due and self._due[0][0] <= until:
            at, _, callback = heapq.heappop(self._due)
            self._now = max(self._now, at)
            callback()
        self._now = until

    def call_at(self, at: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._due, (at, next(self._order), callback))
