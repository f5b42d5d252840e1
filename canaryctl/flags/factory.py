"""From a runbook's `flag:` section to a flag store: one match on `provider`, no silent default."""

from __future__ import annotations

from canaryctl.errors import InvalidInput
from canaryctl.flags.base import FlagStore, SplitStore
from canaryctl.flags.file import FileFlagStore
from canaryctl.flags.flagd import FlagdFlagStore
from canaryctl.flags.launchdarkly import LaunchDarklyFlagStore
from canaryctl.flags.split import SplitFlagStore
from canaryctl.runbook.experiment import (
    FileExperimentFlag,
    FlagdExperimentFlag,
    LaunchDarklyExperimentFlag,
    SplitExperimentFlag,
)
from canaryctl.runbook.rollout import (
    FileFlagSpec,
    FlagdFlagSpec,
    LaunchDarklyFlagSpec,
    SplitFlagSpec,
)

__all__ = ["flag_store_for", "split_store_for"]


def flag_store_for(
    spec: FileFlagSpec | LaunchDarklyFlagSpec | FlagdFlagSpec | SplitFlagSpec,
) -> FlagStore:
    """The store a validated spec names; API tokens and keys are read from the environment."""
    match spec:
        case FileFlagSpec():
            return FileFlagStore(spec.path, spec.key, spec.baseline, spec.canary)
        case FlagdFlagSpec():
            return FlagdFlagStore(spec.path, spec.key, spec.baseline, spec.canary)
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
        case SplitFlagSpec():
            return SplitFlagStore.from_env(
                api_key_env=spec.api_key_env,
                workspace=spec.workspace,
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


def split_store_for(
    spec: FileExperimentFlag
    | LaunchDarklyExperimentFlag
    | FlagdExperimentFlag
    | SplitExperimentFlag,
    control: str,
    other: str,
) -> SplitStore:
    """The store an experiment's flag names; `control` and `other` are two of its variations,
    which the store checks exist on every read (it serves any of them on a split)."""
    match spec:
        case FileExperimentFlag():
            return FileFlagStore(spec.path, spec.key, control, other)
        case FlagdExperimentFlag():
            return FlagdFlagStore(spec.path, spec.key, control, other)
        case LaunchDarklyExperimentFlag():
            return LaunchDarklyFlagStore.from_env(
                token_env=spec.token_env,
                project=spec.project,
                environment=spec.environment,
                key=spec.key,
                baseline=control,
                canary=other,
                rule=spec.rule,
                base_url=spec.base_url,
            )
        case SplitExperimentFlag():
            return SplitFlagStore.from_env(
                api_key_env=spec.api_key_env,
                workspace=spec.workspace,
                environment=spec.environment,
                key=spec.key,
                baseline=control,
                canary=other,
                rule=spec.rule,
                base_url=spec.base_url,
            )
        case other_spec:
            raise InvalidInput(f"spec.flag.provider: unknown flag provider '{other_spec.provider}'")
