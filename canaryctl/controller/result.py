"""How a run ended, and the exit code that tells a script or CI about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaryctl.flags.base import Split

__all__ = ["EXIT_CODES", "RunResult"]

EXIT_CODES = {"promoted": 0, "rolled_back": 1, "aborted": 1, "error": 3, "interrupted": 130}
"""Per outcome; see canaryctl.errors for the meaning of each code across the tool."""


@dataclass(frozen=True)
class RunResult:
    """`outcome` is promoted, rolled_back, aborted, error or interrupted; `final_split` is the
    flag as last read (None when it could not be read)."""

    run_id: int
    name: str
    outcome: str
    reason: str
    exit_code: int
    final_split: Split | None

    def to_dict(self) -> dict[str, Any]:
        split = self.final_split
        return {
            "run_id": self.run_id,
            "name": self.name,
            "outcome": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "final_split": None
            if split is None
            else {"baseline": split.baseline, "canary": split.canary, "other": split.other},
        }
