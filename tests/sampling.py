"""Bounds on what a lab's random draws can measure, for tests that check a measured share.

A lab answers right (or fails) at random, so a share measured on a window of its traffic is a
draw: a fixed band around the true rate fails now and then, and more often on a loaded machine,
whose windows hold fewer requests (CI failed a `0.5 ± 0.3` band on a window of 15 calls). A test
checks the share against these bounds instead, for a window known to hold at least `n` trials
(the runbook's `min_requests`, which a check needs before it judges).

Chernoff's bound, P(share <= c) <= exp(-n KL(c || p)) for c below p (and its mirror above), holds
for every count from `n` on, since it shrinks as the count grows; an exact binomial tail at `n`
alone does not bound the larger windows a run may judge.
"""

from __future__ import annotations

import math

from scipy.optimize import brentq

__all__ = ["share_bounds"]


def _kl(c: float, p: float) -> float:
    """KL(Bernoulli(c) || Bernoulli(p)), in nats."""
    return sum(a * math.log(a / b) for a, b in ((c, p), (1 - c, 1 - p)) if a > 0)


def share_bounds(p: float, n: int, risk: float) -> tuple[float, float]:
    """(low, high): a share of `n` or more independent trials at rate `p` falls at or below
    `low`, or at or above `high`, each with probability at most `risk`."""
    assert 0 < p < 1 and n > 0 and 0 < risk < 1
    needed = math.log(1 / risk) / n
    low = 0.0 if _kl(0.0, p) <= needed else brentq(lambda c: _kl(c, p) - needed, 0.0, p)
    high = 1.0 if _kl(1.0, p) <= needed else brentq(lambda c: _kl(c, p) - needed, p, 1.0)
    return low, high
