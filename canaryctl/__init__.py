"""canaryctl: step a new model's share of traffic up through a feature flag, watch its SLOs,
roll back by itself when the canary is worse, and promote it when every step holds."""

from canaryctl.errors import (
    BackendError,
    CanaryError,
    FlagBackendError,
    FlagConflict,
    FlagMismatch,
    Interrupted,
    InvalidDocument,
    InvalidInput,
    MetricsBackendError,
)

__all__ = [
    "BackendError",
    "CanaryError",
    "FlagBackendError",
    "FlagConflict",
    "FlagMismatch",
    "Interrupted",
    "InvalidDocument",
    "InvalidInput",
    "MetricsBackendError",
]
