"""canaryctl: step a new model's share of traffic up through a feature flag, watch its SLOs,
roll back by itself when the canary is worse, and promote it when every step holds.

The public face: documents (`load_document`), the controller (`run_rollout`, `RunResult`), the
analysis (`judge`, `Verdict`) and the error tree. Backends live in `canaryctl.flags` and
`canaryctl.metrics`, the data plane in `canaryctl.gateway`, the simulation in `canaryctl.lab`,
the fault proxy and scenarios in `canaryctl.chaos` (`run_scenario`), schedules in
`canaryctl.drills`.
"""

from canaryctl.analysis import Verdict, judge
from canaryctl.chaos import run_scenario
from canaryctl.controller import RunResult, run_rollout
from canaryctl.errors import (
    BackendError,
    CanaryError,
    ChaosBackendError,
    FlagBackendError,
    FlagConflict,
    FlagMismatch,
    Interrupted,
    InvalidDocument,
    InvalidInput,
    MetricsBackendError,
)
from canaryctl.runbook import load_document

__all__ = [
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
    "RunResult",
    "Verdict",
    "judge",
    "load_document",
    "run_rollout",
    "run_scenario",
]
