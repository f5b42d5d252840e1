"""A rollout started at every start time of a history: decisions, false rollbacks, detection.

Pure: a spec and a History in, one Replay per start out, with what they add up to:

- on an A/A split every rollback is a false one: their rate among the rollouts that decided,
  with its two-sided 95% Clopper-Pearson interval (the beta quantiles, from scipy);
- with a known incident, the delay from its start (or from the rollout's, if later) to the
  rollback of each rollout that was running during it, and how many caught it at all.

Rollouts started an `every` apart overlap when they last longer than `every`, so they share
counts and are not independent trials: the interval then reads as a rough guide only.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canaryctl.backtest.replay import History, Replay, replay
from canaryctl.controller.step import Hold, plan
from canaryctl.runbook.rollout import RolloutSpec

__all__ = ["Sweep", "clopper_pearson", "nominal_seconds", "starts", "sweep"]

CONFIDENCE = 0.95


def nominal_seconds(spec: RolloutSpec) -> float:
    """How long the rollout lasts when every hold passes at once: the pauses, one interval
    for each implicit hold (and for an approval, taken at once)."""
    interval = spec.analysis.interval
    return sum(
        interval if item.seconds is None or item.step is None else max(item.seconds, interval)
        for item in plan(spec)
        if isinstance(item, Hold)
    )


def starts(spec: RolloutSpec, begin: float, end: float, every: float) -> list[float]:
    """Every `every` from `begin`, as long as the rollout fits before `end`."""
    last = end - nominal_seconds(spec)
    count = int((last - begin) // every) + 1 if last >= begin else 0
    return [begin + i * every for i in range(count)]


def clopper_pearson(successes: int, trials: int) -> tuple[float, float]:
    """The exact two-sided CONFIDENCE interval for a binomial rate."""
    from scipy.stats import beta  # only the sweep's summary needs scipy

    tail = (1 - CONFIDENCE) / 2
    lower = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    upper = (
        1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    )
    return lower, upper


@dataclass(frozen=True)
class Sweep:
    replays: tuple[Replay, ...]
    aa: bool
    incident: tuple[float, float] | None

    def counts(self) -> dict[str, int]:
        outcomes = [r.outcome for r in self.replays]
        return {o: outcomes.count(o) for o in ("rolled_back", "promoted", "undecided")}

    def false_rollbacks(self) -> dict[str, Any] | None:
        """On an A/A split: rollbacks among the rollouts that decided, with the interval."""
        if not self.aa:
            return None
        counts = self.counts()
        decided = counts["rolled_back"] + counts["promoted"]
        if decided == 0:
            return {"rolled_back": 0, "decided": 0, "rate": None, "lower": None, "upper": None}
        lower, upper = clopper_pearson(counts["rolled_back"], decided)
        return {
            "rolled_back": counts["rolled_back"],
            "decided": decided,
            "rate": counts["rolled_back"] / decided,
            "lower": lower,
            "upper": upper,
            "confidence": CONFIDENCE,
        }

    def detection(self) -> dict[str, Any] | None:
        """Per rollout running during the incident: caught (rolled back after it began) or
        not, and how long after max(incident start, rollout start)."""
        if self.incident is None:
            return None
        begin, end = self.incident
        rows = []
        for r in self.replays:
            last = r.decided_at if r.decided_at is not None else _last_look(r)
            if r.start >= end or last < begin:
                continue
            caught = r.rolled_back and r.decided_at is not None and r.decided_at >= begin
            since = max(begin, r.start)
            rows.append(
                {
                    "start": r.start,
                    "caught": caught,
                    "delay_seconds": r.decided_at - since if caught else None,
                    "outcome": r.outcome,
                }
            )
        delays = [row["delay_seconds"] for row in rows if row["caught"]]
        return {
            "from": begin,
            "to": end,
            "rollouts": len(rows),
            "caught": len(delays),
            "first_delay_seconds": delays[0] if delays else None,
            "median_delay_seconds": statistics.median(delays) if delays else None,
            "per_rollout": rows,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "aa" if self.aa else "ab",
            "rollouts": len(self.replays),
            "outcomes": self.counts(),
            "false_rollbacks": self.false_rollbacks(),
            "incident": self.detection(),
            "starts": [
                {
                    "start": r.start,
                    "outcome": r.outcome,
                    "decided_at": r.decided_at,
                    "after_seconds": None if r.decided_at is None else r.decided_at - r.start,
                    "analyses": len(r.analyses),
                    "reason": r.reason,
                }
                for r in self.replays
            ],
        }


def _last_look(r: Replay) -> float:
    return r.analyses[-1].at if r.analyses else r.start


def sweep(
    spec: RolloutSpec,
    history: History,
    start_times: Sequence[float],
    *,
    baseline: str,
    canary: str,
    until: float,
    aa: bool,
    incident: tuple[float, float] | None = None,
) -> Sweep:
    replays = tuple(
        replay(spec, history, at, baseline=baseline, canary=canary, until=until)
        for at in start_times
    )
    return Sweep(replays, aa, incident)
