"""Documents (YAML, apiVersion canaryctl/v1): Rollout, Gateway, Lab, MetricProfile,
ChaosScenario and Guard, strictly validated."""

from canaryctl.runbook.common import API_VERSION, Duration, parse_duration
from canaryctl.runbook.gate import EvalSpec, GateSpec
from canaryctl.runbook.gateway import Gateway, GatewaySpec, ModelSpec, RouteSpec
from canaryctl.runbook.guard import Guard, GuardSpec
from canaryctl.runbook.lab import Lab, LabSpec, ProviderProfile, TrafficSpec
from canaryctl.runbook.loader import KINDS, Document, json_schema, load_document, parse_document
from canaryctl.runbook.notify import NotifySpec
from canaryctl.runbook.profile import MetricProfile, MetricProfileSpec
from canaryctl.runbook.rollout import (
    AnalysisSpec,
    FileFlagSpec,
    LaunchDarklyFlagSpec,
    PrometheusMetricsSpec,
    Rollout,
    RolloutSpec,
    ScrapeMetricsSpec,
    SloSpec,
    Step,
)
from canaryctl.runbook.scenario import ChaosScenario, ChaosScenarioSpec, FaultSpec

__all__ = [
    "API_VERSION",
    "KINDS",
    "AnalysisSpec",
    "ChaosScenario",
    "ChaosScenarioSpec",
    "Document",
    "Duration",
    "EvalSpec",
    "FaultSpec",
    "FileFlagSpec",
    "GateSpec",
    "Gateway",
    "GatewaySpec",
    "Guard",
    "GuardSpec",
    "Lab",
    "LabSpec",
    "LaunchDarklyFlagSpec",
    "MetricProfile",
    "MetricProfileSpec",
    "ModelSpec",
    "NotifySpec",
    "PrometheusMetricsSpec",
    "ProviderProfile",
    "Rollout",
    "RolloutSpec",
    "RouteSpec",
    "ScrapeMetricsSpec",
    "SloSpec",
    "Step",
    "TrafficSpec",
    "json_schema",
    "load_document",
    "parse_document",
    "parse_duration",
]
