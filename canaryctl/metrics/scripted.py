"""A scripted metrics source: the fake for tests, the simulation and the demo's dry runs."""

from __future__ import annotations

from collections.abc import Callable

from canaryctl.errors import MetricsBackendError
from canaryctl.metrics.base import Observation

__all__ = ["ScriptedMetricsSource"]


class ScriptedMetricsSource:
    """Answers `observe(since)` by calling `script(since, now)`; `now` comes from `clock`.

    Set `down = True` to make it behave like an unreachable backend.
    """

    def __init__(
        self,
        script: Callable[[float, float], Observation],
        clock: Callable[[], float],
    ) -> None:
        self._script, self._clock = script, clock
        self.down = False

    def check(self) -> None:
        if self.down:
            raise MetricsBackendError("scripted metrics source is down")

    def observe(self, since: float) -> Observation:
        self.check()
        return self._script(since, self._clock())
