"""The controller's own Prometheus metrics while a rollout runs (`--metrics-port`).

An observer, so it only listens: it keeps gauges and counters in a private registry and serves
them on 127.0.0.1. Names (a contract, see docs/reports.md):

    canaryctl_rollout_canary_weight_percent{rollout}     share of traffic on the canary now
    canaryctl_rollout_step_index{rollout}                0-based plan item running now
    canaryctl_rollout_steps{rollout}                     plan items in all
    canaryctl_rollout_phase{rollout, phase}              1 for the current phase, else 0
    canaryctl_rollout_slo_verdict{rollout, slo, outcome} 1 for each SLO's last outcome, else 0
    canaryctl_rollout_slo_value{rollout, slo}            the canary's value in the last analysis
    canaryctl_rollout_analyses_total{rollout, outcome}   analyses by verdict
    canaryctl_rollout_rollbacks_total{rollout}           rollbacks started
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from canaryctl.analysis import Outcome, Verdict
from canaryctl.controller.events import RolloutObserver, RunInfo
from canaryctl.controller.phases import Phase
from canaryctl.controller.step import PlanItem
from canaryctl.errors import InvalidInput
from canaryctl.flags.base import Split

__all__ = ["RolloutExporter"]


class RolloutExporter(RolloutObserver):
    """Serves on 127.0.0.1:`port` (0 picks a free one; see `url`) until `close()`."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["rollout"]
        self.weight = Gauge(
            "canaryctl_rollout_canary_weight_percent",
            "Share of traffic the flag sends to the canary",
            labels,
            registry=self.registry,
        )
        self.step = Gauge(
            "canaryctl_rollout_step_index", "Plan item running now, from 0", labels,
            registry=self.registry,
        )  # fmt: skip
        self.steps = Gauge(
            "canaryctl_rollout_steps", "Plan items in all", labels, registry=self.registry
        )
        self.phase = Gauge(
            "canaryctl_rollout_phase", "1 for the rollout's current phase", [*labels, "phase"],
            registry=self.registry,
        )  # fmt: skip
        self.slo_verdict = Gauge(
            "canaryctl_rollout_slo_verdict",
            "1 for each SLO's outcome in the last analysis",
            [*labels, "slo", "outcome"],
            registry=self.registry,
        )
        self.slo_value = Gauge(
            "canaryctl_rollout_slo_value",
            "The canary's value of each SLO's metric in the last analysis",
            [*labels, "slo"],
            registry=self.registry,
        )
        self.analyses = Counter(
            "canaryctl_rollout_analyses", "Analyses by verdict", [*labels, "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.rollbacks = Counter(
            "canaryctl_rollout_rollbacks", "Rollbacks started", labels, registry=self.registry
        )
        self._name = ""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise InvalidInput(f"--metrics-port {port}: cannot listen: {exc.strerror}") from exc
        self.url = f"http://{host}:{self._server.server_port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def on_start(self, run: RunInfo) -> None:
        self._name = run.name
        self.weight.labels(run.name).set(run.split.canary)
        self.steps.labels(run.name).set(len(run.plan))
        self.rollbacks.labels(run.name)  # present (at 0) from the start, as counters should be
        for slo in run.slos:
            for outcome in Outcome:
                self.slo_verdict.labels(run.name, slo.describe(), outcome.value).set(0)

    def on_step(self, run_id: int, index: int, total: int, item: PlanItem) -> None:
        self.step.labels(self._name).set(index)

    def on_weight(self, run_id: int, before: Split, after: Split) -> None:
        self.weight.labels(self._name).set(after.canary)

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        self.analyses.labels(self._name, verdict.outcome.value).inc()
        for check in verdict.checks:
            for outcome in Outcome:
                value = 1 if check.outcome is outcome else 0
                self.slo_verdict.labels(self._name, check.slo, outcome.value).set(value)
            if check.canary_value is not None:
                self.slo_value.labels(self._name, check.slo).set(check.canary_value)

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        for each in Phase:
            self.phase.labels(self._name, each.value).set(1 if each is phase else 0)
        if phase is Phase.ROLLING_BACK:
            self.rollbacks.labels(self._name).inc()
