"""The shadow step on fakes: a fake clock, two in-memory flags (live and shadow), scripted counts.

Every run test checks both flags at the end: the live one never moved while the candidate was
only shadowed, and the shadow one is back where it was, whatever ended the run.
"""

from __future__ import annotations

import copy
import json
import os
import random
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError
from rollout_world import RUNBOOK
from rollout_world import World as RolloutWorld

from canaryctl.analysis import assess
from canaryctl.analysis.bound import BoundTest
from canaryctl.cli.main import main
from canaryctl.clock import FakeClock
from canaryctl.controller import (
    RolloutRunner,
    RunResult,
    StateStore,
    resume_rollout,
    run_rollout,
)
from canaryctl.controller.step import ShadowItem, plan
from canaryctl.errors import FlagClaimed, FlagMismatch
from canaryctl.flags import FlagClaim, MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Rollout, load_document
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec
from tests.test_report import rendered, screenshot

T0 = 1_700_000_000.0
BASELINE, CANARY = "gpt-4-turbo", "gpt-4o-mini"
SHADOW_SLOS: list[dict[str, Any]] = [
    {"metric": "error_rate", "compare": "baseline", "max_increase": 0.02},
    {"metric": "win_rate", "compare": "baseline", "max_decrease": 0.05},
]


def make_rollout(
    shadow: dict[str, Any] | None = None, steps: list[dict[str, Any]] | None = None
) -> Rollout:
    step = {"percent": 20, "until": "decided", "max": "30m", "slos": SHADOW_SLOS, **(shadow or {})}
    return Rollout.model_validate(
        {
            "kind": "Rollout",
            "metadata": {"name": "support-bot"},
            "spec": {
                "flag": {
                    "provider": "file",
                    "path": "/tmp/flags.json",
                    "key": "support-bot-model",
                    "baseline": BASELINE,
                    "canary": CANARY,
                },
                "shadow_flag": {
                    "provider": "file",
                    "path": "/tmp/flags.json",
                    "key": "support-bot-shadow",
                    "baseline": "off",
                    "canary": CANARY,
                },
                "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:8080/metrics"]},
                "slos": [{"metric": "error_rate", "max": 0.05}],
                "analysis": {"interval": 30, "min_requests": 50},
                "steps": steps or [{"shadow": step}, {"set_weight": 10}, {"pause": 60}],
            },
        }
    )


class World:
    """Live traffic of 10 requests a second, all to the baseline until a weight moves; the
    shadow script mirrors 20% of them to the candidate, with one judged pair per shadow answer.
    `win_rate` and `shadow_error_rate` steer the candidate."""

    def __init__(self, tmp_path: Path, rollout: Rollout) -> None:
        self.rollout = rollout
        self.clock = FakeClock(T0)
        self.flags = MemoryFlagStore("support-bot-model", BASELINE, CANARY)
        self.shadow_flags = MemoryFlagStore("support-bot-shadow", "off", CANARY)
        self.prior, self.shadow_prior = self.flags.snapshot(), self.shadow_flags.snapshot()
        self.win_rate = 0.5
        self.shadow_error_rate = 0.0
        self.baseline_error_rate = 0.01
        self.pairs = True
        self.metrics = ScriptedMetricsSource(
            self._live, self.clock.now, recent={BASELINE: 600.0}, shadow=self._shadow
        )
        self.store = StateStore(tmp_path / "state.db")
        self.shadowing_seen: list[float] = []

    def _live(self, since: float, now: float) -> Observation:
        n = 10 * (now - since)
        canary = self.flags.split(self.flags.snapshot()).canary / 100
        return Observation(
            since,
            now,
            {
                BASELINE: VariantStats(requests=n * (1 - canary)),
                CANARY: VariantStats(requests=n * canary),
            },
        )

    def _shadow(self, since: float, now: float) -> Observation:
        share = self.shadow_flags.split(self.shadow_flags.snapshot()).canary / 100
        self.shadowing_seen.append(share)
        n = 10 * (now - since)
        mirrored = n * share
        pairs = mirrored if self.pairs else 0.0
        candidate = VariantStats(
            requests=mirrored,
            errors=mirrored * self.shadow_error_rate,
            pairs=pairs,
            pair_wins=pairs * (self.win_rate - 0.1),
            pair_ties=pairs * 0.2,
        )
        baseline = VariantStats(requests=n, errors=n * self.baseline_error_rate)
        return Observation(since, now, {BASELINE: baseline, CANARY: candidate})

    def runner(self) -> RolloutRunner:
        return RolloutRunner(
            self.rollout,
            flags=self.flags,
            metrics=self.metrics,
            store=self.store,
            clock=self.clock,
            poll_interval=5.0,
            shadow_flags=self.shadow_flags,
        )

    def run(self) -> RunResult:
        return self.runner().run()

    def live_untouched(self) -> bool:
        now = self.flags.snapshot()
        return now == self.prior and not self.flags.history

    def shadow_restored(self) -> bool:
        return json.loads(self.shadow_flags.snapshot().raw) == json.loads(self.shadow_prior.raw)

    def shadow_writes(self) -> list[str]:
        return [comment.split(": ", 1)[1] for comment, _ in self.shadow_flags.history]


@pytest.fixture
def world(tmp_path: Path) -> Callable[..., World]:
    def factory(**rollout: Any) -> World:
        return World(tmp_path, make_rollout(**rollout))

    return factory


# -- the runbook ----------------------------------------------------------------------------------


def test_a_shadow_step_is_planned_before_the_first_weight() -> None:
    items = plan(make_rollout().spec)
    assert items[0] == ShadowItem(percent=20, until=0.0, max=1800.0, step=0)
    assert items[0].describe() == "shadow 20% until decided (max 1800s)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": [{"set_weight": 10}, {"shadow": {"percent": 20, "slos": SHADOW_SLOS}}]},
         "a shadow step comes before any set_weight"),
        ({"shadow_flag": None}, "a shadow step needs spec.shadow_flag"),
        ({"slos": [{"metric": "win_rate", "compare": "baseline", "max_decrease": 0.05}]},
         "win_rate is judged on shadow pairs only"),
        ({"shadow_flag": {"provider": "file", "path": "/tmp/flags.json",
                          "key": "support-bot-model", "baseline": "off", "canary": CANARY}},
         "shadow_flag: must be another flag"),
    ],
)  # fmt: skip
def test_a_runbook_that_misuses_the_shadow_step_is_refused(
    change: dict[str, Any], message: str
) -> None:
    data = make_rollout().model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"].update(change)
    data["spec"] = {k: v for k, v in data["spec"].items() if v is not None}
    with pytest.raises(ValidationError, match=message):
        Rollout.model_validate(data)


@pytest.mark.parametrize(
    ("slo", "message"),
    [
        ({"metric": "win_rate", "compare": "baseline", "max_decrease": 0.5}, "below 0.5"),
        ({"metric": "win_rate", "compare": "baseline", "max_increase": 0.1}, "max_decrease"),
    ],
)
def test_a_win_rate_bound_that_means_nothing_is_refused(slo: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SloSpec.model_validate(slo)


def test_win_rate_against_the_baseline_is_judged_against_even() -> None:
    slo = SloSpec(metric="win_rate", compare="baseline", max_decrease=0.05)
    assert slo.judged() == SloSpec(metric="win_rate", min=0.45)
    other = SloSpec(metric="error_rate", compare="baseline", max_increase=0.01)
    assert other.judged() is other


def test_until_must_fit_within_max() -> None:
    with pytest.raises(ValidationError, match="until: longer than max"):
        make_rollout({"until": "40m", "max": "30m"})


# -- runs -----------------------------------------------------------------------------------------


def test_a_candidate_that_loses_is_stopped_before_any_user_saw_it(
    world: Callable[..., World],
) -> None:
    w = world()
    w.win_rate = 0.4
    result = w.run()
    assert result.exit_code == 1
    assert result.outcome == "rolled_back"
    assert result.reason.startswith("stopped in shadow: SLO failed: win_rate >= 0.45")
    assert w.live_untouched()  # same version, same contents, never written
    assert w.shadow_writes() == ["canary to 20%", "restore"]
    assert w.shadow_restored()
    assert 0.2 in w.shadowing_seen  # it was judged while the shadow flag mirrored 20%
    analyses = w.store.events(result.run_id, "analysis")
    assert analyses and all(a.data["shadow"] for a in analyses)
    assert analyses[-1].data["outcome"] == "fail"


def test_an_equal_candidate_goes_on_to_its_first_live_weight(
    world: Callable[..., World],
) -> None:
    w = world()
    result = w.run()
    assert result.exit_code == 0, result.reason
    assert w.shadow_writes() == ["canary to 20%", "restore"]
    assert w.shadow_restored()
    live = [comment.split(": ", 1)[1] for comment, _ in w.flags.history]
    assert live == ["canary to 10%", "promote"]
    events = w.store.events(result.run_id)
    order = [e.type for e in events if e.type in ("shadow_flag_changed", "flag_changed")]
    assert order == ["shadow_flag_changed", "shadow_flag_changed", "flag_changed", "flag_changed"]
    shadow_analyses = [e for e in events if e.type == "analysis" and e.data.get("shadow")]
    assert shadow_analyses[-1].data["outcome"] == "pass"
    steps = [e.data["describe"] for e in events if e.type == "step_started"]
    assert steps[0] == "shadow 20% until decided (max 1800s)"


def test_a_candidate_that_fails_more_on_shadow_traffic_is_stopped(
    world: Callable[..., World],
) -> None:
    w = world()
    w.shadow_error_rate = 0.2
    result = w.run()
    assert result.exit_code == 1
    assert "stopped in shadow: SLO failed: error_rate" in result.reason
    assert w.live_untouched() and w.shadow_restored()


RELATIVE_ERRORS = [{"metric": "error_rate", "compare": "baseline", "max_increase": 0.05}]


def test_a_candidate_failing_half_its_calls_is_not_passed_on_for_want_of_evidence(
    world: Callable[..., World],
) -> None:
    """Against a baseline without errors, `max_increase` was read as a ratio that allowed so
    much that the relative check kept passing ("no evidence the canary is worse"), and only the
    step's wish for an estimate within the bound stopped it at `max`. As a test of the difference
    (50% against 0% + 5%) the SLO itself fails, within minutes."""
    w = world(shadow={"slos": RELATIVE_ERRORS, "max": "10m"})
    w.baseline_error_rate, w.shadow_error_rate = 0.0, 0.5
    result = w.run()
    assert result.exit_code == 1, result.reason
    assert result.reason.startswith("stopped in shadow: SLO failed: error_rate <= baseline + 0.05")
    assert w.clock.now() - T0 < 300
    assert w.live_untouched() and w.shadow_restored()


def test_an_equal_candidate_is_within_a_relative_bound_with_no_errors_anywhere(
    world: Callable[..., World],
) -> None:
    """With no errors on either side the ratio is unknown, but the candidate's rate is within
    the baseline's plus the increase."""
    w = world(shadow={"slos": RELATIVE_ERRORS, "max": "10m"})
    w.baseline_error_rate = 0.0
    result = w.run()
    assert result.exit_code == 0, result.reason
    assert w.clock.now() - T0 < 600  # decided before the max
    analyses = [e for e in w.store.events(result.run_id, "analysis") if e.data.get("shadow")]
    checks = analyses[-1].data["checks"]
    assert [c["evidence"]["within"] for c in checks if c.get("evidence")] == [True]


def test_a_passing_relative_check_says_the_canary_is_worse_when_it_is(
    world: Callable[..., World],
) -> None:
    """The shadow step labelled an error-rate check "pass: no evidence the canary is worse"
    while the candidate failed 15 times as often as the baseline (within an added 5%). The
    label says what the test knows: not worse than allowed, beside both rates."""
    w = world(shadow={"slos": RELATIVE_ERRORS, "max": "10m"})
    w.baseline_error_rate, w.shadow_error_rate = 0.001, 0.015
    result = w.run()
    assert result.exit_code == 0, result.reason
    shadow = [e for e in w.store.events(result.run_id, "analysis") if e.data.get("shadow")]
    check = next(c for c in shadow[-1].data["checks"] if c["outcome"] == "pass")
    assert check["reason"].startswith(
        "error_rate <= baseline + 0.05: canary 0.015 vs baseline 0.001, "
        "no evidence the canary is worse than allowed ("
    )


def test_no_judged_pairs_is_no_verdict_and_the_step_gives_up_at_its_max(
    world: Callable[..., World],
) -> None:
    w = world(shadow={"max": "5m"})
    w.pairs = False
    result = w.run()
    assert result.exit_code == 1
    assert result.reason.startswith("stopped in shadow: undecided at the step's max")
    assert "too few judged pairs" in result.reason
    assert w.clock.now() - T0 == pytest.approx(300, abs=31)
    assert w.live_untouched() and w.shadow_restored()


def test_until_a_duration_shadows_at_least_that_long(world: Callable[..., World]) -> None:
    w = world(shadow={"until": "10m"})
    result = w.run()
    assert result.exit_code == 0, result.reason
    ended = list(w.store.events(result.run_id, "shadow_flag_changed"))[-1]
    assert ended.data["action"] == "restore"
    assert ended.at - T0 >= 600


def test_ctrl_c_in_the_shadow_step_puts_the_shadow_flag_back(
    world: Callable[..., World],
) -> None:
    w = world()

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    w.clock.call_at(T0 + 45, ctrl_c)
    result = w.run()
    assert result.exit_code == 130
    assert w.live_untouched() and w.shadow_restored()


def test_a_human_moving_the_live_flag_during_the_shadow_step_still_ends_the_shadow(
    world: Callable[..., World],
) -> None:
    w = world()
    w.clock.call_at(T0 + 40, lambda: w.flags.edit_by_someone_else(50.0))
    result = w.run()
    assert result.exit_code == 3
    assert "someone else changed it" in result.reason
    assert w.flags.split(w.flags.snapshot()).canary == 50.0  # the human's edit stands
    assert w.shadow_restored()


def test_a_shadow_flag_already_mirroring_is_refused_before_anything_moves(
    world: Callable[..., World],
) -> None:
    w = world()
    w.shadow_flags.edit_by_someone_else(5.0)
    before = w.shadow_flags.snapshot()
    with pytest.raises(FlagMismatch, match="shadow flag 'support-bot-shadow' serves"):
        w.run()
    assert w.live_untouched()
    assert w.shadow_flags.snapshot() == before
    assert w.store.latest_run() is None


def test_rollout_status_shows_the_shadow_step(world: Callable[..., World]) -> None:
    w = world()
    w.win_rate = 0.4
    w.run()
    out = CliRunner().invoke(
        main, ["rollout", "status", "--state", str(w.store.path), "--output", "text"]
    )
    assert out.exit_code == 0, out.output
    assert "stopped in shadow" in out.output
    assert "last analysis of shadow traffic" in out.output
    assert "shadow: step over, the shadow flag is back off" in out.output


# -- the pairwise test ----------------------------------------------------------------------------


def test_the_pairwise_bound_test_rarely_rejects_at_its_bound_and_round_trips() -> None:
    """At the bound itself (the hardest case), over 60 looks of 50 pairs each, the beyond side
    crosses 1/alpha in at most alpha of the runs; a shortfall 0.1 beyond is caught."""
    rng = random.Random(7)
    alpha, bound, runs = 0.05, 0.55, 400

    def run(shortfall: float) -> tuple[bool, BoundTest]:
        test = BoundTest.near(bound)
        for _ in range(60):
            events = sum(rng.random() < shortfall for _ in range(50))
            test = test.observe(50, events)
            if test.e_value_beyond() >= 1 / alpha:
                return True, test
        return False, test

    false_stops = sum(run(bound)[0] for _ in range(runs))
    assert false_stops <= alpha * runs
    caught, test = run(bound + 0.1)
    assert caught
    assert BoundTest.from_dict(json.loads(json.dumps(test.to_dict()))) == test
    assert test.e_value_within() < 1  # no evidence the other way


def test_the_example_runbook_shadows_before_its_first_weight() -> None:
    path = Path(__file__).parent.parent / "runbooks" / "shadow" / "rollout-gpt4o-mini.yaml"
    rollout = load_document(path, expect=Rollout)
    items = plan(rollout.spec)
    assert isinstance(items[0], ShadowItem) and items[0].percent == 20
    assert rollout.spec.shadow_flag is not None and rollout.spec.shadow_flag.baseline == "off"
    flags = json.loads((path.parent / "flags.json").read_text())["flags"]
    assert flags[rollout.spec.shadow_flag.key]["variations"][0] == "off"
    assert rollout.spec.flag.canary in flags[rollout.spec.shadow_flag.key]["variations"]


def test_an_abort_during_the_shadow_step_puts_the_shadow_flag_back(
    world: Callable[..., World],
) -> None:
    w = world()

    def abort() -> None:
        with StateStore(w.store.path) as other:
            other.request(1, "abort", by="alice", at=w.clock.now())

    w.clock.call_at(T0 + 45, abort)
    result = w.run()
    assert (result.outcome, result.exit_code) == ("aborted", 1)
    assert w.live_untouched() and w.shadow_restored()


def test_a_metrics_outage_in_the_shadow_step_is_an_error_not_a_verdict(
    world: Callable[..., World],
) -> None:
    w = world()
    w.clock.call_at(T0 + 20, lambda: setattr(w.metrics, "down", True))
    result = w.run()
    assert result.exit_code == 3
    assert "metrics backend error" in result.reason
    assert w.live_untouched() and w.shadow_restored()


def test_a_resume_in_the_shadow_step_starts_it_again_and_still_puts_the_flag_back(
    world: Callable[..., World], tmp_path: Path
) -> None:
    """A process dies 45 s into the step, with the shadow flag mirroring: the resumed run
    adopts the shadow flag's journaled state, judges the candidate afresh, ends the step."""
    w = world()
    copy_path = tmp_path / "crashed.db"
    left: dict[str, MemoryFlagStore] = {}

    def crash() -> None:
        dest = sqlite3.connect(copy_path)
        with sqlite3.connect(w.store.path) as source:
            source.backup(dest)
        with dest:
            dest.execute("UPDATE runs SET lease_until = 0")
        dest.close()
        left["live"], left["shadow"] = copy.deepcopy(w.flags), copy.deepcopy(w.shadow_flags)

    w.clock.call_at(T0 + 45, crash)
    w.run()
    assert left["shadow"].split(left["shadow"].snapshot()).canary == 20  # died mirroring
    w.flags, w.shadow_flags = left["live"], left["shadow"]
    w.clock = FakeClock(T0 + 50)
    w.metrics = ScriptedMetricsSource(w._live, w.clock.now, shadow=w._shadow)
    result = resume_rollout(
        1,
        state_path=copy_path,
        rollout=w.rollout,
        clock=w.clock,
        flags=w.flags,
        metrics=w.metrics,
        shadow_flags=w.shadow_flags,
    )
    assert result.exit_code == 0, result.reason
    assert w.shadow_restored()
    with StateStore(copy_path) as store:
        after = [e for e in store.events(1, "analysis") if e.at > T0 + 50]
        assert after and after[0].data["shadow"]
        assert "resumed" in [e.type for e in store.events(1)]


def test_the_shadow_flag_is_claimed_like_the_live_one(world: Callable[..., World]) -> None:
    """Another run's claim on the shadow flag refuses this one before anything moves; a run
    that ends leaves neither flag claimed."""
    w = world()
    other = FlagClaim(token="other", run_id=7, state="elsewhere.db", host=socket.gethostname(),
                      pid=os.getpid(), at=T0)  # fmt: skip
    w.shadow_flags.claim(other)
    with pytest.raises(FlagClaimed, match="run 7"):
        w.run()
    assert w.live_untouched() and w.flags.claimed_by is None
    assert w.shadow_flags.claimed_by == other
    w.shadow_flags.release(other)
    seen: list[object] = []
    w.clock.call_at(T0 + 45, lambda: seen.append(w.shadow_flags.claimed_by))
    result = w.run()
    assert result.exit_code == 0, result.reason
    assert seen and getattr(seen[0], "run_id", None) == result.run_id
    assert w.flags.claimed_by is None and w.shadow_flags.claimed_by is None


def test_a_backtest_with_a_shadow_step_replays_the_live_steps_as_the_run_made_them(
    tmp_path: Path,
) -> None:
    """Shadow counts are not in a live run's journal: the replay skips the step, at once."""
    world = RolloutWorld(tmp_path, analysis={"interval": "10s", "min_requests": 50})
    world.canary_error_rate = 0.2
    result = run_rollout(
        world.rollout,
        state_path=world.state,
        clock=world.clock,
        flags=world.flags,
        metrics=world.metrics,
    )
    spec = {**RUNBOOK["spec"], "analysis": {"interval": "10s", "min_requests": 50}}
    spec["shadow_flag"] = {**spec["flag"], "key": "support-bot-shadow", "baseline": "off"}
    spec["steps"] = [{"shadow": {"percent": 20, "slos": SHADOW_SLOS}}, *spec["steps"]]
    runbook = tmp_path / "shadowed.yaml"
    runbook.write_text(yaml.safe_dump({**RUNBOOK, "spec": spec}))
    args = ["backtest", str(runbook), "--run", str(result.run_id), "--state", str(world.state)]
    out = CliRunner().invoke(main, [*args, "-o", "json"])
    assert out.exit_code == 0, out.output
    replayed = json.loads(out.output)["replay"]
    assert replayed["outcome"] == "rolled_back"
    assert replayed["reason"] == result.reason


def test_the_report_of_a_shadowed_run_marks_the_shadow_step_in_chromium(
    world: Callable[..., World], tmp_path: Path
) -> None:
    """The page of a run with a shadow step, as Chromium draws it: the step is a band in each
    panel (the live weight stays at 0% under it), the canary and the baseline both drawn."""
    w = world()
    result = w.run()
    assert result.exit_code == 0, result.reason
    page = tmp_path / "shadowed.html"
    args = ["report", str(result.run_id), "--state", str(w.store.path), "--html", str(page)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    dom = rendered(tmp_path, page)
    assert dom.count('class="shadow-step"') == 3  # weight, error rate and p95 panels
    assert "shadow (mirrored)" in dom
    # The scripted counts carry no latencies: the error-rate panel draws both roles.
    assert dom.count('class="series canary"') == 1 and dom.count('class="series baseline"') == 1
    screenshot(tmp_path, page)


def test_a_backtest_counts_the_runs_live_analyses_apart_from_its_shadow_ones(
    world: Callable[..., World], tmp_path: Path
) -> None:
    """A run with a shadow step journals the shadow analyses too; the backtest said "after 32
    analyses" for a run that made 25 live ones. The run's count is its live analyses (those the
    replay judges again), the shadow ones named apart."""
    w = world()
    result = w.run()
    assert result.exit_code == 0, result.reason
    events = w.store.events(result.run_id, "analysis")
    live = sum(1 for e in events if not e.data.get("shadow"))
    shadow = sum(1 for e in events if e.data.get("shadow"))
    assert live and shadow
    runbook = tmp_path / "own.yaml"
    runbook.write_text(yaml.safe_dump(w.rollout.model_dump(mode="json", exclude_none=True)))
    args = ["backtest", str(runbook), "--run", str(result.run_id), "--state", str(w.store.path)]
    data = json.loads(CliRunner().invoke(main, [*args, "-o", "json"]).output)
    assert data["run"]["analyses"] == live
    assert data["run"]["shadow_analyses"] == shadow
    assert len(data["replay"]["analyses"]) == live  # its own runbook judges each again
    text = CliRunner().invoke(main, [*args, "-o", "text"])
    assert text.exit_code == 0, text.output
    assert f"after {live} analyses ({shadow} of shadow traffic, not replayed)" in text.output


@pytest.mark.parametrize(
    ("profile", "code", "message"),
    [
        ("canaryctl", 0, '"valid": true'),
        ("litellm", 2, "spec.steps[0].shadow: metric profile 'litellm' has no shadow queries"),
    ],
)
def test_validate_says_whether_the_metric_profile_can_read_the_shadow_step(
    tmp_path: Path, profile: str, code: int, message: str
) -> None:
    data = make_rollout().model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["metrics"] = {"provider": "prometheus", "url": "http://127.0.0.1:9090",
                               "profile": profile}  # fmt: skip
    data["spec"]["slos"] = [{"metric": "error_rate", "max": 0.05}]
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(main, ["validate", str(path), "-o", "json"])
    assert out.exit_code == code, out.output
    assert message in out.output


@pytest.mark.parametrize(("wins", "outcome"), [(60, "pass"), (30, "fail")])
def test_win_rate_by_threshold_is_the_window_against_even_minus_the_margin(
    wins: float, outcome: str
) -> None:
    """(wins + ties/2) / pairs: 60 wins and 40 ties of 200 is 0.40, below 0.45; 90 wins, 0.55."""
    slo = SloSpec(metric="win_rate", compare="baseline", max_decrease=0.05)
    analysis = AnalysisSpec(method="threshold", min_requests=100)
    candidate = VariantStats(requests=200, pairs=200, pair_wins=wins + 30, pair_ties=40)
    observation = Observation(0, 60, {BASELINE: VariantStats(requests=1000), CANARY: candidate})
    verdict, _ = assess([slo], analysis, observation, {}, baseline=BASELINE, canary=CANARY)
    (check,) = verdict.checks
    assert check.outcome.value == outcome
    assert check.canary_value == pytest.approx((wins + 30 + 20) / 200)
    assert check.bound == pytest.approx(0.45)
