"""The `gate:` section of a Rollout: what `canaryctl gate` checks before a canary gets traffic.

It lives in the Rollout it guards, so the gate and the rollout agree on the flag's baseline and
canary, the metrics backend and the SLOs without saying them twice: CI runs `canaryctl gate
rollout.yaml`, then (on exit 0) `canaryctl rollout run rollout.yaml` or `rollout approve`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from canaryctl.runbook.addresses import Address
from canaryctl.runbook.common import DocPath, Duration, Strict
from canaryctl.runbook.price import PriceSpec

__all__ = ["BUILTIN_BENCHMARKS", "CostSpec", "EndpointSpec", "EvalSpec", "GateSpec", "LiveSpec"]

BUILTIN_BENCHMARKS = ("arithmetic",)
"""Benchmark sets shipped in canaryctl/defaults/evals/ (package data)."""


class EndpointSpec(Strict):
    """Where one variant's model answers: any OpenAI-compatible chat completions server.

    `lab://NAME` names a simulated provider of the eval's `lab`, which the gate starts itself.
    """

    base_url: Address = Field(pattern=r"^(https?|lab)://")
    model: str | None = Field(
        default=None, description="model name sent; default: the flag variation's value"
    )
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    price: PriceSpec | None = Field(
        default=None,
        description="USD per 1k tokens; default: the lab gateway's price, else none (the "
        "eval's cost is unknown, not $0)",
    )


class EvalSpec(Strict):
    """A benchmark run against both variants, judged by non-inferiority of the canary."""

    benchmark: DocPath | None = Field(default=None, description="a JSONL benchmark set")
    builtin: Literal["arithmetic"] | None = Field(
        default=None, description="a benchmark set shipped with canaryctl"
    )
    baseline: EndpointSpec
    canary: EndpointSpec
    lab: DocPath | None = Field(
        default=None, description="a Lab document whose providers serve lab:// endpoints"
    )
    min_score: float = Field(default=0.0, ge=0, le=1)
    margin: float = Field(
        default=0.05, ge=0, le=1, description="how much worse than baseline the canary may be"
    )
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    min_items: int = Field(default=30, ge=1, description="fewer scored items is inconclusive")
    concurrency: int = Field(default=8, ge=1, le=256)
    timeout: Duration = Field(default=30.0, gt=0, description="per attempt at one item")
    retries: int = Field(default=2, ge=0, le=10)
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_benchmark(self) -> EvalSpec:
        if (self.benchmark is None) == (self.builtin is None):
            raise ValueError("give exactly one of benchmark (a JSONL file) or builtin")
        uses_lab = any(e.base_url.startswith("lab://") for e in (self.baseline, self.canary))
        if uses_lab and self.lab is None:
            raise ValueError("lab:// endpoints need `lab:` (a Lab document)")
        return self


class LiveSpec(Strict):
    """Judge the runbook's SLOs on live traffic over the last `window` (a Prometheus backend
    answers at once; the scrape backend samples, waits `window`, and samples again)."""

    window: Duration = Field(default=300.0, gt=0)


class CostSpec(Strict):
    monthly_queries: int = Field(gt=0, description="volume to project monthly cost at")
    max_monthly_usd: float | None = Field(
        default=None, ge=0, description="fail when the canary's projection exceeds this"
    )


class GateSpec(Strict):
    eval: EvalSpec | None = None
    live: LiveSpec | None = None
    cost: CostSpec | None = None

    @model_validator(mode="after")
    def _something_to_check(self) -> GateSpec:
        if self.eval is None and self.live is None:
            raise ValueError("a gate needs eval, live or both")
        return self
