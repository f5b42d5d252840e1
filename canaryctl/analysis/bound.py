"""Is the canary's rate beyond an absolute bound (an error budget, a share of slow requests)?

Two one-sided tests at the bound b, each at level alpha/m, so that the bound is judged against a
confidence sequence rather than a point estimate:

- beyond: "rate <= b" rejected means the confidence sequence lies wholly above b, and the check
  fails. It bets on each interval's rate X = events / trials (betting.py): under "rate <= b"
  X has mean at most b given the past and the trials, however the events cluster inside the
  interval, so a burst cannot roll back a canary that is within its budget more often than alpha.
- within: "rate >= b" rejected means the confidence sequence lies wholly below b, and the check
  passes. It is the mixture, over alternatives p = b / g, of the per-observation likelihood
  ratios of p against b, (p/b)^S ((1 - p)/(1 - b))^(n - S) for S events in n trials: a
  nonnegative supermartingale under any rate >= b when observations are independent (for any
  values in [0, 1], by convexity, so sums of scores count too). A bet per interval could gain at
  most 1/(1 - b) an interval, far too little to ever show a 2% error budget met, so this side
  counts requests; the price is that bursts make it over-confident: they can let a canary pass
  sooner, never roll it back.

In between, neither is rejected and the check is inconclusive, so a pause extends rather than
guesses. A bound is an "at most"; an "at least" (a quality minimum) is the same test on 1 - x.

`BoundTest.near` is the test for a judge's pairwise verdicts (a win rate against even, whose
bound sits near the middle of [0, 1]). Each pair is a request of its own, judged on its own, so
both sides count observations: the beyond side too is a mixture of per-observation likelihood
ratios, over alternatives a little above the bound, and the within side's alternatives sit a
little under it (NEAR_ALTERNATIVES). Bets per interval would gain at most 1/b an interval, and
alternatives a few times under b never gain on a value a few hundredths under it. The price is
the within side's, on both sides: verdicts that come in bursts (a judge failing for a while
into losses) would make the test over-confident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from canaryctl.analysis.betting import SCALES, grow, mixture

__all__ = ["NEAR_ALTERNATIVES", "WITHIN_ALTERNATIVES", "BoundTest"]

WITHIN_ALTERNATIVES = (1.5, 2.0, 4.0, 8.0)
"""The within side's alternatives: the rate at b / g, equally weighted."""
NEAR_ALTERNATIVES = (1.05, 1.1, 1.2, 1.5)
"""`near`'s within alternatives, the rate at b / g: for a bound near the middle of [0, 1] (a win
rate's 0.45 is a shortfall of 0.55), where the value to show within sits a few hundredths under
the bound, not a few times under it."""
NEAR_BEYOND = (0.05, 0.1, 0.2, 0.4)
"""`near`'s beyond alternatives: the rate at b + h (1 - b), equally weighted."""


@dataclass(frozen=True)
class BoundTest:
    """Evidence about a rate against `bound` (0 < bound < 1): `beyond` is the log wealth per bet
    scale against "rate <= bound", `within` the log likelihood ratio per alternative against
    "rate >= bound"."""

    bound: float
    beyond: tuple[float, ...] = (0.0,) * len(SCALES)
    within: tuple[float, ...] = (0.0,) * len(WITHIN_ALTERNATIVES)
    trials: float = 0.0
    events: float = 0.0
    alternatives: tuple[float, ...] = WITHIN_ALTERNATIVES
    above: tuple[float, ...] = ()
    """`near`'s beyond alternatives (NEAR_BEYOND); empty: the beyond side bets per interval."""

    @classmethod
    def near(cls, bound: float) -> BoundTest:
        """The test for pairwise verdicts, per observation on both sides (module docstring)."""
        return cls(
            bound,
            beyond=(0.0,) * len(NEAR_BEYOND),
            within=(0.0,) * len(NEAR_ALTERNATIVES),
            alternatives=NEAR_ALTERNATIVES,
            above=NEAR_BEYOND,
        )

    def observe(
        self, trials: float, events: float, events_within: float | None = None
    ) -> BoundTest:
        """Add one interval: `events` of `trials` (clamped into [0, trials]). `events_within`,
        when given, are the events the within side counts (latency: requests slower than the
        bucket edge at or below the bound, where `events` are those past the edge at or above)."""
        if trials <= 0:
            return self
        events = min(max(events, 0.0), trials)
        counted = events if events_within is None else min(max(events_within, 0.0), trials)
        b = self.bound
        if self.above:
            beyond = tuple(
                w + events * math.log(p / b) + (trials - events) * math.log((1 - p) / (1 - b))
                for w, p in zip(self.beyond, (b + h * (1 - b) for h in self.above), strict=True)
            )
        else:
            beyond = grow(self.beyond, events / trials, trials, self.bound)
        within = tuple(
            w + counted * math.log(1 / g) + (trials - counted) * math.log((1 - b / g) / (1 - b))
            for w, g in zip(self.within, self.alternatives, strict=True)
        )
        return replace(
            self,
            beyond=beyond,
            within=within,
            trials=self.trials + trials,
            events=self.events + events,
        )

    def e_value_beyond(self) -> float:
        """Evidence against "rate <= bound": the check fails at m / alpha."""
        return mixture(self.beyond)

    def e_value_within(self) -> float:
        """Evidence against "rate >= bound": the check passes at m / alpha."""
        return mixture(self.within)

    def estimate(self) -> float | None:
        return self.events / self.trials if self.trials > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bound": self.bound,
            "beyond": list(self.beyond),
            "within": list(self.within),
            "trials": self.trials,
            "events": self.events,
            **({} if self.alternatives == WITHIN_ALTERNATIVES else
               {"alternatives": list(self.alternatives), "above": list(self.above)}),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoundTest:
        return cls(
            bound=data["bound"],
            beyond=tuple(data["beyond"]),
            within=tuple(data["within"]),
            trials=data["trials"],
            events=data["events"],
            alternatives=tuple(data.get("alternatives", WITHIN_ALTERNATIVES)),
            above=tuple(data.get("above", ())),
        )
