"""The flag store seam: read the split, move it, put back exactly what was there.

A rollout only ever touches two variations of one flag, the baseline and the canary. Every write
names the version it expects to find, so a change made by someone else during a run is detected
(FlagConflict) instead of overwritten: we do not fight a human.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["FlagSnapshot", "FlagStore", "Split"]


@dataclass(frozen=True)
class FlagSnapshot:
    """The flag exactly as stored, enough to restore it byte for byte; safe to persist.

    `raw` is the backend's own serialisation of the flag (for the file backend, the file's text).
    It never holds a secret.
    """

    key: str
    version: int
    raw: str


@dataclass(frozen=True)
class Split:
    """Percent of default-rule traffic each side gets; `other` is what neither side gets."""

    baseline: float
    canary: float
    other: float = 0.0


@runtime_checkable
class FlagStore(Protocol):
    """One flag, one baseline variation, one canary variation."""

    def snapshot(self) -> FlagSnapshot:
        """Read the flag as it is now. Raises FlagMismatch if the key or a variation is missing."""
        ...

    def split(self, snapshot: FlagSnapshot) -> Split:
        """What share of traffic each side gets in that snapshot."""
        ...

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        """The baseline's and the canary's variation values in that snapshot.

        A runbook may name a variation by its name; the gateway labels its metrics with the
        value it serves, so analysis asks for these.
        """
        ...

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        """Serve the canary to `percent`% and the baseline to the rest; return the new state.

        Raises FlagConflict if the stored version is not `expect_version`.
        """
        ...

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Make the canary the variation everyone gets by default."""
        ...

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Put the flag back exactly as `saved`. Raises FlagConflict like the writes do."""
        ...
