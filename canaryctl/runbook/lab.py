"""The `Lab` document: simulated providers, a gateway in front of them, and traffic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from canaryctl.runbook.addresses import Port
from canaryctl.runbook.common import API_VERSION, Duration, Metadata, Strict, built_on_use
from canaryctl.runbook.gateway import GatewaySpec

__all__ = [
    "ErrorClimb",
    "ErrorProfile",
    "JobTraffic",
    "JudgeProfile",
    "Lab",
    "LabSpec",
    "LatencyProfile",
    "ProviderProfile",
    "TokenProfile",
    "TrafficSpec",
]


class LatencyProfile(Strict):
    """Log-normal latency fixed by its median and p95, the two numbers people quote."""

    median: Duration = Field(default=0.3, ge=0)
    p95: Duration = Field(default=0.8, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LatencyProfile:
        if self.p95 < self.median:
            raise ValueError("p95 must be at least the median")
        return self


class ErrorClimb(Strict):
    """Errors that climb with load: from the provider's `after`-th request on, `rate` replaces
    the profile's (an API that holds at a canary's first step and is overloaded at the next)."""

    after: int = Field(ge=0, description="requests the provider serves at the first rate")
    rate: float = Field(ge=0, le=1)


class ErrorProfile(Strict):
    """How often a request fails, and how: weights over 500, 503, 529 (Anthropic's
    overloaded_error), 429 and timeout."""

    rate: float = Field(default=0.0, ge=0, le=1)
    kinds: dict[Literal["500", "503", "529", "429", "timeout"], float] = Field(
        default_factory=lambda: {"500": 1.0}
    )
    retry_after: Duration = 1.0
    climb: ErrorClimb | None = None

    @model_validator(mode="after")
    def _weights(self) -> ErrorProfile:
        if any(w < 0 for w in self.kinds.values()) or not sum(self.kinds.values()) > 0:
            raise ValueError("kinds: weights must be non-negative and not all zero")
        return self


class TokenProfile(Strict):
    completion_mean: int = Field(default=120, ge=1)
    completion_max: int = Field(default=512, ge=1)


class JudgeProfile(Strict):
    """A lab provider that grades arithmetic answers instead of answering (canaryctl/lab/judge.py):
    right by the truth, except for the shares of verdicts set here, so that a judge's agreement
    with the truth, and what the gateway does with a bad judge, can be measured."""

    error_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of verdicts that are wrong on purpose"
    )
    position_bias: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of pairwise verdicts that pick answer A (shown first) whatever it says",
    )
    malformed: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of replies in prose instead of the JSON asked for",
    )


class ProviderProfile(Strict):
    name: str = Field(min_length=1)
    api: Literal["openai", "anthropic"] = Field(
        default="openai",
        description="openai: chat completions, embeddings and Ollama's API; anthropic: the "
        "Messages API (/v1/messages) only, in Anthropic's shapes",
    )
    port: Port = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    latency: LatencyProfile = built_on_use(LatencyProfile)
    first_token: LatencyProfile | None = Field(
        default=None,
        description="time to the first token of a streamed answer, drawn apart from `latency` "
        "(the whole answer's time, which the stream still takes when the first token comes "
        "sooner); default: a quarter of the answer's drawn latency",
    )
    errors: ErrorProfile = built_on_use(ErrorProfile)
    quality: float = Field(default=0.9, ge=0, le=1, description="P(answers a question right)")
    tokens: TokenProfile = built_on_use(TokenProfile)
    judge: JudgeProfile | None = Field(
        default=None,
        description="grade answers as an LLM judge (OpenAI chat API) instead of answering",
    )

    @model_validator(mode="after")
    def _judge_speaks_openai(self) -> ProviderProfile:
        if self.judge is not None and self.api != "openai":
            raise ValueError("judge: a lab judge speaks the OpenAI chat API; set api: openai")
        return self


class JobTraffic(Strict):
    """A share of the traffic sent as one batch job (`X-Job`), for one team (`X-Team`), to its
    own route: what a cost report must find. `repeat` is the chance each request re-sends the
    job's previous one exactly (the planted redundancy); `temperature: 0` makes it cacheable."""

    name: str = Field(min_length=1, description="the job, sent as X-Job")
    share: float = Field(gt=0, le=1, description="share of all arrivals")
    route: str | None = Field(default=None, description="default: the traffic's route")
    team: str | None = Field(default=None, min_length=1, description="sent as X-Team")
    repeat: float = Field(default=0.0, ge=0, le=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)


class TrafficSpec(Strict):
    rate: float = Field(default=50.0, gt=0, le=2000, description="requests per second")
    route: str
    users: int = Field(default=1000, ge=1)
    tiers: dict[str, float] = Field(
        default_factory=lambda: {"free": 0.6, "paid": 0.3, "enterprise": 0.1}
    )
    concurrency: int = Field(default=64, ge=1, le=1000)
    timeout: Duration = 30.0
    stream: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of requests that ask for a streamed answer, read as it streams: "
        "what the gateway's first-token and per-token histograms measure",
    )
    feedback: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of answered questions graded back to the gateway (POST /v1/feedback: "
        "1 right, 0 wrong), so quality SLOs have scores to read; 0 sends none",
    )

    jobs: list[JobTraffic] = Field(
        default_factory=list, description="batch jobs; the rest of the arrivals name none"
    )

    @model_validator(mode="after")
    def _tier_weights(self) -> TrafficSpec:
        if any(w < 0 for w in self.tiers.values()) or not sum(self.tiers.values()) > 0:
            raise ValueError("tiers: weights must be non-negative and not all zero")
        if sum(job.share for job in self.jobs) > 1 + 1e-9:
            raise ValueError("jobs: their shares add up to more than 1")
        return self


class LabSpec(Strict):
    seed: int = 0
    providers: list[ProviderProfile] = Field(min_length=1)
    gateway: GatewaySpec
    traffic: TrafficSpec | None = None

    @model_validator(mode="after")
    def _lab_urls_resolve(self) -> LabSpec:
        names = {p.name for p in self.providers}
        for i, model in enumerate(self.gateway.models):
            if model.base_url.startswith("lab://") and model.base_url[6:] not in names:
                raise ValueError(
                    f"gateway.models[{i}].base_url: no lab provider named '{model.base_url[6:]}'"
                )
        routes = {r.name for r in self.gateway.routes}
        for i, job in enumerate(self.traffic.jobs if self.traffic else []):
            if job.route is not None and job.route not in routes:
                raise ValueError(f"traffic.jobs[{i}].route: '{job.route}' is not a gateway route")
        return self


class Lab(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["Lab"]
    metadata: Metadata
    spec: LabSpec
