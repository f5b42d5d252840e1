"""A scripted metrics source: the fake for tests, the simulation and the demo's dry runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from canaryctl.errors import MetricsBackendError
from canaryctl.metrics.base import Observation

__all__ = ["ScriptedMetricsSource"]


class ScriptedMetricsSource:
    """Answers `observe(since)` by calling `script(since, now)`; `now` comes from `clock`.

    Set `down = True` to make it behave like an unreachable backend. `recent` is what
    `recent_requests` (preflight's look at traffic) answers; None asks the script for the window.
    `shadow` answers `observe_shadow(since)` the same way, for a shadow step: `shadow(since,
    now)` gives the window's Observation with the baseline's and the candidate's counts.
    """

    def __init__(
        self,
        script: Callable[[float, float], Observation],
        clock: Callable[[], float],
        *,
        recent: Mapping[str, float] | None = None,
        shadow: Callable[[float, float], Observation] | None = None,
    ) -> None:
        self._script, self._clock, self._shadow = script, clock, shadow
        self.down = False
        self.recent = recent

    def check(self) -> None:
        if self.down:
            raise MetricsBackendError("scripted metrics source is down")

    def recent_requests(self, window: float) -> Mapping[str, float]:
        if self.recent is not None:
            self.check()
            return self.recent
        observed = self.observe(self._clock() - window)
        return {variant: stats.requests for variant, stats in observed.variants.items()}

    def observe(self, since: float) -> Observation:
        self.check()
        return self._script(since, self._clock())

    def observe_shadow(self, since: float, *, baseline: str, candidate: str) -> Observation:
        self.check()
        if self._shadow is None:
            raise MetricsBackendError("scripted metrics source has no shadow script")
        return self._shadow(since, self._clock())
