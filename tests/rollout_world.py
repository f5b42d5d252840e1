"""A rollout on fakes (memory flag, scripted metrics, fake clock) for observer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from canaryctl.clock import FakeClock
from canaryctl.flags import MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Rollout, parse_document

RUNBOOK: dict[str, Any] = {
    "apiVersion": "canaryctl/v1",
    "kind": "Rollout",
    "metadata": {"name": "support-bot"},
    "spec": {
        "flag": {
            "provider": "file",
            "path": "flags.json",
            "key": "support-bot-model",
            "baseline": "old",
            "canary": "new",
        },
        "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
        "slos": [
            {"metric": "error_rate", "max": 0.02},
            {"metric": "latency_p95_seconds", "max": 2.0},
        ],
        "analysis": {"interval": "10s", "min_requests": 50, "method": "threshold"},
        "steps": [{"set_weight": 10}, {"pause": "30s"}, {"set_weight": 50}, {"pause": "30s"},
                  {"set_weight": 100}],
    },
}  # fmt: skip

BUCKETS = (0.5, 1.0, 2.0, 5.0, float("inf"))


class World:
    """`canary_error_rate` and `canary_latency` steer the scripted canary's numbers."""

    def __init__(self, tmp_path: Path, **spec: Any) -> None:
        self.clock = FakeClock()
        self.flags = MemoryFlagStore("support-bot-model", "old", "new")
        self.prior = self.flags.snapshot().raw
        self.canary_error_rate = 0.0
        self.canary_latency = 0.4
        self.on_observe: Callable[[], None] = lambda: None
        self.metrics = ScriptedMetricsSource(self._script, self.clock.now)
        data = {**RUNBOOK, "spec": {**RUNBOOK["spec"], **spec}}
        self.rollout = parse_document(yaml.safe_dump(data), "rollout.yaml", expect=Rollout)
        self.state = tmp_path / "state.db"

    def _stats(self, n: float, error_rate: float, latency: float) -> VariantStats:
        buckets = tuple((b, n if latency <= b else 0.0) for b in BUCKETS)
        return VariantStats(requests=n, errors=n * error_rate, latency_buckets=buckets)

    def _script(self, since: float, now: float) -> Observation:
        self.on_observe()
        n = 10 * (now - since)
        return Observation(
            since,
            now,
            {
                "old": self._stats(n, 0.0, 0.4),
                "new": self._stats(n, self.canary_error_rate, self.canary_latency),
            },
        )

    def canary(self) -> float:
        return self.flags.split(self.flags.snapshot()).canary
