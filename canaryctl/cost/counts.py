"""The counts a cost report is made from: the gateway's spend families over one window. Pure.

A scrape holds counters since each gateway started, so a window is the difference of two
scrapes, taken per series (per target and label set) before summing, with a counter that went
down counted from zero (a restart), as Prometheus' increase() does. From Prometheus the same
counts come from `increase(...[range])` (canaryctl/cost/sources.py). Either way the report
reads one `SpendCounts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from canaryctl.gateway.metrics import TOP_USER_COST, TOP_USER_COST_ERROR

__all__ = [
    "COUNTERS",
    "GROUPING",
    "SPEND_START",
    "Labels",
    "SpendCounts",
    "difference",
    "parse_exposition",
]

Labels = tuple[tuple[str, str], ...]
"""Sorted (name, value) pairs: a series' identity within its family."""

SPEND_START = "llm_spend_start_time_seconds"
GROUPING: dict[str, tuple[str, ...]] = {
    "llm_spend_requests_total": ("route", "model", "team", "llm_job"),
    "llm_spend_tokens_total": ("route", "model", "team", "llm_job", "kind"),
    "llm_spend_cost_usd_total": ("route", "model", "team", "llm_job"),
    "llm_cost_usd_total": ("route", "model", "tier"),
    "llm_tokens_total": ("route", "model", "tier", "kind"),
    "llm_requests_total": ("route", "model", "tier", "outcome"),
    "llm_fallback_cost_usd_total": ("route", "model"),
    "llm_redundant_requests_total": ("route", "llm_job"),
    "llm_redundant_cost_usd_total": ("route", "llm_job"),
    "llm_retry_requests_total": ("route", "llm_job"),
    "llm_retry_cost_usd_total": ("route", "llm_job"),
    "llm_cache_requests_total": ("route", "result"),
    "llm_cache_saved_usd_total": ("route", "model"),
    "llm_downgrades_total": ("route", "from_model", "to_model", "reason"),
    # Not user spend: shadow and judge calls, shown apart (their producers' contract).
    "llm_shadow_requests_total": ("route", "model", "outcome"),
    "llm_shadow_cost_usd_total": ("route", "model"),
    "llm_judge_requests_total": ("route", "judge", "kind", "outcome"),
    "llm_judge_cost_usd_total": ("route", "judge"),
}
"""Each counter the report reads and the labels it is summed by (the gateway's contract,
canaryctl/gateway/metrics.py); other labels (variant, provider, instance) are summed over."""
COUNTERS = frozenset(GROUPING)
USER_GAUGES = (TOP_USER_COST, TOP_USER_COST_ERROR)


@dataclass(frozen=True)
class SpendCounts:
    """What the window held: `counters[name][labels]` summed by GROUPING, the heavy users'
    spend in the window (`users`: user -> (estimate, error), USD), and the window itself."""

    counters: Mapping[str, Mapping[Labels, float]]
    users: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    def rows(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), value) for labels, value in self.counters.get(name, {}).items()]


Scrape = dict[tuple[str, str, Labels], float]
"""(target, sample name, all labels) -> value: one scrape of every target, unsummed."""


def parse_exposition(target: str, text: str) -> Scrape:
    """The series the report reads from one target's /metrics text (ValueError if it is not
    Prometheus exposition text)."""
    wanted = {*COUNTERS, *USER_GAUGES, SPEND_START}
    values: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                labels = tuple(sorted(sample.labels.items()))
                values[(target, sample.name, labels)] = sample.value
    return values


def _grouped(name: str, labels: Labels) -> Labels:
    keep = GROUPING[name]
    return tuple((k, v) for k, v in labels if k in keep)


def difference(
    now: Scrape, before: Scrape | None, *, at: float, since: float | None
) -> SpendCounts:
    """The window from `before` (taken at `since`) to `now` (taken at `at`); with no `before`,
    everything since the gateways started (the window starts at the earliest
    llm_spend_start_time_seconds, else at `at`)."""
    base = before or {}
    counters: dict[str, dict[Labels, float]] = {}
    users: dict[str, list[float]] = {}
    starts = []
    for key, value in now.items():
        _, name, labels = key
        if name == SPEND_START:
            starts.append(value)
            continue
        previous = base.get(key, 0.0)
        delta = value - previous if value >= previous else value  # went down: a restart
        if name in USER_GAUGES:
            user = dict(labels).get("user", "")
            slot = users.setdefault(user, [0.0, 0.0])
            slot[USER_GAUGES.index(name)] += value if name == TOP_USER_COST_ERROR else delta
            continue
        group = counters.setdefault(name, {})
        grouped = _grouped(name, labels)
        group[grouped] = group.get(grouped, 0.0) + delta
    start = min(starts, default=at)
    if before is not None and since is not None:
        start = since
    return SpendCounts(
        counters=counters,
        users={u: (v[0], v[1]) for u, v in users.items() if v[0] > 0},
        start=start,
        end=at,
    )


def merged(scrapes: Iterable[Scrape]) -> Scrape:
    out: Scrape = {}
    for scrape in scrapes:
        out.update(scrape)
    return out
