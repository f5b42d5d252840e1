"""Before a rollout runs: a cost SLO on a model with no price can never pass.

A model whose gateway entry sets no `price` has an unknown cost, and cost per query has no
value while any of a variant's answers came from it (the analysis calls that inconclusive).
When `canaryctl validate` is given the Rollout and the Gateway or Lab that serves its flag, this
is known before anything moves: the canary's model, the baseline's for a bound against it, and
the fallbacks that may answer for either.
"""

from __future__ import annotations

from collections.abc import Sequence

from canaryctl.runbook.gateway import GatewaySpec, ModelSpec
from canaryctl.runbook.rollout import RolloutSpec

__all__ = ["unpriced_cost_warnings"]

COST = "cost_per_query_usd"


def unpriced_cost_warnings(
    spec: RolloutSpec, gateways: Sequence[tuple[str, GatewaySpec]]
) -> list[str]:
    """One warning per cost SLO whose judged variants' models (or their fallbacks) have no
    price in a gateway (named by its file) with a route on the rollout's flag."""
    found: list[str] = []
    for where, gateway in gateways:
        if not any(route.flag == spec.flag.key for route in gateway.routes):
            continue
        models = {model.name: model for model in gateway.models}
        for index, slo in enumerate(spec.slos):
            if slo.metric != COST:
                continue
            judged = [("canary", spec.flag.canary)]
            if slo.relative:
                judged.append(("baseline", spec.flag.baseline))
            for role, variant in judged:
                why = _unpriced(variant, models)
                if why:
                    found.append(
                        f"spec.slos[{index}] ({slo.describe()}): the {role} {why} in {where}, "
                        "so its cost is unknown and this SLO cannot pass while it answers; "
                        "give it a `price` there (`{prompt_per_1k: 0, completion_per_1k: 0}` "
                        "if it costs nothing)"
                    )
    return found


def _unpriced(variant: str, models: dict[str, ModelSpec]) -> str | None:
    """Why `variant`'s answers may have no price: its model, or a fallback in its chain."""
    model = models.get(variant)
    if model is None:
        return None  # not a model of this gateway: nothing known here
    if not model.priced:
        return f"'{variant}' has no price"
    unpriced = [name for name in model.fallback if name in models and not models[name].priced]
    if unpriced:
        return f"'{variant}' falls back to {', '.join(repr(n) for n in unpriced)}, with no price,"
    return None
