"""A guard's watch: the loop that judges the watched variation between rollouts and, when an SLO
fails or a matching alert fires, sends all traffic to the safe one.

Each tick the guard reads its journal first (journal.py): tripped means it does nothing but
finish making the flag safe, until a `rearmed` line appears. It then looks for an unfinished
rollout on its flag in the state store (`unfinished_runs`, whatever database holds them): while
one runs, the rollout's own analysis and `abort_on` are in charge and the guard stands aside,
judging nothing; a matching alert that fires meanwhile is held (journaled as `alert_held`) and
trips the guard once the rollout has ended, unless Alertmanager resolves it first: an alert
routed to the guard alone must not be lost because a rollout happened to run. Otherwise every
`analysis.interval` it judges the window since the last one with the rollout's analysis
(`assess`, the watched variation as the canary, the safe one as a baseline that may serve
nothing) and trips once more than `failure_limit` windows in a row have failed. A metrics
backend that fails is journaled and judged nothing: no data is no verdict.

Tripping is journaled before the flag moves, and the move is retried every tick until the flag
serves the safe variation: the trip always ends in that known state. The move is a versioned
write under a claim on the flag, so a rollout cannot start halfway through it. `on_trip` hooks
are called once the flag is safe.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

from canaryctl.analysis import Outcome, assess
from canaryctl.api.alerts import Alert
from canaryctl.clock import Clock
from canaryctl.controller.hooks import HookRunner
from canaryctl.controller.preflight import flag_identity
from canaryctl.controller.store import RunRecord
from canaryctl.errors import CanaryError, MetricsBackendError
from canaryctl.flags.base import FlagClaim, FlagStore
from canaryctl.guard.journal import GuardJournal
from canaryctl.metrics.base import MetricsSource
from canaryctl.redact import redact_document
from canaryctl.runbook.alerts import matches
from canaryctl.runbook.guard import Guard

__all__ = ["GuardPhase", "GuardWatch"]

log = logging.getLogger(__name__)


def _alert_key(alert: Alert) -> str:
    """One alert across Alertmanager's repeats and its resolve: its fingerprint, else its labels."""
    return alert.fingerprint or repr(sorted(alert.labels.items()))


class GuardPhase(StrEnum):
    WATCHING = "watching"
    STANDING_ASIDE = "standing_aside"
    TRIPPED = "tripped"


class GuardWatch:
    def __init__(
        self,
        guard: Guard,
        *,
        flags: FlagStore,
        metrics: MetricsSource,
        journal: GuardJournal,
        clock: Clock,
        rollouts: Callable[[], Sequence[RunRecord]],
        hooks: HookRunner | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.guard, self.flags, self.metrics = guard, flags, metrics
        self.journal, self.clock, self.rollouts = journal, clock, rollouts
        self.hooks = hooks if hooks is not None else HookRunner()
        self.poll_interval = poll_interval
        # Compared as stored: the journal keeps URLs redacted.
        self._flag = flag_identity(
            redact_document(guard.spec.flag.model_dump(mode="json", by_alias=True))
        )
        self.phase: GuardPhase | None = None
        self._safe = False
        self._fired: dict[str, Alert] = {}
        """Firing alerts not yet acted on, by `_alert_key`: a repeat replaces, a resolve removes."""
        self._held: set[str] = set()
        """Keys of the alerts journaled as held while standing aside."""
        self._lock = threading.Lock()
        self._window_start = 0.0
        self._ledger: dict[str, Any] = {}
        self._failures = 0

    # -- alerts, from the webhook's thread --

    def fire(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Queue the firing alerts that match `trip_on` for the next tick and return them; a
        resolved one withdraws the same alert if it is still queued."""
        hits = [
            a for a in alerts
            if a.status == "firing" and matches(self.guard.spec.trip_on, a.labels)
        ]  # fmt: skip
        with self._lock:
            for alert in alerts:
                if alert.status == "resolved":
                    self._fired.pop(_alert_key(alert), None)
            self._fired.update((_alert_key(a), a) for a in hits)
        return hits

    def _take_alerts(self) -> list[Alert]:
        with self._lock:
            fired, self._fired = list(self._fired.values()), {}
        self._held.clear()
        return fired

    def _hold_alerts(self, now: float, run_id: int) -> None:
        """Journal each alert newly queued while a rollout is in charge; keep them all."""
        with self._lock:
            new = {key: a for key, a in self._fired.items() if key not in self._held}
        for key, alert in new.items():
            self._held.add(key)
            self.journal.append("alert_held", at=now, run_id=run_id, alertname=alert.name,
                                fingerprint=alert.fingerprint)  # fmt: skip

    # -- the loop --

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        """Tick every `poll_interval` until `until()` (or Ctrl-C)."""
        while not until():
            self.tick()
            self.clock.sleep(self.poll_interval)

    def tick(self) -> GuardPhase:
        now = self.clock.now()
        trip = self.journal.last_trip()
        if trip is not None:
            self._take_alerts()  # a tripped guard is done: alerts change nothing
            if self.phase is not GuardPhase.TRIPPED:  # started tripped: was the move done?
                self.phase = GuardPhase.TRIPPED
                self._safe = self._moved_since_trip()
            if not self._safe:
                self._make_safe(str(trip.get("reason", "")))
            return self.phase
        if self.phase is GuardPhase.TRIPPED:
            log.warning("guard %s re-armed", self.guard.metadata.name)
        held = self._rollout_on_flag()
        if held is not None:
            if self.phase is not GuardPhase.STANDING_ASIDE:
                self.phase = GuardPhase.STANDING_ASIDE
                self.journal.append("standing_aside", at=now, run_id=held.id, rollout=held.name)
            self._hold_alerts(now, held.id)  # acted on once the rollout has ended
            return self.phase
        if self.phase is not GuardPhase.WATCHING:
            self.phase = GuardPhase.WATCHING
            self.journal.append("watching", at=now)
            self._begin_window(now)
            return self.phase
        fired = self._take_alerts()
        if fired:
            alert = fired[0]
            self._trip(f"alert {alert.name} fired", now, alert={
                "alertname": alert.name, "fingerprint": alert.fingerprint,
                "labels": dict(alert.labels)})  # fmt: skip
        elif now - self._window_start >= self.guard.spec.analysis.interval:
            self._analyze(now)
        return self.phase

    def _begin_window(self, now: float) -> None:
        self._window_start, self._ledger, self._failures = now, {}, 0
        try:
            self.metrics.check()  # the scrape source takes the window's first sample here
        except MetricsBackendError as exc:
            self.journal.append("error", at=now, source="metrics", message=str(exc))

    def _rollout_on_flag(self) -> RunRecord | None:
        for record in self.rollouts():
            flag = record.runbook.get("spec", {}).get("flag", {})
            if flag_identity(flag) == self._flag:
                return record
        return None

    def _analyze(self, now: float) -> None:
        spec = self.guard.spec
        since, self._window_start = self._window_start, now
        try:
            observation = self.metrics.observe(since)
            baseline, canary = self.flags.variants(self.flags.snapshot())
        except CanaryError as exc:
            self.journal.append("error", at=now, source="analysis", message=str(exc))
            return
        # The next window starts where this one's counts end: a scrape taken after `now` ends
        # it, and a window starting at `now` would reach back to this one's start.
        self._window_start = max(now, observation.end)
        verdict, self._ledger = assess(spec.slos, spec.analysis, observation, self._ledger,
                                       baseline=baseline, canary=canary,
                                       baseline_served=False)  # fmt: skip
        if verdict.outcome is Outcome.PASS:
            self._failures = 0
        if verdict.outcome is not Outcome.FAIL:
            return
        self._failures += 1
        self.journal.append("analysis", at=now, failures=self._failures, **verdict.to_dict())
        if self._failures > spec.analysis.failure_limit:
            self._trip(f"SLO failed: {verdict.reason}", now)

    def _trip(self, reason: str, now: float, **cause: Any) -> None:
        name = self.guard.metadata.name
        log.warning("guard %s tripped: %s", name, reason)
        self.journal.append("tripped", at=now, reason=reason, **cause)
        self.phase, self._safe = GuardPhase.TRIPPED, False
        self._make_safe(reason)

    def _moved_since_trip(self) -> bool:
        for entry in reversed(self.journal.entries()):
            if entry["event"] == "tripped":
                return False
            if entry["event"] == "flag_safe":
                return True
        return False

    def _make_safe(self, reason: str) -> None:
        """Everything to the safe variation (the flag's baseline); retried every tick."""
        spec, name = self.guard.spec, self.guard.metadata.name
        try:
            snapshot = self.flags.snapshot()
            before = self.flags.split(snapshot)
            entry: dict[str, Any] = {"before": vars(before), "safe": spec.flag.baseline}
            if before.baseline < 100:
                claim = FlagClaim(token=uuid.uuid4().hex, run_id=None, state=f"guard {name}",
                                  host=socket.gethostname(), pid=os.getpid(),
                                  at=self.clock.now(), holder="guard")  # fmt: skip
                self.flags.claim(claim)
                try:
                    moved = self.flags.set_canary_weight(
                        0, expect_version=snapshot.version,
                        comment=f"canaryctl guard {name}: {reason}"[:500])  # fmt: skip
                finally:
                    self.flags.release(claim)
                entry |= {"after": vars(self.flags.split(moved)), "version": moved.version}
        except CanaryError as exc:
            self.journal.append("error", at=self.clock.now(), source="flag", message=str(exc))
            return
        self.journal.append("flag_safe", at=self.clock.now(), **entry)
        self._safe = True
        payload = {"event": "guard_tripped", "guard": name, "flag": spec.flag.key,
                   "safe": spec.flag.baseline, "watched": spec.flag.canary, "reason": reason,
                   "before": entry["before"]}  # fmt: skip
        for hook in spec.on_trip:
            result = self.hooks.call(hook, payload)
            self.journal.append("hook", at=self.clock.now(), **result.to_dict())
