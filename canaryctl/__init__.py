"""canaryctl: step a new model's share of traffic up through a feature flag, watch its SLOs,
roll back by itself when the canary is worse, and promote it when every step holds.

The public face: documents (`load_document`), the controller (`run_rollout`, `RunResult`), the
analysis (`judge`, `Verdict`) and the error tree. Backends live in `canaryctl.flags` and
`canaryctl.metrics`, the data plane in `canaryctl.gateway`, the simulation in `canaryctl.lab`,
the fault proxy and scenarios in `canaryctl.chaos` (`run_scenario`), schedules in
`canaryctl.drills`.
"""

import lazy_loader

# Each name is imported on first use, so importing one submodule (or running one command)
# does not load the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "analysis": ["Verdict", "judge"],
        "chaos": ["run_scenario"],
        "controller": ["RunResult", "run_rollout"],
        "errors": [
            "BackendError",
            "CanaryError",
            "ChaosBackendError",
            "FlagBackendError",
            "FlagConflict",
            "FlagMismatch",
            "Interrupted",
            "InvalidDocument",
            "InvalidInput",
            "MetricsBackendError",
        ],
        "runbook": ["load_document"],
    },
)
