"""The whole rollout story on the embedded defaults, offline: a bad canary, then a good one.

The lab (four simulated providers, the gateway and traffic) runs on loopback with free ports; the
two rollouts are the shipped runbooks pointed at this lab's flag file and /metrics, run by the same
controller that `canaryctl rollout run` uses. The `claude` scenario tells the other story: a
Claude canary (Anthropic's Messages API behind the gateway) whose overloaded errors climb is
rolled back to GPT-4 by its runbook.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canaryctl.controller import RolloutObserver, RunResult
    from canaryctl.runbook import Rollout

# The controller, the lab and the documents are imported when a demo runs: `canaryctl demo
# --help` reads only SCENARIOS.

__all__ = ["PLAN", "SCENARIOS", "DemoReport", "Scenario", "run_demo"]

PLAN: tuple[tuple[str, str], ...] = (
    ("rollout-mixtral.yaml", "rolled_back"),
    ("rollout-gpt4o-mini.yaml", "promoted"),
)
"""Each embedded runbook with the outcome the demo exists to show."""


@dataclass(frozen=True)
class Scenario:
    """An embedded lab, its flag file, and the runbooks to run in it with their outcomes."""

    lab: str
    flags: str
    plan: tuple[tuple[str, str], ...]


SCENARIOS = {
    "support-bot": Scenario("lab.yaml", "flags.json", PLAN),
    "claude": Scenario(
        "lab-claude.yaml", "flags-claude.json", (("rollout-claude.yaml", "rolled_back"),)
    ),
}


@dataclass
class DemoReport:
    results: list[tuple[str, RunResult]] = field(default_factory=list)
    served: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    planned: int = len(PLAN)

    @property
    def ok(self) -> bool:
        return len(self.results) == self.planned and all(
            result.outcome == expected for expected, result in self.results
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "summary",
            "ok": self.ok,
            "rollouts": [
                {**result.to_dict(), "expected": expected} for expected, result in self.results
            ],
            "served": self.served,
            "seconds": round(self.seconds, 1),
        }


def _default(name: str) -> str:
    return (resources.files("canaryctl") / "defaults" / name).read_text(encoding="utf-8")


def _runbook(name: str, flags_path: Path, metrics_url: str) -> Rollout:
    """The embedded runbook, aimed at this lab instead of the addresses written in it."""
    import yaml

    from canaryctl.runbook import Rollout

    data = yaml.safe_load(_default(name))
    data["spec"]["flag"]["path"] = str(flags_path)
    data["spec"]["metrics"]["targets"] = [metrics_url]
    return Rollout.model_validate(data, context={"base_dir": flags_path.parent})


def run_demo(
    workdir: Path, observers: Sequence[RolloutObserver] = (), scenario: str = "support-bot"
) -> DemoReport:
    """Run the scenario's rollouts in `workdir` (flag file and state database are kept there)."""
    from canaryctl.controller import run_rollout
    from canaryctl.lab import LabStack
    from canaryctl.runbook import Lab, parse_document

    started = time.monotonic()
    story = SCENARIOS[scenario]
    flags_path = workdir / story.flags
    flags_path.write_text(_default(story.flags), encoding="utf-8")
    lab = parse_document(_default(story.lab), story.lab, base_dir=workdir, expect=Lab)
    report = DemoReport(planned=len(story.plan))
    with LabStack(lab, flags_path=flags_path) as stack:
        for name, expected in story.plan:
            rollout = _runbook(name, flags_path, stack.metrics_url)
            result = run_rollout(rollout, state_path=workdir / "state.db", observers=observers)
            report.results.append((expected, result))
            if result.outcome != expected:
                break
        if stack.traffic is not None:
            report.served = stack.traffic.snapshot().by_variant
    report.seconds = time.monotonic() - started
    return report
