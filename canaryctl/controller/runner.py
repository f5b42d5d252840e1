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

One process drives a run at a time: it holds the run's lease in the state database
(canaryctl/controller/lease.py), checked before every flag write, and every write it makes names
the lease's epoch (fenced in the journal's transaction and by the claim on the flag). A run whose
lease is lost, or that a controller hands back on SIGTERM, raises RunReleased out of the runner
with the flag left where it is, for its next driver to continue from the journal; a hand-back
asked for is honoured before the next action of any kind, so no weight moves after it. A driver
whose lease was not confirmed within the lease time asks the database before it judges again.

When the state database fails, the flag is restored anyway (the flag comes before the journal),
fenced by its claim; the claim is kept and marked with the version the restore produced, so the
run's next driver (`resume`, or a controller once the database is back) journals that restore as
the run's own and ends the run, instead of taking it for someone else's change.

The run claims its flag (FlagStore.claim) before it reads it and releases the claim when it ends,
however it ends; a process that dies leaves the claim, which `resume` re-takes (the claim's token
is journaled as the `flag_claimed` event) and which refuses any new run until then.

Resume (after a crash: the process died without reaching `finally`; or a controller taking over
a dead controller's run) first takes the run's lease, then reads the flag back. If it is
where the journal says we left it, or where a write journaled as in flight was taking it, the run
continues from the stored step; a hold restarts from scratch with a fresh analysis window,
because the dead process's observations are lost and the canary must prove itself again. If the
flag is anywhere else, a human moved it: we stop without touching it (exit 3). If the metrics
backend does not answer on resume, the flag is restored (exit 3): we will not leave a canary
unwatched.

A shadow step moves a second flag, the runbook's `shadow_flag`, with the same versioned writes
(journaled as `shadow_flag_changed`, its state as found as `shadow_flag_saved`). Preflight reads
it and needs it to serve its off variation to everyone, and a metrics source that reads shadow
traffic; every exit path that restores the live flag puts the shadow flag back first, and even
a human's hand on the live flag (which leaves that one alone) does not leave the shadow on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canaryctl.analysis import Outcome, Verdict, assess
from canaryctl.clock import Clock, SystemClock
from canaryctl.controller.events import ObserverFanout, RolloutObserver, RunInfo
from canaryctl.controller.hooks import HookRunner, check_hook_urls
from canaryctl.controller.lease import DEFAULT_LEASE_TTL, LeaseLost, Leases, RunReleased
from canaryctl.controller.phases import Phase
from canaryctl.controller.preflight import (
    check_shadow_flag,
    ensure_baseline_has_traffic,
    flag_identity,
    load_scenarios,
    starting_state,
)
from canaryctl.controller.result import EXIT_CODES, RunResult
from canaryctl.controller.step import (
    AbortRequested,
    Action,
    Analyze,
    Analyzed,
    Approved,
    ChaosPlayed,
    EndShadow,
    Event,
    Finish,
    MetricsFailed,
    Promote,
    Promoted,
    Resumed,
    Rollback,
    RolledBack,
    RolloutState,
    RunChaos,
    SetShadow,
    SetWeight,
    ShadowEnded,
    ShadowItem,
    ShadowSet,
    Wait,
    WeightSet,
    plan,
    tick,
)
from canaryctl.controller.store import RequestRecord, StateStore, redacted_runbook
from canaryctl.controller.wiring import stored_rollout, webhooks_the_journal_drops, wired
from canaryctl.controller.writes import FlagWrites, split_dict
from canaryctl.errors import (
    CanaryError,
    ClaimFenced,
    FlagBackendError,
    FlagConflict,
    Interrupted,
    InvalidInput,
    MetricsBackendError,
    RunTakenOver,
    StateBackendError,
)
from canaryctl.flags.base import FlagClaim, FlagSnapshot, FlagStore, Split
from canaryctl.metrics.base import MetricsSource, Observation, ShadowSource
from canaryctl.redact import redact_document
from canaryctl.runbook.rollout import Rollout
from canaryctl.runbook.scenario import ChaosScenario
from canaryctl.version import installed_version

if TYPE_CHECKING:
    from canaryctl.chaos.scenario import ScenarioResult

__all__ = ["RolloutRunner", "resume_rollout", "run_rollout", "submit_rollout"]

log = logging.getLogger(__name__)

_FINAL_PHASE = {
    "promoted": Phase.PROMOTED,
    "rolled_back": Phase.ROLLED_BACK,
    "aborted": Phase.ABORTED,
    "error": Phase.FAILED,
    "interrupted": Phase.INTERRUPTED,
}


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
        leases: Leases | None = None,
        pending: Callable[[int], list[RequestRecord]] | None = None,
        shadow_flags: FlagStore | None = None,
        released: Callable[[], bool] = lambda: False,
    ) -> None:
        self.rollout = rollout
        self._pending = pending if pending is not None else store.pending_requests
        """Where waits look for approve/abort requests: the store, or a controller's inbox that
        reads them for all its runs at once."""
        self._handled: set[int] = set()
        self._released = released
        """Whether the controller asked for the run back (SIGTERM): checked before every
        action, so nothing moves once it is asked."""
        self.leases = leases if leases is not None else Leases(store)
        self.flags, self.metrics, self.store, self.clock = flags, metrics, store, clock
        self.hooks = hooks if hooks is not None else HookRunner()
        self.poll_interval = poll_interval
        self._chaos = chaos if chaos is not None else _play_scenario
        self._scenarios: dict[str, ChaosScenario] = {}
        self._observers = ObserverFanout(observers)
        self._plan = plan(rollout.spec)
        self._run_id = 0
        self._epoch = 0
        """The epoch of the lease this runner drives under: every write names it."""
        self._state = RolloutState()
        self._writes = FlagWrites(
            flags, store, self.leases, clock, self._observers, name=rollout.metadata.name
        )
        self._shadow: FlagWrites | None = None
        """The shadow step's flag, when the runbook has one (see the module docstring)."""
        if shadow_flags is not None:
            self._shadow = FlagWrites(
                shadow_flags,
                store,
                self.leases,
                clock,
                self._observers,
                name=rollout.metadata.name,
                event="shadow_flag_changed",
                live=False,
            )
        self._announced: int | None = None
        self._last_verdict: Verdict | None = None
        self._from_current, self._break_claim = from_current, break_claim
        self._claim: FlagClaim | None = None
        self._shadow_claimed = False
        """Whether this run holds a claim on the shadow flag too (a shadow step ahead)."""

    # -- entry points --

    def run(self, submitted: int | None = None) -> RunResult:
        """Preflight, journal the run, then tick until promoted or restored. `submitted`: the
        id of a run submitted for a controller (its lease already ours), journaled there."""
        _ensure_flag_is_free(self.store, self.rollout, submitted)
        # A submitted run's lease was taken by the controller's scan; a new run's comes with it.
        self._epoch = 1 if submitted is None else (self.leases.epoch(submitted) or 0)
        self._scenarios = load_scenarios(self.rollout)
        claim = self._new_claim(self._claim_token(submitted), None)
        self.flags.claim(claim, take_over=self._break_claim)
        try:
            prior = self.flags.snapshot()
            self._writes.split = split = self.flags.split(prior)
            self._state = starting_state(self.rollout, split, from_current=self._from_current)
            shadow_prior = self._shadow_preflight(claim)
            self.metrics.check()
            baseline = self.flags.variants(prior)[0]
            ensure_baseline_has_traffic(self.rollout, self.metrics, self.clock, baseline)
            self._journal_run(prior, submitted)
            self._writes.begin(self._run_id, prior, version=prior.version, epoch=self._epoch)
            if self._shadow is not None and shadow_prior is not None:
                self._journal_shadow_prior(shadow_prior)
        except BaseException:
            with contextlib.suppress(CanaryError):  # the refusal matters more than the cleanup
                self.flags.release(claim)
            if self._shadow_claimed and self._shadow is not None:
                with contextlib.suppress(CanaryError):
                    self._shadow.flags.release(claim)
            raise
        self._claim = replace(claim, run_id=self._run_id)
        self.flags.claim(self._claim)
        if self._shadow_claimed and self._shadow is not None:
            self._shadow.flags.claim(self._claim)
        self.store.record_event(
            self._run_id,
            "flag_claimed",
            {"token": claim.token},
            at=self.clock.now(),
            epoch=self._epoch,
        )
        self._observers.on_start(self._info(resumed=False))
        self._observers.on_phase(self._run_id, self._state.phase, "")
        # An abort posted while a submitted run waited for a controller: nothing moves.
        return self._drive(None if submitted is None else self._next_request(abort_only=True))

    def _shadow_preflight(self, claim: FlagClaim) -> FlagSnapshot | None:
        """A shadow step ahead needs its flag wired, claimed by this run as the live flag is,
        serving its off variation to everyone, and a metrics source that reads shadow traffic;
        the flag as found, or None without one."""
        ahead = any(isinstance(i, ShadowItem) for i in self._plan[self._state.item :])
        if not ahead:
            return None
        if self._shadow is None:
            raise InvalidInput("spec.shadow_flag: a shadow step needs its flag store wired")
        self._shadow.flags.claim(claim, take_over=self._break_claim)
        self._shadow_claimed = True
        return check_shadow_flag(self.rollout, self._shadow.flags, self.metrics)

    def _journal_shadow_prior(self, prior: FlagSnapshot) -> None:
        assert self._shadow is not None
        self._shadow.split = self._shadow.flags.split(prior)
        self._shadow.begin(self._run_id, prior, version=prior.version, epoch=self._epoch)
        self.store.record_event(
            self._run_id,
            "shadow_flag_saved",
            {"key": prior.key, "version": prior.version, "raw": prior.raw},
            at=self.clock.now(),
            epoch=self._epoch,
        )

    def _journal_run(self, prior: FlagSnapshot, submitted: int | None) -> None:
        host, pid, now = socket.gethostname(), os.getpid(), self.clock.now()
        phase, state = self._state.phase.value, self._state.to_dict()
        if submitted is not None:
            self._run_id = submitted
            self.store.begin_submitted(
                submitted,
                host=host,
                pid=pid,
                version=installed_version(),
                started_at=now,
                prior_flag=prior,
                phase=phase,
                state=state,
                epoch=self._epoch,
            )
            return
        self._run_id = self.store.create_run(
            name=self.rollout.metadata.name,
            runbook=self.rollout.model_dump(mode="json", by_alias=True),
            host=host,
            pid=pid,
            version=installed_version(),
            started_at=now,
            prior_flag=prior,
            phase=phase,
            state=state,
            owner=self.leases.owner,
            lease_until=self.leases.until(),
        )
        self.leases.adopt(self._run_id, self._epoch)

    def _claim_token(self, submitted: int | None) -> str:
        """A fresh token; a submitted run journals its token before claiming, so a controller
        that takes over a preflight cut short by a crash claims the flag as the same run."""
        token = uuid.uuid4().hex
        if submitted is None:
            return token
        journaled = self.store.events(submitted, "flag_claim_token")
        if journaled:
            return str(journaled[-1].data["token"])
        self.store.record_event(
            submitted, "flag_claim_token", {"token": token}, at=self.clock.now(), epoch=self._epoch
        )
        return token

    def _new_claim(self, token: str, run_id: int | None) -> FlagClaim:
        return FlagClaim(
            token=token,
            run_id=run_id,
            state=self._state_name(),
            host=socket.gethostname(),
            pid=os.getpid(),
            at=self.clock.now(),
            epoch=self._epoch,
        )

    def _state_name(self) -> str:
        """The state database as a claim names it: a SQLite file's full path, else the URL
        without its credentials."""
        path = self.store.path
        return str(path.resolve()) if path is not None else self.store.where

    def resume(self, run_id: int) -> RunResult:
        """Continue an unfinished run from its stored state; see the module docstring."""
        record = self.store.run(run_id)
        if record is None:
            raise InvalidInput(f"no run {run_id} in {self.store.where}")
        if record.finished:
            raise InvalidInput(f"run {run_id} already ended: {record.outcome}")
        if record.prior_flag is None:
            raise InvalidInput(f"run {run_id} was submitted and never began: nothing to resume")
        self._run_id = run_id
        self._state = RolloutState.from_dict(record.state)
        # A controller's scan took the lease already; `rollout resume` takes it here.
        self._epoch = self.leases.epoch(run_id) or self.leases.take(record)
        in_flight = [e for e in self.store.events(run_id, "flag_changed") if e.result is None]
        self._writes.begin(
            run_id,
            record.prior_flag,
            version=record.flag_version,
            epoch=self._epoch,
            in_flight=in_flight[-1].data["target_canary"] if in_flight else None,
        )
        self._resume_shadow(run_id)
        self._scenarios = load_scenarios(self.rollout)
        if not self.store.claim(
            record, host=socket.gethostname(), pid=os.getpid(), at=self.clock.now(),
            epoch=self._epoch,
        ):  # fmt: skip
            raise InvalidInput(f"run {run_id} was just taken over by another process")
        # A submitted run journals its token before its first driver claims the flag, which
        # may lose the run before it journals `flag_claimed`: the claim is this run's all same.
        claimed = self.store.events(run_id, "flag_claimed") or self.store.events(
            run_id, "flag_claim_token"
        )
        token = claimed[-1].data["token"] if claimed else uuid.uuid4().hex
        self._claim = claim = self._new_claim(token, run_id)
        try:
            held = self.flags.claim(claim, take_over=self._break_claim)
        except ClaimFenced as exc:
            raise LeaseLost(str(exc)) from exc
        if self._shadow is not None and self._shadow.prior is not None:
            self._shadow.flags.claim(self._claim, take_over=self._break_claim)
            self._shadow_claimed = True
        current = self.flags.snapshot()
        self._writes.split = self.flags.split(current)
        own_restore = held is not None and held.token == token and held.restored == current.version
        if own_restore:  # our claim keeps the mark, should the journal fail us again
            self._claim = replace(claim, restored=current.version)
            self.flags.claim(self._claim)
        self._observers.on_start(self._info(resumed=True))
        try:
            self.store.record_event(
                run_id,
                "resumed",
                {"phase": self._state.phase.value},
                at=self.clock.now(),
                epoch=self._epoch,
            )
            ours = not own_restore and self._writes.ours(current)
            # An abort posted while no process was running is carried out before anything moves.
            abort = self._next_request(abort_only=True) if ours else None
        except StateBackendError as exc:
            # The flag is ours to write now (claimed at our epoch): a database gone while we
            # take the run up must not leave its canary unjudged, as in `_drive`.
            self._writes.journal_error = exc
            return self._stop("error", str(exc), restore=not own_restore)
        if own_restore:
            return self._journal_own_restore(current)
        if not ours:
            reason = (
                f"flag '{current.key}' is at version {current.version}, not where run {run_id} "
                "left it: someone else changed it; left the flag alone"
            )
            return self._stop("error", reason, restore=False)
        try:
            self.metrics.check()
        except MetricsBackendError as exc:
            return self._stop("error", f"metrics backend error on resume: {exc}", restore=True)
        return self._drive(abort if abort is not None else Resumed(self.clock.now()))

    def _journal_own_restore(self, current: FlagSnapshot) -> RunResult:
        """The run's last driver restored the flag while the journal was away (the claim says
        which version that restore produced): journal it as this run's restore, and end."""
        assert self._writes.prior is not None
        event_id = self.store.begin_event(
            self._run_id,
            "flag_changed",
            {
                "action": "restore",
                "target_canary": self.flags.split(self._writes.prior).canary,
                "expect_version": self._writes.version,
                "journaled_late": True,
                "epoch": self._epoch,
            },
            at=self.clock.now(),
            epoch=self._epoch,
        )
        self.store.end_event(
            event_id,
            {"after": split_dict(self.flags.split(current)), "version": current.version},
            at=self.clock.now(),
            run_id=self._run_id,
            epoch=self._epoch,
        )
        self._writes.version = current.version
        self.store.set_flag_version(self._run_id, current.version, epoch=self._epoch)
        reason = (
            f"this run restored the flag (version {current.version}, from "
            f"{self._state.weight:g}% canary) "
            "while the state database could not record it; journaled now"
        )
        if self._state.reason:
            reason = f"{self._state.reason}; {reason}"
        return self._stop("error", reason, restore=False)

    def _resume_shadow(self, run_id: int) -> None:
        """The shadow flag's writes as the journal left them: the state it was found in, the
        version of the last write that landed, the target of one in flight."""
        saved = self.store.events(run_id, "shadow_flag_saved")
        if self._shadow is None or not saved:
            return
        data = saved[-1].data
        prior = FlagSnapshot(str(data["key"]), int(data["version"]), str(data["raw"]))
        changes = self.store.events(run_id, "shadow_flag_changed")
        landed = [e for e in changes if e.result is not None]
        version = int(landed[-1].result["version"]) if landed else prior.version
        in_flight = (
            changes[-1].data["target_canary"] if changes and changes[-1].result is None else None
        )
        self._shadow.begin(run_id, prior, version=version, epoch=self._epoch, in_flight=in_flight)
        self._shadow.split = self._shadow.flags.split(self._shadow.flags.snapshot())

    # -- the loop --

    def _drive(self, event: Event | None) -> RunResult:
        try:
            return self._loop(event)
        except RunReleased:
            raise  # another driver continues: the flag stays where it is
        except ClaimFenced as exc:  # a newer driver of this run claimed the flag
            raise LeaseLost(str(exc)) from exc
        except (KeyboardInterrupt, Interrupted):
            return self._stop("interrupted", "interrupted (Ctrl-C or SIGTERM)", restore=True)
        except FlagConflict as exc:
            reason = f"{exc}; left the flag alone{self._found_before()}"
            return self._stop("error", reason, restore=False)
        except StateBackendError as exc:
            # The journal is away: restore now, without spending more waits on it.
            self._writes.journal_error = exc
            return self._stop("error", str(exc), restore=True)
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
            if self._released():
                raise RunReleased("handed back")
            if not isinstance(decision.action, Wait):
                self.leases.confirm(self._run_id, self._epoch)
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
            epoch=self._epoch,
        )
        if state.phase is not old.phase:
            self.store.record_event(
                self._run_id,
                "phase",
                {"from": old.phase.value, "to": state.phase.value, "reason": state.reason},
                at=now,
                epoch=self._epoch,
            )
            self._observers.on_phase(self._run_id, state.phase, state.reason)
        moving = state.phase in (
            Phase.PROGRESSING,
            Phase.PAUSED,
            Phase.AWAITING_APPROVAL,
            Phase.CHAOS,
            Phase.SHADOW,
        )
        if moving and state.item != self._announced and state.item < len(self._plan):
            self._announced = state.item
            item = self._plan[state.item]
            self.store.record_event(
                self._run_id,
                "step_started",
                {"index": state.item, "step": item.step, "describe": item.describe()},
                at=now,
                epoch=self._epoch,
            )
            self._observers.on_step(self._run_id, state.item, len(self._plan), item)

    def _perform(self, action: Action) -> Event | None:
        match action:
            case SetWeight(percent=percent):
                self._writes.write("set_weight", percent)
                try:
                    self.metrics.check()  # the scrape source takes the window's first sample here
                except MetricsBackendError as exc:
                    self._error("metrics", f"metrics backend error as the window began: {exc}")
                return WeightSet(self.clock.now())
            case Analyze(since=since, closing=closing, shadow=True):
                return self._analyze_shadow(since, closing)
            case Analyze(since=since, closing=closing):
                return self._analyze(since, closing)
            case SetShadow(percent=percent):
                assert self._shadow is not None
                self._shadow.write("set_weight", percent)
                try:
                    self.metrics.check()  # the scrape source takes the window's first sample here
                except MetricsBackendError as exc:
                    self._error("metrics", f"metrics backend error as the shadow began: {exc}")
                return ShadowSet(self.clock.now())
            case EndShadow():
                assert self._shadow is not None
                self._shadow.restore()
                return ShadowEnded()
            case Wait(until=until):
                return self._wait(until)
            case RunChaos(scenario=path):
                return self._play_chaos(path)
            case Promote():
                self._writes.write("promote", 100.0)
                return Promoted()
            case Rollback():
                self._restore_shadow()
                self._writes.restore()
                return RolledBack()
        raise AssertionError(f"unknown action {action!r}")

    def _play_chaos(self, path: str) -> Event:
        """Errors and Ctrl-C propagate to `_drive`, which restores the flag; the scenario has
        already removed its faults by then."""
        scenario = self._scenarios[path]
        name = scenario.metadata.name
        event_id = self.store.begin_event(
            self._run_id,
            "chaos",
            {"scenario": name, "path": path},
            at=self.clock.now(),
            epoch=self._epoch,
        )
        result = self._chaos(scenario)
        self.store.end_event(
            event_id,
            {"outcome": result.outcome, "reason": result.reason, "journal": result.journal},
            at=self.clock.now(),
            run_id=self._run_id,
            epoch=self._epoch,
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
            return self._metrics_failed(exc)
        assert self._writes.prior is not None
        # The gateway labels metrics with variation values; the runbook may have named them.
        baseline, canary = self.flags.variants(self._writes.prior)
        verdict, ledger = assess(
            spec.slos,
            spec.analysis,
            observation,
            self._state.ledger,
            baseline=baseline,
            canary=canary,
            baseline_served=self._state.weight < 100,
        )
        return self._analyzed(verdict, ledger, observation, closing, since, baseline, canary)

    def _metrics_failed(self, exc: MetricsBackendError) -> Event:
        in_a_row = self._state.metrics_errors + 1
        limit = self.rollout.spec.analysis.consecutive_error_limit
        self._error(
            "metrics",
            f"metrics backend error, analysis not judged ({in_a_row} in a row, "
            f"consecutive_error_limit {limit}): {exc}",
        )
        return MetricsFailed(str(exc))

    def _analyzed(
        self,
        verdict: Verdict,
        ledger: dict[str, Any],
        observation: Observation,
        closing: bool,
        since: float,
        baseline: str,
        canary: str,
        *,
        shadow: bool = False,
    ) -> Event:
        """Journal the verdict with the counts it judged, tell the observers."""
        self._last_verdict = verdict
        self.store.record_event(
            self._run_id,
            "analysis",
            {
                "closing": closing,
                "weight": self._state.weight,
                **({"shadow": True} if shadow else {}),
                **verdict.to_dict(),
                # The counts judged, under the names the metrics use: `canaryctl backtest
                # --run` judges them again by another runbook's analysis.
                "baseline": baseline,
                "canary": canary,
                "since": since,
                "observation": observation.to_dict(),
            },
            at=self.clock.now(),
            epoch=self._epoch,
        )
        self._observers.on_analysis(self._run_id, verdict)
        return Analyzed(verdict, ledger)

    def _analyze_shadow(self, since: float, closing: bool) -> Event:
        """The candidate's mirrored traffic judged by the shadow step's SLOs, with its own
        ledger: the same analysis, other counts."""
        spec = self.rollout.spec
        item = self._plan[self._state.item]
        assert isinstance(item, ShadowItem) and isinstance(self.metrics, ShadowSource)
        step = spec.steps[item.step].shadow
        assert step is not None
        self._ensure_flag_untouched()
        assert self._writes.prior is not None and self._shadow is not None
        assert self._shadow.prior is not None
        baseline = self.flags.variants(self._writes.prior)[0]
        # The shadow calls are labelled with the model the shadow flag's variation names.
        canary = self._shadow.flags.variants(self._shadow.prior)[1]
        try:
            observation = self.metrics.observe_shadow(since, baseline=baseline, candidate=canary)
        except MetricsBackendError as exc:
            return self._metrics_failed(exc)
        analysis = spec.analysis
        if step.alpha is not None:
            analysis = analysis.model_copy(update={"alpha": step.alpha})
        verdict, ledger = assess(
            step.slos,
            analysis,
            observation,
            self._state.shadow_ledger,
            baseline=baseline,
            canary=canary,
        )
        return self._analyzed(verdict, ledger, observation, closing, since, baseline, canary,
                              shadow=True)  # fmt: skip

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
        pending = [r for r in self._pending(self._run_id) if r.id not in self._handled]
        if abort_only:
            pending = [r for r in pending if r.kind == "abort"]
        if not pending:
            return None
        chosen = next((r for r in pending if r.kind == "abort"), pending[0])
        now = self.clock.now()
        self._handled.add(chosen.id)
        self.store.mark_handled(chosen.id, at=now, run_id=self._run_id, epoch=self._epoch)
        request = {"kind": chosen.kind, "by": chosen.requested_by}
        self.store.record_event(self._run_id, "request", request, at=now, epoch=self._epoch)
        self._observers.on_request(self._run_id, chosen.kind, chosen.requested_by)
        if chosen.kind == "abort":
            return AbortRequested(chosen.requested_by)
        return Approved(chosen.requested_by)

    # -- the flag --

    def _ensure_flag_untouched(self) -> None:
        """A human who moves the flag during a pause takes the wheel then, not at our next
        write: the metrics no longer describe the split we are judging. A flag backend that
        cannot be read here is noted and the analysis goes on; the next write will tell."""
        try:
            current = self.flags.snapshot()
        except FlagConflict:
            raise  # a hand edit that kept the version: the human has the flag now
        except FlagBackendError as exc:
            self._error("flags", f"flag backend error while checking the flag: {exc}")
            return
        if not self._writes.ours(current):
            raise FlagConflict(
                f"flag '{current.key}' is at version {current.version}, not {self._writes.version} "
                f"where run {self._run_id} left it: someone else changed it"
            )
        if self._state.phase is Phase.SHADOW and self._shadow is not None:
            shadow = self._shadow.flags.snapshot()
            if not self._shadow.ours(shadow):
                raise FlagConflict(
                    f"shadow flag '{shadow.key}' is at version {shadow.version}, not "
                    f"{self._shadow.version} where run {self._run_id} left it: someone else "
                    "changed it"
                )

    def _found_before(self) -> str:
        """What the run had found against the canary when a human took the flag: the rollback
        it had decided, or a failed analysis it tolerated, so the edit does not hide it."""
        if self._state.outcome is not None and self._state.reason:
            return f"; before that: {self._state.reason}"
        verdict = self._last_verdict
        if verdict is not None and verdict.outcome is Outcome.FAIL:
            return f"; before that an analysis failed: SLO failed: {verdict.reason}"
        return ""

    def _restore_shadow(self) -> None:
        """Put the shadow flag back unless it serves what it did when the run began (never
        moved, or put back when its step ended); FlagConflict when a human changed it since."""
        shadow = self._shadow
        if shadow is None or shadow.prior is None:
            return
        if shadow.split == shadow.flags.split(shadow.prior):
            return
        shadow.restore()

    # -- endings --

    def _error(self, source: str, message: str) -> None:
        self.store.record_event(
            self._run_id,
            "error",
            {"source": source, "message": message},
            at=self.clock.now(),
            epoch=self._epoch,
        )
        self._observers.on_error(self._run_id, message)

    def _stop(self, outcome: str, reason: str, *, restore: bool) -> RunResult:
        """End on an error or interruption; the flag is restored unless a human holds it, also
        when the state database is what failed: the flag comes before the journal."""
        try:
            if self._writes.journal_error is None:
                self._error("run", reason)
        except StateBackendError as exc:
            self._writes.journal_error = exc
        try:
            self._restore_shadow()
        except (CanaryError, KeyboardInterrupt) as exc:
            reason = f"{reason}; restoring the shadow flag failed: {exc}"
            if self._writes.journal_error is None:
                self._error("flag", reason)
        restored = False
        if restore:
            try:
                self._writes.restore()
                restored = True
            except (CanaryError, KeyboardInterrupt) as exc:
                reason = f"{reason}; restoring the flag failed: {exc}"
                if self._writes.journal_error is None:
                    self._error("flag", reason)
        if (down := self._writes.journal_error) is not None:
            self.leases.forget(self._run_id, self._epoch)
            flag = "the flag was restored" if restored else "the flag was not restored"
            cause = "" if str(down) in reason else f" ({down})"
            raise StateBackendError(
                f"run {self._run_id} stopped: {reason}; {flag}, but the state database could "
                f"not record it{cause}{self._keep_claim(restored)}"
            ) from down
        phase = _FINAL_PHASE[outcome]
        self._commit(replace(self._state, phase=phase, outcome=outcome, reason=reason))
        return self._finish(outcome, reason)

    def _keep_claim(self, restored: bool) -> str:
        """The journal is away: a flag we moved keeps our claim for the run's next driver, and
        one we restored has the claim marked with the version the restore produced, for that
        driver to journal it (a flag never moved is simply released); what to tell the user."""
        assert self._writes.prior is not None
        if self._claim is None or (restored and self._writes.version == self._writes.prior.version):
            self._release()
            return ""
        resume = f"`canaryctl rollout resume {self._run_id}` (or a controller)"
        if not restored:
            return f"; {resume} takes the run up again once the state database is back"
        marked = replace(self._claim, restored=self._writes.version)
        with contextlib.suppress(CanaryError):  # unmarked, resume asks a person instead
            self.flags.claim(marked)
            self._claim = marked
        return f"; {resume} records it once the state database is back"

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
                final_split=None if final is None else split_dict(final),
                epoch=self._epoch,
            )
        finally:
            self.leases.forget(self._run_id, self._epoch)
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
        if self._shadow_claimed and self._shadow is not None:
            try:
                self._shadow.flags.release(self._claim)
            except CanaryError as exc:
                self._error("flag", f"releasing the claim on the shadow flag failed: {exc}")
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
                self._run_id, "hook", {"hook": name}, at=self.clock.now(), epoch=self._epoch
            )
            outcome = self.hooks.call(hook, payload)
            self.store.end_event(
                event_id,
                outcome.to_dict(),
                at=self.clock.now(),
                run_id=self._run_id,
                epoch=self._epoch,
            )
            self._observers.on_hook(self._run_id, name, outcome)

    def _info(self, *, resumed: bool) -> RunInfo:
        spec = self.rollout.spec
        assert self._writes.split is not None
        return RunInfo(
            run_id=self._run_id,
            name=self.rollout.metadata.name,
            baseline=spec.flag.baseline,
            canary=spec.flag.canary,
            plan=self._plan,
            slos=tuple(spec.slos),
            split=self._writes.split,
            resumed=resumed,
        )


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
    shadow_flags: FlagStore | None = None,
) -> RunResult:
    """Run `rollout` on the backends its runbook names (or those given), journaled at
    `state_path`; preflight errors raise before anything changes. `from_current` and
    `break_claim`: see RolloutRunner's module docstring and FlagStore.claim."""
    clock = clock if clock is not None else SystemClock()
    with (
        wired(rollout, clock, flags, metrics, shadow_flags=shadow_flags) as wiring,
        StateStore(state_path) as store,
        _heartbeat(store) as leases,
    ):
        runner = RolloutRunner(
            rollout,
            flags=wiring.flags,
            metrics=wiring.metrics,
            store=store,
            clock=clock,
            observers=[*observers, *wiring.notifiers],
            hooks=wiring.hooks,
            from_current=from_current,
            break_claim=break_claim,
            leases=leases,
            shadow_flags=wiring.shadow_flags,
        )
        with _taken_over():
            return runner.run()


def _ensure_flag_is_free(store: StateStore, rollout: Rollout, submitted: int | None) -> None:
    """A run left mid-way (or submitted and not yet begun) owns its flag: starting another
    would save a half-moved split as the state to restore. InvalidInput names the holder."""
    # Compared as stored: the journal keeps URLs redacted (a base_url's credentials).
    flag = redact_document(rollout.spec.flag.model_dump(mode="json", by_alias=True))
    for other in store.unfinished_runs():
        if other.id == submitted:
            continue
        if flag_identity(other.runbook["spec"]["flag"]) == flag_identity(flag):
            raise InvalidInput(
                f"flag '{flag['key']}' is still held by run {other.id} ('{other.name}', "
                f"process {other.pid} on {other.host}): wait for it, or "
                f"`canaryctl rollout resume {other.id}` / `canaryctl rollout abort {other.id}`"
            )


def submit_rollout(
    rollout: Rollout, *, state_path: str | Path, warn: Callable[[str], None] = log.warning
) -> tuple[int, str]:
    """Journal `rollout` for a controller to drive (`rollout run --detach`); its id and where.
    What can be checked without the flag is checked now (exit 2): webhooks, chaos scenarios,
    and that no unfinished run of this database holds the flag (the API answers 409). A
    controller drives the journal's copy, which keeps a written webhook URL by its origin
    alone: `warn` hears now, while the submitter can still act, which webhooks will not fire."""
    check_hook_urls(rollout.spec)
    load_scenarios(rollout)
    runbook = rollout.model_dump(mode="json", by_alias=True)
    lost, headless = webhooks_the_journal_drops(redacted_runbook(runbook)["spec"])
    if lost or headless:
        parts = [f"webhooks {', '.join(lost)} will not fire"] if lost else []
        if headless:
            parts.append(f"webhooks {', '.join(headless)} will post without their headers")
        warn(
            f"{' and '.join(parts)} when a controller drives this run: the journal it reads "
            "keeps a written URL by its origin alone, and no headers. Give them url_env "
            "(the variable set where the controller runs), or run the rollout in the foreground"
        )
    with StateStore(state_path) as store:
        _ensure_flag_is_free(store, rollout, None)
        run_id = store.submit_run(
            name=rollout.metadata.name,
            runbook=runbook,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=installed_version(),
            at=time.time(),
        )
        return run_id, store.where


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
    shadow_flags: FlagStore | None = None,
) -> RunResult:
    """Resume run `run_id`; without `rollout`, the runbook copy in the journal is used, which
    keeps webhooks only when they name `url_env` (and none of their headers) and URLs without
    their credentials. `warn` gets one line naming the webhooks that will not fire."""
    clock = clock if clock is not None else SystemClock()
    with StateStore(state_path) as store, _heartbeat(store) as leases:
        record = store.run(run_id)
        if record is None:
            raise InvalidInput(f"no run {run_id} in {store.where}")
        if rollout is None:
            rollout = stored_rollout(record.runbook, warn)
        elif rollout.metadata.name != record.name:
            raise InvalidInput(f"run {run_id} is '{record.name}', not '{rollout.metadata.name}'")
        with wired(rollout, clock, flags, metrics, shadow_flags=shadow_flags) as wiring:
            runner = RolloutRunner(
                rollout,
                flags=wiring.flags,
                metrics=wiring.metrics,
                store=store,
                clock=clock,
                observers=[*observers, *wiring.notifiers],
                hooks=wiring.hooks,
                leases=leases,
                shadow_flags=wiring.shadow_flags,
            )
            with _taken_over():
                return runner.resume(run_id)


@contextlib.contextmanager
def _taken_over() -> Iterator[None]:
    """A run driven from a terminal whose lease another process took (this one stalled past
    it): a plain error, exit 3, not a crash."""
    try:
        yield
    except RunReleased as exc:
        raise RunTakenOver(
            f"another process drives this run now ({exc}); this one stopped without writing "
            "anything more: `canaryctl rollout status` shows where the run is"
        ) from exc


@contextlib.contextmanager
def _heartbeat(store: StateStore) -> Iterator[Leases]:
    """This process's lease on its one run, renewed while the run lasts."""
    leases = Leases(store, ttl=DEFAULT_LEASE_TTL).start()
    try:
        yield leases
    finally:
        leases.close()


ChaosPlayer = Callable[[ChaosScenario], "ScenarioResult"]
"""Plays a rollout's `chaos` step; tests pass a fake, production plays against the proxy."""


def _play_scenario(scenario: ChaosScenario) -> ScenarioResult:
    from canaryctl.chaos.scenario import play

    return play(scenario)
