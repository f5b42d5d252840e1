"""What the gateway's own calls (shadow traffic, judges) spent in the last hour: the one meaning
of a `max_usd_per_hour` cap. The window rolls, so a cap is refilled as old spend leaves it rather
than all at once on the hour, which would let a full cap's worth through at every clock hour."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["LastHourSpend"]

_HOUR = 3600.0


class LastHourSpend:
    """USD added in the last hour by `clock` (seconds); one replica's, in memory."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._spent: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def add(self, usd: float) -> None:
        if usd > 0:
            self._spent.append((self._clock(), usd))
            self._total += usd

    def last_hour(self) -> float:
        since = self._clock() - _HOUR
        while self._spent and self._spent[0][0] <= since:
            self._total -= self._spent.popleft()[1]
        return max(self._total, 0.0)
