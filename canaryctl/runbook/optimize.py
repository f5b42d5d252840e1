"""The `CostOptimization` document: what `canaryctl cost optimize` plans, from which facts.

It names the gateway (models and their prices), the route planned, the monthly traffic per tier,
each tier's constraints (a p95 bound, an accuracy floor, an optional allow-list), where the facts
about each model come from (eval results of `canaryctl gate --json-file`, a scrape of the
gateway's /metrics, values written here), today's split, and the template of the Rollout
runbooks that move each tier to the plan. See docs/cost-optimize.md.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from canaryctl.runbook.addresses import Address
from canaryctl.runbook.common import API_VERSION, DocPath, Duration, Metadata, Strict

__all__ = [
    "CostOptimization",
    "CostOptimizationSpec",
    "ModelFactsSpec",
    "PrometheusFactsSpec",
    "RolloutTemplate",
    "TierGoalSpec",
    "TokensSpec",
]


class TokensSpec(Strict):
    """Mean tokens of one query: priced with the gateway's ModelSpec.price."""

    prompt: float = Field(ge=0, le=1e9)
    completion: float = Field(ge=0, le=1e9)


class ModelFactsSpec(Strict):
    """Facts about one model written down; each overrides what evals or metrics measured."""

    accuracy: float | None = Field(default=None, ge=0, le=1, description="share right, 0..1")
    p95: Duration | None = Field(default=None, description="observed p95 latency")
    tokens: TokensSpec | None = None
    cost_per_query_usd: float | None = Field(default=None, ge=0, le=1000)


class TierGoalSpec(Strict):
    """One tier's constraints. A model serves the tier only if its own p95 is within `p95`
    (a mixture of models that each meet a p95 bound meets it too); the traffic-weighted accuracy
    of the tier's split must be at least `min_accuracy`."""

    share: float | None = Field(
        default=None,
        gt=0,
        description="share of the route's monthly queries (normalized); unset on every tier: "
        "measured by spec.prometheus",
    )
    p95: Duration | None = Field(default=None, gt=0, description="bound on each model's p95")
    min_accuracy: float = Field(default=0.0, ge=0, le=1)
    models: list[str] | None = Field(default=None, min_length=1, description="allow-list")
    rule: str | None = Field(
        default=None,
        min_length=1,
        description="the LaunchDarkly targeting rule (id or description) serving this tier; "
        "default: 'tier NAME'",
    )


class PrometheusFactsSpec(Strict):
    """Read each model's p95 and tokens per request from a Prometheus scraping the gateways,
    over the last `window`. The token never lives in the document: `bearer_token_env` names
    the environment variable holding it."""

    url: Address = Field(pattern=r"^https?://", description="Prometheus base URL, without /api/v1")
    window: Duration = Field(default=3600.0, ge=60)
    bearer_token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class RolloutTemplate(Strict):
    """What every runbook written shares; `flag` and `metrics` as in a Rollout, without
    `baseline`, `canary` (filled per move) or, for LaunchDarkly, `rule` (the tier's)."""

    flag: dict[str, Any]
    metrics: dict[str, Any]
    slos: list[dict[str, Any]] | None = Field(
        default=None,
        description="default: error_rate <= 0.02 and latency_p95_seconds <= the tier's p95",
    )
    analysis: dict[str, Any] | None = None
    weights: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=1,
        description="the canary's steps in percent, cut at the plan's share",
    )
    pause: Duration = Field(default=300.0, gt=0, description="hold after each step")

    @field_validator("weights")
    @classmethod
    def _increasing(cls, weights: list[float]) -> list[float]:
        if any(not 0 < w <= 100 for w in weights):
            raise ValueError("each weight is a percent in (0, 100]")
        if any(b <= a for a, b in pairwise(weights)):
            raise ValueError("weights must increase")
        return weights

    @model_validator(mode="after")
    def _makes_a_rollout(self) -> RolloutTemplate:
        """A runbook made from this template with two made-up variations must validate, so a
        template that could never give one fails here, naming its field."""
        from canaryctl.runbook.rollout import Rollout  # the Rollout's classes, only when used

        flag = {**self.flag, "baseline": "a", "canary": "b"}
        spec: dict[str, Any] = {
            "flag": flag,
            "metrics": self.metrics,
            "slos": self.slos or [{"metric": "error_rate", "max": 0.02}],
            "steps": [{"set_weight": 100}],
        }
        if self.analysis is not None:
            spec["analysis"] = self.analysis
        doc = {"apiVersion": API_VERSION, "kind": "Rollout", "metadata": {"name": "x"}}
        try:
            Rollout.model_validate({**doc, "spec": spec})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            tags = {
                tag
                for tag in (self.flag.get("provider"), self.metrics.get("provider"))
                if isinstance(tag, str)
            }
            where = ""
            for part in first["loc"][1:]:
                if part not in tags:
                    where += f"[{part}]" if isinstance(part, int) else f".{part}"
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] == "missing":
                message = "required field is missing"
            elif first["type"] == "union_tag_invalid":
                context = first.get("ctx", {})
                where += ".provider"
                message = (
                    f"unknown value {context.get('tag')!r}; expected {context.get('expected_tags')}"
                )
            where = where.lstrip(".")
            raise ValueError(f"{where}: {message}") from None
        return self


class CostOptimizationSpec(Strict):
    gateway: DocPath = Field(description="a Gateway or Lab document: the models and prices")
    route: str | None = Field(default=None, description="default: the gateway's only route")
    monthly_queries: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        description="queries a month on the route; unset: measured by spec.prometheus",
    )
    tiers: dict[str, TierGoalSpec] = Field(min_length=1)
    evals: list[DocPath] = Field(
        default_factory=list, description="`canaryctl gate --json-file` results"
    )
    accuracy: Literal["lower_bound", "score"] = Field(
        default="lower_bound",
        description="what an eval's accuracy is: the low end of its interval, or the score",
    )
    metrics: list[Address] = Field(
        default_factory=list,
        description="gateway /metrics URLs: p95 latency and tokens per query per model",
    )
    prometheus: PrometheusFactsSpec | None = Field(
        default=None, description="p95 latency and tokens per query per model, from Prometheus"
    )
    models: dict[str, ModelFactsSpec] = Field(default_factory=dict)
    today: dict[str, dict[str, float]] | None = Field(
        default=None,
        description="today's split per tier (model -> share); default: the flag file's "
        "default rule, for every tier",
    )
    rollout: RolloutTemplate | None = Field(default=None, description="no runbooks without it")

    @model_validator(mode="after")
    def _traffic_known(self) -> CostOptimizationSpec:
        shares = [goal.share is None for goal in self.tiers.values()]
        if any(shares) and not all(shares):
            raise ValueError("tiers: give every tier a share, or none (measured by prometheus)")
        if (self.monthly_queries is None or all(shares)) and self.prometheus is None:
            missing = "monthly_queries" if self.monthly_queries is None else "tiers.*.share"
            raise ValueError(f"{missing}: unset, so it is measured: that needs `prometheus`")
        return self

    @field_validator("metrics")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for i, url in enumerate(urls):
            if not url.startswith(("http://", "https://")):  # not echoed: it may hold a secret
                raise ValueError(f"[{i}]: must be an http:// or https:// URL")
        return urls

    @field_validator("today")
    @classmethod
    def _splits(cls, today: dict[str, dict[str, float]] | None) -> Any:
        for tier, split in (today or {}).items():
            if any(share < 0 for share in split.values()) or not sum(split.values()) > 0:
                raise ValueError(f"{tier}: shares must be non-negative and not all zero")
        return today


class CostOptimization(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["CostOptimization"]
    metadata: Metadata
    spec: CostOptimizationSpec
