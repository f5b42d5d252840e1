"""What a gate found: every check with its numbers, the eval's scores, the cost projection.

`to_dict()` is the `--output json` document (see docs/gate.md); its keys are a contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaryctl.analysis import Check, Outcome
from canaryctl.evals.judge import ModelScore
from canaryctl.gate.cost import CostProjection

__all__ = ["EXIT_CODES", "EvalReport", "GateCheck", "GateReport"]

EXIT_CODES = {Outcome.PASS: 0, Outcome.FAIL: 1, Outcome.INCONCLUSIVE: 1}
"""Only a pass lets CI promote: an inconclusive gate proved nothing."""


@dataclass(frozen=True)
class GateCheck:
    """A check and the part of the gate it comes from: `eval`, `live` or `cost`."""

    kind: str
    check: Check

    @property
    def name(self) -> str:
        return f"{self.kind}: {self.check.slo}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, **self.check.to_dict()}


@dataclass(frozen=True)
class EvalReport:
    benchmark: str
    confidence: float
    baseline: ModelScore
    canary: ModelScore
    difference_interval: tuple[float, float]
    duration_seconds: float

    @property
    def difference(self) -> float:
        return self.canary.score - self.baseline.score

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "confidence": self.confidence,
            "baseline": self.baseline.to_dict(),
            "canary": self.canary.to_dict(),
            "difference": self.difference,
            "difference_interval": list(self.difference_interval),
            "cost_usd": None  # a model with no price: the eval's cost is unknown
            if self.baseline.cost_usd is None or self.canary.cost_usd is None
            else self.baseline.cost_usd + self.canary.cost_usd,
            "duration_seconds": self.duration_seconds,
        }


@dataclass(frozen=True)
class GateReport:
    name: str
    baseline: str
    canary: str
    checks: tuple[GateCheck, ...]
    eval: EvalReport | None
    projection: CostProjection | None
    live_window: tuple[float, float] | None
    """(start, end) epoch seconds of the live window judged, when there was one."""

    @property
    def outcome(self) -> Outcome:
        outcomes = {c.check.outcome for c in self.checks}
        if Outcome.FAIL in outcomes:
            return Outcome.FAIL
        if Outcome.INCONCLUSIVE in outcomes or not outcomes:
            return Outcome.INCONCLUSIVE
        return Outcome.PASS

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    @property
    def reason(self) -> str:
        """The checks that decided the outcome, in words; empty for a pass."""
        if self.outcome is Outcome.PASS:
            return ""
        if not self.checks:
            return "no checks ran"
        return "; ".join(c.check.reason for c in self.checks if c.check.outcome is self.outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "baseline": self.baseline,
            "canary": self.canary,
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "checks": [c.to_dict() for c in self.checks],
            "eval": None if self.eval is None else self.eval.to_dict(),
            "live_window": None if self.live_window is None else list(self.live_window),
            "cost_projection": None if self.projection is None else self.projection.to_dict(),
        }
