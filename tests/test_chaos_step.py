"""A rollout's `chaos` step: a scenario played at the current weight decides whether to go on.

The controller is driven with a fake clock and a fake player, so these tests pin the semantics
(ordering, rollback, a fresh analysis window, resume, bad scenarios before anything moves);
tests/test_chaos_scenario.py plays real scenarios against the real proxy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chaos_world import FLAG, TOKEN, chaos_world
from test_controller import T0, Harness, make_rollout, steady

from canaryctl.analysis import Outcome
from canaryctl.chaos.scenario import ScenarioResult
from canaryctl.controller import RolloutRunner, StateStore, run_rollout
from canaryctl.controller.phases import Phase
from canaryctl.controller.step import (
    ChaosItem,
    ChaosPlayed,
    Hold,
    RolloutState,
    RunChaos,
    WeightItem,
    plan,
    tick,
)
from canaryctl.errors import InvalidDocument
from canaryctl.metrics import Observation
from canaryctl.runbook import Rollout
from canaryctl.runbook.scenario import ChaosScenario

SCENARIO = """\
apiVersion: canaryctl/v1
kind: ChaosScenario
metadata: {name: canary-503}
spec:
  target: {url: "http://127.0.0.1:9", token_env: CANARYCTL_CHAOS_TOKEN}
  faults:
    - {fault: error, status: 503, rate: 1.0}
  duration: 30s
  hypothesis:
    metrics: {provider: scrape, targets: ["http://127.0.0.1:9/metrics"]}
    checks:
      - {metric: success_rate, min: 0.99}
"""


@pytest.fixture
def scenario_path(tmp_path: Path) -> Path:
    path = tmp_path / "canary-503.yaml"
    path.write_text(SCENARIO)
    return path


def chaos_steps(scenario: Path) -> list[dict[str, Any]]:
    return [
        {"set_weight": 10},
        {"chaos": str(scenario)},
        {"set_weight": 50},
        {"pause": 60},
    ]


class FakePlayer:
    """Plays a scenario by advancing the fake clock by its duration and answering `outcome`."""

    def __init__(self, h: Harness, outcome: str) -> None:
        self.h, self.outcome = h, outcome
        self.played: list[tuple[str, float, float]] = []

    def __call__(self, scenario: ChaosScenario) -> ScenarioResult:
        self.played.append((scenario.metadata.name, self.h.clock.now(), self.h.canary_weight()))
        self.h.clock.sleep(scenario.spec.duration)
        code = 0 if self.outcome == "held" else 1
        return ScenarioResult(self.outcome, code, f"it {self.outcome}", {"checks": []})


def runner(h: Harness, player: FakePlayer) -> RolloutRunner:
    return RolloutRunner(
        h.rollout,
        flags=h.flags,
        metrics=h.metrics,
        store=h.store,
        clock=h.clock,
        hooks=h.hooks,
        poll_interval=5.0,
        chaos=player,
    )


def test_the_plan_judges_a_weight_before_playing_chaos_at_it(scenario_path: Path) -> None:
    rollout = make_rollout(steps=chaos_steps(scenario_path))
    assert plan(rollout.spec) == (
        WeightItem(10, 0),
        Hold(0.0, None),
        ChaosItem(str(scenario_path), 1),
        WeightItem(50, 2),
        Hold(60.0, 3),
    )


def test_a_violated_scenario_rolls_back_and_a_held_one_restarts_the_window(
    scenario_path: Path,
) -> None:
    spec = make_rollout(steps=chaos_steps(scenario_path)).spec
    at_chaos = RolloutState(phase=Phase.CHAOS, item=2, weight=10, window_start=T0)
    assert tick(spec, at_chaos, T0 + 40, None).action == RunChaos(str(scenario_path))

    violated = tick(spec, at_chaos, T0 + 40, ChaosPlayed(False, "users saw 503s", T0 + 40))
    assert violated.state.phase is Phase.ROLLING_BACK
    assert violated.state.reason == "chaos: users saw 503s"

    held = tick(spec, at_chaos, T0 + 40, ChaosPlayed(True, "held", T0 + 40))
    assert held.state.phase is Phase.PROGRESSING and held.state.item == 3
    assert held.state.window_start == T0 + 40


def test_a_rollout_whose_chaos_scenario_is_violated_is_rolled_back(
    tmp_path: Path, scenario_path: Path
) -> None:
    h = Harness(tmp_path, make_rollout(steps=chaos_steps(scenario_path)), steady())
    player = FakePlayer(h, "violated")
    result = runner(h, player).run()
    assert result.outcome == "rolled_back"
    assert "chaos: scenario 'canary-503' violated" in result.reason
    assert [(name, weight) for name, _, weight in player.played] == [("canary-503", 10.0)]
    assert h.weights_written() == ["canary to 10%", "restore"]
    assert h.restored()
    [event] = h.store.events(1, "chaos")
    assert event.data["scenario"] == "canary-503"
    assert event.result is not None and event.result["outcome"] == "violated"


def test_a_held_scenario_lets_the_rollout_go_on_and_its_errors_stay_out_of_the_next_window(
    tmp_path: Path, scenario_path: Path
) -> None:
    played_until: list[float] = []

    def script(since: float, now: float) -> Observation:
        # Errors only while the faults were in: an analysis window that overlapped them fails.
        observation = steady()(since, now)
        if played_until and since < played_until[0]:
            return steady(canary_error_rate=0.5)(since, now)
        return observation

    steps = [{"set_weight": 10}, {"chaos": str(scenario_path)}, {"pause": 60}]
    h = Harness(tmp_path, make_rollout(steps=steps), script)

    class Recording(FakePlayer):
        def __call__(self, scenario: ChaosScenario) -> ScenarioResult:
            result = super().__call__(scenario)
            played_until.append(self.h.clock.now())
            return result

    result = runner(h, Recording(h, "held")).run()
    assert result.outcome == "promoted", result.reason
    analyses = h.store.events(1, "analysis")
    after = [a for a in analyses if a.at > played_until[0]]
    assert after and all(a.data["outcome"] != Outcome.FAIL.value for a in after)


def test_a_broken_scenario_stops_the_rollout_before_anything_moves(
    tmp_path: Path, scenario_path: Path
) -> None:
    scenario_path.write_text(SCENARIO.replace("rate: 1.0", "rate: 2.0"))
    h = Harness(tmp_path, make_rollout(steps=chaos_steps(scenario_path)), steady())
    with pytest.raises(InvalidDocument) as caught:
        runner(h, FakePlayer(h, "held")).run()
    assert "spec.faults[0].rate" in str(caught.value)
    assert h.flags.history == [] and h.store.runs() == []


@pytest.mark.e2e
def test_a_chaos_step_against_the_real_proxy_rolls_back_a_canary_without_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline falls back when its provider fails, the canary does not: at 50% the
    scenario's 503s reach users, the hypothesis is violated, the flag goes back byte for byte
    and the proxy is left with no fault."""
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)
    with chaos_world(tmp_path) as world:
        world.count_windows(monkeypatch)  # the steady state judged on enough requests
        prior = json.loads(world.flags.read_text())["flags"][FLAG]
        # The faults end at the first window with enough requests to judge (the example aborts
        # on a violation), however long a loaded machine takes to send them: 60 s is a bound.
        scenario = world.scenario(duration="60s")
        rollout = Rollout.model_validate(
            {
                "kind": "Rollout",
                "metadata": {"name": "direct-canary"},
                "spec": {
                    "flag": {
                        "provider": "file",
                        "path": str(world.flags),
                        "key": FLAG,
                        "baseline": "primary",
                        "canary": "primary-direct",
                    },
                    "metrics": {
                        "provider": "scrape",
                        "targets": [world.stack.metrics_url],
                        "route": "bot",
                    },
                    "slos": [{"metric": "error_rate", "max": 0.05}],
                    "analysis": {"interval": "1s", "min_requests": 10, "method": "threshold"},
                    "steps": [{"set_weight": 50}, {"chaos": str(scenario)}],
                },
            }
        )
        result = run_rollout(rollout, state_path=tmp_path / "state.db")
        assert result.outcome == "rolled_back", result.reason
        assert "chaos: scenario 'primary-503' violated" in result.reason
        restored = json.loads(world.flags.read_text())["flags"][FLAG]
        assert restored.pop("version") > prior.pop("version")  # the old split, a new version
        assert restored == prior
        assert world.admin.faults() == []
        with StateStore(tmp_path / "state.db") as store:
            [played] = store.events(1, "chaos")
        assert played.result is not None
        assert [r["result"]["found"] for r in played.result["journal"]["removals"]] == [True]
