"""Before a rollout runs: a cost SLO on a model with no price can never pass.

A model whose gateway entry sets no `price` has an unknown cost, and a variant's cost per query
has no value while its own model is one (the analysis calls that inconclusive).
When `canaryctl validate` is given the Rollout and the Gateway or Lab that serves its flag, this
is known before anything moves: the canary's model, and the baseline's for a bound against it.
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
    """One warning per cost SLO and judged variant whose model has no price in a gateway
    (named by its file) with a route on the rollout's flag."""
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
    """Why `variant`'s cost is unknown: its own model has no price. (Answers a fallback with no
    price gives are left out of its cost per query, which stays known.)"""
    model = models.get(variant)
    if model is None or model.priced:
        return None  # priced, or not a model of this gateway: nothing known here
    return f"'{variant}' has no price"
