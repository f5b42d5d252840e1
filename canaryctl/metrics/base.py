"""The metrics seam: per-variant counts over a window, and whether the backend answers.

Sources return counts, not verdicts: analysis needs the sample sizes to tell "no data" from
"good data", and the statistics of later methods need the raw counts. A variant with no traffic
in the window is simply absent, and `Observation.of` hands back an empty VariantStats for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from canaryctl.slo_metrics import HISTOGRAMS

__all__ = ["EMPTY", "Buckets", "MetricsSource", "Observation", "ShadowSource", "VariantStats"]

Buckets = tuple[tuple[float, float], ...]
"""A histogram: (upper bound, cumulative count) pairs, increasing, the last bound +inf."""


@dataclass(frozen=True)
class VariantStats:
    """What one variant (flag variation served) did in a window.

    `errors`, `fallbacks`, `rejected` and `filtered` count requests by the gateway's outcome
    (canaryctl.slo_metrics.OUTCOMES): the variant's model failed and the client got an error, its
    model failed and a fallback answered, the client's own mistake, the content filter answered.
    `latency_buckets` is the end-to-end duration histogram: (upper bound in seconds, cumulative
    count) pairs in increasing order, the last bound being +inf, as Prometheus keeps them.
    `ttft_buckets` and `tpot_buckets` are histograms of the same shape for streamed answers only:
    the time to first token, and the time per output token after it.
    `quality_sum` and `quality_count` are the quality scores (0..1) callers reported for the
    variant's answers: their sum and how many; fewer answers are scored than served.
    `unpriced` counts the answers whose model has no price: their cost is unknown, so it is in
    no `cost_usd`. `unpriced_fallbacks` are those of them a fallback model gave: the variant's
    cost per query leaves them out (it is judged on what its own model did), and has no value
    while any of the rest, its own model's, are unpriced.
    `pairs`, `pair_wins` and `pair_ties` are a judge's pairwise verdicts on the variant's shadow
    answers against the answers served (wins and ties from the variant's side).
    """

    requests: float = 0.0
    errors: float = 0.0
    fallbacks: float = 0.0
    latency_buckets: Buckets = ()
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    cost_usd: float = 0.0
    quality_sum: float = 0.0
    quality_count: float = 0.0
    rejected: float = 0.0
    filtered: float = 0.0
    pairs: float = 0.0
    pair_wins: float = 0.0
    pair_ties: float = 0.0
    ttft_buckets: Buckets = ()
    tpot_buckets: Buckets = ()
    unpriced: float = 0.0
    unpriced_fallbacks: float = 0.0

    @property
    def answered(self) -> float:
        """Requests the variant's own model answered well (outcome `ok`)."""
        return max(self.requests - self.errors - self.fallbacks - self.rejected - self.filtered, 0)

    @property
    def model_failures(self) -> float:
        """Requests the variant's own model failed, whether or not a fallback saved them."""
        return self.errors + self.fallbacks


EMPTY = VariantStats()


@dataclass(frozen=True)
class Observation:
    """Per-variant counts between `start` and `end` (epoch seconds).

    `slo_values` holds what the runbook's own PromQL SLOs measured: SLO name -> variant ->
    number; a variant is absent when its query returned nothing (no data).
    """

    start: float
    end: float
    variants: Mapping[str, VariantStats] = field(default_factory=dict)
    slo_values: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def of(self, variant: str) -> VariantStats:
        return self.variants.get(variant, EMPTY)

    def slo_value(self, slo: str, variant: str) -> float | None:
        return self.slo_values.get(slo, {}).get(variant)

    def to_dict(self) -> dict[str, Any]:
        """As strict JSON (the +inf bucket bound as "+Inf", as Prometheus writes it): the run
        journal keeps every analysis' counts, so a backtest can judge them again."""
        variants = {
            name: {
                **asdict(stats),
                **{h: [[_bound(le), n] for le, n in getattr(stats, h)] for h in HISTOGRAMS},
            }
            for name, stats in self.variants.items()
        }
        slo_values = {name: dict(values) for name, values in self.slo_values.items()}
        return {"start": self.start, "end": self.end, "variants": variants,
                "slo_values": slo_values}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observation:
        """The inverse of `to_dict`; KeyError, TypeError or ValueError on a damaged record."""
        known = {f.name for f in fields(VariantStats)}
        variants = {}
        for name, stats in data["variants"].items():
            counts = {key: float(value) for key, value in stats.items()
                      if key in known and key not in HISTOGRAMS}  # fmt: skip
            histograms = {
                h: tuple((float(le), float(n)) for le, n in stats.get(h, ())) for h in HISTOGRAMS
            }
            variants[str(name)] = VariantStats(**counts, **histograms)
        slo_values = {
            str(slo): {str(v): float(x) for v, x in values.items()}
            for slo, values in data.get("slo_values", {}).items()
        }
        return cls(float(data["start"]), float(data["end"]), variants, slo_values)


def _bound(le: float) -> float | str:
    return "+Inf" if math.isinf(le) else le


@runtime_checkable
class MetricsSource(Protocol):
    def check(self) -> None:
        """Raise MetricsBackendError unless the backend answers with the metrics we need."""
        ...

    def recent_requests(self, window: float) -> Mapping[str, float]:
        """Requests per variant lately, under the source's route and selector: does the
        baseline have traffic before anything moves? Prometheus counts the last `window`
        seconds; a scrape, whose counters run from each gateway's start, counts since then."""
        ...

    def observe(self, since: float) -> Observation:
        """Counts per variant from `since` (epoch seconds) until now.

        Raises MetricsBackendError when the backend cannot be read; that is an error, distinct
        from a failed SLO. Sources that sample (scrape) record a sample on every call to
        `check` and `observe`, so the runner calls `check` when a step begins.
        """
        ...


@runtime_checkable
class ShadowSource(Protocol):
    """A metrics source that can also read a shadow step's traffic."""

    def observe_shadow(self, since: float, *, baseline: str, candidate: str) -> Observation:
        """From `since` until now, over one window: `baseline`'s user-facing counts, and
        `candidate`'s shadow counts (the shadow families, `variant` = the candidate) with the
        judge's pairwise verdicts on them (`pairs`, `pair_wins`, `pair_ties`).

        Raises MetricsBackendError like `observe`.
        """
        ...
