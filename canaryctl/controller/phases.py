"""The phase of a rollout, stored with the run so that any process can read it back and resume."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TERMINAL", "Phase"]


class Phase(StrEnum):
    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    CHAOS = "chaos"
    SHADOW = "shadow"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED, Phase.INTERRUPTED}
)
