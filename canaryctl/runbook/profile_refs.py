"""How a runbook names its metric profile: a file, or one canaryctl ships. Apart from the
`MetricProfile` model (canaryctl.runbook.profile), so that a Rollout document checks its
`profile:` without building the profile's pydantic classes; `validate` on a runbook that reads
no profile never builds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["is_profile_path", "shipped_profile", "shipped_profiles"]


def is_profile_path(reference: str) -> bool:
    """A runbook's `profile:` is a file when it looks like one, else the name of a shipped one."""
    return "/" in reference or reference.endswith((".yaml", ".yml"))


def shipped_profile(name: str) -> str | None:
    """The text of the profile canaryctl ships under `name`, None if there is none. The name
    is looked up among the shipped ones, never tried as a path (a 300-character name is not
    an OS error, it is simply not a profile)."""
    if name not in shipped_profiles():
        return None
    return _profiles().joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def shipped_profiles() -> list[str]:
    return sorted(
        e.name[: -len(".yaml")] for e in _profiles().iterdir() if e.name.endswith(".yaml")
    )


def _profiles() -> Traversable:
    from importlib import resources  # imported by a runbook that names a shipped profile only

    return resources.files("canaryctl").joinpath("metrics", "profiles")
