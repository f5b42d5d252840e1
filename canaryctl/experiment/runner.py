"""The imperative shell of an experiment: sets the split, observes, journals, restores the flag.

Before anything moves the flag is claimed (as a rollout claims it, so no rollout or other
experiment drives it meanwhile), read, and saved in the state database with the experiment;
every variation must exist and the metrics backend must answer (else exit 2 or 3, nothing
changed). Then the split is written once and each interval's counts (all traffic, and per tier)
are journaled before they are judged, so `experiment status` and `report` rebuild the same
intervals from the journal at any time.

Every exit path ends with the flag at a known state:

- a winner with `promote_winner`: the flag serves the winner to everyone in its scope (the
  default rule, or the LaunchDarkly rule); exit 0;
- a winner without it: the prior targeting is restored, the winner reported; exit 0;
- no winner by the end (duration or max): restored; exit 1;
- Ctrl-C or SIGTERM: restored; exit 130;
- a metrics or flag backend error: restored (retried hard); exit 3;
- someone else changed the flag during the experiment: left as they left it; exit 3;
- its process killed (SIGKILL, a lost host): the split and the claim stay until
  `canaryctl experiment restore ID` puts the prior targeting back (`restore_abandoned`).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from canaryctl.analysis.experiment import Decision, Design, Evidence, decide
from canaryctl.clock import Clock
from canaryctl.controller.store import ExperimentRecord, StateStore
from canaryctl.errors import (
    CanaryError,
    FlagConflict,
    Interrupted,
    InvalidInput,
    StateBackendError,
)
from canaryctl.experiment.summary import add_interval, design_of
from canaryctl.flags.base import FlagClaim, FlagSnapshot, SplitStore, process_alive
from canaryctl.metrics.base import MetricsSource
from canaryctl.runbook.experiment import Experiment
from canaryctl.version import installed_version

__all__ = ["EXIT_CODES", "ExperimentResult", "ExperimentRunner", "restore_abandoned"]

EXIT_CODES = {"winner": 0, "no_winner": 1, "error": 3, "interrupted": 130}
"""Per outcome, in the tool's table (README): 1 is a negative verdict, like an undecided gate."""

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ExperimentResult:
    experiment_id: int
    name: str
    outcome: str
    reason: str
    exit_code: int
    winner: str | None
    promoted: bool
    weights: dict[str, float] | None
    """The flag's split as last read (None when it could not be read)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "outcome": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "winner": self.winner,
            "promoted": self.promoted,
            "weights": self.weights,
        }


class ExperimentRunner:
    """One experiment, driven by this process; `tier_metrics` count one requester tier each."""

    def __init__(
        self,
        experiment: Experiment,
        *,
        flags: SplitStore,
        metrics: MetricsSource,
        tier_metrics: Mapping[str, MetricsSource],
        store: StateStore,
        clock: Clock,
        promote_winner: bool = False,
        emit: Emit = lambda event: None,
    ) -> None:
        self.experiment, self.spec = experiment, experiment.spec
        self.flags, self.metrics, self.tier_metrics = flags, metrics, dict(tier_metrics)
        self.store, self.clock = store, clock
        self.promote_winner, self.emit = promote_winner, emit
        self._id = 0
        self._version = 0
        self._prior: FlagSnapshot | None = None

    def run(self) -> ExperimentResult:
        claim = FlagClaim(
            token=uuid.uuid4().hex,
            run_id=None,
            state=self.store.where,
            host=socket.gethostname(),
            pid=os.getpid(),
            at=self.clock.now(),
            holder="experiment",
        )
        self.flags.claim(claim)
        try:
            design = self._preflight()
            self._id = self.store.create_experiment(
                name=self.experiment.metadata.name,
                document=self.experiment.model_dump(mode="json", by_alias=True),
                design=design.to_dict(),
                host=claim.host,
                pid=claim.pid,
                version=installed_version(),
                started_at=self.clock.now(),
                prior_flag=self._saved,
            )
            return self._drive(design)
        finally:
            try:
                self.flags.release(claim)
            except CanaryError as exc:  # the flag is where the result says; only the mark stays
                message = f"releasing the claim on the flag failed: {exc}"
                self.emit({"event": "error", "experiment_id": self._id, "message": message})

    @property
    def _saved(self) -> FlagSnapshot:
        assert self._prior is not None
        return self._prior

    def _preflight(self) -> Design:
        """Nothing has moved yet: a missing variation is exit 2, a silent backend exit 3."""
        self._prior = self.flags.snapshot()
        names = [v.value for v in self.spec.variations]
        design = design_of(self.spec, self.flags.values(self._prior, names))
        for source in (self.metrics, *self.tier_metrics.values()):
            source.check()
        return design

    def _drive(self, design: Design) -> ExperimentResult:
        try:
            return self._loop(design)
        except (KeyboardInterrupt, Interrupted):
            return self._stop("interrupted", "interrupted (Ctrl-C or SIGTERM)", restore=True)
        except FlagConflict as exc:
            return self._stop("error", f"{exc}; left the flag alone", restore=False)
        except CanaryError as exc:
            return self._stop("error", str(exc), restore=True)
        except BaseException as exc:
            self._stop("error", f"unexpected {type(exc).__name__}: {exc}", restore=True)
            raise

    def _loop(self, design: Design) -> ExperimentResult:
        spec = self.spec
        weights = dict(zip(design.variations, (v.weight for v in spec.variations), strict=True))
        written = self.flags.set_split(
            weights,
            expect_version=self._saved.version,
            comment=f"canaryctl experiment {self.experiment.metadata.name}: split {weights}",
        )
        self._version = written.version
        sources = {"all": self.metrics, **self.tier_metrics}
        for source in sources.values():
            source.check()  # a scrape's sample, which the first interval starts from
        started = self.clock.now()
        self.store.update_experiment(self._id, phase="running", at=started,
                                     flag_version=written.version)  # fmt: skip
        since = dict.fromkeys(sources, started)
        self.emit({"event": "start", "experiment_id": self._id,
                   "name": self.experiment.metadata.name, "weights": weights,
                   "control": design.control, "primary": design.primary.name,
                   "until": spec.until or "duration", "longest_seconds": spec.longest})  # fmt: skip
        evidence, decision = Evidence(), Decision(None, "no interval observed yet", {})
        while True:
            left = started + spec.longest - self.clock.now()
            self.clock.sleep(min(spec.interval, max(left, 0.0)))
            self._ensure_flag_untouched()
            data: dict[str, Any] = {"tiers": {}}
            for name, source in sources.items():
                observation = source.observe(since[name])
                since[name] = observation.end
                if name == "all":
                    data["all"] = observation.to_dict()
                else:
                    data["tiers"][name] = observation.to_dict()
            now = self.clock.now()
            self.store.record_observation(self._id, data, at=now)
            evidence = add_interval(design, evidence, data)
            decision = decide(design, evidence)
            self.emit({"event": "interval", "experiment_id": self._id,
                       "intervals": evidence.intervals, "elapsed": now - started,
                       **decision.to_dict()})  # fmt: skip
            decided = decision.winner is not None and spec.until == "decided"
            if decided or now >= started + spec.longest:
                break
        if decision.winner is None:
            return self._stop("no_winner", decision.reason, restore=True)
        if self.promote_winner:
            snapshot = self.flags.set_split(
                {decision.winner: 100.0},
                expect_version=self._version,
                comment=f"canaryctl experiment {self.experiment.metadata.name}: "
                f"{decision.winner} won",
            )
            self._version = snapshot.version
            return self._finish("winner", decision.reason, decision.winner, promoted=True)
        return self._stop("winner", decision.reason, restore=True, winner=decision.winner)

    def _ensure_flag_untouched(self) -> None:
        now = self.flags.snapshot()
        if now.version != self._version:
            raise FlagConflict(
                f"flag '{now.key}' moved from version {self._version} to {now.version} during "
                "the experiment: someone else changed it"
            )

    def _stop(
        self, outcome: str, reason: str, *, restore: bool, winner: str | None = None
    ) -> ExperimentResult:
        """The prior targeting back (unless a human holds the flag), then the journal."""
        if restore:
            try:
                self.flags.restore(
                    self._saved,
                    # Before the split landed we expect the saved version: restoring what is
                    # there only moves the version on; a human's change is a FlagConflict.
                    expect_version=self._version or self._saved.version,
                    comment=f"canaryctl experiment {self.experiment.metadata.name}: "
                    f"restore ({outcome})",
                )
            except (CanaryError, KeyboardInterrupt) as exc:
                outcome, reason = "error", f"{reason}; restoring the flag failed: {exc}"
        return self._finish(outcome, reason, winner, promoted=False)

    def _finish(
        self, outcome: str, reason: str, winner: str | None, *, promoted: bool
    ) -> ExperimentResult:
        try:
            weights: dict[str, float] | None = self.flags.weights(self.flags.snapshot())
        except CanaryError:
            weights = None
        result = ExperimentResult(
            experiment_id=self._id,
            name=self.experiment.metadata.name,
            outcome=outcome,
            reason=reason,
            exit_code=EXIT_CODES[outcome],
            winner=winner,
            promoted=promoted,
            weights=weights,
        )
        try:
            self.store.finish_experiment(
                self._id,
                outcome=outcome,
                reason=reason,
                exit_code=result.exit_code,
                winner=winner,
                at=self.clock.now(),
                final_weights=weights,
            )
        except StateBackendError as exc:
            raise StateBackendError(
                f"experiment {self._id} ended ({outcome}: {reason}), the flag at {weights}, "
                f"but the state database could not record it: {exc}"
            ) from exc
        self.emit({"event": "finish", **result.to_dict()})
        return result


def restore_abandoned(
    record: ExperimentRecord,
    flags: SplitStore,
    store: StateStore,
    clock: Clock,
    *,
    force: bool = False,
) -> FlagSnapshot:
    """Put back the targeting an experiment found, when its process died without doing so
    (SIGKILL, a lost host): the journal holds the prior flag and the version the experiment
    last wrote, so a flag someone changed since is left alone (FlagConflict, exit 3)."""
    if record.phase == "finished":
        raise InvalidInput(
            f"experiment {record.id} has ended ({record.outcome}: {record.reason}); "
            "there is nothing to restore"
        )
    alive = process_alive(record.host, record.pid)
    if alive:
        raise InvalidInput(
            f"experiment {record.id} is still running (process {record.pid} on {record.host}): "
            "stop it with Ctrl-C or SIGTERM, which restores the flag"
        )
    if alive is None and not force:
        raise InvalidInput(
            f"experiment {record.id} runs on host {record.host}, where canaryctl cannot tell "
            f"whether process {record.pid} still lives; --force if you know it does not"
        )
    claim = FlagClaim(token=uuid.uuid4().hex, run_id=None, state=store.where,
                      host=socket.gethostname(), pid=os.getpid(), at=clock.now(),
                      holder="experiment")  # fmt: skip
    flags.claim(claim, take_over=True)
    try:
        restored = flags.restore(
            record.prior_flag,
            expect_version=record.flag_version or record.prior_flag.version,
            comment=f"canaryctl experiment restore {record.id}: its process died",
        )
        store.finish_experiment(
            record.id,
            outcome="error",
            reason="its process died; the prior targeting was restored by `experiment restore`",
            exit_code=EXIT_CODES["error"],
            winner=None,
            at=clock.now(),
            final_weights=None,
        )
    finally:
        flags.release(claim)
    return restored
