"""Run a ChaosScenario: steady state before, inject, check during, ALWAYS remove, check after.

The order is the safety argument. Nothing is injected unless the steady state holds first. Once
the first fault is added, every exit path (held, violated, a metrics error, Ctrl-C, SIGTERM)
goes through the `finally` that removes the faults this run added, by the id it named each with
before asking the proxy (so a fault whose answer was lost is removed too), and faults someone
else added stay. A run that cannot reach the proxy to remove them, or that dies by SIGKILL, leaves
faults that end by the TTL each was given: the proxy enforces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from canaryctl.chaos.faults import new_fault_id
from canaryctl.chaos.hypothesis import Judgement, judge, total
from canaryctl.chaos.journal import Journal
from canaryctl.clock import Clock, SystemClock
from canaryctl.errors import BackendError, CanaryError, ChaosBackendError, Interrupted
from canaryctl.metrics.base import MetricsSource
from canaryctl.runbook.scenario import ChaosScenario, FaultSpec

__all__ = ["FaultInjector", "ScenarioResult", "hypothesis_metrics", "play", "run_scenario"]


class FaultInjector(Protocol):
    """The proxy's admin API as a scenario needs it (ChaosClient is the real one)."""

    def add(self, spec: FaultSpec, fault_id: str | None = None) -> dict[str, Any]: ...

    def remove(self, fault_id: str) -> bool: ...


@dataclass(frozen=True)
class ScenarioResult:
    outcome: str
    """held, violated, not_steady, inconclusive."""
    exit_code: int
    reason: str
    journal: dict[str, Any]


Emit = Callable[[dict[str, Any]], None]


def _ignore(event: dict[str, Any]) -> None:
    """The default observer: says nothing."""


def run_scenario(
    scenario: ChaosScenario,
    *,
    injector: FaultInjector,
    metrics: MetricsSource,
    journal: Journal,
    clock: Clock | None = None,
    emit: Emit = _ignore,
) -> ScenarioResult:
    """Exit codes: 0 held, 1 violated / not steady / too little traffic; errors raise
    (BackendError 3, Interrupted 130) after the faults were removed and the journal closed."""
    run = _Run(scenario, injector, metrics, journal, clock or SystemClock(), emit)
    try:
        outcome, reason = run.play()
    except KeyboardInterrupt:
        journal.finish("interrupted", Interrupted.exit_code, "interrupted (Ctrl-C or SIGTERM)")
        emit({"event": "finished", "outcome": "interrupted"})
        raise Interrupted("interrupted; the faults this run added were removed") from None
    except CanaryError as exc:
        journal.finish("error", exc.exit_code, str(exc))
        emit({"event": "finished", "outcome": "error", "reason": str(exc)})
        raise
    exit_code = 0 if outcome == "held" else 1
    journal.finish(outcome, exit_code, reason)
    emit({"event": "finished", "outcome": outcome, "reason": reason})
    return ScenarioResult(outcome, exit_code, reason, journal.data)


def hypothesis_metrics(
    scenario: ChaosScenario, clock: Callable[[], float] = time.time
) -> MetricsSource:
    """The source a scenario's hypothesis reads: its windows slide (the last `window`, every
    `interval`), so a scrape source keeps the samples they may start at."""
    from canaryctl.metrics.factory import metrics_source_for

    hypothesis = scenario.spec.hypothesis
    return metrics_source_for(hypothesis.metrics, clock=clock, slide=hypothesis.window)


def play(scenario: ChaosScenario, *, clock: Clock | None = None) -> ScenarioResult:
    """Run `scenario` on the backends it names (its proxy's admin API, its metrics); what a
    rollout's `chaos` step does. The journal stays in memory: the caller stores it."""
    from canaryctl.chaos.client import ChaosClient, token_from_env

    clock = clock or SystemClock()
    spec = scenario.spec
    injector = ChaosClient(spec.target.url, token_from_env(spec.target.token_env))
    try:
        return run_scenario(
            scenario,
            injector=injector,
            metrics=hypothesis_metrics(scenario, clock.now),
            journal=Journal(scenario, clock=clock.now),
            clock=clock,
        )
    finally:
        injector.close()


class _Run:
    def __init__(
        self,
        scenario: ChaosScenario,
        injector: FaultInjector,
        metrics: MetricsSource,
        journal: Journal,
        clock: Clock,
        emit: Emit,
    ) -> None:
        self.spec = scenario.spec
        self.injector, self.metrics, self.journal = injector, metrics, journal
        self.clock, self.emit = clock, emit
        self.added: list[str] = []

    def play(self) -> tuple[str, str]:
        before = self._steady("before")
        if before.outcome != "held":
            return "not_steady", f"not steady before injecting: {before.reason}"
        try:
            self._inject()
            during = self._during()
        finally:
            self._remove()
        after = self._steady("after", settle=self.spec.recovery)
        violated = [j for j in during if j.outcome == "violated"]
        if violated:
            return "violated", f"during the faults: {violated[0].reason}"
        if not any(j.outcome == "held" for j in during):
            return "inconclusive", "no check during the faults could be judged"
        if after.outcome != "held":
            return "violated", f"after recovery: {after.reason}"
        return "held", "the steady state held before, during and after"

    def _steady(self, phase: str, settle: float = 0.0) -> Judgement:
        """Let things settle, sample, let a window of traffic pass, judge that window."""
        self.clock.sleep(settle)
        self.metrics.check()  # the sample the window starts from
        since = self.clock.now()
        self.clock.sleep(self.spec.hypothesis.window)
        return self._judge(phase, since)

    def _judge(self, phase: str, since: float) -> Judgement:
        observation = self.metrics.observe(since)
        stats = total(observation)
        hypothesis = self.spec.hypothesis
        judgement = judge(hypothesis.checks, phase, stats, hypothesis.min_requests)
        record = {
            "at": self.clock.now(),
            "window": {"start": observation.start, "end": observation.end},
            **judgement.to_dict(),
        }
        self.journal.check(record)
        self.emit({"event": "check", **record})
        return judgement

    def _inject(self) -> None:
        for spec in self.spec.injected_faults():
            body = spec.model_dump(mode="json", exclude_none=True)
            fault_id = new_fault_id()
            entry = self.journal.begin("injections", {"id": fault_id, "fault": body})
            self.added.append(fault_id)  # before asking: an answer lost on the way still counts
            fault = self.injector.add(spec, fault_id)
            self.journal.end(entry, fault)
            self.emit({"event": "injected", **fault})

    def _during(self) -> list[Judgement]:
        hypothesis = self.spec.hypothesis
        ends = self.clock.now() + self.spec.duration
        self.clock.sleep(self.spec.settle)
        self.metrics.check()  # the sample no window reaches before
        floor = self.clock.now()
        judgements: list[Judgement] = []
        while (left := ends - self.clock.now()) > 0:
            self.clock.sleep(min(hypothesis.interval, left))
            since = max(floor, self.clock.now() - hypothesis.window)
            judgement = self._judge("during", since)
            judgements.append(judgement)
            if judgement.outcome == "violated" and self.spec.abort_on_violation:
                self.emit({"event": "abort", "reason": judgement.reason})
                break
        return judgements

    def _remove(self) -> None:
        """Remove what this run added, each by id; a failure leaves the fault to its TTL."""
        failed: list[str] = []
        for fault_id in self.added:
            entry = self.journal.begin("removals", {"id": fault_id})
            try:
                found = self.injector.remove(fault_id)
            except BackendError as exc:
                failed.append(fault_id)
                self.journal.end(entry, {"removed": False, "error": str(exc)})
                continue
            self.journal.end(entry, {"removed": True, "found": found})
            self.emit({"event": "removed", "id": fault_id, "found": found})
        self.added = []
        if failed:
            raise ChaosBackendError(
                f"could not remove fault(s) {', '.join(failed)}: they end by their TTL"
            )
