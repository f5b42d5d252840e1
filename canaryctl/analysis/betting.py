"""Betting on per-interval statistics: a test of "mean at most μ" that survives bursts.

Each analysis interval gives one statistic X in [0, 1] (the canary's share of the failures, a
failure rate) and a weight w (how many failures or requests it rests on). Under the null, X's
mean given the past and w is at most μ, whatever happens inside the interval: errors may come in
clusters, an outage may hit both arms, the common rate may drift. Then for any bet λ in
[0, 1/μ), chosen before X is seen (it may depend on w), 1 + λ(X - μ) is nonnegative with mean at
most 1, so the product over intervals is a test supermartingale, and by Ville's inequality it
ever reaches 1/alpha with probability at most alpha (Shafer & Vovk, "Game-Theoretic Foundations
for Probability and Finance", 2019; Ramdas, Grünwald, Vovk & Shafer, "Game-theoretic statistics
and safe anytime-valid inference", Statistical Science 2023). These bets are the whole class of
e-values for a bounded mean (Waudby-Smith & Ramdas, "Estimating means of bounded random variables
by betting", JRSS-B 2023), so the test gives up nothing it could soundly have.

The bet sizes: λ = w·a / (1 + μ·w·a) for each scale a in `SCALES`, and the e-value is the
mixture of the products with equal weights (a mixture of test martingales is one). With one
event (w = 1) the bet of scale a is exactly the likelihood ratio of "odds of X = 1 multiplied by
1 + a" against μ, so a sparse interval loses nothing to the per-event likelihood ratio; as w grows
the bet approaches 1/μ, the most an interval can pay. A burst of k errors counts like w/k events,
which the smaller scales fit.
"""

from __future__ import annotations

import math

__all__ = ["SCALES", "bet", "grow", "mixture"]

SCALES = (0.1, 0.2, 0.35, 0.6, 1.0, 1.7, 3.0)
"""Bet scales a: the odds ratio 1 + a the bet of one event backs (1.1 to 4), equally weighted."""


def bet(weight: float, null: float, scale: float) -> float:
    """λ for one interval: w·a / (1 + μ·w·a), in [0, 1/μ) so the wealth stays positive."""
    stake = weight * scale
    return stake / (1 + null * stake)


def grow(
    log_wealth: tuple[float, ...], statistic: float, weight: float, null: float
) -> tuple[float, ...]:
    """Each component's log wealth after one interval: plus log(1 + λ(X - μ)) at its scale.
    (`bet` written out inline: this runs for every grid point of every interval.)"""
    excess = statistic - null
    return tuple(
        wealth + math.log1p(weight * scale * excess / (1 + null * weight * scale))
        for wealth, scale in zip(log_wealth, SCALES, strict=True)
    )


def mixture(log_wealth: tuple[float, ...] | list[float]) -> float:
    """The e-value: the equally weighted mean of the components' wealth."""
    return sum(math.exp(min(value, 700.0)) for value in log_wealth) / len(log_wealth)
