"""Recorded traffic for backtests: a gateway's request counters, generated, backfilled into a
real Prometheus by promtool (`tsdb create-blocks-from openmetrics`).

The noise follows benchmarks/detection.py's A/A model: about 50 requests/s with a daily swing,
a common error rate near 1% whose log drifts (mean-reverting here, so a day stays quiet) and
bursts 4x for 3% of minutes, both variants alike. Requests fall evenly into `buckets` user
buckets (the `bucket` label); the canary `new` serves `canary_share` of them; during an
incident the canary's own errors rise to `incident_rate`.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canaryctl.backtest.series import Grid, Key, SeriesHistory, aa_order

SLOT = 15.0
"""Seconds between samples by default: a scrape interval."""
RATE = 50.0
BASE_ERROR_RATE = 0.01
DRIFT, REVERSION = 0.1, 0.98
BURST_CHANCE, BURST_FACTOR = 0.03, 4.0
VARIANTS = ("old", "new")
OUTCOMES = ("ok", "error")


@dataclass(frozen=True)
class Recording:
    """Counts per slot: `counts[slot, variant, bucket, outcome]` (requests by outcome)."""

    start: float
    counts: np.ndarray
    slot: float = SLOT

    @property
    def slots(self) -> int:
        return self.counts.shape[0]

    @property
    def end(self) -> float:
        return self.start + self.slots * self.slot


def record(
    seed: int,
    start: float,
    minutes: int,
    *,
    buckets: int = 20,
    canary_share: float = 0.0,
    incident: tuple[float, float] | None = None,
    incident_rate: float = 0.3,
    slot: float = SLOT,
    phase: float = 0.0,
) -> Recording:
    """`minutes` of counts from `start`; the daily swing starts at `phase` (radians)."""
    rng = np.random.default_rng(seed)
    per_minute = int(60 / slot)
    slots = minutes * per_minute
    drift = 0.0
    counts = np.zeros((slots, len(VARIANTS), buckets, len(OUTCOMES)))
    shares = np.array([1 - canary_share, canary_share])
    for minute in range(minutes):
        drift = REVERSION * drift + rng.normal(0, DRIFT)
        common = min(0.2, BASE_ERROR_RATE * math.exp(drift))
        if rng.random() < BURST_CHANCE:
            common = min(0.2, common * BURST_FACTOR)
        for part in range(per_minute):
            index = minute * per_minute + part
            at = start + (index + 1) * slot
            # The daily swing runs from the recording's start, so a test's counts do not
            # depend on the hour it runs at.
            swing = 1 + 0.5 * math.sin(phase + 2 * math.pi * (at - start) / 86400)
            mean = RATE * slot * swing * shares[:, None] / buckets
            requests = rng.poisson(np.broadcast_to(mean, (len(VARIANTS), buckets)))
            rates = np.array([common, common])
            if incident is not None and incident[0] < at <= incident[1]:
                rates[1] = incident_rate
            errors = rng.binomial(requests, rates[:, None])
            counts[index, :, :, 0] = requests - errors
            counts[index, :, :, 1] = errors
    return Recording(start, counts, slot)


def openmetrics(recording: Recording) -> str:
    """The counters as OpenMetrics text, one sample per series and slot, cumulative; a series
    that never counted anything is left out, as a gateway never exports it."""
    lines = ["# TYPE llm_requests counter"]
    totals = np.cumsum(recording.counts, axis=0)
    _, variants, buckets, outcomes = recording.counts.shape
    times = [recording.start + (i + 1) * recording.slot for i in range(recording.slots)]
    for v in range(variants):
        for b in range(buckets):
            for o in range(outcomes):
                labels = (
                    f'route="bot",variant="{VARIANTS[v]}",outcome="{OUTCOMES[o]}",bucket="b{b}"'
                )
                series = totals[:, v, b, o]
                if series[-1] == 0:
                    continue
                lines.extend(
                    f"llm_requests_total{{{labels}}} {int(series[i])} {times[i]:.0f}"
                    for i in range(recording.slots)
                )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(promtool: str, recording: Recording, workdir: Path) -> Path:
    """A TSDB directory holding the recording, ready for Prometheus to serve."""
    source = workdir / "recorded.om"
    source.write_text(openmetrics(recording))
    data = workdir / "tsdb"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
    )
    return data


def in_memory(recording: Recording, start: float, step: float, *, aa: bool) -> SeriesHistory:
    """The same counts as a backtest's history, summed per step without Prometheus: what the
    simulation replays. A/A: the baseline `old` by bucket; else per variant."""
    per_step = int(step / recording.slot)
    offset = round((start - recording.start) / recording.slot)
    grid = Grid(start, start + ((recording.slots - offset) // per_step) * step, step)
    increments: dict[str, dict[Key, list[float]]] = {}
    for index in range(grid.points):
        last = offset + index * per_step
        window = recording.counts[max(last - per_step, 0) : last]
        if aa:
            groups = {f"b{b}": window[:, 0, b, :].sum(axis=0) for b in range(window.shape[2])}
        else:
            groups = {VARIANTS[v]: window[:, v, :, :].sum(axis=(0, 1)) for v in range(2)}
        for group, (ok, errors) in groups.items():
            rows = increments.setdefault(group, {})
            for ingredient, value in (("requests", ok + errors), ("errors", errors)):
                rows.setdefault((ingredient, None), [0.0] * grid.points)[index] = float(value)
    values = aa_order(increments) if aa else None
    return SeriesHistory(grid, increments, aa_values=values)
