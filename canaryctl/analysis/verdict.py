"""Verdicts and their evidence: what was measured, against which bound, and why it counts.

A verdict is kept in the journal and shown to the person deciding whether to trust the
controller, so every check carries the numbers and a sentence, not just a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Check", "Evidence", "Outcome", "Verdict"]


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Evidence:
    """How a sequential test stands: its e-value against the threshold that rejects, the estimate
    with its confidence sequence (each bound holds at all times), and what it rests on.

    `samples` counts what the statistic is built from: events (errors, slow requests) for a
    ratio of rates, intervals for a difference of rates or of means, observations (requests,
    scores) for an absolute bound on a rate. `e_value_within` is an absolute bound's evidence
    that the canary is within it (the check passes when it reaches the threshold); None for the
    other tests. `within` says whether a test against the baseline has its estimate within the
    bound, which its passing check does not mean: that passes while there is no evidence the
    canary is worse, and a ratio against a baseline that almost never fails can go long without
    that evidence. None for absolute bounds, whose pass already means within.
    """

    test: str
    e_value: float
    threshold: float
    estimate: float | None
    lower: float | None
    upper: float | None
    samples: float
    e_value_within: float | None = None
    within: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "test": self.test,
            "e_value": self.e_value,
            "threshold": self.threshold,
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "samples": self.samples,
        }
        if self.e_value_within is not None:
            data["e_value_within"] = self.e_value_within
        if self.within is not None:
            data["within"] = self.within
        return data


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
    evidence: Evidence | None = None

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON; `evidence` appears only for sequential checks."""
        data: dict[str, Any] = {
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
        if self.evidence is not None:
            data["evidence"] = self.evidence.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        evidence = data.get("evidence")
        return cls(
            **{
                **data,
                "outcome": Outcome(data["outcome"]),
                "evidence": None if evidence is None else Evidence(**evidence),
            }
        )


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

    @property
    def not_shown_within(self) -> tuple[Check, ...]:
        """Passing checks against the baseline whose estimate is beyond their bound
        (Evidence.within). A step that must not end on the mere absence of evidence against the
        canary (a shadow step) ends only when this is empty."""
        return tuple(
            c for c in self.checks
            if c.outcome is Outcome.PASS and c.evidence is not None and c.evidence.within is False
        )  # fmt: skip

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
        checks = tuple(Check.from_dict(c) for c in data.get("checks", []))
        return cls(Outcome(data["outcome"]), checks, data["window_start"], data["window_end"])
