"""Preflight: what a run checks before the first percent moves, and where it begins.

Pure checks on the runbook and the flag as read (`starting_state`), and the one look at the
metrics that needs waiting (`ensure_baseline_has_traffic`); `rollout run --dry-run` makes them
all without journaling anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canaryctl.clock import Clock
from canaryctl.controller.step import PlanItem, RolloutState, WeightItem, plan
from canaryctl.errors import FlagMismatch, InvalidInput
from canaryctl.flags.base import FlagSnapshot, FlagStore, Split
from canaryctl.metrics.base import MetricsSource, ShadowSource
from canaryctl.metrics.profile import check_profile_feeds_slos
from canaryctl.redact import redact_url
from canaryctl.runbook.loader import load_document
from canaryctl.runbook.rollout import PrometheusMetricsSpec, Rollout
from canaryctl.runbook.scenario import ChaosScenario

__all__ = [
    "TRAFFIC_PATIENCE",
    "TRAFFIC_WINDOW",
    "check_shadow_flag",
    "ensure_baseline_has_traffic",
    "flag_identity",
    "load_scenarios",
    "starting_state",
]

TRAFFIC_WINDOW = 300.0
"""Seconds back preflight looks for baseline traffic: "recent" for a Prometheus source."""
TRAFFIC_PATIENCE = 60.0
"""Most seconds preflight waits for a first baseline request (the analysis interval, at least
5 s): a gateway started a moment ago has served nothing yet."""


def load_scenarios(rollout: Rollout) -> dict[str, ChaosScenario]:
    """Every `chaos` step's scenario, read before anything moves: a bad one is exit 2 now, not
    halfway through the rollout."""
    return {
        str(step.chaos): load_document(step.chaos, expect=ChaosScenario)
        for step in rollout.spec.steps
        if step.chaos is not None
    }


def flag_identity(flag: dict[str, Any]) -> tuple[Any, ...]:
    """Where a flag lives, whatever the runbook does with it: two runs on different targeting
    rules of one flag still race on its version."""
    return tuple(
        flag.get(field)
        for field in ("provider", "key", "path", "base_url", "project", "environment")
    )


def starting_state(rollout: Rollout, split: Split, *, from_current: bool) -> RolloutState:
    """Where a run begins: the baseline serving everyone, or with `from_current` the first
    weight above the current split's (see the module docstring); else FlagMismatch saying what
    the flag serves and what to do."""
    spec = rollout.spec
    key, baseline, canary = spec.flag.key, spec.flag.baseline, spec.flag.canary
    shown = f"{canary} {split.canary:g}%, {baseline} {split.baseline:g}%"
    if split.other:
        shown += f", other variations {split.other:g}%"
    if split.baseline == 100:
        return RolloutState()
    if not from_current:
        if split.canary == 100:
            todo = (
                f"{canary} was promoted already: there is nothing to roll out; to roll out "
                f"again, serve {baseline} to everyone first"
            )
        else:
            todo = (
                "if a run was driving it, `canaryctl rollout resume RUN` (with that run's "
                "--state); to step up from this split, --from-current; or serve "
                f"{baseline} to everyone first"
            )
        raise FlagMismatch(
            f"flag '{key}' serves {shown}, not {baseline} to everyone as this rollout "
            f"starts from: {todo}"
        )
    if split.other:
        raise FlagMismatch(
            f"flag '{key}' serves {shown}: --from-current continues a split between "
            f"{baseline} and {canary} only, and stepping would take the other variations' "
            "share away"
        )
    item = _first_weight_above(plan(spec), split.canary)
    if item is None:
        raise FlagMismatch(
            f"flag '{key}' serves {shown}: no set_weight step of this rollout is above "
            f"{split.canary:g}%, so --from-current has nothing left to step through"
        )
    return RolloutState(item=item, weight=split.canary)


def check_shadow_flag(
    rollout: Rollout, shadow_flags: FlagStore, metrics: MetricsSource
) -> FlagSnapshot:
    """Before a shadow step: the metrics can read shadow traffic (and, for Prometheus, the
    profile's shadow queries feed the step's SLOs), and the shadow flag serves its off
    variation to everyone; the shadow flag as found, to restore."""
    if not isinstance(metrics, ShadowSource):
        raise InvalidInput(
            "spec.metrics: this metrics source cannot read shadow traffic, which the shadow "
            "step judges"
        )
    check_profile_feeds_slos(rollout.spec)
    flag = rollout.spec.shadow_flag
    assert flag is not None  # validated: a shadow step names its flag
    prior = shadow_flags.snapshot()
    split = shadow_flags.split(prior)
    if split.baseline != 100:
        other = f", other variations {split.other:g}%" if split.other else ""
        raise FlagMismatch(
            f"shadow flag '{flag.key}' serves {flag.canary} {split.canary:g}%, "
            f"{flag.baseline} {split.baseline:g}%{other}: a shadow step starts from "
            f"{flag.baseline} (no shadowing) for everyone"
        )
    return prior


def ensure_baseline_has_traffic(
    rollout: Rollout, metrics: MetricsSource, clock: Clock, baseline: str
) -> None:
    """No baseline traffic means the runbook watches the wrong route or selector: every
    analysis would be inconclusive, or judge traffic the flag does not route. A gateway
    that has just started may not have served yet, so we look again for a while."""
    patience = min(max(rollout.spec.analysis.interval, 5.0), TRAFFIC_PATIENCE)
    deadline = clock.now() + patience
    while True:
        seen = metrics.recent_requests(TRAFFIC_WINDOW)
        if seen.get(baseline, 0) > 0:
            return
        if clock.now() >= deadline:
            break
        clock.sleep(1.0)
    shown = ", ".join(f"{v} {n:g}" for v, n in sorted(seen.items()) if n > 0)
    raise InvalidInput(
        f"no recent requests for the baseline '{baseline}' on {_where(rollout)} "
        f"(looked for {patience:g}s); the metrics show "
        f"{('requests for ' + shown) if shown else 'no requests at all'} there: check that "
        "the gateway route evaluates this flag and that the runbook's route and selector "
        "match it"
    )


def _first_weight_above(items: Sequence[PlanItem], canary: float) -> int | None:
    """The plan index of the first weight step above `canary`%, where --from-current starts."""
    return next(
        (
            i
            for i, item in enumerate(items)
            if isinstance(item, WeightItem) and item.weight > canary
        ),
        None,
    )


def _where(rollout: Rollout) -> str:
    """The metrics a rollout watches, for a message: route, selector, where they are read."""
    spec = rollout.spec.metrics
    route = f"route '{spec.route}'" if spec.route is not None else "every route"
    if isinstance(spec, PrometheusMetricsSpec):
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(spec.selector.items()))
        return f"{route}, selector {{{selector}}} in Prometheus at {redact_url(spec.url)}"
    return f"{route} at {', '.join(redact_url(t) for t in spec.targets)}"
