"""The controller API on a loopback port over a real state file, and rollouts to look at: one
finished on fakes, one driven live (system clock) in a thread, as a controller would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from canaryctl.api import ApiTokens, create_app
from canaryctl.chaos.server import BackgroundServer
from canaryctl.clock import SystemClock
from canaryctl.controller import RunResult, StateStore, run_rollout
from canaryctl.metrics import ScriptedMetricsSource
from tests.rollout_world import World

OPERATOR = "op-" + "7" * 30
VIEWER = "view-" + "3" * 30
TOKENS = ApiTokens.parse(f"ops:operator:{OPERATOR},grafana:viewer:{VIEWER}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def api_server(
    state: Path, open_store: Callable[[], StateStore] | None = None
) -> Iterator[BackgroundServer]:
    opener = open_store if open_store is not None else (lambda: StateStore(state))
    with BackgroundServer(create_app(opener, TOKENS)) as server:
        yield server


def rolled_back(tmp_path: Path) -> World:
    """A finished run on the fake clock: 10% holds, at 50% the canary's errors climb."""
    world = World(tmp_path)

    def degrade() -> None:
        world.canary_error_rate = 0.05 if world.canary() >= 50 else 0.004

    world.on_observe = degrade
    result = run_rollout(world.rollout, state_path=world.state, clock=world.clock,
                         flags=world.flags, metrics=world.metrics)  # fmt: skip
    assert result.outcome == "rolled_back"
    return world


class LiveRollout:
    """A rollout on the system clock in a thread, waiting for approval at 10%."""

    def __init__(self, tmp_path: Path, **spec: Any) -> None:
        steps = [{"set_weight": 10}, {"pause": "approval"}, {"set_weight": 100}]
        analysis = {"interval": "1s", "min_requests": 5, "method": "threshold"}
        self.world = World(tmp_path, steps=steps, analysis=analysis, **spec)
        self.world.clock = SystemClock()  # type: ignore[assignment]
        self.world.metrics = ScriptedMetricsSource(self.world._script, time.time)
        self.result: RunResult | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        w = self.world
        self.result = run_rollout(w.rollout, state_path=w.state, clock=w.clock, flags=w.flags,
                                  metrics=w.metrics)  # fmt: skip

    def start(self, server: BackgroundServer) -> int:
        """Start it; return its run id once the API shows it awaiting approval."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = httpx.get(f"{server.url}/api/v1/runs", headers=auth(VIEWER)).json()["runs"]
            if runs and runs[0]["phase"] == "awaiting_approval":
                return int(runs[0]["run_id"])
            time.sleep(0.1)
        raise AssertionError("the rollout never reached its approval step")

    def finish(self, timeout: float = 30) -> RunResult:
        self._thread.join(timeout)
        assert self.result is not None, "the rollout did not end"
        return self.result
