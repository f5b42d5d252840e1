"""The `Gateway` document: routes, the flag each evaluates, models and their fallback chains."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from canaryctl.runbook.common import API_VERSION, DocPath, Duration, Metadata, Strict

__all__ = [
    "ContextSpec",
    "FileFlagSource",
    "FlagSource",
    "Gateway",
    "GatewaySpec",
    "LaunchDarklyFlagSource",
    "ModelSpec",
    "PriceSpec",
    "RouteSpec",
]


class FileFlagSource(Strict):
    """Evaluate flags from a LaunchDarkly file-data-source file, re-read when it changes."""

    provider: Literal["file"]
    path: DocPath
    poll_interval: Duration = Field(default=0.5, gt=0)


class LaunchDarklyFlagSource(Strict):
    """Evaluate flags with data from LaunchDarkly (or a Relay Proxy), streamed by default.

    The SDK key never lives in a document: `sdk_key_env` names the environment variable that
    holds it. `base_uri` serves polling, `stream_uri` the streaming connection, `events_uri`
    analytics events; point all three at a Relay Proxy or a private instance. Events are off
    unless `send_events` is set, so a gateway sends LaunchDarkly nothing it was not told to.
    """

    provider: Literal["launchdarkly"]
    sdk_key_env: str = Field(default="LAUNCHDARKLY_SDK_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    base_uri: str = Field(default="https://sdk.launchdarkly.com", pattern=r"^https?://")
    stream_uri: str = Field(default="https://stream.launchdarkly.com", pattern=r"^https?://")
    events_uri: str = Field(default="https://events.launchdarkly.com", pattern=r"^https?://")
    stream: bool = Field(default=True, description="false polls base_uri every poll_interval")
    poll_interval: Duration = Field(default=30.0, ge=30, description="LaunchDarkly's floor is 30s")
    send_events: bool = False
    start_wait: Duration = Field(
        default=5.0, ge=0, description="how long startup waits for flag data before serving"
    )


FlagSource = Annotated[FileFlagSource | LaunchDarklyFlagSource, Field(discriminator="provider")]


class PriceSpec(Strict):
    """USD per 1,000 tokens, as providers publish them."""

    prompt_per_1k: float = Field(default=0.0, ge=0)
    completion_per_1k: float = Field(default=0.0, ge=0)


class ModelSpec(Strict):
    name: str = Field(min_length=1, description="the flag variation value that selects it")
    provider: Literal["openai", "ollama"] = "openai"
    base_url: str = Field(pattern=r"^(https?|lab)://")
    upstream_model: str | None = Field(default=None, description="model name sent upstream")
    api_key_env: str | None = Field(default=None, description="environment variable with the key")
    timeout: Duration = Field(default=30.0, gt=0)
    price: PriceSpec = PriceSpec()
    fallback: list[str] = Field(default_factory=list, description="models to try, in order")


class RouteSpec(Strict):
    """A route is what clients ask for in the request's `model` field."""

    name: str = Field(min_length=1)
    flag: str = Field(min_length=1, description="flag key whose variation names the model")
    default_model: str = Field(description="served when the flag cannot be evaluated")


class ContextSpec(Strict):
    """Where the LaunchDarkly context's attributes come from in a request."""

    user_header: str = "X-User"
    tier_header: str = "X-Tier"
    default_tier: str = "free"


class GatewaySpec(Strict):
    listen: str = Field(default="127.0.0.1:8080", pattern=r"^[^:]+:\d+$")
    flags: FlagSource
    routes: list[RouteSpec] = Field(min_length=1)
    models: list[ModelSpec] = Field(min_length=1)
    context: ContextSpec = ContextSpec()

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewaySpec:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: names must be unique")
        for i, route in enumerate(self.routes):
            if route.default_model not in names:
                raise ValueError(
                    f"routes[{i}].default_model: '{route.default_model}' is not a model"
                )
        for i, model in enumerate(self.models):
            for name in model.fallback:
                if name not in names:
                    raise ValueError(f"models[{i}].fallback: '{name}' is not a model")
                if name == model.name:
                    raise ValueError(f"models[{i}].fallback: a model cannot fall back to itself")
        return self


class Gateway(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["Gateway"]
    metadata: Metadata
    spec: GatewaySpec
