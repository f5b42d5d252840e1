"""The SLO metrics and the counts they rest on: the one list runbooks, profiles, sources and
analysis all read, so a metric is added or changed here and nowhere else.

The gateway counts each request under one outcome (OUTCOMES), judged by what the variant's own
model did; a metrics source adds the counts up per variant into ingredients (INGREDIENTS, the
fields of canaryctl.metrics.VariantStats); each SLO metric is one formula over ingredients. Runbook
validation takes the metric names and which way is worse from here, metric profiles the
ingredients, canaryctl.metrics.measures the values and the sequential analysis its tests.

Rates leave the client's own mistakes (`rejected`) out of their denominator, except
`rejected_rate` itself: a wrong request says nothing about the model, and a canary that rejects
prompts the baseline takes (a smaller context window) shows as a higher `rejected_rate`.
This module imports nothing of canaryctl, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from canaryctl.metrics.base import VariantStats

__all__ = [
    "EVEN",
    "GUARD_READS",
    "HISTOGRAMS",
    "INGREDIENTS",
    "OUTCOMES",
    "SLO_METRICS",
    "Mean",
    "Metric",
    "Quantile",
    "Rate",
]

OUTCOMES: dict[str, str | None] = {
    "ok": None,
    "error": "errors",
    "fallback_ok": "fallbacks",
    "filtered": "filtered",
    "rejected": "rejected",
}
"""The gateway's `outcome` label values and the ingredient each adds to (every one adds to
`requests`): `ok` a well-formed answer from the variant's model; `error` its model failed and
the client got an error; `fallback_ok` its model failed and a fallback answered; `filtered` the
provider's content filter answered; `rejected` the client's own fault (400, 413, 422)."""

INGREDIENTS: tuple[str, ...] = (
    "requests",
    "errors",
    "fallbacks",
    "rejected",
    "filtered",
    "latency_buckets",
    "ttft_buckets",
    "tpot_buckets",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "unpriced",
    "unpriced_fallbacks",
    "quality_sum",
    "quality_count",
    "pairs",
    "pair_wins",
    "pair_ties",
)
"""The counts a metric profile may yield, per variant: each is a field of VariantStats. The
`pair_*` counts are a judge's pairwise verdicts on shadow traffic (the candidate's answer against
the served one), kept with the candidate. `unpriced` counts the answers whose cost is unknown
(their model has no price): they add nothing to `cost_usd`. `unpriced_fallbacks` are those of
them a fallback model gave (outcome `fallback_ok`)."""

HISTOGRAMS: tuple[str, ...] = ("latency_buckets", "ttft_buckets", "tpot_buckets")
"""The ingredients that are histograms, kept per `le` bound: end-to-end latency, and for
streamed answers the time to first token and the time per output token after it."""

Count = Callable[["VariantStats"], float]


@dataclass(frozen=True)
class Rate:
    """The share of `trials` that are `events`."""

    events: Count
    trials: Count


@dataclass(frozen=True)
class Quantile:
    """A quantile of a histogram: `histogram` names its ingredient (one of HISTOGRAMS)."""

    q: float
    histogram: str = "latency_buckets"
    observations: Count | None = None
    """What the quantile rests on, for the min_requests floor, when not every request is
    observed (only streamed answers have a first token); None: the requests."""


@dataclass(frozen=True)
class Mean:
    """`total` per `count`: per query (requests) or per scored answer (quality). A total can
    be partly unknown (a cost, where some answers had no price): `unknown` counts the parts
    missing from it, and while there are any the mean has no value, since a partial sum read
    as the whole would be an estimate too low by an unknown amount."""

    total: Count
    count: Count
    unknown: Count | None = None


@dataclass(frozen=True)
class Metric:
    """One SLO metric: its formula, the ingredients a profile must yield for it (`needs`) and
    those read too when a profile yields them (`optional`), and which way is worse."""

    name: str
    formula: Rate | Quantile | Mean
    needs: frozenset[str]
    help: str
    optional: frozenset[str] = frozenset()
    higher_is_better: bool = False
    paired: bool = False
    """The candidate judged against the baseline answer for answer (a pairwise judge): the
    baseline's own value is EVEN by definition, so `compare: baseline` bounds the candidate
    against EVEN, and it can be judged only where pairs exist (a shadow step)."""
    streamed: bool = False
    """Measured on streamed answers only, so never on shadow calls, which are not streamed."""

    @property
    def reads(self) -> frozenset[str]:
        return self.needs | self.optional


def _judged(s: VariantStats) -> float:
    """Requests the model is answerable for: all but the client's own mistakes."""
    return s.requests - s.rejected


def _priced(s: VariantStats) -> float:
    """The requests a cost per query is taken over: all but the answers a fallback model with
    no price gave (unknown, and not the variant's own model's doing)."""
    return s.requests - s.unpriced_fallbacks


def _own_unpriced(s: VariantStats) -> float:
    """The variant's own model's answers with no price: while there are any, its cost is
    unknown."""
    return s.unpriced - s.unpriced_fallbacks


_OUTCOME_COUNTS = frozenset({"requests", "errors", "fallbacks"})
_NOT_REJECTED = frozenset({"rejected"})
_LATENCY = frozenset({"latency_buckets"})


def _metrics(*metrics: Metric) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def _observed(histogram: str) -> Count:
    """A histogram's observations: its +Inf bucket's cumulative count."""
    return lambda s: buckets[-1][1] if (buckets := getattr(s, histogram)) else 0.0


def _streamed(prefix: str, histogram: str, what: str) -> tuple[Metric, ...]:
    """p50, p90, p95 and p99 of a streaming histogram, named like the latency percentiles."""
    return tuple(
        Metric(
            f"{prefix}_p{q}_seconds",
            Quantile(q / 100, histogram, _observed(histogram)),
            frozenset({histogram}),
            f"{'median' if q == 50 else f'{q}th percentile'} {what}, streamed answers only; "
            "min_requests counts the answers observed",
            streamed=True,
        )
        for q in (50, 90, 95, 99)
    )


SLO_METRICS: dict[str, Metric] = _metrics(
    Metric(
        "error_rate",
        Rate(lambda s: s.errors + s.fallbacks, _judged),
        _OUTCOME_COUNTS,
        "share of requests the variant's own model failed (error or fallback_ok), "
        "client mistakes (rejected) left out",
        _NOT_REJECTED,
    ),
    Metric(
        "served_error_rate",
        Rate(lambda s: s.errors, _judged),
        frozenset({"requests", "errors"}),
        "share of requests whose client got an error (after fallback), rejected left out",
        _NOT_REJECTED,
    ),
    Metric(
        "fallback_rate",
        Rate(lambda s: s.fallbacks, _judged),
        frozenset({"requests", "fallbacks"}),
        "share of requests a fallback model answered, rejected left out",
        _NOT_REJECTED,
    ),
    Metric(
        "rejected_rate",
        Rate(lambda s: s.rejected, lambda s: s.requests),
        frozenset({"requests", "rejected"}),
        "share of requests refused as the client's fault (400, 413, 422): compare it with "
        "the baseline to catch a canary that refuses what the baseline takes",
    ),
    Metric(
        "filtered_rate",
        Rate(lambda s: s.filtered, _judged),
        frozenset({"requests", "filtered"}),
        "share of requests the provider's content filter answered, rejected left out",
        _NOT_REJECTED,
    ),
    Metric("latency_p50_seconds", Quantile(0.50), _LATENCY, "median end-to-end latency"),
    Metric("latency_p90_seconds", Quantile(0.90), _LATENCY, "90th percentile latency"),
    Metric("latency_p95_seconds", Quantile(0.95), _LATENCY, "95th percentile latency"),
    Metric("latency_p99_seconds", Quantile(0.99), _LATENCY, "99th percentile latency"),
    *_streamed("ttft", "ttft_buckets", "time to first token (what a chat user waits for)"),
    *_streamed("tpot", "tpot_buckets", "time per output token after the first"),
    Metric(
        "cost_per_query_usd",
        Mean(lambda s: s.cost_usd, _priced, _own_unpriced),
        frozenset({"requests", "cost_usd"}),
        "USD per request; no value while the variant's own model answered with no price (its "
        "cost is unknown, not 0); answers a fallback with no price gave are left out",
        frozenset({"unpriced", "unpriced_fallbacks"}),
    ),
    Metric(
        "tokens_per_query",
        Mean(lambda s: s.prompt_tokens + s.completion_tokens, lambda s: s.requests),
        frozenset({"requests", "prompt_tokens", "completion_tokens"}),
        "prompt plus completion tokens per request",
    ),
    Metric(
        "quality_score",
        Mean(lambda s: s.quality_sum, lambda s: s.quality_count),
        frozenset({"quality_sum", "quality_count"}),
        "mean quality score (0..1) callers reported; lower is worse",
        higher_is_better=True,
    ),
    Metric(
        "win_rate",
        Mean(lambda s: s.pair_wins + s.pair_ties / 2, lambda s: s.pairs),
        frozenset({"pairs", "pair_wins", "pair_ties"}),
        "share of judged shadow pairs the candidate won, ties counting half: (wins + ties/2) / "
        "pairs; 0.5 is even with the baseline, lower is worse",
        higher_is_better=True,
        paired=True,
    ),
)

EVEN = 0.5
"""A paired metric's value for two answers judged alike: the baseline against itself."""

GUARD_READS = frozenset({"requests", "errors", "fallbacks", "rejected", "filtered"})
"""What the built-in check that a canary's model answers at all reads (canaryctl.analysis.guard),
whatever the runbook's SLOs: always asked of a source whose profile yields it."""
