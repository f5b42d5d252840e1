"""Read a backtest's history from Prometheus: the runbook's own profile queries, as range queries.

Each profile query the runbook's SLOs need is asked once over the whole range, with
`increase(...[STEP])` evaluated every STEP: one point per step holding that step's increase, so
a window's counts are a sum of points (backtest/series.py). A/A splits ask for the baseline's
series only, grouped by the split label as well.

Queries are bounded before any is sent: Prometheus refuses a range query of more than 11,000
points (its fixed limit per series), and the analysis interval must be a whole number of steps,
or some analyses would see no new counts. Both are the user's to fix: exit 2, saying how.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

from canaryctl.backtest.series import A, B, Grid, Key, SeriesHistory, aa_order
from canaryctl.errors import InvalidInput, MetricsBackendError
from canaryctl.metrics.factory import metrics_source_for
from canaryctl.metrics.prometheus import PrometheusMetricsSource, promql_matchers
from canaryctl.redact import redact_url
from canaryctl.runbook.promql import render
from canaryctl.runbook.rollout import PrometheusMetricsSpec, RolloutSpec
from canaryctl.slo_metrics import HISTOGRAMS

__all__ = ["MAX_POINTS", "read_history"]

MAX_POINTS = 11_000
"""Points Prometheus returns at most per series of a range query (its default, not settable)."""

_BY = re.compile(r"\bby\s*\(")


def _grid(spec: RolloutSpec, start: float, end: float, step: float) -> Grid:
    if end <= start:
        raise InvalidInput("--to must be after --from")
    if step < 1 or step != math.floor(step):
        raise InvalidInput(f"--step: {step:g}s; give whole seconds, at least 1s")
    grid = Grid(start, end, step)
    if grid.points > MAX_POINTS:
        raise InvalidInput(
            f"--from..--to at --step {step:g}s is {grid.points:,} points per query; Prometheus "
            f"returns at most {MAX_POINTS:,}: use a --step of at least "
            f"{math.ceil((end - start) / (MAX_POINTS - 1)):,}s or a shorter range"
        )
    multiple = spec.analysis.interval / step
    if multiple < 1 - 1e-9 or not math.isclose(multiple, round(multiple), rel_tol=1e-9):
        raise InvalidInput(
            f"--step: the runbook's analysis interval ({spec.analysis.interval:g}s) is not a "
            f"whole number of {step:g}s steps; give a --step that divides it"
        )
    return grid


def read_history(
    spec: RolloutSpec,
    url: str,
    *,
    start: float,
    end: float,
    step: float,
    aa_split: str | None,
) -> tuple[SeriesHistory, str, str]:
    """The history from `start` to `end`, and the arms' names (baseline, canary) in it."""
    for index, slo in enumerate(spec.slos):
        if slo.query is not None:
            raise InvalidInput(
                f"spec.slos[{index}]: '{slo.subject}' is the runbook's own PromQL, which a "
                "backtest does not replay; backtest a copy of the runbook without it"
            )
    grid = _grid(spec, start, end, step)
    metrics = spec.metrics
    if isinstance(metrics, PrometheusMetricsSpec):
        metrics = metrics.model_copy(update={"url": url})
    else:
        metrics = PrometheusMetricsSpec(provider="prometheus", url=url, route=metrics.route)
    baseline, canary = spec.flag.baseline, spec.flag.canary
    source = metrics_source_for(metrics, slos=spec.slos, baseline=baseline, canary=canary)
    assert isinstance(source, PrometheusMetricsSource)
    increments: dict[str, dict[Key, list[float]]] = defaultdict(dict)
    for query in source.queries:
        label = source.profile.label_of(query)
        labels = dict(metrics.labels)
        if aa_split is not None:
            labels[label] = source.name_of(baseline, label)
        promql = render(query.promql, {"window": f"{step:g}s", "selector": promql_matchers(labels)})
        if aa_split is not None:
            if not _BY.search(promql):
                raise InvalidInput(
                    f"--aa-split: the profile's query {query.promql!r} has no `by (...)` "
                    "to group it by the split label"
                )
            promql = _BY.sub(f"by ({aa_split}, ", promql, count=1)
        series = source.query_range(promql, grid.start, grid.end, grid.step)
        variation_of = {source.name_of(v, label): v for v in (baseline, canary)}
        try:
            for row in series:
                group = _group(row, label, variation_of, aa_split)
                if group is None:
                    continue
                for ingredient, wanted in query.yields.items():
                    if all(row["metric"].get(n) == v for n, v in wanted.items()):
                        key = _key(ingredient, row["metric"])
                        if key is not None:
                            _add(increments[group], key, row, grid)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise MetricsBackendError(
                f"Prometheus at {source.shown} answered {promql!r} with an unexpected result "
                f"shape ({type(exc).__name__}: {exc})"
            ) from exc
    if aa_split is None:
        for variant in (baseline, canary):
            if not any(any(column) for column in increments.get(variant, {}).values()):
                raise InvalidInput(
                    f"no requests for '{variant}' on {_where(metrics)} between --from and --to: "
                    "check the runbook's flag variations, route and selector (and "
                    "metrics.variants), or use --aa-split for the baseline alone"
                )
        return SeriesHistory(grid, increments), baseline, canary
    values = aa_order(increments)
    if len(values) < 2:
        raise InvalidInput(
            f"--aa-split {aa_split}: the baseline '{baseline}' has {len(values)} value(s) of "
            f"{aa_split} in that range; an A/A split needs at least 2"
        )
    return SeriesHistory(grid, increments, aa_values=values), A, B


def _where(metrics: PrometheusMetricsSpec) -> str:
    labels = promql_matchers(metrics.labels)
    return f"{{{labels}}} in Prometheus at {redact_url(metrics.url)}"


def _group(
    row: dict[str, Any], label: str, variation_of: dict[str, str], aa_split: str | None
) -> str | None:
    labels = row.get("metric", {})
    if aa_split is not None:
        return labels.get(aa_split) or None
    return variation_of.get(labels.get(label, ""))


def _key(ingredient: str, labels: dict[str, str]) -> Key | None:
    if ingredient not in HISTOGRAMS:
        return (ingredient, None)
    if "le" not in labels:
        return None
    return (ingredient, float(labels["le"]))


def _add(rows: dict[Key, list[float]], key: Key, row: dict[str, Any], grid: Grid) -> None:
    column = rows.setdefault(key, [0.0] * grid.points)
    for at, value in row.get("values", ()):
        index = grid.index(float(at))
        number = float(value)
        if index is not None and not math.isnan(number):
            column[index] += number
