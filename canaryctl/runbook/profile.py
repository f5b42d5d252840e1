"""The `MetricProfile` document: which PromQL gives each count the analysis needs.

A profile is what lets canaryctl watch a gateway it did not write: it maps the *ingredients* of
the SLO metrics (requests by outcome, latency buckets, tokens, cost, quality scores) to
PromQL templates over that gateway's metric names. canaryctl ships `canaryctl` (its own gateway)
and `litellm` (LiteLLM proxy, which has no quality scores) under canaryctl/metrics/profiles/; a
user's own profile is a file of this kind.

Each query returns one series per variant (grouped by the variant label, plus `le` for latency
buckets); `yields` says which ingredients its rows add to, each with an optional label filter, so
one query can feed several ingredients (requests split by `outcome` into errors, fallbacks,
rejected and filtered).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from canaryctl.runbook.common import API_VERSION, Metadata, Strict
from canaryctl.runbook.profile_refs import is_profile_path, shipped_profile, shipped_profiles
from canaryctl.runbook.promql import placeholders, unknown_placeholders
from canaryctl.slo_metrics import INGREDIENTS

__all__ = [
    "INGREDIENTS",
    "PROFILE_VARIABLES",
    "Ingredient",
    "MetricProfile",
    "MetricProfileSpec",
    "ProfileQuery",
    "is_profile_path",
    "shipped_profile",
    "shipped_profiles",
]

Ingredient = Literal[INGREDIENTS]  # type: ignore[valid-type]
"""A count the SLO metrics are computed from: one of canaryctl.slo_metrics.INGREDIENTS."""

PROFILE_VARIABLES = frozenset({"window", "selector"})
"""`{{window}}`: the step's window as a PromQL duration (`95s`); `{{selector}}`: the runbook's
label matchers without braces (`route="support-bot",job="gw"`), empty when there are none."""

_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class ProfileQuery(Strict):
    """One PromQL template and the ingredients its rows add to."""

    promql: str = Field(min_length=1)
    variant_label: str | None = Field(
        default=None,
        pattern=_LABEL_NAME,
        description="label holding the variant in this query's result; default spec.variant_label",
    )
    yields: dict[Ingredient, dict[str, str]] = Field(
        min_length=1,
        description="ingredient -> label filter ({} = every row), e.g. errors: {outcome: error}",
    )

    @field_validator("promql")
    @classmethod
    def _placeholders(cls, promql: str) -> str:
        problem = unknown_placeholders(promql, PROFILE_VARIABLES)
        if problem is not None:
            raise ValueError(problem)
        if "window" not in placeholders(promql):
            raise ValueError("must use {{window}}: counts are taken over the step's window")
        return promql

    @field_validator("yields")
    @classmethod
    def _filter_labels(cls, yields: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for ingredient, labels in yields.items():
            for name in labels:
                if not re.match(_LABEL_NAME, name):
                    raise ValueError(f"{ingredient}: '{name}' is not a Prometheus label name")
        return yields


class MetricProfileSpec(Strict):
    variant_label: str = Field(
        pattern=_LABEL_NAME, description="label whose value names the variant (model group)"
    )
    queries: list[ProfileQuery] = Field(min_length=1)
    shadow: list[ProfileQuery] = Field(
        default_factory=list,
        description="what a rollout's shadow step reads of the candidate: the same ingredients "
        "from the gateway's shadow families, and the judge's pairwise counts (pairs, "
        "pair_wins, pair_ties) by candidate; empty: the profile cannot judge a shadow step",
    )

    @model_validator(mode="after")
    def _each_ingredient_once(self) -> MetricProfileSpec:
        for field, queries in (("queries", self.queries), ("shadow", self.shadow)):
            first: dict[str, int] = {}
            for index, query in enumerate(queries):
                for ingredient in query.yields:
                    if ingredient in first:
                        raise ValueError(
                            f"{field}[{index}].yields.{ingredient}: already yielded by "
                            f"{field}[{first[ingredient]}]"
                        )
                    first[ingredient] = index
            if queries and "requests" not in first:
                raise ValueError(f"{field}: no query yields requests, which every analysis needs")
        return self

    def label_of(self, query: ProfileQuery) -> str:
        return query.variant_label or self.variant_label

    @property
    def ingredients(self) -> frozenset[str]:
        return frozenset(i for query in self.queries for i in query.yields)


class MetricProfile(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["MetricProfile"]
    metadata: Metadata
    spec: MetricProfileSpec
