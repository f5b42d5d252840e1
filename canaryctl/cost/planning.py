"""`canaryctl cost optimize` as a library: gather the facts, solve, price today's split, write
the runbooks. `to_dict()` is the `-o json` document (docs/cost-optimize.md); its keys are a
contract. Exit codes: 0 every tier has a plan, 1 some tier cannot meet its constraints (the
binding ones are named), 2 bad input, 3 a gateway's /metrics could not be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from canaryctl.cost.facts import UNPRICED, Inputs, gather
from canaryctl.cost.optimize import Solution, monthly_cost, solve
from canaryctl.cost.runbooks import missing_variations, rollout_documents
from canaryctl.flags.file import read_flag
from canaryctl.retry import BACKEND, RetryPolicy
from canaryctl.runbook.optimize import CostOptimization

__all__ = ["OptimizeReport", "optimize"]


@dataclass(frozen=True)
class OptimizeReport:
    name: str
    inputs: Inputs
    solution: Solution
    runbooks: tuple[tuple[str, dict[str, Any]], ...]
    """(tier, Rollout document), in the order each tier's runs must go."""
    unservable: tuple[str, ...] = ()
    """Models the runbooks would move traffic to that the target flag has no variation for:
    then no runbook is written (each would stop at its dry run) and the exit code is 1."""
    flag_where: str = ""
    """The target flag file checked, `KEY in PATH`, to name it in the notes."""

    @property
    def exit_code(self) -> int:
        return 0 if self.solution.feasible and not self.unservable else 1

    def today_usd(self, tier: str) -> float | None:
        goal = next(g for g in self.inputs.goals if g.name == tier)
        facts = {m.name: m for m in self.inputs.models}
        return monthly_cost(self.inputs.today[tier], facts, goal.monthly_queries)

    @property
    def notes(self) -> list[str]:
        """What the plan could not use, and what would settle it."""
        unservable = [
            f"no runbook written: flag {self.flag_where} has no variation {m!r}; add it to the "
            "flag's variations (and the gateway's models) before moving traffic to it"
            for m in self.unservable
        ]
        return unservable + [
            f"{m.name} has no price in the gateway document (spec.gateway): its cost is "
            "unknown, so it serves no tier; set its `price` (zero too, if it costs nothing per "
            f"token) or spec.models.{m.name}.cost_per_query_usd"
            for m in self.inputs.models
            if m.cost_per_query is None and m.sources.get("cost") == UNPRICED
        ]

    @property
    def today_monthly_usd(self) -> float | None:
        values = [self.today_usd(g.name) for g in self.inputs.goals]
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values)

    def to_dict(self) -> dict[str, Any]:
        plans = {p.goal.name: p for p in self.solution.plans}
        tiers = []
        for goal in self.inputs.goals:
            plan = plans.get(goal.name)
            today = self.today_usd(goal.name)
            tiers.append(
                {
                    "tier": goal.name,
                    "monthly_queries": goal.monthly_queries,
                    "constraints": {
                        "p95_seconds": goal.max_p95_seconds,
                        "min_accuracy": goal.min_accuracy,
                        "models": None if goal.models is None else sorted(goal.models),
                    },
                    "today": {"split": self.inputs.today[goal.name], "monthly_usd": today},
                    "plan": None if plan is None else plan.to_dict(),
                    "monthly_saving_usd": (
                        None if plan is None or today is None else today - plan.monthly_usd
                    ),
                }
            )
        today_total = self.today_monthly_usd
        planned = self.solution.monthly_usd if self.solution.feasible else None
        return {
            "name": self.name,
            "route": self.inputs.route.name,
            "traffic_source": self.inputs.traffic_source,
            "feasible": self.solution.feasible,
            "exit_code": self.exit_code,
            "models": [
                {
                    "model": m.name,
                    "accuracy": m.accuracy,
                    "p95_seconds": m.p95_seconds,
                    "cost_per_query_usd": m.cost_per_query,
                    "sources": dict(m.sources),
                }
                for m in self.inputs.models
            ],
            "tiers": tiers,
            "infeasible": [b.to_dict() for b in self.solution.infeasible],
            "today_monthly_usd": today_total,
            "planned_monthly_usd": planned,
            "monthly_saving_usd": (
                None if planned is None or today_total is None else today_total - planned
            ),
            "runbooks": [
                {"tier": tier, "name": doc["metadata"]["name"], "document": doc}
                for tier, doc in self.runbooks
            ],
            "unservable": list(self.unservable),
            "notes": self.notes,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "tier"


def _absolute(template_flag: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A file flag's path as the runbooks need it wherever they are written."""
    path = template_flag.get("path")
    if template_flag.get("provider") != "file" or not isinstance(path, str):
        return template_flag
    return {**template_flag, "path": str((base_dir / path).resolve())}


def optimize(
    document: CostOptimization,
    base_dir: Path,
    *,
    client: httpx.Client | None = None,
    policy: RetryPolicy = BACKEND,
) -> OptimizeReport:
    spec = document.spec
    inputs = gather(spec, client=client, policy=policy)
    solution = solve(inputs.models, inputs.goals)
    runbooks: list[tuple[str, dict[str, Any]]] = []
    template = spec.rollout
    if template is not None and solution.feasible:
        template = template.model_copy(update={"flag": _absolute(template.flag, base_dir)})
        accuracy = {m.name: m.accuracy for m in inputs.models}
        for plan in solution.plans:
            tier = plan.goal.name
            documents = rollout_documents(
                _slug(document.metadata.name),
                template,
                plan,
                inputs.today[tier],
                accuracy,
                rule=spec.tiers[tier].rule,
                multi_tier=len(spec.tiers) > 1,
                slug=_slug(tier),
            )
            runbooks += [(tier, d) for d in documents]
    unservable: tuple[str, ...] = ()
    flag_where = ""
    if template is not None and template.flag.get("provider") == "file" and runbooks:
        flag_where = f"{template.flag['key']} in {template.flag['path']}"
        _, flag = read_flag(template.flag["path"], template.flag["key"])
        unservable = tuple(missing_variations([d for _, d in runbooks], flag["variations"]))
        if unservable:
            runbooks = []
    return OptimizeReport(
        document.metadata.name, inputs, solution, tuple(runbooks), unservable, flag_where
    )
