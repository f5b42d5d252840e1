"""History as per-step increments of each variant's counts, as range queries give them. Pure.

Each point t_i of the grid holds the increase of every ingredient over (t_i - step, t_i], so
the counts of any window (since, now] are a difference of running sums: a week of one-minute
points answers thousands of replayed analyses without summing it again.

Two ways to get two arms:

- A/B: the baseline and the canary as the variant label names them, on a route where both
  served traffic (an A/B split, a past rollout). The canary's share is whatever it was then:
  the runbook's weights only set the schedule.
- A/A: the baseline alone, split by another label (a user bucket, a replica): at a weight of w%
  the canary arm is the first round(w% of the n values) in a fixed order (by CRC-32 of the
  value, at least one and at most n - 1), the baseline arm the rest. Both arms serve the same
  model, so every rollback of this split is a false one.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from canaryctl.metrics.base import Observation
from canaryctl.metrics.series import VariantTotals

__all__ = ["A", "B", "Grid", "SeriesHistory", "aa_order"]

A, B = "a", "b"
"""The arms' names in an A/A split: `a` plays the baseline, `b` the canary."""

Key = tuple[str, float | None]
"""An ingredient, with the bucket bound for a histogram (slo_metrics.HISTOGRAMS)."""


@dataclass(frozen=True)
class Grid:
    """Points `start`, `start + step`, ... up to `end`."""

    start: float
    end: float
    step: float

    @property
    def points(self) -> int:
        return math.floor((self.end - self.start) / self.step + 1e-9) + 1

    def index(self, at: float) -> int | None:
        """The point at `at` (a range query's timestamp), None if off the grid."""
        position = (at - self.start) / self.step
        nearest = round(position)
        if abs(position - nearest) > 1e-6 or not 0 <= nearest < self.points:
            return None
        return nearest

    def count_to(self, at: float) -> int:
        """How many points are at or before `at`."""
        return min(max(math.floor((at - self.start) / self.step + 1e-9) + 1, 0), self.points)


def aa_order(values: Iterable[str]) -> list[str]:
    """The split label's values in the fixed order the canary arm takes them from."""
    return sorted(set(values), key=lambda v: (zlib.crc32(v.encode()), v))


class SeriesHistory:
    """Counts per group and point; `groups` are variants (A/B) or split-label values (A/A).

    `increments[group][(ingredient, le)]` is a list of one increment per grid point. With
    `aa_values` (the split label's values, in aa_order), the arms are built per weight from
    those groups; else the groups are the variants themselves.
    """

    def __init__(
        self,
        grid: Grid,
        increments: Mapping[str, Mapping[Key, Sequence[float]]],
        *,
        aa_values: Sequence[str] | None = None,
    ) -> None:
        self.grid = grid
        self._aa = list(aa_values) if aa_values is not None else None
        self._groups = {
            group: {key: [0.0, *accumulate(values)] for key, values in rows.items()}
            for group, rows in increments.items()
        }
        self._arms: dict[float, dict[str, dict[Key, list[float]]]] = {}

    def weight_set(self, percent: float, now: float) -> float | None:
        return now if now <= self.grid.end else None

    def observe(self, since: float, now: float, percent: float) -> Observation | str:
        if now > self.grid.end:
            return "the history ends before this analysis"
        begin, end = self.grid.count_to(since), self.grid.count_to(now)
        variants = {}
        for name, sums in self._sums(percent).items():
            totals = VariantTotals()
            for (ingredient, le), running in sums.items():
                delta = running[end] - running[begin]
                labels = {} if le is None else {"le": _le(le)}
                totals.add_ingredient(ingredient, labels, delta)
            if totals.seen:
                variants[name] = totals.stats()
        return Observation(since, now, variants)

    def _sums(self, percent: float) -> Mapping[str, Mapping[Key, list[float]]]:
        if self._aa is None:
            return self._groups
        if percent not in self._arms:
            n = len(self._aa)
            taken = min(max(round(n * percent / 100), 1), n - 1)
            arms = {B: self._aa[:taken], A: self._aa[taken:]}
            self._arms[percent] = {arm: self._add(groups) for arm, groups in arms.items()}
        return self._arms[percent]

    def _add(self, groups: Sequence[str]) -> dict[Key, list[float]]:
        keys = {key for group in groups for key in self._groups.get(group, {})}
        added: dict[Key, list[float]] = {}
        for key in keys:
            columns = [self._groups[g][key] for g in groups if key in self._groups.get(g, {})]
            added[key] = [sum(column) for column in zip(*columns, strict=True)]
        return added


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)
