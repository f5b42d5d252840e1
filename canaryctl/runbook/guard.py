"""The `Guard` document: a standing watch on a flag between rollouts.

It names the flag as a Rollout does, with the same two variations: `canary` is the one it
watches (the model serving now), `baseline` the safe one it sends all traffic to when an SLO
fails or an alert in `trip_on` fires. Its SLOs are absolute (`max`, `min`): the safe variation
may serve nothing to compare with. Once tripped it does nothing more until a person re-arms it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from canaryctl.runbook.alerts import AlertMatchers
from canaryctl.runbook.common import API_VERSION, Metadata, Strict
from canaryctl.runbook.rollout import (
    AnalysisSpec,
    FlagSpec,
    Hook,
    MetricsSpec,
    PrometheusMetricsSpec,
    SloSpec,
)

__all__ = ["Guard", "GuardAnalysisSpec", "GuardSpec"]


class GuardAnalysisSpec(AnalysisSpec):
    """A rollout's analysis, judging each window on its own by default: a guard watches for
    weeks, and "errors over the threshold" is what its owner means by a failure. More than
    `failure_limit` failed windows in a row trip it. `method: sequential` accumulates evidence
    over the whole watch instead (its false-trip rate is at most `alpha` however long it runs).
    """

    method: Literal["threshold", "sequential"] = "threshold"


class GuardSpec(Strict):
    flag: FlagSpec
    metrics: MetricsSpec
    slos: list[SloSpec] = Field(min_length=1)
    analysis: GuardAnalysisSpec = GuardAnalysisSpec()
    trip_on: AlertMatchers
    """Alerts (posted to the guard's /api/v1/alertmanager) that trip it."""
    on_trip: list[Hook] = Field(default_factory=list)
    """Webhooks called once the flag serves the safe variation."""

    @model_validator(mode="after")
    def _absolute_slos(self) -> GuardSpec:
        prometheus = isinstance(self.metrics, PrometheusMetricsSpec)
        for index, slo in enumerate(self.slos):
            if slo.relative:
                raise ValueError(
                    f"slos[{index}]: a guard's SLOs are absolute (max, min): the safe "
                    "variation may serve no traffic to compare with"
                )
            if slo.query is not None and not prometheus:
                raise ValueError(
                    f"slos[{index}].query: custom PromQL SLOs need metrics.provider prometheus"
                )
        return self


class Guard(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["Guard"]
    metadata: Metadata
    spec: GuardSpec
