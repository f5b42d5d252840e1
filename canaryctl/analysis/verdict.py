"""Verdicts and their evidence: what was measured, against which bound, and why it counts.

A verdict is kept in the journal and shown to the person deciding whether to trust the
controller, so every check carries the numbers and a sentence, not just a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Check", "Outcome", "Verdict"]


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Check:
    """One SLO judged on one window; `baseline_*` stay None for absolute bounds."""

    slo: str
    metric: str
    outcome: Outcome
    reason: str
    canary_value: float | None
    baseline_value: float | None
    bound: float | None
    canary_requests: float
    baseline_requests: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "metric": self.metric,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "canary_value": self.canary_value,
            "baseline_value": self.baseline_value,
            "bound": self.bound,
            "canary_requests": self.canary_requests,
            "baseline_requests": self.baseline_requests,
        }


@dataclass(frozen=True)
class Verdict:
    """FAIL if any check failed, else INCONCLUSIVE if any could not be judged, else PASS."""

    outcome: Outcome
    checks: tuple[Check, ...]
    window_start: float
    window_end: float

    @classmethod
    def of(cls, checks: tuple[Check, ...], window_start: float, window_end: float) -> Verdict:
        outcomes = {c.outcome for c in checks}
        if Outcome.FAIL in outcomes:
            outcome = Outcome.FAIL
        elif Outcome.INCONCLUSIVE in outcomes or not checks:
            outcome = Outcome.INCONCLUSIVE
        else:
            outcome = Outcome.PASS
        return cls(outcome, checks, window_start, window_end)

    @property
    def reason(self) -> str:
        """The checks that decided the outcome, in words; empty for a pass."""
        if self.outcome is Outcome.PASS:
            return ""
        return "; ".join(c.reason for c in self.checks if c.outcome is self.outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        checks = tuple(
            Check(**{**c, "outcome": Outcome(c["outcome"])}) for c in data.get("checks", [])
        )
        return cls(Outcome(data["outcome"]), checks, data["window_start"], data["window_end"])
