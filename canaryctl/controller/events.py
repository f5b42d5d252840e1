"""Observers of a rollout: the live view, JSON lines, anything that wants to listen.

Observers listen but never steer. Every method does nothing by default, so an observer overrides
only what it cares about; the fan-out logs and swallows an observer's exception, because a broken
progress display must not stop a rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from canaryctl.analysis import Verdict
from canaryctl.controller.hooks import HookResult
from canaryctl.controller.phases import Phase
from canaryctl.controller.result import RunResult
from canaryctl.controller.step import PlanItem
from canaryctl.flags.base import Split
from canaryctl.runbook.rollout import SloSpec

__all__ = ["ObserverFanout", "RolloutObserver", "RunInfo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """What an observer needs to draw the run before anything happens."""

    run_id: int
    name: str
    baseline: str
    canary: str
    plan: tuple[PlanItem, ...]
    slos: tuple[SloSpec, ...]
    split: Split
    resumed: bool = False


class RolloutObserver:
    """Subclass and override what you need; `run_id` comes first in every per-run call."""

    def on_start(self, run: RunInfo) -> None:
        """The run is journaled and the flag's prior state saved; nothing has moved yet."""

    def on_step(self, run_id: int, index: int, total: int, item: PlanItem) -> None:
        """Plan item `index` (0-based) of `total` begins."""

    def on_weight(self, run_id: int, before: Split, after: Split) -> None:
        """The flag was written (a new weight, a promotion or a restore)."""

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        pass

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        pass

    def on_request(self, run_id: int, kind: str, by: str) -> None:
        """Another terminal asked to approve or abort."""

    def on_error(self, run_id: int, message: str) -> None:
        """A backend failed; the run may still go on (metrics are retried)."""

    def on_hook(self, run_id: int, hook: str, result: HookResult) -> None:
        """A webhook was called after the flag was already safe."""

    def on_finish(self, result: RunResult) -> None:
        pass


class ObserverFanout(RolloutObserver):
    """Calls every observer in turn; one that raises is logged and the others still hear."""

    def __init__(self, observers: Sequence[RolloutObserver] = ()) -> None:
        self._observers = tuple(observers)

    def _each(self, method: str, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, method)(*args)
            except Exception:
                log.exception("observer %r failed in %s; ignoring it", observer, method)

    def on_start(self, run: RunInfo) -> None:
        self._each("on_start", run)

    def on_step(self, run_id: int, index: int, total: int, item: PlanItem) -> None:
        self._each("on_step", run_id, index, total, item)

    def on_weight(self, run_id: int, before: Split, after: Split) -> None:
        self._each("on_weight", run_id, before, after)

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        self._each("on_analysis", run_id, verdict)

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        self._each("on_phase", run_id, phase, reason)

    def on_request(self, run_id: int, kind: str, by: str) -> None:
        self._each("on_request", run_id, kind, by)

    def on_error(self, run_id: int, message: str) -> None:
        self._each("on_error", run_id, message)

    def on_hook(self, run_id: int, hook: str, result: HookResult) -> None:
        self._each("on_hook", run_id, hook, result)

    def on_finish(self, result: RunResult) -> None:
        self._each("on_finish", result)
