"""Documents (YAML, apiVersion canaryctl/v1): Rollout, Gateway, Lab, MetricProfile,
ChaosScenario, Guard and Experiment, strictly validated."""

import lazy_loader

# Each name is imported on first use: validating a Rollout loads no Gateway or Lab classes
# beyond those a Rollout holds (building pydantic classes is most of `validate`'s start).
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "common": ["API_VERSION", "Duration", "parse_duration"],
        "experiment": ["Experiment", "ExperimentSpec"],
        "gate": ["EvalSpec", "GateSpec"],
        "gateway": ["Gateway", "GatewaySpec", "ModelSpec", "RouteSpec"],
        "guard": ["Guard", "GuardSpec"],
        "lab": ["Lab", "LabSpec", "ProviderProfile", "TrafficSpec"],
        "loader": ["KINDS", "json_schema", "kind_model", "load_document", "parse_document"],
        "notify": ["NotifySpec"],
        "profile": ["MetricProfile", "MetricProfileSpec"],
        "rollout": [
            "AnalysisSpec",
            "FileFlagSpec",
            "LaunchDarklyFlagSpec",
            "PrometheusMetricsSpec",
            "Rollout",
            "RolloutSpec",
            "ScrapeMetricsSpec",
            "SloSpec",
            "SplitFlagSpec",
            "Step",
        ],
        "scenario": ["ChaosScenario", "ChaosScenarioSpec", "FaultSpec"],
    },
)
