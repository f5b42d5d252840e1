"""The cheapest split of each tier's traffic across models that meets every constraint. Pure.

The linear program, for tiers t and models m (docs/cost-optimize.md states it in full):

    minimise    sum_t Q_t * sum_m c_m * x[t,m]                     (USD a month)
    subject to  sum_m x[t,m] = 1                                   for every tier
                sum_m a_m * x[t,m] >= A_t                          (accuracy floor)
                x[t,m] = 0  unless m is allowed for t and p95_m <= P_t
                0 <= x[t,m] <= 1

`x[t,m]` is the share of tier t's Q_t monthly queries sent to model m, `c_m` its cost per query,
`a_m` its accuracy on the benchmark, `A_t` and `P_t` the tier's floor and p95 bound. Mixing
models gives the traffic-weighted accuracy, so the floor is linear. The p95 of a mixture is not
the mix of the p95s, so latency is not averaged: a model may serve a tier only if its own p95 is
within the bound. That is sound: if every model used answers 95% of its requests within P_t,
P(T > P_t) = sum_m x[t,m] * P(T_m > P_t) <= 0.05, so the mixture's p95 is within P_t too.

SciPy's `linprog` solves it with HiGHS' dual simplex, which ends on a vertex: with one equality
and one floor per tier, at most two models serve a tier. A tier that cannot be served is
explained exactly (which constraint leaves no model, or which floor no allowed model reaches)
before the solver is asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linprog

__all__ = [
    "SHARE_EPSILON",
    "Binding",
    "ModelFacts",
    "Solution",
    "TierGoal",
    "TierPlan",
    "monthly_cost",
    "solve",
]

SHARE_EPSILON = 1e-9
"""Shares below this are the solver's rounding, not traffic: dropped and the rest renormalized."""


@dataclass(frozen=True)
class ModelFacts:
    """What the plan knows of a model; None where nothing was measured or given."""

    name: str
    accuracy: float | None
    p95_seconds: float | None
    cost_per_query: float | None
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where each fact came from (`accuracy`, `p95`, `cost`): eval, metrics, document."""


@dataclass(frozen=True)
class TierGoal:
    name: str
    monthly_queries: float
    max_p95_seconds: float | None = None
    min_accuracy: float = 0.0
    models: frozenset[str] | None = None
    """The allow-list; None allows every model."""


@dataclass(frozen=True)
class Binding:
    """A constraint that decides the answer: `constraint` is `p95`, `min_accuracy` or `models`."""

    tier: str
    constraint: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"tier": self.tier, "constraint": self.constraint, "message": self.message}


@dataclass(frozen=True)
class TierPlan:
    goal: TierGoal
    split: dict[str, float]
    """Model -> share of the tier's queries, shares above zero only, summing to 1."""
    accuracy: float
    p95_bound_seconds: float | None
    """The highest p95 among the models used: the mixture's p95 is at most this."""
    cost_per_query: float
    binding: tuple[Binding, ...]
    accuracy_price: float | None
    """USD a month that raising the tier's floor by 0.01 would add (the LP's dual), when the
    floor binds; 0 when it does not."""

    @property
    def monthly_usd(self) -> float:
        return self.cost_per_query * self.goal.monthly_queries

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.goal.name,
            "monthly_queries": self.goal.monthly_queries,
            "split": self.split,
            "accuracy": self.accuracy,
            "p95_bound_seconds": self.p95_bound_seconds,
            "cost_per_query_usd": self.cost_per_query,
            "monthly_usd": self.monthly_usd,
            "binding": [b.to_dict() for b in self.binding],
            "usd_per_accuracy_point": self.accuracy_price,
        }


@dataclass(frozen=True)
class Solution:
    """Plans for the tiers that can be served; why the others cannot."""

    plans: tuple[TierPlan, ...]
    infeasible: tuple[Binding, ...]

    @property
    def feasible(self) -> bool:
        return not self.infeasible

    @property
    def monthly_usd(self) -> float:
        return sum(p.monthly_usd for p in self.plans)


def _fast_enough(goal: TierGoal, model: ModelFacts) -> bool:
    """An unmeasured p95 cannot be shown to meet a bound."""
    bound = goal.max_p95_seconds
    return bound is None or (model.p95_seconds is not None and model.p95_seconds <= bound)


def _eligible(goal: TierGoal, models: Sequence[ModelFacts]) -> list[ModelFacts]:
    return [
        m
        for m in models
        if (goal.models is None or m.name in goal.models)
        and m.cost_per_query is not None
        and m.accuracy is not None
        and _fast_enough(goal, m)
    ]


def _why_not(
    goal: TierGoal, models: Sequence[ModelFacts], eligible: list[ModelFacts]
) -> tuple[Binding, ...]:
    """The constraints that leave `goal` without a split, or () when it has one."""
    allowed = [m for m in models if goal.models is None or m.name in goal.models]
    known = [m for m in allowed if m.cost_per_query is not None and m.accuracy is not None]
    t = goal.name
    if not allowed:
        return (Binding(t, "models", "the allow-list names none of the models"),)
    if not known:
        names = ", ".join(m.name for m in allowed)
        message = f"no accuracy and cost known for any allowed model ({names})"
        return (Binding(t, "models", message),)
    if not eligible:
        timed = [m for m in known if m.p95_seconds is not None]
        bound = f"p95 <= {goal.max_p95_seconds:g}s"
        if not timed:
            return (Binding(t, "p95", f"{bound}: no p95 measured for any allowed model"),)
        fastest = min(timed, key=lambda m: m.p95_seconds or 0.0)
        message = (
            f"{bound}: no allowed model meets it (fastest: {fastest.name} at "
            f"{fastest.p95_seconds:.2f}s)"
        )
        found = [Binding(t, "p95", message)]
        if goal.models is not None:
            found.append(Binding(t, "models", "the allow-list leaves only slower models"))
        return tuple(found)
    best = max(eligible, key=lambda m: m.accuracy or 0.0)
    if (best.accuracy or 0.0) >= goal.min_accuracy:
        return ()
    found = [
        Binding(
            t,
            "min_accuracy",
            f"accuracy >= {goal.min_accuracy:g}: the most accurate model allowed within the "
            f"p95 bound is {best.name} at {best.accuracy:.4f}",
        )
    ]
    for m in models:  # excluded models that would reach the floor make those bounds binding too
        if m in eligible or m.accuracy is None or m.accuracy < goal.min_accuracy:
            continue
        if goal.models is not None and m.name not in goal.models:
            found.append(Binding(t, "models", f"{m.name} reaches the floor but is not allowed"))
        elif goal.max_p95_seconds is not None and m.p95_seconds is not None:
            found.append(
                Binding(
                    t,
                    "p95",
                    f"{m.name} reaches the floor ({m.accuracy:.4f}) but its p95 "
                    f"{m.p95_seconds:.2f}s is above {goal.max_p95_seconds:g}s",
                )
            )
    return tuple(found)


def solve(models: Sequence[ModelFacts], goals: Sequence[TierGoal]) -> Solution:
    """The cheapest split per tier. Tiers without a split are explained in `infeasible`."""
    infeasible: list[Binding] = []
    served: list[tuple[TierGoal, list[ModelFacts]]] = []
    for goal in goals:
        eligible = _eligible(goal, models)
        why = _why_not(goal, models, eligible)
        if why:
            infeasible.extend(why)
        else:
            served.append((goal, eligible))
    if not served:
        return Solution((), tuple(infeasible))
    columns = [(g, m) for g, eligible in served for m in eligible]
    cost = np.array([g.monthly_queries * (m.cost_per_query or 0.0) for g, m in columns])
    a_eq = np.zeros((len(served), len(columns)))
    a_ub = np.zeros((len(served), len(columns)))
    b_ub = np.zeros(len(served))
    for row, (goal, _) in enumerate(served):
        for col, (g, m) in enumerate(columns):
            if g is goal:
                a_eq[row, col] = 1.0
                a_ub[row, col] = -(m.accuracy or 0.0)
        b_ub[row] = -goal.min_accuracy
    scale = float(cost.max()) or 1.0  # HiGHS' tolerances are absolute: costs of order 1
    result = linprog(
        cost / scale,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=np.ones(len(served)),
        bounds=(0.0, 1.0),
        method="highs-ds",
    )
    if result.status != 0:  # every tier was shown feasible above: a bug, reported as one
        raise RuntimeError(f"cost optimize: the LP solver failed: {result.message}")
    plans = []
    for row, (goal, eligible) in enumerate(served):
        picked = zip(columns, result.x, strict=True)
        shares = {m.name: float(x) for (g, m), x in picked if g is goal}
        marginal = float(result.ineqlin.marginals[row]) * scale
        plans.append(_plan(goal, models, eligible, shares, marginal))
    return Solution(tuple(plans), tuple(infeasible))


def _cheapest(goal: TierGoal, eligible: Sequence[ModelFacts]) -> float | None:
    """The least cost per query of one tier served by `eligible`, None if none can."""
    costs = [m.cost_per_query or 0.0 for m in eligible]
    scale = max(costs) or 1.0
    result = linprog(
        [c / scale for c in costs],
        A_ub=[[-(m.accuracy or 0.0) for m in eligible]],
        b_ub=[-goal.min_accuracy],
        A_eq=[[1.0] * len(eligible)],
        b_eq=[1.0],
        bounds=(0.0, 1.0),
        method="highs-ds",
    )
    return float(result.fun) * scale if result.status == 0 else None


def _plan(
    goal: TierGoal,
    models: Sequence[ModelFacts],
    eligible: list[ModelFacts],
    shares: dict[str, float],
    marginal: float,
) -> TierPlan:
    kept = {name: share for name, share in shares.items() if share > SHARE_EPSILON}
    total = sum(kept.values())
    split = {name: share / total for name, share in sorted(kept.items(), key=lambda kv: -kv[1])}
    facts = {m.name: m for m in eligible}
    accuracy = sum((facts[n].accuracy or 0.0) * s for n, s in split.items())
    binding = []
    if goal.min_accuracy > 0 and accuracy <= goal.min_accuracy + 1e-7:
        binding.append(
            Binding(goal.name, "min_accuracy", f"accuracy >= {goal.min_accuracy:g} holds exactly")
        )
    for m in models:  # a model kept out by p95 or the allow-list that would lower the cost
        if m.name in facts or m.cost_per_query is None or m.accuracy is None:
            continue
        relaxed = _cheapest(goal, [*eligible, m])
        if relaxed is None or relaxed >= _cheapest(goal, eligible) - 1e-12:  # type: ignore[operator]
            continue
        if goal.models is not None and m.name not in goal.models:
            binding.append(
                Binding(goal.name, "models", f"keeps out {m.name}, which would cost less")
            )
        else:
            shown = "unmeasured" if m.p95_seconds is None else f"{m.p95_seconds:.2f}s"
            binding.append(
                Binding(
                    goal.name, "p95", f"keeps out {m.name} (p95 {shown}), which would cost less"
                )
            )
    p95s = [facts[n].p95_seconds for n in split]
    return TierPlan(
        goal=goal,
        split=split,
        accuracy=accuracy,
        p95_bound_seconds=None if any(p is None for p in p95s) else max(p95s),  # type: ignore[type-var]
        cost_per_query=sum((facts[n].cost_per_query or 0.0) * s for n, s in split.items()),
        binding=tuple(binding),
        accuracy_price=-marginal * 0.01,
    )


def monthly_cost(
    split: Mapping[str, float], models: Mapping[str, ModelFacts], monthly_queries: float
) -> float | None:
    """USD a month of serving `monthly_queries` with `split`; None if a model's cost is unknown."""
    total = sum(split.values())
    usd = 0.0
    for name, share in split.items():
        facts = models.get(name)
        if share > 0 and (facts is None or facts.cost_per_query is None):
            return None
        if share > 0 and facts is not None and facts.cost_per_query is not None:
            usd += facts.cost_per_query * share / total
    return usd * monthly_queries
