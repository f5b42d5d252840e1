"""From a runbook's `flag:` section to a flag store: one match on `provider`, no silent default."""

from __future__ import annotations

from canaryctl.errors import InvalidInput
from canaryctl.flags.base import FlagStore
from canaryctl.flags.file import FileFlagStore
from canaryctl.runbook.rollout import FileFlagSpec

__all__ = ["flag_store_for"]


def flag_store_for(spec: FileFlagSpec) -> FlagStore:
    """The store a validated spec names; the LaunchDarkly REST backend will be another case."""
    match spec.provider:
        case "file":
            return FileFlagStore(spec.path, spec.key, spec.baseline, spec.canary)
        case other:
            # Unreachable for a validated document; guards specs built by hand in code.
            raise InvalidInput(f"spec.flag.provider: unknown flag provider '{other}'")
