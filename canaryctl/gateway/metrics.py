"""The gateway's metric families: the contract `canaryctl.metrics` reads.

Each gateway app owns a CollectorRegistry, so several gateways in one process (tests, the lab)
never share or double-register series.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)

__all__ = ["BUCKETS", "LABELS", "OTHER_TIER", "REQUEST_LABELS", "GatewayMetrics"]

LABELS = ("route", "variant", "model", "provider")
"""`variant` is the flag variation served; `model` and `provider` are what actually answered."""
REQUEST_LABELS = (*LABELS, "tier")
"""Per-request families also carry the requester's tier, bounded to the configured tiers."""
OTHER_TIER = "other"

BUCKETS = (
    *(0.05, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0),
    *(4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0),
)
"""Dense between 1 and 3 s so that a p95 SLO near 2 s is resolved, not rounded to a bucket."""


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "llm_requests_total",
            "Requests by what the variant's own model did: ok; error (it failed, the client got "
            "an error); fallback_ok (it failed, a fallback answered); filtered (content filter); "
            "rejected (the client's fault: 400, 413, 422, a spent budget)",
            [*REQUEST_LABELS, "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "llm_request_duration_seconds",
            "End-to-end request duration as the client sees it, fallbacks included",
            REQUEST_LABELS,
            buckets=BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "llm_upstream_duration_seconds",
            "Duration of each attempt at a model, failed ones included",
            LABELS,
            buckets=BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "llm_tokens_total",
            "Tokens reported by the model that answered, by kind: prompt or completion",
            [*REQUEST_LABELS, "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "llm_cost_usd_total",
            "USD spent, from reported tokens and the model's price per 1k tokens",
            REQUEST_LABELS,
            registry=registry,
        )
        self.quality = Summary(
            "llm_quality_score",
            "Quality scores (0..1) callers reported through POST /v1/feedback, by what served the "
            "answer: the mean is llm_quality_score_sum / llm_quality_score_count",
            REQUEST_LABELS,
            registry=registry,
        )
        self.fallbacks = Counter(
            "llm_fallbacks_total",
            "Moves down a fallback chain, by the reason the previous model failed",
            ["route", "variant", "from_model", "to_model", "reason"],
            registry=registry,
        )
        self.flag_errors = Counter(
            "llm_flag_evaluation_errors_total",
            "Flag evaluations that failed, so the route's default_model was served",
            ["route"],
            registry=registry,
        )

        self._shadow_families(registry)

        self.flag_source_valid = Gauge(
            "llm_flag_data_source_valid",
            "1 while the flag data source is valid (LaunchDarkly SDK data-source state VALID: "
            "stream connected, last poll or file load succeeded), else 0",
            registry=registry,
        )
        self.flag_data_stale = Gauge(
            "llm_flag_data_stale_seconds",
            "Seconds since the flag data source stopped being valid (since startup if it never "
            "was): how long flag changes may have gone unseen; 0 while valid",
            registry=registry,
        )
        self.flag_last_change = Gauge(
            "llm_flag_data_last_change_timestamp_seconds",
            "Unix time the gateway last received flag data (its first load, then any flag "
            "change); 0 before the first",
            registry=registry,
        )

    def _shadow_families(self, registry: CollectorRegistry) -> None:
        """Shadow calls (gateway/shadow.py) in their own families, so that user-facing metrics,
        budgets and SLOs never count them. Same labels as the user-facing families, where
        `variant` is the shadow model's name (the variant it stands in for)."""
        self.shadow_requests = Counter(
            "llm_shadow_requests_total",
            "Shadow requests by what the shadow model did (the outcomes of llm_requests_total; "
            "a shadow call has no fallback)",
            [*REQUEST_LABELS, "outcome"],
            registry=registry,
        )
        self.shadow_duration = Histogram(
            "llm_shadow_request_duration_seconds",
            "Duration of each shadow call, from leaving the queue to its answer",
            REQUEST_LABELS,
            buckets=BUCKETS,
            registry=registry,
        )
        self.shadow_tokens = Counter(
            "llm_shadow_tokens_total",
            "Tokens the shadow model reported, by kind: prompt or completion",
            [*REQUEST_LABELS, "kind"],
            registry=registry,
        )
        self.shadow_cost = Counter(
            "llm_shadow_cost_usd_total",
            "USD spent on shadow calls, from reported tokens and the shadow model's price",
            REQUEST_LABELS,
            registry=registry,
        )
        self.shadow_quality = Summary(
            "llm_shadow_quality_score",
            "Judges' scores (0..1) of shadow answers, by the shadow model",
            REQUEST_LABELS,
            registry=registry,
        )
        self.shadow_dropped = Counter(
            "llm_shadow_dropped_total",
            "Shadow requests not sent, by reason: queue_full (queue at its bound), budget "
            "(the replica's shadow spend per hour is used up)",
            ["route", "model", "reason"],
            registry=registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
