"""The `Rollout` runbook: which flag to move, what to watch, how to step, what to do on rollback."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from canaryctl.runbook.addresses import Address
from canaryctl.runbook.alerts import AlertMatchers
from canaryctl.runbook.common import (
    API_VERSION,
    DocPath,
    Duration,
    Metadata,
    NotADuration,
    Strict,
    built_on_use,
    check_metric_bound,
    document_path,
    parse_duration,
)
from canaryctl.runbook.gate import GateSpec
from canaryctl.runbook.notify import NotifySpec, WebhookSpec
from canaryctl.runbook.profile_refs import is_profile_path, shipped_profile, shipped_profiles
from canaryctl.runbook.promql import placeholders, unknown_placeholders
from canaryctl.slo_metrics import EVEN, SLO_METRICS

__all__ = [
    "SLO_VARIABLES",
    "AnalysisSpec",
    "FileFlagSpec",
    "FlagSpec",
    "FlagdFlagSpec",
    "Hook",
    "LaunchDarklyFlagSpec",
    "MetricsSpec",
    "PrometheusMetricsSpec",
    "Rollout",
    "RolloutSpec",
    "ScrapeMetricsSpec",
    "ShadowStep",
    "SloSpec",
    "SplitFlagSpec",
    "Step",
    "WebhookSpec",
    "rollout_warnings",
]


class _FlagInFile(Strict):
    """A flag in a local file its SDKs watch: the file, the flag's key, two variations.
    Each format names its `provider` and says how its variations are named."""

    provider: str
    path: DocPath
    key: str = Field(min_length=1)
    baseline: str = Field(min_length=1)
    canary: str = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> _FlagInFile:
        if self.baseline == self.canary:
            raise ValueError("baseline and canary must name different variations")
        return self


class FileFlagSpec(_FlagInFile):
    """A LaunchDarkly flag kept in a file in the SDK's file-data-source format."""

    provider: Literal["file"]
    baseline: str = Field(min_length=1, description="value of the variation serving today")
    canary: str = Field(min_length=1, description="value of the variation being rolled out")


class LaunchDarklyFlagSpec(Strict):
    """A flag in LaunchDarkly itself, moved through its REST API with semantic patches.

    The access token never lives in a runbook (runbooks are committed and stored with each run):
    `token_env` names the environment variable that holds it.
    """

    provider: Literal["launchdarkly"]
    project: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    key: str = Field(min_length=1)
    baseline: str = Field(min_length=1, description="value or name of the variation serving today")
    canary: str = Field(min_length=1, description="value or name of the variation rolled out")
    rule: str | None = Field(
        default=None,
        min_length=1,
        description="id or description of the one targeting rule to move; default rule if unset",
    )
    base_url: str = Field(default="https://app.launchdarkly.com", pattern=r"^https?://")
    token_env: str = Field(default="LAUNCHDARKLY_API_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _distinct(self) -> LaunchDarklyFlagSpec:
        if self.baseline == self.canary:
            raise ValueError("baseline and canary must name different variations")
        return self


class FlagdFlagSpec(_FlagInFile):
    """A flag in a flagd flag-definition file, read by flagd and OpenFeature's flagd providers."""

    provider: Literal["flagd"]
    baseline: str = Field(min_length=1, description="key or value of the variant serving today")
    canary: str = Field(min_length=1, description="key or value of the variant rolled out")


SPLIT_RULE = r"^(segment:.*\S.*|[^=]*\S[^=]*=.*\S.*)$"
"""`attribute=value` (the one rule on that attribute value, e.g. `tier=free`) or `segment:NAME`."""


class SplitFlagSpec(Strict):
    """A feature flag in Split (Harness FME), moved through Split's Admin API.

    Baseline and canary name treatments. The Admin API key never lives in a runbook:
    `api_key_env` names the environment variable that holds it. Split's buckets are whole
    percents, so every `set_weight` must be a whole number.
    """

    provider: Literal["split"]
    workspace: str = Field(min_length=1, description="workspace (project) id")
    environment: str = Field(min_length=1, description="environment id or name")
    key: str = Field(min_length=1, description="feature flag name")
    baseline: str = Field(min_length=1, description="treatment serving today")
    canary: str = Field(min_length=1, description="treatment being rolled out")
    rule: str | None = Field(
        default=None,
        pattern=SPLIT_RULE,
        description="attribute=value (e.g. tier=free) or segment:NAME: move that one rule; "
        "the default rule if unset",
    )
    base_url: str = Field(default="https://api.split.io", pattern=r"^https?://")
    api_key_env: str = Field(default="SPLIT_ADMIN_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _distinct(self) -> SplitFlagSpec:
        if self.baseline == self.canary:
            raise ValueError("baseline and canary must name different treatments")
        return self


_AnyFlagSpec = FileFlagSpec | LaunchDarklyFlagSpec | FlagdFlagSpec | SplitFlagSpec
FlagSpec = Annotated[_AnyFlagSpec, Field(discriminator="provider")]


class ScrapeMetricsSpec(Strict):
    """Read the gateway's own /metrics endpoints directly; no Prometheus server needed."""

    provider: Literal["scrape"]
    targets: list[Address] = Field(min_length=1)
    route: str | None = Field(default=None, description="only count this gateway route")
    timeout: Duration = 5.0

    @field_validator("targets")
    @classmethod
    def _http_urls(cls, targets: list[str]) -> list[str]:
        for index, url in enumerate(targets):
            if not url.startswith(("http://", "https://")):  # not echoed: it may hold a password
                raise ValueError(f"targets[{index}] must be an http:// or https:// URL")
        return targets


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class PrometheusMetricsSpec(Strict):
    """Query a Prometheus server that scrapes the gateways: what production runs.

    Secrets never live in a runbook (runbooks are committed and stored with each run): the
    `*_env` fields name environment variables that hold them.
    """

    provider: Literal["prometheus"]
    url: Address = Field(pattern=r"^https?://", description="Prometheus base URL, without /api/v1")
    profile: str = Field(
        default="canaryctl",
        min_length=1,
        description="metric names to read: a shipped profile (canaryctl, recorded, litellm, "
        "otel-genai) or the path of a MetricProfile file",
    )
    variants: dict[str, str | dict[str, str]] = Field(
        default_factory=dict,
        description="what Prometheus calls a flag variation in the profile's variant label "
        "(e.g. a LiteLLM model group), or per label name; default: the variation's own value",
    )
    route: str | None = Field(default=None, description="only count this gateway route")
    selector: dict[str, str] = Field(
        default_factory=dict, description="more label matchers, e.g. {job: llm-gateway}"
    )
    timeout: Duration = 5.0
    bearer_token_env: str | None = Field(default=None, pattern=_ENV_NAME)
    basic_auth_username_env: str | None = Field(default=None, pattern=_ENV_NAME)
    basic_auth_password_env: str | None = Field(default=None, pattern=_ENV_NAME)
    ca_file: DocPath | None = None
    insecure_skip_verify: bool = False

    @field_validator("selector")
    @classmethod
    def _label_names(cls, selector: dict[str, str]) -> dict[str, str]:
        for name in selector:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"'{name}' is not a Prometheus label name")
        return selector

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str, info: ValidationInfo) -> str:
        """A path is made relative to the document, like every path in it."""
        if is_profile_path(profile):
            return str(document_path(profile, (info.context or {}).get("base_dir")))
        if shipped_profile(profile) is None:
            shipped = ", ".join(shipped_profiles())
            raise ValueError(
                f"no shipped profile '{profile}' (shipped: {shipped}); "
                "a profile file needs a path ending in .yaml"
            )
        return profile

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusMetricsSpec:
        if self.route is not None and "route" in self.selector:
            raise ValueError("give the route once: route or selector.route, not both")
        basic = (self.basic_auth_username_env, self.basic_auth_password_env)
        if (basic[0] is None) != (basic[1] is None):
            raise ValueError("basic auth needs both basic_auth_username_env and _password_env")
        if self.bearer_token_env is not None and basic[0] is not None:
            raise ValueError("use bearer_token_env or basic auth, not both")
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("ca_file and insecure_skip_verify contradict each other")
        return self

    @property
    def labels(self) -> dict[str, str]:
        """Every label matcher the queries carry, route included."""
        return {**self.selector, **({"route": self.route} if self.route is not None else {})}


MetricsSpec = Annotated[ScrapeMetricsSpec | PrometheusMetricsSpec, Field(discriminator="provider")]

SloMetric = Literal[tuple(SLO_METRICS)]  # type: ignore[valid-type]
"""A built-in SLO metric: a name in canaryctl.slo_metrics.SLO_METRICS."""
HIGHER_IS_BETTER = frozenset(name for name, m in SLO_METRICS.items() if m.higher_is_better)
"""Built-in metrics where a canary is worse by being lower: bounded by `min` or `max_decrease`."""


SLO_VARIABLES = frozenset({"variant", "variant_label", "window", "selector", "route"})
"""Placeholders of a custom SLO's query: `{{variant}}` the variant's label value (quoted for a
PromQL string), `{{variant_label}}` the profile's label name, `{{window}}` the step's window
(`95s`), `{{selector}}` the runbook's label matchers without braces, `{{route}}` its route."""


class SloSpec(Strict):
    """A bound on one metric of the canary: absolute (`max`/`min`) or against the baseline.

    Relative bounds say which way is worse: `max_increase`/`max_ratio` hold the canary under the
    baseline plus a margin (error rate, latency, cost), `max_decrease` holds it over the baseline
    minus a margin (quality_score, where lower is worse).

    The metric is a built-in one (`metric`) or the runbook's own PromQL (`query`, with a
    `name`), which must give one number per variant; only the prometheus provider runs those.
    """

    metric: SloMetric | None = None
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]+$")
    query: str | None = Field(
        default=None, min_length=1, description="PromQL with {{variant}}, {{window}}..."
    )
    max: float | None = None
    min: float | None = None
    compare: Literal["baseline"] | None = None
    max_increase: float | None = Field(default=None, ge=0)
    max_ratio: float | None = Field(default=None, gt=0)
    max_decrease: float | None = Field(
        default=None, ge=0, description="canary >= baseline - max_decrease (lower is worse)"
    )

    @model_validator(mode="after")
    def _one_kind_of_bound(self) -> SloSpec:
        if (self.metric is None) == (self.query is None):
            raise ValueError("needs exactly one of metric (built in) or query (your PromQL)")
        if self.query is not None:
            if self.name is None:
                raise ValueError("name: a query SLO needs a name, used in verdicts and errors")
            problem = unknown_placeholders(self.query, SLO_VARIABLES)
            if problem is None and "variant" not in placeholders(self.query):
                problem = "must use {{variant}}, to measure each variant apart"
            if problem is not None:
                raise ValueError(f"query: {problem}")
        absolute = self.max is not None or self.min is not None
        bounds = (self.max_increase, self.max_ratio, self.max_decrease)
        relative = sum(bound is not None for bound in bounds)
        if absolute and relative:
            raise ValueError("use max/min or max_increase/max_ratio/max_decrease, not both")
        if not absolute and not relative:
            raise ValueError("needs a bound: max, min, max_increase, max_ratio or max_decrease")
        if relative > 1:
            raise ValueError("use one of max_increase, max_ratio or max_decrease")
        for field in ("max", "min", "max_increase", "max_decrease"):
            check_metric_bound(self.metric, field, getattr(self, field))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: above max, so no value could pass")
        if self.compare == "baseline" and not relative:
            raise ValueError("compare: baseline needs max_increase, max_ratio or max_decrease")
        if self.metric in HIGHER_IS_BETTER and relative and self.max_decrease is None:
            raise ValueError(
                f"{self.metric}: lower is worse, so bound it against the baseline with "
                "max_decrease, not max_increase or max_ratio"
            )
        if self.paired and self.max_decrease is not None and self.max_decrease >= EVEN:
            raise ValueError(
                f"max_decrease: {self.metric} is {EVEN:g} for a candidate even with the baseline, "
                f"so a margin must be below {EVEN:g}"
            )
        lower_is_better = self.metric is not None and self.metric not in HIGHER_IS_BETTER
        if lower_is_better and self.max_decrease is not None:
            raise ValueError(
                f"max_decrease: {self.metric} is worse when higher; use max_increase or max_ratio"
            )
        return self

    @property
    def relative(self) -> bool:
        return any(b is not None for b in (self.max_increase, self.max_ratio, self.max_decrease))

    @property
    def paired(self) -> bool:
        """A metric judged pair by pair against the baseline's answers (win_rate)."""
        return self.metric is not None and SLO_METRICS[self.metric].paired

    def judged(self) -> SloSpec:
        """The bound as the analysis tests it. A paired metric's baseline is EVEN by definition
        (the baseline against itself), so its `compare: baseline, max_decrease: x` is the
        absolute minimum EVEN - x; every other SLO is itself."""
        if not (self.paired and self.max_decrease is not None):
            return self
        return SloSpec(metric=self.metric, min=EVEN - self.max_decrease)

    @property
    def subject(self) -> str:
        """What is bounded, as shown: the SLO's name, else its built-in metric."""
        return self.name or self.metric or ""

    def describe(self) -> str:
        if self.max_increase is not None:
            return f"{self.subject} <= baseline + {self.max_increase:g}"
        if self.max_ratio is not None:
            return f"{self.subject} <= baseline x {self.max_ratio:g}"
        if self.max_decrease is not None:
            return f"{self.subject} >= baseline - {self.max_decrease:g}"
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return f"{self.subject} " + " and ".join(parts)


DEFAULT_MAX_WAIT = 3600.0
"""Seconds an undecided pause waits (on_inconclusive: pause) when the runbook names no max_wait."""


class AnalysisSpec(Strict):
    """When and how strictly to judge; limits follow Argo Rollouts' meaning (exceed to trip)."""

    interval: Duration = Field(default=30.0, gt=0)
    min_requests: int = Field(
        default=100,
        ge=1,
        description="per variant, in the step's window (for quality_score: scored answers)",
    )
    failure_limit: int = Field(default=0, ge=0, description="failed analyses tolerated per run")
    inconclusive_limit: int = Field(
        default=3, ge=0, description="inconclusive analyses tolerated once a step's pause is over"
    )
    consecutive_error_limit: int = Field(
        default=4,
        ge=0,
        description="metrics backend errors in a row tolerated before the run restores the flag "
        "and exits 3 (Argo's consecutiveErrorLimit)",
    )
    method: Literal["threshold", "sequential"] = Field(
        default="sequential",
        description="sequential (the default): anytime-valid tests, accumulated over the run, "
        "that roll back a canary beyond its bounds with a false-rollback rate of at most alpha "
        "however often they look, and pass a bound only once the evidence shows it met; "
        "threshold: compare each window's values with the bounds (see docs/analysis.md)",
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="sequential: the false-rollback rate allowed over the whole run, all "
        "tested SLOs together",
    )
    on_inconclusive: Literal["rollback", "pause"] = Field(
        default="rollback",
        description="what a step still undecided past inconclusive_limit does: rollback, or "
        "pause: hold the weight, notify, keep judging, and wait for `rollout approve` (go on) "
        "or `rollout abort`; a failed SLO still rolls back, a passing analysis goes on, and "
        "max_wait later it rolls back",
    )
    max_wait: Duration | None = Field(
        default=None,
        gt=0,
        description="on_inconclusive: pause: how long an undecided step waits for a verdict or "
        "a human before it rolls back (default 1h)",
    )

    @model_validator(mode="after")
    def _max_wait_needs_pause(self) -> AnalysisSpec:
        if self.max_wait is not None and self.on_inconclusive != "pause":
            raise ValueError(
                "max_wait applies only to on_inconclusive: pause (an undecided step rolls back "
                "at once with on_inconclusive: rollback)"
            )
        return self

    @property
    def pause_limit(self) -> float:
        """Seconds an undecided pause lasts at most (on_inconclusive: pause)."""
        return DEFAULT_MAX_WAIT if self.max_wait is None else self.max_wait


def _duration_or(word: str, example: str, description: str) -> Any:
    """A duration, or the one `word` that stands for "until something happens" (a pause's
    `approval`, a shadow step's `decided`)."""

    def read(value: object) -> float | str:
        if value == word:
            return word
        try:
            return parse_duration(value)
        except NotADuration:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:39] + "…"
            message = f"{shown} is neither a duration such as {example} nor '{word}'"
            raise ValueError(message) from None

    schema = {
        "anyOf": [
            {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
            {"type": "number", "minimum": 0},
            {"const": word},
        ],
        "description": description,
    }
    return Annotated[float | str, BeforeValidator(read), WithJsonSchema(schema)]


PauseLength = _duration_or(
    "approval", "5m", "a duration such as 5m, or 'approval' to wait for rollout approve"
)
"""A pause is a duration, or `approval`: wait until `canaryctl rollout approve`."""
Until = _duration_or(
    "decided",
    "10m",
    "'decided': until the evidence passes every SLO; or a duration such as 10m, after which "
    "the evidence must pass",
)
"""How long a shadow step lasts at least: `decided` (until the evidence passes) or a time."""


class ShadowStep(Strict):
    """Judge the candidate on mirrored traffic before any user sees it.

    The step turns the rollout's `shadow_flag` from its `off` variation (the flag's `baseline`)
    to the candidate's (its `canary`) for `percent`% of requests, so the gateway sends that share
    of requests to the candidate too and throws its answers away; the step's `slos` judge the
    candidate's shadow metrics against the baseline's user-facing ones over the same window (and
    `win_rate`, the judge's pairwise verdicts, against even). A failed SLO stops the run before
    any live weight; the shadow flag is put back on every exit path.
    """

    percent: float = Field(gt=0, le=100, description="share of requests mirrored to the candidate")
    until: Until = Field(
        default="decided",
        description="'decided' (the default): end once the evidence passes every SLO; or a "
        "duration to shadow at least that long",
    )
    max: Duration = Field(
        default=1800.0,
        gt=0,
        description="longest the step lasts; undecided then, the run stops (exit 1)",
    )
    slos: list[SloSpec] = Field(min_length=1)
    alpha: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="the step's false-stop rate, all its SLOs together; default analysis.alpha",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ShadowStep:
        if isinstance(self.until, float) and self.until > self.max:
            raise ValueError("until: longer than max, so the step could never end as planned")
        for index, slo in enumerate(self.slos):
            if slo.query is not None:
                raise ValueError(
                    f"slos[{index}].query: a shadow step judges the built-in metrics only"
                )
            if slo.metric is not None and SLO_METRICS[slo.metric].streamed:
                raise ValueError(
                    f"slos[{index}].metric: {slo.metric} is measured on streamed answers, and "
                    "shadow calls are not streamed: bound it on a live weight instead"
                )
        return self


class Step(Strict):
    """Exactly one of `set_weight` (percent of traffic to the canary), `pause`, `chaos`: a
    ChaosScenario document (path relative to the runbook) played at the current weight, whose
    violated hypothesis rolls the canary back, or `shadow` (ShadowStep), before any weight."""

    set_weight: float | None = None
    pause: PauseLength | None = None
    chaos: DocPath | None = None
    shadow: ShadowStep | None = None

    @field_validator("set_weight")
    @classmethod
    def _percent(cls, weight: float | None) -> float | None:
        if weight is not None and not 0 <= weight <= 100:
            raise ValueError("must be between 0 and 100")
        return weight

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        steps = (self.set_weight, self.pause, self.chaos, self.shadow)
        given = [v for v in steps if v is not None]
        if len(given) != 1:
            raise ValueError("a step is exactly one of set_weight, pause, chaos or shadow")
        return self


class Hook(Strict):
    webhook: WebhookSpec


class RolloutSpec(Strict):
    flag: FlagSpec
    metrics: MetricsSpec
    slos: list[SloSpec] = Field(min_length=1)
    analysis: AnalysisSpec = built_on_use(AnalysisSpec)
    steps: list[Step] = Field(min_length=1)
    finish: Literal["promote", "keep"] = Field(
        default="promote",
        description="after the last hold passes: promote (the canary to 100%), or keep the "
        "split the last set_weight step left (a planned mix of two models, e.g. from "
        "`canaryctl cost optimize`); either way the run ends promoted",
    )
    shadow_flag: FlagSpec | None = Field(
        default=None,
        description="the flag a shadow step moves: its gateway route's `shadow: {flag: KEY}`, "
        "with `baseline` its off variation and `canary` the candidate's (a model name)",
    )
    on_rollback: list[Hook] = Field(default_factory=list)
    on_promote: list[Hook] = Field(default_factory=list)
    notify: list[NotifySpec] = Field(default_factory=list)
    gate: GateSpec | None = None
    abort_on: AlertMatchers
    """Alerts posted to the controller's /api/v1/alertmanager that abort this run."""

    @model_validator(mode="after")
    def _steps_make_sense(self) -> RolloutSpec:
        weights = [s.set_weight for s in self.steps if s.set_weight is not None]
        if not weights:
            raise ValueError("steps: needs at least one set_weight step")
        first = next(i for i, s in enumerate(self.steps) if s.set_weight is not None)
        for i, step in enumerate(self.steps):
            if step.shadow is None:
                continue
            if i > first:
                raise ValueError(
                    f"steps[{i}]: a shadow step comes before any set_weight (steps[{first}]): "
                    "once users see the canary, mirroring it proves nothing new"
                )
            if self.shadow_flag is None:
                raise ValueError(f"steps[{i}]: a shadow step needs spec.shadow_flag to move")
        if self.shadow_flag is not None and _same_flag(self.shadow_flag, self.flag):
            raise ValueError("shadow_flag: must be another flag than spec.flag")
        for index, slo in enumerate(self.slos):
            if slo.paired:
                raise ValueError(
                    f"slos[{index}]: {slo.metric} is judged on shadow pairs only: put it in a "
                    "shadow step's slos"
                )
        if isinstance(self.flag, SplitFlagSpec):
            for i, step in enumerate(self.steps):
                if step.set_weight is not None and step.set_weight != int(step.set_weight):
                    raise ValueError(
                        f"steps[{i}].set_weight: {step.set_weight:g} is not a whole percent, "
                        "and a Split flag's buckets are whole percents"
                    )
        full = next((i for i, s in enumerate(self.steps) if s.set_weight == 100), None)
        if full is not None:
            for i in range(full + 1, len(self.steps)):
                if self.steps[i].set_weight is not None:
                    raise ValueError(
                        f"steps[{i}]: set_weight after the 100% step "
                        f"at steps[{full}] makes no sense"
                    )
        return self

    @model_validator(mode="after")
    def _slos_fit_the_metrics(self) -> RolloutSpec:
        """Custom PromQL SLOs need Prometheus; names are unique; variants name our two."""
        prometheus = isinstance(self.metrics, PrometheusMetricsSpec)
        named: dict[str, int] = {}
        for index, slo in enumerate(self.slos):
            if slo.query is not None and not prometheus:
                raise ValueError(
                    f"slos[{index}].query: custom PromQL SLOs need metrics.provider prometheus"
                )
            routed = isinstance(self.metrics, PrometheusMetricsSpec) and self.metrics.route
            if slo.query is not None and "route" in placeholders(slo.query) and not routed:
                raise ValueError(
                    f"slos[{index}].query: uses {{{{route}}}} but metrics.route is not set"
                )
            if slo.name is not None:
                if slo.name in named:
                    raise ValueError(
                        f"slos[{index}].name: '{slo.name}' already names slos[{named[slo.name]}]"
                    )
                named[slo.name] = index
        if isinstance(self.metrics, PrometheusMetricsSpec):
            ours = {self.flag.baseline, self.flag.canary}
            for variation in self.metrics.variants:
                if variation not in ours:
                    raise ValueError(
                        f"metrics.variants: '{variation}' is neither the baseline nor the canary "
                        "variation"
                    )
        return self


_FAILURE_RATES = frozenset({"error_rate", "served_error_rate", "fallback_rate"})
"""The rates of the canary's own failures: an absolute bound on one of them (or on a runbook's
own PromQL, which may be one) is what holds a canary whose failures the baseline shares."""


def rollout_warnings(spec: RolloutSpec) -> list[str]:
    """What makes a valid runbook judge less than it seems to (`canaryctl validate` prints it):
    no absolute bound, or none on a failure rate, a promotion no analysis judges at 100%, an
    SLO that can never be judged. Each names the field it is about."""
    found: list[str] = []
    absolute = [slo for slo in spec.slos if slo.max is not None or slo.min is not None]
    if not absolute:
        found.append(
            "spec.slos: no absolute bound (max or min): relative bounds alone let through "
            "whatever the baseline does too (an outage of both), and at 100% they rest on the "
            "baseline's last window before it"
        )
    elif not any(slo.metric in _FAILURE_RATES or slo.metric is None for slo in absolute):
        found.append(
            "spec.slos: no absolute bound on a failure rate (error_rate, served_error_rate or "
            "fallback_rate max): failures are fast and cheap, so latency and cost bounds pass a "
            "canary that fails, and relative ones let through what the baseline fails too; only "
            "the built-in check stops one failing half its requests"
        )
    weights = [(i, s.set_weight) for i, s in enumerate(spec.steps) if s.set_weight is not None]
    last, weight = weights[-1]
    if spec.finish == "promote" and weight < 100:
        found.append(
            f"steps[{last}].set_weight: the last weight is {weight:g}%, so the canary is promoted "
            "to 100% without an analysis there; end with set_weight: 100"
        )
    if not any(0 < w < 100 for _, w in weights):
        for index, slo in enumerate(spec.slos):
            if slo.relative:
                found.append(
                    f"slos[{index}] ({slo.describe()}): no set_weight step serves both variants "
                    "(between 0 and 100), so this bound against the baseline can never be judged"
                )
    return found


def _same_flag(a: _AnyFlagSpec, b: _AnyFlagSpec) -> bool:
    if isinstance(a, _FlagInFile) and type(a) is type(b):
        return a.key == b.key and a.path == b.path
    if isinstance(a, LaunchDarklyFlagSpec) and isinstance(b, LaunchDarklyFlagSpec):
        where = ("base_url", "project", "environment", "key")
        return all(getattr(a, f) == getattr(b, f) for f in where)
    if isinstance(a, SplitFlagSpec) and isinstance(b, SplitFlagSpec):
        where = ("base_url", "workspace", "environment", "key")
        return all(getattr(a, f) == getattr(b, f) for f in where)
    return False


class Rollout(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["Rollout"]
    metadata: Metadata
    spec: RolloutSpec
