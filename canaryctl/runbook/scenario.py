"""Faults the chaos proxy injects, and the `ChaosScenario` document that injects them.

A scenario names the proxy, the faults, how long they stay in, and the steady-state hypothesis
checked before, during and after over the gateway's metrics; `schedule` and `window` are for
`canaryctl drills serve`.

A FaultSpec is both the body of the proxy's admin API and an entry of a scenario's `faults`, so
a fault reads the same wherever it is written. Parameters that do not apply to a fault's kind are
errors, not silently ignored: `status` on a latency fault is a typo someone must hear about.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Literal
from zoneinfo import ZoneInfo, available_timezones

from pydantic import AfterValidator, Field, field_validator, model_validator

from canaryctl.chaos.admin import FAULT_KINDS, FaultKind, proxy_origin
from canaryctl.runbook.addresses import Address
from canaryctl.runbook.common import (
    API_VERSION,
    Duration,
    Metadata,
    Strict,
    built_on_use,
    check_metric_bound,
)
from canaryctl.runbook.rollout import MetricsSpec
from canaryctl.slo_metrics import SLO_METRICS, Quantile, Rate

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

__all__ = [
    "FAULT_KINDS",
    "PHASES",
    "STREAM_ONLY",
    "ChaosScenario",
    "ChaosScenarioSpec",
    "DrillWindow",
    "FaultKind",
    "FaultMatch",
    "FaultSpec",
    "HypothesisCheck",
    "HypothesisSpec",
    "ProxyTarget",
    "cron_trigger",
]


STREAM_ONLY = frozenset({"slow_first_token", "stream_cut", "stream_stall"})
"""Kinds that only mean something for a streamed answer; they never hit other requests."""

_PARAMETERS: dict[str, frozenset[str]] = {
    "error": frozenset({"status", "shape"}),
    "rate_limit": frozenset({"retry_after", "shape"}),
    "latency": frozenset({"delay", "delay_p95"}),
    "slow_first_token": frozenset({"delay"}),
    "timeout": frozenset(),
    "reset": frozenset(),
    "stream_cut": frozenset({"after_chunks"}),
    "stream_stall": frozenset({"after_chunks"}),
    "malformed": frozenset({"after_chunks"}),
    "empty_completion": frozenset({"shape"}),
    "content_filter": frozenset({"shape"}),
}
_MAX_TTL = 86400.0


class FaultMatch(Strict):
    """Which requests a fault may hit; every given field must match (globs for path and model)."""

    path: str | None = Field(default=None, description="glob on the URL path, e.g. /v1/chat/*")
    model: str | None = Field(default=None, description="glob on the request body's `model`")
    headers: dict[str, str] = Field(default_factory=dict, description="header name -> exact value")


class FaultSpec(Strict):
    """One fault: its kind, the share of matching requests it hits, and how long it lives.

    The time-to-live is enforced by the proxy itself, so the fault ends on time even if whoever
    added it died.
    """

    fault: FaultKind
    rate: float = Field(default=1.0, ge=0, le=1, description="probability per matching request")
    ttl: Duration = Field(default=300.0, gt=0, le=_MAX_TTL, description="lifetime; at most 1d")
    match: FaultMatch = built_on_use(FaultMatch)
    status: int | None = Field(default=None, description="error: 500, 502, 503 or 529")
    shape: Literal["openai", "anthropic"] | None = Field(
        default=None,
        description="shape of error bodies and useless answers; default: anthropic on /v1/messages",
    )
    retry_after: Duration | None = Field(default=None, description="rate_limit: Retry-After")
    delay: Duration | None = Field(default=None, description="latency, slow_first_token")
    delay_p95: Duration | None = Field(
        default=None, description="latency: log-normal with median `delay` and this p95"
    )
    after_chunks: int | None = Field(
        default=None, ge=0, description="stream_cut, stream_stall, malformed: SSE chunks first"
    )

    @model_validator(mode="after")
    def _parameters_fit_the_kind(self) -> FaultSpec:
        allowed = _PARAMETERS[self.fault]
        for name in ("status", "shape", "retry_after", "delay", "delay_p95", "after_chunks"):
            if getattr(self, name) is not None and name not in allowed:
                raise ValueError(f"{name}: does not apply to a {self.fault} fault")
        if self.status is not None and self.status not in (500, 502, 503, 529):
            raise ValueError("status: must be 500, 502, 503 or 529")
        if self.delay_p95 is not None and self.delay_p95 < (self.delay or 0.0):
            raise ValueError("delay_p95: must be at least delay")
        if self.delay_p95 is not None and not self.delay:
            raise ValueError("delay_p95: needs a delay (the median) above zero")
        return self

    def describe(self) -> str:
        params = [
            f"{name}={getattr(self, name):g}"
            if isinstance(getattr(self, name), float)
            else f"{name}={getattr(self, name)}"
            for name in ("status", "shape", "retry_after", "delay", "delay_p95", "after_chunks")
            if getattr(self, name) is not None
        ]
        match = self.match
        conditions = [f"path {match.path}"] if match.path is not None else []
        conditions += [f"model {match.model}"] if match.model is not None else []
        conditions += [f"header {name}: {value}" for name, value in match.headers.items()]
        where = f" where {' and '.join(conditions)}" if conditions else ""
        extra = f" ({', '.join(params)})" if params else ""
        requests = "streamed requests" if self.fault in STREAM_ONLY else "requests"
        return f"{self.fault}{extra} on {self.rate:.0%} of {requests}{where}, ttl {self.ttl:g}s"


HypothesisMetric = Literal[  # type: ignore[valid-type]
    ("success_rate", *(n for n, m in SLO_METRICS.items() if isinstance(m.formula, Rate | Quantile)))
]
"""`success_rate`, and the rates and latencies of canaryctl.slo_metrics."""
Phase = Literal["before", "during", "after"]
PHASES: tuple[Phase, ...] = ("before", "during", "after")


class HypothesisCheck(Strict):
    """A bound on one measure of all the gateway's traffic, checked in the given phases.

    `success_rate` is 1 - `served_error_rate`: users got an answer, a fallback's included.
    `error_rate` counts the models' failures, rescued ones too (canaryctl.slo_metrics).
    `fallback_rate` belongs in `during` only: it proves the fallback was used while the
    primary failed, which an absent error alone does not.
    """

    metric: HypothesisMetric
    min: float | None = None
    max: float | None = None
    phases: list[Phase] = Field(default_factory=lambda: list(PHASES), min_length=1)

    @model_validator(mode="after")
    def _bounded(self) -> HypothesisCheck:
        if self.min is None and self.max is None:
            raise ValueError("needs a bound: min or max")
        check_metric_bound(self.metric, "min", self.min)
        check_metric_bound(self.metric, "max", self.max)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: above max, so no value could pass")
        return self

    def describe(self) -> str:
        bounds = [f">= {self.min:g}" if self.min is not None else ""]
        bounds.append(f"<= {self.max:g}" if self.max is not None else "")
        return f"{self.metric} {' and '.join(b for b in bounds if b)}"


class HypothesisSpec(Strict):
    """The steady state: what the gateway's metrics must show before, during and after."""

    metrics: MetricsSpec
    checks: list[HypothesisCheck] = Field(min_length=1)
    window: Duration = Field(default=30.0, gt=0, description="traffic each check looks at")
    interval: Duration = Field(default=10.0, gt=0, description="between checks during faults")
    min_requests: int = Field(default=50, ge=1, description="fewer in a window: no verdict")


class ProxyTarget(Strict):
    """The fault proxy's base URL; its admin token is read from the environment, never here."""

    url: Address = Field(pattern=r"^https?://", max_length=2048)
    token_env: str = Field(default="CANARYCTL_CHAOS_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("url")
    @classmethod
    def _origin_only(cls, url: str) -> str:
        proxy_origin(url)  # its admin API lives on the origin: a path or query is refused
        return url


_zone_names = cache(available_timezones)

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class DrillWindow(Strict):
    """When a scheduled drill may start: on these days, between start and end (local to tz)."""

    days: list[Day] = Field(default_factory=lambda: list(_DAYS), min_length=1)
    start: str = Field(default="00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(default="24:00", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        # Only names in the time zone database: ZoneInfo would try any other string as a path.
        if name not in _zone_names() and name != "UTC":
            raise ValueError(f"'{name}' is not an IANA time zone such as Europe/Paris")
        return name

    @model_validator(mode="after")
    def _ordered(self) -> DrillWindow:
        if self.end <= self.start:
            raise ValueError("end: must be after start (windows do not cross midnight)")
        return self

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(ZoneInfo(self.timezone))
        return (
            _DAYS[local.weekday()] in self.days and self.start <= local.strftime("%H:%M") < self.end
        )


def _cron(value: str) -> str:
    """Five fields (minute first), or six with seconds first: `*/10 * * * * *`."""
    fields = value.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"'{value}' is not a cron expression of 5 or 6 fields")
    try:
        cron_trigger(value)
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a valid cron expression: {exc}") from None
    return value


def cron_trigger(value: str, timezone: str = "UTC") -> CronTrigger:
    from apscheduler.triggers.cron import CronTrigger  # the scheduler's, not `validate`'s, cost

    fields = value.split()
    if len(fields) == 5:
        return CronTrigger.from_crontab(value, timezone=timezone)
    second, minute, hour, day, month, day_of_week = fields
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=day_of_week,
        timezone=timezone,
    )


class ChaosScenarioSpec(Strict):
    target: ProxyTarget
    faults: list[FaultSpec] = Field(min_length=1)
    duration: Duration = Field(gt=0, description="how long the faults stay in")
    hypothesis: HypothesisSpec
    settle: Duration = Field(
        default=0.0,
        ge=0,
        description="after injecting, wait this long before judging: requests in flight when "
        "the faults went in finish first, and no window reaches before then",
    )
    recovery: Duration = Field(
        default=10.0, ge=0, description="after removing the faults, wait this long, then check"
    )
    abort_on_violation: bool = True
    ttl_margin: Duration = Field(
        default=30.0,
        gt=0,
        description="a fault without its own ttl lives duration + this, should canaryctl die",
    )
    schedule: Annotated[str, AfterValidator(_cron)] | None = Field(
        default=None, description="cron (5 fields, or 6 with seconds first) for drills serve"
    )
    window: DrillWindow | None = Field(default=None, description="when a drill may start")

    @model_validator(mode="after")
    def _faults_outlive_the_run(self) -> ChaosScenarioSpec:
        if self.settle >= self.duration:
            raise ValueError("settle: must be shorter than the duration")
        for i, fault in enumerate(self.faults):
            if "ttl" in fault.model_fields_set and fault.ttl < self.duration:
                raise ValueError(f"faults[{i}].ttl: shorter than the duration")
        return self

    def injected_faults(self) -> list[FaultSpec]:
        """The faults as sent to the proxy: each with a TTL, so none outlives a dead run."""
        return [
            f
            if "ttl" in f.model_fields_set
            else f.model_copy(update={"ttl": self.duration + self.ttl_margin})
            for f in self.faults
        ]


class ChaosScenario(Strict):
    api_version: Literal["canaryctl/v1"] = Field(alias="apiVersion", default=API_VERSION)
    kind: Literal["ChaosScenario"]
    metadata: Metadata
    spec: ChaosScenarioSpec
