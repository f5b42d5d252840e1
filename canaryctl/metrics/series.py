"""The gateway's counters and how their increases add up per variant.

The scrape source reads the gateway's series by name (`add`); the Prometheus source gets
the same ingredients from a metric profile's queries (`add_ingredient`), whatever the gateway.
Models and providers are summed per variant: analysis judges the variation served, and the
gateway's `outcome` already says what the variation's own model did (a fallback's rescue is
`fallback_ok`, a failure of that model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from canaryctl.metrics.base import VariantStats
from canaryctl.slo_metrics import HISTOGRAMS, OUTCOMES

__all__ = [
    "COST",
    "DURATION_BUCKET",
    "PAIRWISE",
    "QUALITY_COUNT",
    "QUALITY_SUM",
    "REQUESTS",
    "SERIES",
    "SHADOW_SERIES",
    "TOKENS",
    "TPOT_BUCKET",
    "TTFT_BUCKET",
    "UNPRICED",
    "VariantTotals",
    "by_variant",
]

REQUESTS = "llm_requests_total"
DURATION_BUCKET = "llm_request_duration_seconds_bucket"
TOKENS = "llm_tokens_total"
COST = "llm_cost_usd_total"
UNPRICED = "llm_unpriced_requests_total"
"""Answers of a model with no price, by outcome: their cost is unknown, and in no
llm_cost_usd_total; those under `fallback_ok` a fallback model gave."""
QUALITY_SUM = "llm_quality_score_sum"
QUALITY_COUNT = "llm_quality_score_count"
TTFT_BUCKET = "llm_time_to_first_token_seconds_bucket"
TPOT_BUCKET = "llm_time_per_output_token_seconds_bucket"
_HISTOGRAM_OF = {
    DURATION_BUCKET: "latency_buckets",
    TTFT_BUCKET: "ttft_buckets",
    TPOT_BUCKET: "tpot_buckets",
}
"""Each bucket series and the histogram ingredient it fills."""
SERIES = frozenset({REQUESTS, TOKENS, COST, UNPRICED, QUALITY_SUM, QUALITY_COUNT, *_HISTOGRAM_OF})

SHADOW_SERIES = {
    "llm_shadow_requests_total": REQUESTS,
    "llm_shadow_request_duration_seconds_bucket": DURATION_BUCKET,
    "llm_shadow_tokens_total": TOKENS,
    "llm_shadow_cost_usd_total": COST,
    "llm_shadow_unpriced_requests_total": UNPRICED,
    "llm_shadow_quality_score_sum": QUALITY_SUM,
    "llm_shadow_quality_score_count": QUALITY_COUNT,
}
"""The gateway's shadow families, each with the user-facing series it mirrors: the same labels,
`variant` being the model the shadow call stood in for, counted apart so that shadow calls
never touch the user-facing metrics."""
PAIRWISE = "llm_judge_pairwise_total"
"""A judge's pairwise verdicts on shadow pairs: {route, baseline, candidate, result}, `result`
(win, tie, loss) from the candidate's side; read per `candidate`."""


@dataclass
class VariantTotals:
    """One variant's increases in a window; `seen` once any increase is above zero."""

    requests: float = 0.0
    errors: float = 0.0
    fallbacks: float = 0.0
    rejected: float = 0.0
    filtered: float = 0.0
    histograms: dict[str, dict[float, float]] = field(default_factory=dict)
    """Histogram ingredient (slo_metrics.HISTOGRAMS) -> `le` bound -> count."""
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    cost_usd: float = 0.0
    unpriced: float = 0.0
    unpriced_fallbacks: float = 0.0
    quality_sum: float = 0.0
    quality_count: float = 0.0
    pairs: float = 0.0
    pair_wins: float = 0.0
    pair_ties: float = 0.0
    seen: bool = False

    def add(self, name: str, labels: Mapping[str, str], delta: float) -> None:
        """The increase of one of the gateway's series (SERIES), as scrape reads them."""
        if name == REQUESTS:
            self.add_ingredient("requests", labels, delta)
            counted = OUTCOMES.get(labels.get("outcome", ""))
            if counted is not None:
                self.add_ingredient(counted, labels, delta)
        elif name in _HISTOGRAM_OF:
            self.add_ingredient(_HISTOGRAM_OF[name], {"le": "+Inf", **labels}, delta)
        elif name == TOKENS:
            kind = labels.get("kind")
            if kind in ("prompt", "completion"):
                self.add_ingredient(f"{kind}_tokens", labels, delta)
        elif name == COST:
            self.add_ingredient("cost_usd", labels, delta)
        elif name == UNPRICED:
            self.add_ingredient("unpriced", labels, delta)
            if labels.get("outcome") == "fallback_ok":
                self.add_ingredient("unpriced_fallbacks", labels, delta)
        elif name == QUALITY_SUM:
            self.add_ingredient("quality_sum", labels, delta)
        elif name == QUALITY_COUNT:
            self.add_ingredient("quality_count", labels, delta)
        elif name == PAIRWISE:
            self.add_ingredient("pairs", labels, delta)
            result = labels.get("result")
            if result in ("win", "tie"):
                self.add_ingredient(f"pair_{result}s", labels, delta)

    def add_ingredient(self, ingredient: str, labels: Mapping[str, str], delta: float) -> None:
        """Add to one ingredient (slo_metrics.INGREDIENTS, each a field of this class but the
        histograms, kept per `le` bound); a bucket row without `le` is not a bucket."""
        if ingredient in HISTOGRAMS:
            if "le" not in labels:
                return
            # Zero deltas are kept too: every bucket bound must be present for the quantile.
            le = float(labels["le"])
            buckets = self.histograms.setdefault(ingredient, {})
            buckets[le] = buckets.get(le, 0.0) + delta
        else:
            setattr(self, ingredient, getattr(self, ingredient) + delta)
        self.seen = self.seen or delta > 0

    def stats(self) -> VariantStats:
        return VariantStats(
            requests=self.requests,
            errors=self.errors,
            fallbacks=self.fallbacks,
            rejected=self.rejected,
            filtered=self.filtered,
            **{h: tuple(sorted(b.items())) for h, b in self.histograms.items()},
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd,
            unpriced=self.unpriced,
            unpriced_fallbacks=self.unpriced_fallbacks,
            quality_sum=self.quality_sum,
            quality_count=self.quality_count,
            pairs=self.pairs,
            pair_wins=self.pair_wins,
            pair_ties=self.pair_ties,
        )


def by_variant(totals: Mapping[str, VariantTotals]) -> dict[str, VariantStats]:
    """The variants that did something in the window; the rest are absent (no data)."""
    return {variant: t.stats() for variant, t in totals.items() if t.seen}
