"""The document kinds and where each one's model lives, apart from the loader (YAML, pydantic) so
that `canaryctl schema --help` can list the kinds without importing either."""

from __future__ import annotations

__all__ = ["KINDS"]

KINDS = {
    "Rollout": "canaryctl.runbook.rollout",
    "Gateway": "canaryctl.runbook.gateway",
    "Lab": "canaryctl.runbook.lab",
    "MetricProfile": "canaryctl.runbook.profile",
    "ChaosScenario": "canaryctl.runbook.scenario",
    "Guard": "canaryctl.runbook.guard",
    "Experiment": "canaryctl.runbook.experiment",
    "CostOptimization": "canaryctl.runbook.optimize",
}
"""Each kind and the module that defines its model. Only the module of a document's own kind is
imported: building pydantic classes is most of what `validate` spends, so a Rollout does not
pay for a ChaosScenario's or a Lab's."""
