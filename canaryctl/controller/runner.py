"""The imperative shell around the pure tick: moves the flag, reads metrics, sleeps, journals.

Every exit path ends with the flag at a known state. A verdict, an abort, a metrics outage, a flag
backend error, Ctrl-C/SIGTERM (arriving as KeyboardInterrupt) and any unexpected exception all
pass through `_drive`, which restores the saved snapshot before reporting. The one exception is
FlagConflict: someone else changed the flag, so a human is at the wheel and we stop without
touching it. We look for that at every write and before every analysis, so a human's edit during
a long pause is noticed within one interval.

Preflight happens before the run is journaled: if another unfinished run holds the flag (in this
state database, or by its claim beside the flag, whatever database it uses), a chaos step's
scenario does not validate, the flag cannot be read or does not serve the baseline to everyone
(FlagMismatch, exit 2), the metrics backend does not answer (exit 3), or the baseline has had no
traffic recently under the runbook's route and selector (exit 2), `run` raises and nothing has
changed. With `from_current`, a flag already splitting traffic between the baseline and the
canary is taken as it is: the split becomes the state a rollback restores, and the run begins at
the first `set_weight` above the current canary weight (every step before it is skipped).

The run claims its flag (FlagStore.claim) before it reads it and releases the claim when it ends,
however it ends; a process that dies leaves the claim, which `resume` re-takes (the claim's token
is journaled as the `flag_claimed` event) and which refuses any new run until then.

Resume (after a crash: the process died without reaching `finally`) reads the flag back. If it is
where the journal says we left it, or where a write journaled as in flight was taking it, the run
continues from the stored step; a hold restarts from scratch with a fresh analysis window,
because the dead process's observations are lost and the canary must prove itself again. If the
flag is anywhere else, a human moved it: we stop without touching it (exit 3). If the metrics
backend does not answer on resume, the flag is restored (exit 3): we will not leave a canary
unwatched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canaryctl.analysis import Verdict, assess
from canaryctl.controller.clock import Clock, SystemClock
from canaryctl.controller.events import ObserverFanout, RolloutObserver, RunInfo
from canaryctl.controller.hooks import HookRunner, check_hook_urls
from canaryctl.controller.phases import Phase
from canaryctl.controller.result import EXIT_CODES, RunResult
from canaryctl.controller.step import (
    AbortRequested,
    Action,
    Analyze,
    Analyzed,
    Approved,
    ChaosPlayed,
    Event,
    Finish,
    MetricsFailed,
    PlanItem,
    Promote,
    Promoted,
    Resumed,
    Rollback,
    RolledBack,
    RolloutState,
    RunChaos,
    SetWeight,
    Wait,
    WeightItem,
    WeightSet,
    plan,
    tick,
)
from canaryctl.controller.store import RunRecord, StateStore
from canaryctl.errors import (
    CanaryError,
    FlagBackendError,
    FlagConflict,
    FlagMismatch,
    Interrupted,
    InvalidInput,
    MetricsBackendError,
)
from canaryctl.flags.base import FlagClaim, FlagSnapshot, FlagStore, Split, process_alive
from canaryctl.metrics.base import MetricsSource
from canaryctl.redact import redact_document, redact_url
from canaryctl.runbook.loader import load_document
from canaryctl.runbook.rollout import PrometheusMetricsSpec, Rollout
from canaryctl.runbook.scenario import ChaosScenario

if TYPE_CHECKING:
    from canaryctl.chaos.scenario import ScenarioResult
    from canaryctl.notify import WebhookNotifier

__all__ = [
    "RolloutRunner",
    "ensure_baseline_has_traffic",
    "resume_rollout",
    "run_rollout",
    "starting_state",
]

log = logging.getLogger(__name__)

_FINAL_PHASE = {
    "promoted": Phase.PROMOTED,
    "rolled_back": Phase.ROLLED_BACK,
    "aborted": Phase.ABORTED,
    "error": Phase.FAILED,
    "interrupted": Phase.INTERRUPTED,
}


TRAFFIC_WINDOW = 300.0
"""Seconds back preflight looks for baseline traffic: "recent" for a Prometheus source."""
TRAFFIC_PATIENCE = 60.0
"""Most seconds preflight waits for a first baseline request (the analysis interval, at least
5 s): a gateway started a moment ago has served nothing yet."""


def _canaryctl_version() -> str:
    try:
        return version("canaryctl")
    except PackageNotFoundError:
        return "unknown"


def _split_dict(split: Split) -> dict[str, float]:
    return {"baseline": split.baseline, "canary": split.canary, "other": split.other}


class RolloutRunner:
    """Runs one rollout to its end; `poll_interval` is how often waits look for approve/abort."""

    def __init__(
        self,
        rollout: Rollout,
        *,
        flags: FlagStore,
        metrics: MetricsSource,
        store: StateStore,
        clock: Clock,
        observers: Sequence[RolloutObserver] = (),
        hooks: HookRunner | None = None,
        poll_interval: float = 1.0,
        chaos: ChaosPlayer | None = None,
        from_current: bool = False,
        break_claim: bool = False,
    ) -> None:
        self.rollout = rollout
        self.flags, self.metrics, self.store, self.clock = flags, metrics, store, clock
        self.hooks = hooks if hooks is not None else HookRunner()
        self.poll_interval = poll_interval
        self._chaos = chaos if chaos is not None else _play_scenario
        self._scenarios: dict[str, ChaosScenario] = {}
        self._observers = ObserverFanout(observers)
        self._plan = plan(rollout.spec)
        self._run_id = 0
        self._state = RolloutState()
        self._prior: FlagSnapshot | None = None
        self._version = 0
        self._split: Split | None = None
        self._in_flight: float | None = None
        self._announced: int | None = None
        self._last_verdict: Verdict | None = None
        self._from_current, self._break_claim = from_current, break_claim
        self._claim: FlagClaim | None = None

    # -- entry points --

    def run(self) -> RunResult:
        """Preflight, journal the run, then tick until promoted or restored."""
        self._ensure_flag_is_free()
        self._scenarios = _load_scenarios(self.rollout)
        claim = self._new_claim(uuid.uuid4().hex, None)
        self.flags.claim(claim, take_over=self._break_claim)
        try:
            prior = self.flags.snapshot()
            self._split = self.flags.split(prior)
            self._state = starting_state(self.rollout, self._split, from_current=self._from_current)
            self.metrics.check()
            baseline = self.flags.variants(prior)[0]
            ensure_baseline_has_traffic(self.rollout, self.metrics, self.clock, baseline)
            self._prior, self._version = prior, prior.version
            self._journal_run(prior)
        except BaseException:
            with contextlib.suppress(CanaryError):  # the refusal matters more than the cleanup
                self.flags.release(claim)
            raise
        self._claim = replace(claim, run_id=self._run_id)
        self.flags.claim(self._claim)
        self.store.record_event(
            self._run_id, "flag_claimed", {"token": claim.token}, at=self.clock.now()
        )
        self._observers.on_start(self._info(resumed=False))
        self._observers.on_phase(self._run_id, self._state.phase, "")
        return self._drive(None)

    def _journal_run(self, prior: FlagSnapshot) -> None:
        self._run_id = self.store.create_run(
            name=self.rollout.metadata.name,
            runbook=self.rollout.model_dump(mode="json", by_alias=True),
            host=socket.gethostname(),
            pid=os.getpid(),
            version=_canaryctl_version(),
            started_at=self.clock.now(),
            prior_flag=prior,
            phase=self._state.phase.value,
            state=self._state.to_dict(),
        )

    def _new_claim(self, token: str, run_id: int | None) -> FlagClaim:
        return FlagClaim(
            token=token,
            run_id=run_id,
            state=str(self.store.path.resolve()),
            host=socket.gethostname(),
            pid=os.getpid(),
            at=self.clock.now(),
        )

    def _ensure_flag_is_free(self) -> None:
        """A run left mid-way owns its flag: starting another would save a half-moved split as
        the state to restore."""
        # Compared as stored: the journal keeps URLs redacted (a base_url's credentials).
        flag = redact_document(self.rollout.spec.flag.model_dump(mode="json", by_alias=True))
        for other in self.store.unfinished_runs():
            if _flag_identity(other.runbook["spec"]["flag"]) == _flag_identity(flag):
                raise InvalidInput(
                    f"flag '{flag['key']}' is still held by run {other.id} ('{other.name}', "
                    f"process {other.pid} on {other.host}): wait for it, or "
                    f"`canaryctl rollout resume {other.id}` / `canaryctl rollout abort {other.id}`"
                )

    def resume(self, run_id: int) -> RunResult:
        """Continue an unfinished run from its stored state; see the module docstring."""
        record = self.store.run(run_id)
        if record is None:
            raise InvalidInput(f"no run {run_id} in {self.store.path}")
        if record.finished:
            raise InvalidInput(f"run {run_id} already ended: {record.outcome}")
        self._run_id, self._prior = run_id, record.prior_flag
        self._state = RolloutState.from_dict(record.state)
        self._version = record.flag_version
        in_flight = [e for e in self.store.events(run_id, "flag_changed") if e.result is None]
        self._in_flight = in_flight[-1].data["target_canary"] if in_flight else None
        _ensure_not_driven_elsewhere(record)
        self._scenarios = _load_scenarios(self.rollout)
        if not self.store.claim(
            record, host=socket.gethostname(), pid=os.getpid(), at=self.clock.now()
        ):
            raise InvalidInput(f"run {run_id} was just taken over by another process")
        claimed = self.store.events(run_id, "flag_claimed")
        token = claimed[-1].data["token"] if claimed else uuid.uuid4().hex
        self._claim = self._new_claim(token, run_id)
        self.flags.claim(self._claim, take_over=self._break_claim)
        current = self.flags.snapshot()
        self._split = self.flags.split(current)
        self._observers.on_start(self._info(resumed=True))
        self.store.record_event(
            run_id, "resumed", {"phase": self._state.phase.value}, at=self.clock.now()
        )
        if not self._ours(current):
            reason = (
                f"flag '{current.key}' is at version {current.version}, not where run {run_id} "
                "left it: someone else changed it; left the flag alone"
            )
            return self._stop("error", reason, restore=False)
        try:
            self.metrics.check()
        except MetricsBackendError as exc:
            return self._stop("error", f"metrics backend error on resume: {exc}", restore=True)
        # An abort posted while no process was running is carried out before anything moves.
        abort = self._next_request(abort_only=True)
        return self._drive(abort if abort is not None else Resumed(self.clock.now()))

    # -- the loop --

    def _drive(self, event: Event | None) -> RunResult:
        try:
            return self._loop(event)
        except (KeyboardInterrupt, Interrupted):
            return self._stop("interrupted", "interrupted (Ctrl-C or SIGTERM)", restore=True)
        except FlagConflict as exc:
            return self._stop("error", f"{exc}; left the flag alone", restore=False)
        except CanaryError as exc:
            return self._stop("error", str(exc), restore=True)
        except BaseException as exc:
            self._stop("error", f"unexpected {type(exc).__name__}: {exc}", restore=True)
            raise

    def _loop(self, event: Event | None) -> RunResult:
        spec = self.rollout.spec
        while True:
            decision = tick(spec, self._state, self.clock.now(), event)
            self._commit(decision.state)
            if isinstance(decision.action, Finish):
                return self._finish(decision.action.outcome, decision.action.reason)
            event = self._perform(decision.action)

    def _commit(self, state: RolloutState) -> None:
        """Persist the decided state, then announce it: the journal is written before acting."""
        old, self._state = self._state, state
        now = self.clock.now()
        self.store.save_state(
            self._run_id,
            phase=state.phase.value,
            state=state.to_dict(),
            at=now,
            reason=state.reason,
        )
        if state.phase is not old.phase:
            self.store.record_event(
                self._run_id,
                "phase",
                {"from": old.phase.value, "to": state.phase.value, "reason": state.reason},
                at=now,
            )
            self._observers.on_phase(self._run_id, state.phase, state.reason)
        moving = state.phase in (
            Phase.PROGRESSING,
            Phase.PAUSED,
            Phase.AWAITING_APPROVAL,
            Phase.CHAOS,
        )
        if moving and state.item != self._announced and state.item < len(self._plan):
            self._announced = state.item
            item = self._plan[state.item]
            self.store.record_event(
                self._run_id,
                "step_started",
                {"index": state.item, "step": item.step, "describe": item.describe()},
                at=now,
            )
            self._observers.on_step(self._run_id, state.item, len(self._plan), item)

    def _perform(self, action: Action) -> Event | None:
        match action:
            case SetWeight(percent=percent):
                self._write("set_weight", percent)
                try:
                    self.metrics.check()  # the scrape source takes the window's first sample here
                except MetricsBackendError as exc:
                    self._error("metrics", f"metrics backend error as the window began: {exc}")
                return WeightSet(self.clock.now())
            case Analyze(since=since, closing=closing):
                return self._analyze(since, closing)
            case Wait(until=until):
                return self._wait(until)
            case RunChaos(scenario=path):
                return self._play_chaos(path)
            case Promote():
                self._write("promote", 100.0)
                return Promoted()
            case Rollback():
                self._restore()
                return RolledBack()
        raise AssertionError(f"unknown action {action!r}")

    def _play_chaos(self, path: str) -> Event:
        """Errors and Ctrl-C propagate to `_drive`, which restores the flag; the scenario has
        already removed its faults by then."""
        scenario = self._scenarios[path]
        name = scenario.metadata.name
        event_id = self.store.begin_event(
            self._run_id, "chaos", {"scenario": name, "path": path}, at=self.clock.now()
        )
        result = self._chaos(scenario)
        self.store.end_event(
            event_id,
            {"outcome": result.outcome, "reason": result.reason, "journal": result.journal},
            at=self.clock.now(),
        )
        return ChaosPlayed(
            result.outcome == "held",
            f"scenario '{name}' {result.outcome}: {result.reason}",
            self.clock.now(),
        )

    def _analyze(self, since: float, closing: bool) -> Event:
        spec = self.rollout.spec
        self._ensure_flag_untouched()
        try:
            observation = self.metrics.observe(since)
        except MetricsBackendError as exc:
            in_a_row = self._state.metrics_errors + 1
            limit = spec.analysis.consecutive_error_limit
            self._error(
                "metrics",
                f"metrics backend error, analysis not judged ({in_a_row} in a row, "
                f"consecutive_error_limit {limit}): {exc}",
            )
            return MetricsFailed(str(exc))
        assert self._prior is not None
        # The gateway labels metrics with variation values; the runbook may have named them.
        baseline, canary = self.flags.variants(self._prior)
        verdict, ledger = assess(
            spec.slos,
            spec.analysis,
            observation,
            self._state.ledger,
            baseline=baseline,
            canary=canary,
            baseline_served=self._state.weight < 100,
        )
        self._last_verdict = verdict
        self.store.record_event(
            self._run_id,
            "analysis",
            {"closing": closing, "weight": self._state.weight, **verdict.to_dict()},
            at=self.clock.now(),
        )
        self._observers.on_analysis(self._run_id, verdict)
        return Analyzed(verdict, ledger)

    def _wait(self, until: float | None) -> Event | None:
        """Sleep in slices, answering another terminal's abort or approval."""
        while True:
            request = self._next_request()
            if request is not None:
                return request
            now = self.clock.now()
            if until is not None and now >= until:
                return None
            slice_ = self.poll_interval if until is None else min(self.poll_interval, until - now)
            self.clock.sleep(slice_)

    def _next_request(self, *, abort_only: bool = False) -> Event | None:
        """The oldest pending abort (aborts come first), else the oldest approval."""
        pending = self.store.pending_requests(self._run_id)
        if abort_only:
            pending = [r for r in pending if r.kind == "abort"]
        if not pending:
            return None
        chosen = next((r for r in pending if r.kind == "abort"), pending[0])
        now = self.clock.now()
        self.store.mark_handled(chosen.id, at=now)
        request = {"kind": chosen.kind, "by": chosen.requested_by}
        self.store.record_event(self._run_id, "request", request, at=now)
        self._observers.on_request(self._run_id, chosen.kind, chosen.requested_by)
        if chosen.kind == "abort":
            return AbortRequested(chosen.requested_by)
        return Approved(chosen.requested_by)

    # -- the flag --

    def _write(self, action: str, target_canary: float) -> FlagSnapshot:
        """Journal the intent, write with the version we expect, then journal the result."""
        run = f"canaryctl run {self._run_id} ({self.rollout.metadata.name})"
        before = self._split
        event_id = self.store.begin_event(
            self._run_id,
            "flag_changed",
            {
                "action": action,
                "target_canary": target_canary,
                "expect_version": self._version,
                "before": None if before is None else _split_dict(before),
            },
            at=self.clock.now(),
        )
        self._in_flight = target_canary
        if action == "set_weight":
            comment = f"{run}: canary to {target_canary:g}%"
            snapshot = self.flags.set_canary_weight(
                target_canary, expect_version=self._version, comment=comment
            )
        elif action == "promote":
            snapshot = self.flags.promote(expect_version=self._version, comment=f"{run}: promote")
        else:
            assert self._prior is not None
            snapshot = self.flags.restore(
                self._prior, expect_version=self._version, comment=f"{run}: restore"
            )
        self._in_flight = None
        self._version = snapshot.version
        self.store.set_flag_version(self._run_id, snapshot.version)
        self._split = after = self.flags.split(snapshot)
        self.store.end_event(
            event_id,
            {"after": _split_dict(after), "version": snapshot.version},
            at=self.clock.now(),
        )
        if before is not None:
            self._observers.on_weight(self._run_id, before, after)
        return snapshot

    def _ensure_flag_untouched(self) -> None:
        """A human who moves the flag during a pause takes the wheel then, not at our next
        write: the metrics no longer describe the split we are judging. A flag backend that
        cannot be read here is noted and the analysis goes on; the next write will tell."""
        try:
            current = self.flags.snapshot()
        except FlagBackendError as exc:
            self._error("flags", f"flag backend error while checking the flag: {exc}")
            return
        if not self._ours(current):
            raise FlagConflict(
                f"flag '{current.key}' is at version {current.version}, not {self._version} "
                f"where run {self._run_id} left it: someone else changed it"
            )

    def _ours(self, current: FlagSnapshot) -> bool:
        """Is the flag where we left it, or where our interrupted write was taking it?"""
        if current.version == self._version:
            return True
        if self._in_flight is None or current.version < self._version:
            return False
        if self.flags.split(current).canary != self._in_flight:
            return False
        self._version, self._in_flight = current.version, None
        self.store.set_flag_version(self._run_id, current.version)
        return True

    def _restore(self) -> None:
        """Put the saved snapshot back; a flag we never moved needs no write."""
        assert self._prior is not None
        current = self.flags.snapshot()
        if not self._ours(current):
            raise FlagConflict(
                f"flag '{current.key}' is at version {current.version}, expected "
                f"{self._version}: someone else changed it"
            )
        if current.version == self._prior.version:
            return
        self._write("restore", self.flags.split(self._prior).canary)

    # -- endings --

    def _error(self, source: str, message: str) -> None:
        self.store.record_event(
            self._run_id, "error", {"source": source, "message": message}, at=self.clock.now()
        )
        self._observers.on_error(self._run_id, message)

    def _stop(self, outcome: str, reason: str, *, restore: bool) -> RunResult:
        """End on an error or interruption; the flag is restored unless a human holds it."""
        self._error("run", reason)
        if restore:
            try:
                self._restore()
            except (CanaryError, KeyboardInterrupt) as exc:
                reason = f"{reason}; restoring the flag failed: {exc}"
                self._error("flag", reason)
        phase = _FINAL_PHASE[outcome]
        self._commit(replace(self._state, phase=phase, outcome=outcome, reason=reason))
        return self._finish(outcome, reason)

    def _finish(self, outcome: str, reason: str) -> RunResult:
        try:
            final: Split | None = self.flags.split(self.flags.snapshot())
        except CanaryError:
            final = None
        result = RunResult(
            run_id=self._run_id,
            name=self.rollout.metadata.name,
            outcome=outcome,
            reason=reason,
            exit_code=EXIT_CODES[outcome],
            final_split=final,
        )
        try:
            self.store.finish_run(
                self._run_id,
                phase=_FINAL_PHASE[outcome].value,
                outcome=outcome,
                reason=reason,
                exit_code=result.exit_code,
                at=self.clock.now(),
                final_split=None if final is None else _split_dict(final),
            )
        finally:
            self._release()
        self._notify(result)
        self._observers.on_finish(result)
        return result

    def _release(self) -> None:
        """The run is over: its claim goes; one that cannot be removed is reported, and the
        next run is told what to do about it."""
        if self._claim is None:
            return
        try:
            self.flags.release(self._claim)
        except CanaryError as exc:
            self._error("flag", f"releasing the claim on the flag failed: {exc}")
        self._claim = None

    def _notify(self, result: RunResult) -> None:
        """Webhooks run last, when the flag is already safe; their failures change nothing."""
        promoted = result.outcome == "promoted"
        name = "on_promote" if promoted else "on_rollback"
        hooks = self.rollout.spec.on_promote if promoted else self.rollout.spec.on_rollback
        payload: dict[str, Any] = {
            **result.to_dict(),
            "last_verdict": None if self._last_verdict is None else self._last_verdict.to_dict(),
        }
        for hook in hooks:
            event_id = self.store.begin_event(
                self._run_id, "hook", {"hook": name}, at=self.clock.now()
            )
            outcome = self.hooks.call(hook, payload)
            self.store.end_event(event_id, outcome.to_dict(), at=self.clock.now())
            self._observers.on_hook(self._run_id, name, outcome)

    def _info(self, *, resumed: bool) -> RunInfo:
        spec = self.rollout.spec
        assert self._split is not None
        return RunInfo(
            run_id=self._run_id,
            name=self.rollout.metadata.name,
            baseline=spec.flag.baseline,
            canary=spec.flag.canary,
            plan=self._plan,
            slos=tuple(spec.slos),
            split=self._split,
            resumed=resumed,
        )


def _adapters(
    rollout: Rollout, clock: Clock, flags: FlagStore | None, metrics: MetricsSource | None
) -> tuple[FlagStore, MetricsSource]:
    """The runbook's own backends unless given; imported here so the fakes need no backends."""
    if flags is None:
        from canaryctl.flags.factory import flag_store_for

        flags = flag_store_for(rollout.spec.flag)
    if metrics is None:
        from canaryctl.metrics.factory import metrics_source_for

        spec = rollout.spec
        metrics = metrics_source_for(
            spec.metrics,
            clock=clock.now,
            slos=spec.slos,
            baseline=spec.flag.baseline,
            canary=spec.flag.canary,
        )
    return flags, metrics


def run_rollout(
    rollout: Rollout,
    *,
    state_path: str | Path,
    observers: Sequence[RolloutObserver] = (),
    clock: Clock | None = None,
    flags: FlagStore | None = None,
    metrics: MetricsSource | None = None,
    from_current: bool = False,
    break_claim: bool = False,
) -> RunResult:
    """Run `rollout` on the backends its runbook names (or those given), journaled at
    `state_path`; preflight errors raise before anything changes. `from_current` and
    `break_claim`: see RolloutRunner's module docstring and FlagStore.claim."""
    clock = clock if clock is not None else SystemClock()
    check_hook_urls(rollout.spec)
    flags, metrics = _adapters(rollout, clock, flags, metrics)
    hooks = HookRunner()
    notifiers = _notifiers(rollout)
    try:
        with StateStore(state_path) as store:
            runner = RolloutRunner(
                rollout,
                flags=flags,
                metrics=metrics,
                store=store,
                clock=clock,
                observers=[*observers, *notifiers],
                hooks=hooks,
                from_current=from_current,
                break_claim=break_claim,
            )
            return runner.run()
    finally:
        hooks.close()
        for notifier in notifiers:
            notifier.close()


def resume_rollout(
    run_id: int,
    *,
    state_path: str | Path,
    rollout: Rollout | None = None,
    observers: Sequence[RolloutObserver] = (),
    clock: Clock | None = None,
    flags: FlagStore | None = None,
    metrics: MetricsSource | None = None,
    warn: Callable[[str], None] = log.warning,
) -> RunResult:
    """Resume run `run_id`; without `rollout`, the runbook copy in the journal is used, which
    keeps webhooks only when they name `url_env` (and none of their headers) and URLs without
    their credentials. `warn` gets one line naming the webhooks that will not fire."""
    clock = clock if clock is not None else SystemClock()
    hooks = HookRunner()
    notifiers: list[WebhookNotifier] = []
    try:
        with StateStore(state_path) as store:
            record = store.run(run_id)
            if record is None:
                raise InvalidInput(f"no run {run_id} in {state_path}")
            if rollout is None:
                rollout = _stored_rollout(record.runbook, warn)
            elif rollout.metadata.name != record.name:
                raise InvalidInput(
                    f"run {run_id} is '{record.name}', not '{rollout.metadata.name}'"
                )
            check_hook_urls(rollout.spec)
            flags, metrics = _adapters(rollout, clock, flags, metrics)
            notifiers = _notifiers(rollout)
            runner = RolloutRunner(
                rollout,
                flags=flags,
                metrics=metrics,
                store=store,
                clock=clock,
                observers=[*observers, *notifiers],
                hooks=hooks,
            )
            return runner.resume(run_id)
    finally:
        hooks.close()
        for notifier in notifiers:
            notifier.close()


def _notifiers(rollout: Rollout) -> list[WebhookNotifier]:
    """The runbook's `notify:` webhooks, closed (drained, bounded) once the flag is safe."""
    from canaryctl.notify import notifiers_for

    return notifiers_for(rollout.spec.notify)


ChaosPlayer = Callable[[ChaosScenario], "ScenarioResult"]
"""Plays a rollout's `chaos` step; tests pass a fake, production plays against the proxy."""


def _play_scenario(scenario: ChaosScenario) -> ScenarioResult:
    from canaryctl.chaos.scenario import play

    return play(scenario)


def _load_scenarios(rollout: Rollout) -> dict[str, ChaosScenario]:
    """Every `chaos` step's scenario, read before anything moves: a bad one is exit 2 now, not
    halfway through the rollout."""
    return {
        str(step.chaos): load_document(step.chaos, expect=ChaosScenario)
        for step in rollout.spec.steps
        if step.chaos is not None
    }


def _flag_identity(flag: dict[str, Any]) -> tuple[Any, ...]:
    """Where a flag lives, whatever the runbook does with it: two runs on different targeting
    rules of one flag still race on its version."""
    return tuple(
        flag.get(field)
        for field in ("provider", "key", "path", "base_url", "project", "environment")
    )


def starting_state(rollout: Rollout, split: Split, *, from_current: bool) -> RolloutState:
    """Where a run begins: the baseline serving everyone, or with `from_current` the first
    weight above the current split's (see the module docstring); else FlagMismatch saying what
    the flag serves and what to do."""
    spec = rollout.spec
    key, baseline, canary = spec.flag.key, spec.flag.baseline, spec.flag.canary
    shown = f"{canary} {split.canary:g}%, {baseline} {split.baseline:g}%"
    if split.other:
        shown += f", other variations {split.other:g}%"
    if split.baseline == 100:
        return RolloutState()
    if not from_current:
        if split.canary == 100:
            todo = (
                f"{canary} was promoted already: there is nothing to roll out; to roll out "
                f"again, serve {baseline} to everyone first"
            )
        else:
            todo = (
                "if a run was driving it, `canaryctl rollout resume RUN` (with that run's "
                "--state); to step up from this split, --from-current; or serve "
                f"{baseline} to everyone first"
            )
        raise FlagMismatch(
            f"flag '{key}' serves {shown}, not {baseline} to everyone as this rollout "
            f"starts from: {todo}"
        )
    if split.other:
        raise FlagMismatch(
            f"flag '{key}' serves {shown}: --from-current continues a split between "
            f"{baseline} and {canary} only, and stepping would take the other variations' "
            "share away"
        )
    item = _first_weight_above(plan(spec), split.canary)
    if item is None:
        raise FlagMismatch(
            f"flag '{key}' serves {shown}: no set_weight step of this rollout is above "
            f"{split.canary:g}%, so --from-current has nothing left to step through"
        )
    return RolloutState(item=item, weight=split.canary)


def ensure_baseline_has_traffic(
    rollout: Rollout, metrics: MetricsSource, clock: Clock, baseline: str
) -> None:
    """No baseline traffic means the runbook watches the wrong route or selector: every
    analysis would be inconclusive, or judge traffic the flag does not route. A gateway
    that has just started may not have served yet, so we look again for a while."""
    patience = min(max(rollout.spec.analysis.interval, 5.0), TRAFFIC_PATIENCE)
    deadline = clock.now() + patience
    while True:
        seen = metrics.recent_requests(TRAFFIC_WINDOW)
        if seen.get(baseline, 0) > 0:
            return
        if clock.now() >= deadline:
            break
        clock.sleep(1.0)
    shown = ", ".join(f"{v} {n:g}" for v, n in sorted(seen.items()) if n > 0)
    raise InvalidInput(
        f"no recent requests for the baseline '{baseline}' on {_where(rollout)} "
        f"(looked for {patience:g}s); the metrics show "
        f"{('requests for ' + shown) if shown else 'no requests at all'} there: check that "
        "the gateway route evaluates this flag and that the runbook's route and selector "
        "match it"
    )


def _first_weight_above(items: Sequence[PlanItem], canary: float) -> int | None:
    """The plan index of the first weight step above `canary`%, where --from-current starts."""
    return next(
        (
            i
            for i, item in enumerate(items)
            if isinstance(item, WeightItem) and item.weight > canary
        ),
        None,
    )


def _where(rollout: Rollout) -> str:
    """The metrics a rollout watches, for a message: route, selector, where they are read."""
    spec = rollout.spec.metrics
    route = f"route '{spec.route}'" if spec.route is not None else "every route"
    if isinstance(spec, PrometheusMetricsSpec):
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(spec.selector.items()))
        return f"{route}, selector {{{selector}}} in Prometheus at {redact_url(spec.url)}"
    return f"{route} at {', '.join(redact_url(t) for t in spec.targets)}"


def _ensure_not_driven_elsewhere(record: RunRecord) -> None:
    """Two controllers on one flag would fight: refuse to resume a run whose owner still lives.

    Liveness can only be checked on this host; a run owned by another host is taken over, as
    the operator asked (they can see the owner in `rollout status`).
    """
    if record.pid == os.getpid() or not process_alive(record.host, record.pid):
        return
    raise InvalidInput(
        f"run {record.id} is still driven by process {record.pid} on {record.host}: "
        f"stop that process (its flag is restored) or `canaryctl rollout abort {record.id}`"
    )


def _stored_rollout(runbook: dict[str, Any], warn: Callable[[str], None]) -> Rollout:
    """The journal's redacted copy as a runbook: a webhook stored by its origin alone would
    post to the wrong place, so only `url_env` webhooks are kept, without their headers; `warn`
    hears, in one line, which webhooks are lost and how to keep them."""
    spec = runbook.get("spec", {})
    lost, headless = [], []
    for key in ("on_rollback", "on_promote", "notify"):
        hooks = spec.get(key, [])
        kept = []
        for index, hook in enumerate(hooks):
            webhook = hook.get("webhook", {})
            if not webhook.get("url_env"):
                lost.append(f"spec.{key}[{index}] ({webhook.get('url', '?')})")
                continue
            if webhook.get("headers"):
                headless.append(f"spec.{key}[{index}]")
            webhook["headers"] = {}
            kept.append(hook)
        spec[key] = kept
    if lost:
        without = f"; {', '.join(headless)} will post without headers" if headless else ""
        warn(
            f"webhooks {', '.join(lost)} will not fire on this resume: their URL is written in "
            f"the runbook, and the journal keeps only its origin{without}. To keep them, pass "
            "--runbook with the original file, or give them url_env"
        )
    elif headless:
        warn(
            f"webhooks {', '.join(headless)} will post without their headers on this resume "
            "(the journal keeps none): pass --runbook with the original file to keep them"
        )
    return Rollout.model_validate(runbook)
