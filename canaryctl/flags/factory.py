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


RolloutFlag = FileFlagSpec | LaunchDarklyFlagSpec | FlagdFlagSpec | SplitFlagSpec
ExperimentFlag = (
    FileExperimentFlag | LaunchDarklyExperimentFlag | FlagdExperimentFlag | SplitExperimentFlag
)


def flag_store_for(spec: RolloutFlag) -> FlagStore:
    """The store a validated spec names; API tokens and keys are read from the environment."""
    return _store(spec, spec.baseline, spec.canary)


def split_store_for(spec: ExperimentFlag, control: str, other: str) -> SplitStore:
    """The store an experiment's flag names; `control` and `other` are two of its variations,
    which the store checks exist on every read (it serves any of them on a split)."""
    return _store(spec, control, other)


def _store(
    spec: RolloutFlag | ExperimentFlag, baseline: str, canary: str
) -> FileFlagStore | FlagdFlagStore | LaunchDarklyFlagStore | SplitFlagStore:
    """One match for a rollout's flag and an experiment's: the same fields name the same flag."""
    match spec:
        case FileFlagSpec() | FileExperimentFlag():
            return FileFlagStore(spec.path, spec.key, baseline, canary)
        case FlagdFlagSpec() | FlagdExperimentFlag():
            return FlagdFlagStore(spec.path, spec.key, baseline, canary)
        case LaunchDarklyFlagSpec() | LaunchDarklyExperimentFlag():
            return LaunchDarklyFlagStore.from_env(
                token_env=spec.token_env,
                project=spec.project,
                environment=spec.environment,
                key=spec.key,
                baseline=baseline,
                canary=canary,
                rule=spec.rule,
                base_url=spec.base_url,
            )
        case SplitFlagSpec() | SplitExperimentFlag():
            return SplitFlagStore.from_env(
                api_key_env=spec.api_key_env,
                workspace=spec.workspace,
                environment=spec.environment,
                key=spec.key,
                baseline=baseline,
                canary=canary,
                rule=spec.rule,
                base_url=spec.base_url,
            )
        case other:
            # Unreachable for a validated document; guards specs built by hand in code.
            raise InvalidInput(f"spec.flag.provider: unknown flag provider '{other.provider}'")
