"""The `Gateway` document: routes, the flag each evaluates, models and their fallback chains."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from canaryctl.request_limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH, ServerLimits
from canaryctl.runbook.addresses import Address
from canaryctl.runbook.common import API_VERSION, DocPath, Duration, Metadata, Strict, built_on_use
from canaryctl.runbook.price import PriceSpec

__all__ = [
    "AuthSpec",
    "BatchSpec",
    "BudgetSpec",
    "BudgetsSpec",
    "CacheSpec",
    "ContextSpec",
    "DowngradeSpec",
    "FeedbackSpec",
    "FileFlagSource",
    "FlagShadow",
    "FlagSource",
    "FlagdFlagSource",
    "Gateway",
    "GatewaySpec",
    "JudgeSpec",
    "LaunchDarklyFlagSource",
    "LimitsSpec",
    "MemoryBudgetStore",
    "ModelSpec",
    "PriceSpec",
    "RedisBudgetStore",
    "RouteSpec",
    "ShadowSpec",
    "ShadowingSpec",
    "SpendSpec",
    "SplitFlagSource",
    "StaticShadow",
    "TracingSpec",
    "VirtualKey",
]

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SERVER = ServerLimits()
"""The server limits' defaults, as the document's `limits` shows them."""


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
    sdk_key_env: str = Field(default="LAUNCHDARKLY_SDK_KEY", pattern=_ENV_NAME)
    base_uri: str = Field(default="https://sdk.launchdarkly.com", pattern=r"^https?://")
    stream_uri: str = Field(default="https://stream.launchdarkly.com", pattern=r"^https?://")
    events_uri: str = Field(default="https://events.launchdarkly.com", pattern=r"^https?://")
    stream: bool = Field(default=True, description="false polls base_uri every poll_interval")
    poll_interval: Duration = Field(default=30.0, ge=30, description="LaunchDarkly's floor is 30s")
    send_events: bool = False
    start_wait: Duration = Field(
        default=5.0, ge=0, description="how long startup waits for flag data before serving"
    )


class FlagdFlagSource(Strict):
    """Evaluate flags through the OpenFeature SDK and its flagd provider, in-process, from a
    flagd flag-definition file it re-reads when the file changes (docs/flagd.md)."""

    provider: Literal["flagd"]
    path: DocPath
    poll_interval: Duration = Field(
        default=0.5, ge=0.05, description="how often the provider checks the file for a change"
    )


class SplitFlagSource(Strict):
    """Evaluate flags with the Split SDK in localhost mode, from a JSON file in the format of
    Split's `splitChanges` (what Split delivers to SDKs), re-read every `poll_interval`.

    Route flags name Split feature flags; their treatments name models. The requester's user
    is the Split key and `tier` (and `team`, when known) are attributes for rules to match.
    """

    provider: Literal["split"]
    path: DocPath = Field(description="the localhost JSON file (its name must end in .json)")
    poll_interval: int = Field(default=1, ge=1, description="whole seconds between re-reads")
    start_wait: Duration = Field(
        default=5.0, ge=0, description="how long startup waits for the file before serving"
    )

    @field_validator("path")
    @classmethod
    def _json(cls, path: Any) -> Any:
        if not str(path).lower().endswith(".json"):
            raise ValueError("the Split SDK reads rules and percentages only from a .json file")
        return path


FlagSource = Annotated[
    FileFlagSource | LaunchDarklyFlagSource | FlagdFlagSource | SplitFlagSource,
    Field(discriminator="provider"),
]


class BatchSpec(Strict):
    """Join concurrent embeddings requests to one model into one upstream call: see
    canaryctl/gateway/batching.py. A batch goes out `window` after its first request arrived, or
    at once when it holds `max_inputs` inputs; requests of different API keys, teams, routes or
    variants are never joined."""

    window: Duration = Field(
        default=0.005, gt=0, le=1, description="longest wait a request may add (at most 1s)"
    )
    max_inputs: int = Field(
        default=64, ge=2, le=2048, description="inputs per upstream call (OpenAI takes 2048)"
    )


class ModelSpec(Strict):
    """One model the gateway can send to. Its key is read from the environment variable
    `api_key_env` when the gateway starts; a model with none is sent no key, which is only taken
    for granted for a server on this machine, `provider: ollama` or a lab provider. Anywhere else
    say `keyless: true` (see canaryctl/gateway/keys.py)."""

    name: str = Field(min_length=1, description="the flag variation value that selects it")
    provider: Literal["openai", "ollama", "anthropic"] = Field(
        default="openai",
        description="its API: OpenAI chat completions, Ollama's, or Anthropic's Messages API",
    )
    base_url: Address = Field(pattern=r"^(https?|lab)://")
    upstream_model: str | None = Field(default=None, description="model name sent upstream")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable with the key; it must be set when the gateway starts",
    )
    keyless: bool = Field(default=False, description="the server needs no key (Ollama, vLLM)")
    timeout: Duration = Field(default=30.0, gt=0)
    price: PriceSpec | None = Field(
        default=None,
        description="USD per 1k tokens; unset: the cost is unknown, not $0 (a free model says "
        "{prompt_per_1k: 0, completion_per_1k: 0})",
    )
    fallback: list[str] = Field(default_factory=list, description="models to try, in order")
    batch: BatchSpec | None = Field(
        default=None, description="join concurrent /v1/embeddings requests; off unless set"
    )

    @property
    def priced(self) -> bool:
        """Whether the document gives this model a price. Without one its answers' cost is
        unknown, not zero (the gateway counts them apart, in llm_unpriced_requests_total, and
        cost per query has no value); a model that costs nothing per token says
        `price: {prompt_per_1k: 0, completion_per_1k: 0}`. Unset is None, not a zero price, so
        a document dumped and read back keeps the difference."""
        return self.price is not None

    def usd(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """What these tokens cost at this model's price (PriceSpec.usd, the one cost formula);
        None when it has no price."""
        return None if self.price is None else self.price.usd(prompt_tokens, completion_tokens)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> ModelSpec:
        if self.keyless and self.api_key_env is not None:
            raise ValueError("keyless: true and api_key_env contradict each other; keep one")
        return self


class JudgeSpec(Strict):
    """An LLM judge grading a route's answers online, off the request path: see
    canaryctl/gateway/judging.py and docs/judges.md."""

    model: str = Field(min_length=1, description="the model (one of `models`) that judges")
    rubric: DocPath | None = Field(
        default=None, description="text file of grading instructions; none: a built-in one"
    )
    sample: float = Field(
        default=0.05, ge=0, le=1, description="share of served answers graded (pointwise)"
    )
    pairs: float = Field(
        default=1.0, ge=0, le=1, description="share of shadow pairs compared (pairwise)"
    )
    swap: bool = Field(
        default=True,
        description="show the shadow answer first on every other pair, to cancel position bias",
    )
    max_usd_per_hour: float | None = Field(
        default=None,
        gt=0,
        description="judge spend per replica over the last hour; past it, answers are not judged",
    )
    queue: int = Field(default=256, ge=1, le=100_000, description="answers waiting for a judge")
    concurrency: int = Field(default=4, ge=1, le=256, description="judge calls at once")
    max_tokens: int = Field(default=64, ge=1, description="the judge's reply, in tokens")


class StaticShadow(Strict):
    """Mirror a sampled `percent` of the route's requests to `model`: see gateway/shadow.py."""

    model: str = Field(min_length=1, description="the model shadow requests are sent to")
    percent: float = Field(ge=0, le=100, description="share of requests mirrored, drawn each time")


class FlagShadow(Strict):
    """Ask the flag `flag` per request, with the same context as the route's flag: a variation
    whose value names a model shadows the request to it; any other value (`"off"`) does not."""

    flag: str = Field(min_length=1, description="flag key whose variation names the shadow model")


def _shadow_kind(value: Any) -> str:
    """`flag` when the block names a flag, else `model`: one form's errors, not both forms'.
    The tags are written as pydantic writes a type's name (`shadow[flag]`), which the loader
    drops from an error's path: a tag `flag` read as the field `flag` made a NaN there
    `shadow.flag.flag`."""
    if isinstance(value, dict):
        return _FLAG_SHADOW if "flag" in value else _STATIC_SHADOW
    return _FLAG_SHADOW if isinstance(value, FlagShadow) else _STATIC_SHADOW


_STATIC_SHADOW, _FLAG_SHADOW = "shadow[model]", "shadow[flag]"
ShadowSpec = Annotated[
    Annotated[StaticShadow, Tag(_STATIC_SHADOW)] | Annotated[FlagShadow, Tag(_FLAG_SHADOW)],
    Discriminator(_shadow_kind),
]


class RouteSpec(Strict):
    """A route is what clients ask for in the request's `model` field."""

    name: str = Field(min_length=1)
    flag: str = Field(min_length=1, description="flag key whose variation names the model")
    default_model: str = Field(description="served when the flag cannot be evaluated")
    judge: JudgeSpec | None = Field(default=None, description="online judging; off unless set")
    shadow: ShadowSpec | None = Field(
        default=None, description="mirror requests to a model whose answers are never returned"
    )
    criticality: Literal["normal", "low"] = Field(
        default="normal",
        description="low: spec.downgrade may serve it the cheapest model meeting min_quality",
    )
    min_quality: float | None = Field(
        default=None, ge=0, le=1, description="the quality floor a downgrade must keep"
    )


class ContextSpec(Strict):
    """Where the LaunchDarkly context's attributes come from in a request."""

    user_header: str = "X-User"
    tier_header: str = "X-Tier"
    default_tier: str = "free"
    team_header: str = "X-Team"
    job_header: str = "X-Job"
    tiers: list[str] = Field(
        default_factory=lambda: ["free", "paid", "enterprise"],
        description="tiers kept as the `tier` metric label; any other is counted as 'other'",
    )


class MemoryBudgetStore(Strict):
    """Counters in the gateway's memory, saved to a SQLite file: one gateway only."""

    provider: Literal["memory"]
    path: DocPath | None = Field(default=None, description="SQLite file; none keeps no state")
    save_interval: Duration = Field(default=5.0, gt=0)


class RedisBudgetStore(Strict):
    """Counters in Redis, updated atomically: any number of gateway replicas share them."""

    provider: Literal["redis"]
    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    password_env: str | None = Field(default=None, description="environment variable")
    prefix: str = Field(default="canaryctl:budget", min_length=1)
    timeout: Duration = Field(default=0.5, gt=0)


BudgetStore = Annotated[MemoryBudgetStore | RedisBudgetStore, Field(discriminator="provider")]


class BudgetSpec(Strict):
    """A spending limit per user, team or job over an hour, a day or a month.

    `calendar` windows reset at the top of the hour, midnight UTC or the 1st of the month;
    `rolling` ones count the last hour, 24 hours or 30 days (in 60 slices).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    per: Literal["user", "team", "job", "key"] = Field(description="`key`: each virtual key")
    window: Literal["hour", "day", "month"] = "day"
    kind: Literal["calendar", "rolling"] = "calendar"
    tokens: int | None = Field(default=None, gt=0, description="prompt + completion tokens")
    usd: float | None = Field(default=None, gt=0)
    routes: list[str] | None = Field(default=None, description="routes it applies to; all if unset")
    soft_limit: float | None = Field(
        default=None, gt=0, lt=1, description="share of the limit past which `downgrade` applies"
    )
    downgrade: dict[str, str] = Field(
        default_factory=dict, description="route -> cheaper model served past the soft limit"
    )

    @model_validator(mode="after")
    def _limits(self) -> BudgetSpec:
        if self.tokens is None and self.usd is None:
            raise ValueError("a budget needs `tokens`, `usd` or both")
        if self.downgrade and self.soft_limit is None:
            raise ValueError("`downgrade` needs a `soft_limit`")
        return self


class BudgetsSpec(Strict):
    store: BudgetStore = built_on_use(lambda: MemoryBudgetStore(provider="memory"))
    limits: list[BudgetSpec] = Field(min_length=1)
    completion_estimate: int = Field(
        default=256, ge=1, description="completion tokens assumed when a request sets no max_tokens"
    )

    @model_validator(mode="after")
    def _unique(self) -> BudgetsSpec:
        names = [b.name for b in self.limits]
        if len(set(names)) != len(names):
            raise ValueError("limits: budget names must be unique")
        return self


class CacheSpec(Strict):
    """Keep answers to temperature-0 requests: see canaryctl/gateway/cache.py."""

    ttl: Duration = Field(default=300.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    routes: list[str] | None = Field(default=None, description="routes it applies to; all if unset")


class SpendSpec(Strict):
    """What the bill is made of, counted in bounded memory and series: see gateway/spend.py.

    Teams and jobs get their own label value when listed here, or when the space-saving sketch
    finds one among the heavy ones (at most `extra_values` more each); any other is `other`.
    """

    teams: list[str] = Field(default_factory=list, description="team label values always kept")
    jobs: list[str] = Field(default_factory=list, description="job label values always kept")
    extra_values: int = Field(
        default=10, ge=0, le=100, description="more teams (and jobs) admitted when heavy"
    )
    admit_share: float = Field(
        default=0.01, ge=0, le=1, description="share of requests a team or job needs to be admitted"
    )
    top_users: int = Field(default=10, ge=0, le=100, description="users exported by cost")
    user_counters: int = Field(
        default=200, ge=1, le=10_000, description="space-saving counters behind top_users"
    )
    window: Duration = Field(
        default=600.0, gt=0, description="a request repeated within it is redundant (or a retry)"
    )
    fingerprints: int = Field(
        default=100_000, ge=1, le=10_000_000, description="request fingerprints held at most"
    )

    @model_validator(mode="after")
    def _enough_counters(self) -> SpendSpec:
        if self.top_users > self.user_counters:
            raise ValueError("top_users: cannot export more users than user_counters tracks")
        return self


class TracingSpec(Strict):
    """OpenTelemetry spans per request (needs the `otel` extra): see canaryctl/gateway/tracing.py.

    `otlp` exports over OTLP/HTTP to `endpoint`; `global` hands spans to the process's
    configured TracerProvider (set up by your own code or `opentelemetry-instrument`).
    """

    exporter: Literal["otlp", "global"] = "otlp"
    endpoint: str = Field(default="http://127.0.0.1:4318/v1/traces", pattern=r"^https?://")
    service_name: str = Field(default="canaryctl-gateway", min_length=1)


class ShadowingSpec(Strict):
    """How much shadow traffic one gateway replica carries at most (gateway/shadow.py)."""

    queue: int = Field(
        default=256, ge=1, description="shadow requests waiting; past it, new ones are dropped"
    )
    concurrency: int = Field(
        default=64,
        ge=1,
        description="shadow requests in flight at once: shadowed req/s x the model's latency",
    )
    max_usd_per_hour: float | None = Field(
        default=None,
        gt=0,
        description="this replica's shadow spend in the last hour; past it, shadowing pauses",
    )


class LimitsSpec(Strict):
    """What one request may send (more is a 413 for a body or feedback id, a 431 for an identity
    header), and what clients may hold of the server (canaryctl.request_limits.ServerLimits)."""

    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    max_id_length: int = Field(
        default=256,
        ge=8,
        le=4096,
        description="user, team, tier and job ids; feedback ids (or the longest id it issues)",
    )
    max_json_depth: int = Field(default=DEFAULT_MAX_JSON_DEPTH, ge=8, le=512)
    header_timeout: Duration = Field(
        default=_SERVER.header_timeout, gt=0, description="a request's head must arrive within"
    )
    body_timeout: Duration = Field(
        default=_SERVER.body_timeout, gt=0, description="its body, from the end of its head"
    )
    max_header_bytes: int = Field(default=_SERVER.max_header_bytes, ge=1024)
    max_in_flight: int = Field(default=_SERVER.max_in_flight, ge=1, description="past it: 503")
    max_in_flight_per_client: int = Field(
        default=_SERVER.max_in_flight_per_client,
        ge=1,
        description="requests of one client address at once; past it: 429",
    )
    max_buffered_bytes: int = Field(
        default=_SERVER.max_buffered_bytes,
        ge=1024,
        description="request bodies held at once, in all; past it: 503",
    )

    @model_validator(mode="after")
    def _room_for_a_body(self) -> LimitsSpec:
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError("max_buffered_bytes must be at least max_body_bytes (one whole body)")
        return self

    def server(self) -> ServerLimits:
        """The limits the gateway's server enforces (canaryctl.serving, request_limits)."""
        return ServerLimits(
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
            max_header_bytes=self.max_header_bytes,
            max_body_bytes=self.max_body_bytes,
            max_buffered_bytes=self.max_buffered_bytes,
            max_in_flight=self.max_in_flight,
            max_in_flight_per_client=self.max_in_flight_per_client,
        )


class FeedbackSpec(Strict):
    """How completion ids are signed so that any replica takes feedback for any replica's answers:
    see canaryctl/gateway/feedback.py. Every replica needs the same key in `key_env`."""

    key_env: str = Field(
        default="CANARYCTL_FEEDBACK_KEY",
        pattern=_ENV_NAME,
        description="environment variable with the signing key (16 characters or more); unset: "
        "a key of this process only, with a warning at start",
    )
    ttl: Duration = Field(default=3600.0, gt=0, description="how long an answer can be scored")
    remember: int = Field(
        default=100_000, ge=1, description="scored ids each replica remembers to score each once"
    )


class VirtualKey(Strict):
    """A caller's API key, known to the gateway only by its SHA-256, and who it stands for.

    The document holds `sha256` (the hex digest of the key), or `key_env` names an environment
    variable holding the key itself, hashed at start; the key is never written anywhere.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="names the key in logs")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    user: str | None = Field(default=None, min_length=1, description="default: the key's id")
    team: str | None = Field(default=None, min_length=1)
    tier: str | None = Field(default=None, min_length=1, description="default: default_tier")
    jobs: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="jobs the key may charge (the job header); any other is refused 403",
    )
    teams: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="teams besides `team` the key may charge when identity headers are trusted",
    )

    @model_validator(mode="after")
    def _one_secret(self) -> VirtualKey:
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("a key needs exactly one of `sha256` and `key_env`")
        return self


class AuthSpec(Strict):
    """Who may call, and whether identity headers are believed: see canaryctl/gateway/keys.py."""

    keys: list[VirtualKey] = Field(default_factory=list)
    keys_file: DocPath | None = Field(
        default=None, description="YAML or JSON list of keys, as in `keys`, read at start"
    )
    trust_identity_headers: bool = Field(
        default=False, description="behind a proxy that sets them: headers override the key"
    )

    @model_validator(mode="after")
    def _unique(self) -> AuthSpec:
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("keys: ids must be unique")
        return self


class DowngradeSpec(Strict):
    """When low-criticality work (routes marked `criticality: low`, and `jobs`) is served by the
    cheapest model whose quality meets the floor: see canaryctl/gateway/downgrade.py.

    `when`: `always`; `budget` (once the requester has used `share` of any budget that applies
    to the request); `hours` (inside one of `hours`, UTC windows such as `22:00-06:00`).
    Quality per model comes from `quality` (model -> score, 0..1) and `quality_file` (the JSON
    of `canaryctl gate --json-file`, or a list of eval scores); `quality` wins where both speak.
    """

    when: Literal["always", "budget", "hours"] = "always"
    share: float | None = Field(default=None, gt=0, lt=1, description="when: budget")
    hours: list[str] = Field(default_factory=list, description="when: hours; UTC HH:MM-HH:MM")
    quality: dict[str, float] = Field(default_factory=dict)
    quality_file: DocPath | None = None
    jobs: dict[str, float] = Field(
        default_factory=dict, description="job (the X-Job header) -> its quality floor"
    )

    @field_validator("quality", "jobs")
    @classmethod
    def _shares(cls, values: dict[str, float]) -> dict[str, float]:
        for name, value in values.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name}: must be between 0 and 1")
        return values

    @field_validator("hours")
    @classmethod
    def _windows(cls, hours: list[str]) -> list[str]:
        for i, window in enumerate(hours):
            if _HOURS.match(window) is None:
                raise ValueError(f"[{i}]: '{window[:20]}' is not a window such as 22:00-06:00")
        return hours

    @model_validator(mode="after")
    def _policy_complete(self) -> DowngradeSpec:
        if self.when == "budget" and self.share is None:
            raise ValueError("when: budget needs a `share` (e.g. 0.8)")
        if self.when == "hours" and not self.hours:
            raise ValueError("when: hours needs `hours` (e.g. ['22:00-06:00'])")
        return self


_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


class GatewaySpec(Strict):
    listen: Address = Field(default="127.0.0.1:8080", pattern=r"^[^:]+:\d+$")
    flags: FlagSource
    routes: list[RouteSpec] = Field(min_length=1)
    models: list[ModelSpec] = Field(min_length=1)
    context: ContextSpec = built_on_use(ContextSpec)
    budgets: BudgetsSpec | None = None
    cache: CacheSpec | None = None
    spend: SpendSpec = built_on_use(SpendSpec)
    tracing: TracingSpec | None = Field(default=None, description="off unless set")
    limits: LimitsSpec = built_on_use(LimitsSpec)
    auth: AuthSpec = built_on_use(AuthSpec)
    feedback: FeedbackSpec = built_on_use(FeedbackSpec)
    shadowing: ShadowingSpec = built_on_use(ShadowingSpec)
    downgrade: DowngradeSpec | None = Field(default=None, description="off unless set")

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
            if route.judge is not None and route.judge.model not in names:
                raise ValueError(f"routes[{i}].judge.model: '{route.judge.model}' is not a model")
            if isinstance(route.shadow, StaticShadow) and route.shadow.model not in names:
                raise ValueError(f"routes[{i}].shadow.model: '{route.shadow.model}' is not a model")
        for i, model in enumerate(self.models):
            for name in model.fallback:
                if name not in names:
                    raise ValueError(f"models[{i}].fallback: '{name}' is not a model")
                if name == model.name:
                    raise ValueError(f"models[{i}].fallback: a model cannot fall back to itself")
        routes = {r.name for r in self.routes}
        for i, route in enumerate(self.routes):
            if route.criticality == "low" and route.min_quality is None:
                raise ValueError(f"routes[{i}].min_quality: a low-criticality route needs one")
        for model in self.downgrade.quality if self.downgrade else {}:
            if model not in names:
                raise ValueError(f"downgrade.quality: '{model}' is not a model")
        cached = (self.cache.routes or []) if self.cache else []
        for route in cached:
            if route not in routes:
                raise ValueError(f"cache.routes: '{route}' is not a route")
        for i, budget in enumerate(self.budgets.limits if self.budgets else []):
            where = f"budgets.limits[{i}]"
            for route in budget.routes or []:
                if route not in routes:
                    raise ValueError(f"{where}.routes: '{route}' is not a route")
            for route, model in budget.downgrade.items():
                if route not in routes:
                    raise ValueError(f"{where}.downgrade: '{route}' is not a route")
                if model not in names:
                    raise ValueError(f"{where}.downgrade.{route}: '{model}' is not a model")
        return self


class Gateway(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["Gateway"]
    metadata: Metadata
    spec: GatewaySpec
