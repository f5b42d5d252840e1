"""The `Experiment` document: two or more variations of a flag on a fixed split, compared on a
primary metric with guard metrics, until a winner is decided or for a set duration.

The metrics are those of a Rollout: the built-in SLO metrics (canaryctl/slo_metrics.py; the
quality scores of feedback and judges are `quality_score`), or custom PromQL with a `name` (one
number per variant, Prometheus only). How a winner is decided: canaryctl/analysis/experiment.py
and docs/experiments.md.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from canaryctl.runbook.common import API_VERSION, DocPath, Duration, Metadata, Strict
from canaryctl.runbook.promql import placeholders, unknown_placeholders
from canaryctl.runbook.rollout import (
    HIGHER_IS_BETTER,
    SLO_VARIABLES,
    SPLIT_RULE,
    MetricsSpec,
    PrometheusMetricsSpec,
    SloMetric,
)

__all__ = [
    "Experiment",
    "ExperimentFlag",
    "ExperimentMetric",
    "ExperimentSpec",
    "FileExperimentFlag",
    "FlagdExperimentFlag",
    "GuardMetric",
    "LaunchDarklyExperimentFlag",
    "SplitExperimentFlag",
    "VariationSpec",
]


class FileExperimentFlag(Strict):
    """A flag in a LaunchDarkly file-data-source file; variations are named by value."""

    provider: Literal["file"]
    path: DocPath
    key: str = Field(min_length=1)


class LaunchDarklyExperimentFlag(Strict):
    """A flag in LaunchDarkly; `rule` splits one targeting rule instead of the default rule."""

    provider: Literal["launchdarkly"]
    project: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    key: str = Field(min_length=1)
    rule: str | None = Field(
        default=None,
        min_length=1,
        description="id or description of the one targeting rule to split; default rule if unset",
    )
    base_url: str = Field(default="https://app.launchdarkly.com", pattern=r"^https?://")
    token_env: str = Field(default="LAUNCHDARKLY_API_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class FlagdExperimentFlag(Strict):
    """A flag in a flagd flag-definition file; variants named by key or by the value served."""

    provider: Literal["flagd"]
    path: DocPath
    key: str = Field(min_length=1)


class SplitExperimentFlag(Strict):
    """A flag in Split; variations name treatments, percents are whole; `rule`
    (`attribute=value` or `segment:NAME`) splits one rule instead of the default rule."""

    provider: Literal["split"]
    workspace: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    key: str = Field(min_length=1)
    rule: str | None = Field(default=None, pattern=SPLIT_RULE)
    base_url: str = Field(default="https://api.split.io", pattern=r"^https?://")
    api_key_env: str = Field(default="SPLIT_ADMIN_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


ExperimentFlag = Annotated[
    FileExperimentFlag | LaunchDarklyExperimentFlag | FlagdExperimentFlag | SplitExperimentFlag,
    Field(discriminator="provider"),
]


class VariationSpec(Strict):
    """One arm: a variation (by value; by value or name in LaunchDarkly) and its percent."""

    value: str = Field(min_length=1)
    weight: float = Field(gt=0, le=100, description="percent of the flag's traffic")
    control: bool = Field(default=False, description="the arm every other is compared with")


class ExperimentMetric(Strict):
    """A built-in metric (`metric`) or your PromQL (`query` with a `name`, `higher_is_better`)."""

    metric: SloMetric | None = None
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]+$")
    query: str | None = Field(
        default=None, min_length=1, description="PromQL with {{variant}}, {{window}}..."
    )
    higher_is_better: bool | None = Field(
        default=None, description="custom queries only: is a higher value better?"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ExperimentMetric:
        if (self.metric is None) == (self.query is None):
            raise ValueError("needs exactly one of metric (built in) or query (your PromQL)")
        if self.metric is not None:
            if self.higher_is_better is not None:
                raise ValueError(
                    f"higher_is_better: {self.metric} is built in and knows its direction"
                )
            if self.name is not None:
                raise ValueError("name: only a query metric takes a name")
            return self
        if self.name is None:
            raise ValueError("name: a query metric needs a name, used in results and errors")
        if self.higher_is_better is None:
            raise ValueError("higher_is_better: say which way is better for a query metric")
        problem = unknown_placeholders(self.query or "", SLO_VARIABLES)
        if problem is None and "variant" not in placeholders(self.query or ""):
            problem = "must use {{variant}}, to measure each variation apart"
        if problem is not None:
            raise ValueError(f"query: {problem}")
        return self

    @property
    def subject(self) -> str:
        return self.name or self.metric or ""

    @property
    def better_higher(self) -> bool:
        if self.metric is not None:
            return self.metric in HIGHER_IS_BETTER
        return bool(self.higher_is_better)


class GuardMetric(ExperimentMetric):
    """A metric a winner must not be worse on than the control by more than its margin:
    `max_increase` where higher is worse, `max_decrease` where lower is worse."""

    max_increase: float | None = Field(default=None, ge=0)
    max_decrease: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _margin(self) -> GuardMetric:
        if (self.max_increase is None) == (self.max_decrease is None):
            raise ValueError("a guard needs one margin: max_increase or max_decrease")
        if self.better_higher and self.max_increase is not None:
            raise ValueError(f"max_increase: {self.subject} is worse when lower; use max_decrease")
        if not self.better_higher and self.max_decrease is not None:
            raise ValueError(f"max_decrease: {self.subject} is worse when higher; use max_increase")
        return self

    @property
    def margin(self) -> float:
        return self.max_increase if self.max_increase is not None else self.max_decrease or 0.0


class ExperimentSpec(Strict):
    flag: ExperimentFlag
    variations: list[VariationSpec] = Field(min_length=2, max_length=20)
    metrics: MetricsSpec
    primary: ExperimentMetric
    guards: list[GuardMetric] = Field(default_factory=list)
    tiers: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="requester tiers (the gateway's `tier` label) to show effects for too",
    )
    duration: Duration | None = Field(
        default=None, gt=0, description="run this long, then decide (or not)"
    )
    until: Literal["decided"] | None = Field(
        default=None, description="decided: stop as soon as a winner is decided, at most `max`"
    )
    max: Duration | None = Field(default=None, gt=0, description="with until: decided")
    interval: Duration = Field(default=30.0, gt=0, description="how often to observe")
    min_samples: int = Field(
        default=10,
        ge=1,
        description="per variation and interval (scored answers for quality_score, requests "
        "otherwise); an interval with fewer is left out of that metric's differences",
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="the chance of naming a wrong winner, all comparisons and looks together",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        total = sum(v.weight for v in self.variations)
        if not math.isclose(total, 100.0, abs_tol=1e-6):
            raise ValueError(f"variations: weights sum to {total:g}, not 100")
        values = [v.value for v in self.variations]
        for index, value in enumerate(values):
            if value in values[:index]:
                raise ValueError(f"variations[{index}].value: '{value}' is listed twice")
        for index, tier in enumerate(self.tiers):
            if not tier:
                raise ValueError(f"tiers[{index}]: is empty")
            if tier == "all":
                raise ValueError(f"tiers[{index}]: 'all' names all traffic in the results")
            if tier in self.tiers[:index]:
                raise ValueError(f"tiers[{index}]: is listed twice")
        controls = [i for i, v in enumerate(self.variations) if v.control]
        if len(controls) != 1:
            raise ValueError("variations: exactly one needs control: true")
        if self.until is None and self.max is not None:
            raise ValueError("max: goes with until: decided (or give a duration)")
        if self.until is None and self.duration is None:
            raise ValueError("needs duration, or until: decided with a max")
        if self.until is not None and self.duration is not None:
            raise ValueError("until: give a duration or until: decided with a max, not both")
        if self.until is not None and self.max is None:
            raise ValueError("max: until: decided needs a max, the longest it may run")
        if self.interval > self.longest:
            raise ValueError("interval: longer than the experiment itself")
        names: dict[str, str] = {}
        metrics = [("primary", self.primary)]
        metrics += [(f"guards[{i}]", g) for i, g in enumerate(self.guards)]
        prometheus = isinstance(self.metrics, PrometheusMetricsSpec)
        for where, metric in metrics:
            if metric.query is not None and not prometheus:
                raise ValueError(f"{where}.query: custom PromQL needs metrics.provider prometheus")
            if metric.subject in names:
                raise ValueError(f"{where}: {metric.subject} is already {names[metric.subject]}")
            names[metric.subject] = where
        return self

    @property
    def control(self) -> str:
        return next(v.value for v in self.variations if v.control)

    @property
    def longest(self) -> float:
        """Seconds the experiment may run at most."""
        return float(self.duration if self.duration is not None else self.max or 0.0)


class Experiment(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["Experiment"]
    metadata: Metadata
    spec: ExperimentSpec
