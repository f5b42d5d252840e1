"""The gateway's metric families: the contract `canaryctl.metrics` reads.

Each gateway app owns a CollectorRegistry, so several gateways in one process (tests, the lab)
never share or double-register series.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)

__all__ = [
    "BATCH_SIZES",
    "BUCKETS",
    "FIRST_TOKEN_BUCKETS",
    "LABELS",
    "NO_VALUE",
    "OTHER_TIER",
    "OTHER_VALUE",
    "PER_TOKEN_BUCKETS",
    "REQUEST_LABELS",
    "SPEND_LABELS",
    "TOP_USER_COST",
    "TOP_USER_COST_ERROR",
    "BatchMetrics",
    "Children",
    "GatewayMetrics",
    "RequestSeries",
    "StreamTiming",
]

LABELS = ("route", "variant", "model", "provider")
"""`variant` is the flag variation served; `model` and `provider` are what actually answered."""
REQUEST_LABELS = (*LABELS, "tier")
"""Per-request families also carry the requester's tier, bounded to the configured tiers."""
OTHER_TIER = "other"
SPEND_LABELS = ("route", "model", "team", "llm_job")
"""The spend families' labels: what answered, for whom. `llm_job`, not `job`, which Prometheus
sets on every scraped series (a `job` label would be renamed `exported_job`)."""
OTHER_VALUE = "other"
"""A team or job that is neither configured nor heavy enough to get its own series."""
NO_VALUE = "none"
"""A request that named no team (or job)."""
TOP_USER_COST = "llm_top_user_cost_usd"
"""Gauge per heavy user: the space-saving estimate of the USD it spent since the gateway
started (an upper bound); TOP_USER_COST_ERROR is how much of it may belong to others."""
TOP_USER_COST_ERROR = "llm_top_user_cost_error_usd"

BUCKETS = (
    *(0.05, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0),
    *(4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0),
)
"""Dense between 1 and 3 s so that a p95 SLO near 2 s is resolved, not rounded to a bucket."""

FIRST_TOKEN_BUCKETS = (
    *(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75),
    *(1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0),
)
"""Dense from 25 ms to 1 s (steps of 25 to 250 ms), where chat SLOs on the first token sit (a
p95 of 0.2 to 1 s): such bounds are edges, and a fast baseline's p95 has an edge near it."""
PER_TOKEN_BUCKETS = (
    *(0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05),
    *(0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
)
"""Seconds per output token: 400 tokens/s down to 1 token/s, dense around 10 to 50 ms (20 to 100
tokens/s), where hosted models stream."""

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
"""Requests per joined upstream call: powers of two up to OpenAI's 2,048 inputs a call."""
WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds a request waits for its batch to go out: never more than a window, at most 1 s."""


class BatchMetrics:
    """Embeddings batching (gateway/batching.py), labelled by the model the call went to.

    Upstream calls saved = llm_batch_requests_total - llm_batch_size_count: every call the
    batcher makes is one observation of llm_batch_size, whose value is how many requests it
    carried (a request asked again alone, after its batch was refused, is a call of 1).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "llm_batch_requests_total",
            "Embeddings attempts at a model with batching on, joined or not",
            LABELS,
            registry=registry,
        )
        self.size = Histogram(
            "llm_batch_size",
            "Requests carried by each upstream embeddings call of the batcher (_count is calls)",
            LABELS,
            buckets=BATCH_SIZES,
            registry=registry,
        )
        self.wait = Histogram(
            "llm_batch_wait_seconds",
            "Time a request waited for its batch to go out: the latency the window adds",
            LABELS,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.refused = Counter(
            "llm_batch_refused_total",
            "Joined calls the model refused (400, 413, 422), after which each request was "
            "asked alone so that one request's bad input fails no other",
            LABELS,
            registry=registry,
        )


class StreamTiming:
    """The streaming histograms' children for one label set, bound once: `labels()` hashes,
    locks and looks up on every call, which a hot path need not pay per request."""

    __slots__ = ("_first_token", "_per_token")

    def __init__(self, first_token: Histogram, per_token: Histogram) -> None:
        self._first_token = first_token
        self._per_token = per_token

    def first_token(self, seconds: float) -> None:
        """The client got the first token `seconds` after the request arrived."""
        self._first_token.observe(seconds)

    def generated(self, seconds: float, usage: dict[str, object] | None) -> None:
        """The stream ended `seconds` after its first token: per output token after the first,
        from the completion tokens the model reported (none reported, or fewer than two: no
        interval between tokens to measure)."""
        tokens = (usage or {}).get("completion_tokens")
        if isinstance(tokens, int) and tokens >= 2:
            self._per_token.observe(seconds / (tokens - 1))


class Children:
    """A family's children by label values (in the family's label order), each bound once:
    `labels()` validates, locks and looks up on every call; this is one dict lookup."""

    __slots__ = ("_bound", "_family")

    def __init__(self, family: Counter | Histogram) -> None:
        self._family = family
        self._bound: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._bound.get(values)
        if child is None:
            child = self._bound[values] = self._family.labels(*values)
        return child


class RequestSeries:
    """The per-request families' children for one label set (REQUEST_LABELS), each bound on
    first use and kept: `labels()` validates, hashes and locks on every call, and a request
    used to pay that six times. Bound lazily, so a series appears in the exposition exactly
    when it would have with `labels()` (no zero-valued token series for requests without
    usage)."""

    __slots__ = ("_cost", "_duration", "_key", "_metrics", "_outcomes", "_tokens")

    def __init__(self, metrics: GatewayMetrics, key: tuple[str, str, str, str, str]) -> None:
        self._metrics, self._key = metrics, key
        self._outcomes: dict[str, Any] = {}
        self._duration: Any = None
        self._tokens: tuple[Any, Any] | None = None
        self._cost: Any = None

    def count(self, outcome: str, seconds: float) -> None:
        """One request in llm_requests_total under `outcome`, and its end-to-end duration."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._metrics.requests.labels(*self._key, outcome)
            self._outcomes[outcome] = child
        child.inc()
        if self._duration is None:
            self._duration = self._metrics.duration.labels(*self._key)
        self._duration.observe(seconds)

    def spent(self, prompt: int, completion: int, cost: float | None, outcome: str) -> None:
        """The tokens the model reported and what they cost; `cost` None for a model with no
        price, whose answer is counted in llm_unpriced_requests_total under `outcome` instead
        (fallback_ok: a fallback model gave it)."""
        if self._tokens is None:
            tokens = self._metrics.tokens
            self._tokens = (
                tokens.labels(*self._key, "prompt"),
                tokens.labels(*self._key, "completion"),
            )
        self._tokens[0].inc(prompt)
        self._tokens[1].inc(completion)
        if cost is None:
            self._metrics.unpriced.labels(*self._key, outcome).inc()
            return
        if self._cost is None:
            self._cost = self._metrics.cost.labels(*self._key)
        self._cost.inc(cost)


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
        self.time_to_first_token = Histogram(
            "llm_time_to_first_token_seconds",
            "Streamed answers only: from the request's arrival to the first token passed on to "
            "the client, fallbacks included (LiteLLM: litellm_llm_api_time_to_first_token_metric)",
            REQUEST_LABELS,
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "llm_time_per_output_token_seconds",
            "Streamed answers only: seconds from the first token to the end of the stream per "
            "output token after the first (the completion tokens the model reported)",
            REQUEST_LABELS,
            buckets=PER_TOKEN_BUCKETS,
            registry=registry,
        )
        self._timings: dict[tuple[str, ...], StreamTiming] = {}
        self._series: dict[tuple[str, str, str, str, str], RequestSeries] = {}
        self._attempts: dict[tuple[str, str, str, str], Any] = {}
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
        self.unpriced = Counter(
            "llm_unpriced_requests_total",
            "Answers of a model with no price in the gateway document, by the outcome of "
            "llm_requests_total: their cost is unknown and in no llm_cost_usd_total (a variant's "
            "cost per query has no value while its own model gave any; fallback_ok ones are "
            "left out of it)",
            [*REQUEST_LABELS, "outcome"],
            registry=registry,
        )
        self.quality = Summary(
            "llm_quality_score",
            "Quality scores (0..1) callers reported through POST /v1/feedback, or the route's "
            "judge gave, by what served the answer: the mean is llm_quality_score_sum / "
            "llm_quality_score_count",
            REQUEST_LABELS,
            registry=registry,
        )
        self.judge_requests = Counter(
            "llm_judge_requests_total",
            "Calls to a route's judge model by kind (pointwise, pairwise) and outcome: ok; error "
            "(the judge failed); bad_reply (it answered, but no verdict could be read)",
            ["route", "judge", "kind", "outcome"],
            registry=registry,
        )
        self.judge_cost = Counter(
            "llm_judge_cost_usd_total",
            "USD spent on judge calls, from their tokens and the judge model's price",
            ["route", "judge"],
            registry=registry,
        )
        self.judge_dropped = Counter(
            "llm_judge_dropped_total",
            "Answers or pairs sampled for judging but not judged: queue_full (the judges are "
            "behind), budget (the route's judge spend for the hour is used up)",
            ["route", "kind", "reason"],
            registry=registry,
        )
        self.judge_pairwise = Counter(
            "llm_judge_pairwise_total",
            "Pairwise verdicts on primary (baseline) and shadow (candidate) answers to the same "
            "request, from the candidate's side: win, tie, loss",
            ["route", "baseline", "candidate", "result"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "llm_fallbacks_total",
            "Moves down a fallback chain, by the reason the previous model failed",
            ["route", "variant", "from_model", "to_model", "reason"],
            registry=registry,
        )
        self.downgrades = Counter(
            "llm_downgrades_total",
            "Low-criticality requests served by a cheaper model meeting their quality floor "
            "(canaryctl/gateway/downgrade.py), by the policy that fired: always, budget, hours",
            ["route", "from_model", "to_model", "reason"],
            registry=registry,
        )
        self.flag_errors = Counter(
            "llm_flag_evaluation_errors_total",
            "Flag evaluations that failed, so the route's default_model was served",
            ["route"],
            registry=registry,
        )

        self.spend_requests = Counter(
            "llm_spend_requests_total",
            "Requests that reached a model (cache hits and gateway refusals did not), by route, "
            "the model that answered, team and job (bounded: configured, heavy, or other)",
            SPEND_LABELS,
            registry=registry,
        )
        self.spend_tokens = Counter(
            "llm_spend_tokens_total",
            "Tokens of the requests in llm_spend_requests_total, by kind: prompt or completion",
            [*SPEND_LABELS, "kind"],
            registry=registry,
        )
        self.spend_cost = Counter(
            "llm_spend_cost_usd_total",
            "USD of the requests in llm_spend_requests_total (the same sum as llm_cost_usd_total)",
            SPEND_LABELS,
            registry=registry,
        )
        self.fallback_cost = Counter(
            "llm_fallback_cost_usd_total",
            "USD spent on answers a fallback model gave (the variant's own model had failed)",
            ["route", "model"],
            registry=registry,
        )
        self.redundant_requests = Counter(
            "llm_redundant_requests_total",
            "Requests identical to one answered within the spend window, by route and job",
            ["route", "llm_job"],
            registry=registry,
        )
        self.redundant_cost = Counter(
            "llm_redundant_cost_usd_total",
            "USD the requests in llm_redundant_requests_total cost",
            ["route", "llm_job"],
            registry=registry,
        )
        self.retry_requests = Counter(
            "llm_retry_requests_total",
            "Requests identical to one that failed within the spend window: the client's retries",
            ["route", "llm_job"],
            registry=registry,
        )
        self.retry_cost = Counter(
            "llm_retry_cost_usd_total",
            "USD the requests in llm_retry_requests_total cost",
            ["route", "llm_job"],
            registry=registry,
        )
        self.cache_saved = Counter(
            "llm_cache_saved_usd_total",
            "USD cache hits saved: the price of the cached answer's tokens at the model that "
            "gave it",
            ["route", "model"],
            registry=registry,
        )
        self.spend_started = Gauge(
            "llm_spend_start_time_seconds",
            "Unix time the spend counters started from zero: totals cover the time since",
            registry=registry,
        )
        self.fingerprints = Gauge(
            "llm_request_fingerprints",
            "Request fingerprints held to find repeats (at most the configured spend.fingerprints)",
            registry=registry,
        )
        self.fingerprints_evicted = Counter(
            "llm_request_fingerprints_evicted_total",
            "Fingerprints dropped younger than the window because the sketch was full: repeats "
            "of them go uncounted",
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

    def stream_timing(
        self, route: str, variant: str, model: str, provider: str, tier: str
    ) -> StreamTiming:
        """The streaming histograms for this label set (REQUEST_LABELS), bound on first use.
        The set is bounded like every per-request label set: routes, flag variations, models
        and the configured tiers."""
        key = (route, variant, model, provider, tier)
        timing = self._timings.get(key)
        if timing is None:
            timing = StreamTiming(
                self.time_to_first_token.labels(*key), self.time_per_output_token.labels(*key)
            )
            self._timings[key] = timing
        return timing

    def series(
        self, route: str, variant: str, model: str, provider: str, tier: str
    ) -> RequestSeries:
        """The per-request families for this label set, bound once (bounded like
        stream_timing's: routes, variations, models, configured tiers)."""
        key = (route, variant, model, provider, tier)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = RequestSeries(self, key)
        return series

    def attempt_timer(self, route: str, variant: str, model: str, provider: str) -> Any:
        """llm_upstream_duration_seconds' child for this label set (LABELS), bound once."""
        key = (route, variant, model, provider)
        child = self._attempts.get(key)
        if child is None:
            child = self._attempts[key] = self.upstream_duration.labels(*key)
        return child

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
        self.shadow_unpriced = Counter(
            "llm_shadow_unpriced_requests_total",
            "Shadow answers of a model with no price, by outcome: their cost is unknown and in "
            "no llm_shadow_cost_usd_total",
            [*REQUEST_LABELS, "outcome"],
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
