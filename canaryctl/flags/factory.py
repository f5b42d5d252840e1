"""From a runbook's `flag:` section to a flag store: one match on `provider`, no silent default."""

from __future__ import annotations

from canaryctl.errors import InvalidInput
from canaryctl.flags.base import FlagStore
from canaryctl.flags.file import FileFlagStore
from canaryctl.flags.launchdarkly import LaunchDarklyFlagStore
from canaryctl.runbook.rollout import FileFlagSpec, LaunchDarklyFlagSpec

__all__ = ["flag_store_for"]


def flag_store_for(spec: FileFlagSpec | LaunchDarklyFlagSpec) -> FlagStore:
    """The store a validated spec names; the LaunchDarkly token is read from the environment."""
    match spec:
        case FileFlagSpec():
            return FileFlagStore(spec.path, spec.key, spec.baseline, spec.canary)
        case LaunchDarklyFlagSpec():
            return LaunchDarklyFlagStore.from_env(
                token_env=spec.token_env,
                project=spec.project,
                environment=spec.environment,
                key=spec.key,
                baseline=spec.baseline,
                canary=spec.canary,
                rule=spec.rule,
                base_url=spec.base_url,
            )
        case other:
            # Unreachable for a validated document; guards specs built by hand in code.
            raise InvalidInput(f"spec.flag.provider: unknown flag provider '{other.provider}'")
