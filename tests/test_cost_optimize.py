"""`canaryctl cost optimize`: the LP's answers checked against what they must be.

Properties (Hypothesis) of `solve`: a plan never violates a constraint; its cost is the true
minimum (every vertex of a tier's LP is one model or a mix of two, enumerated here); adding a
constraint never lowers the cost; an infeasible tier is one no allowed model can serve, and the
answer names a binding constraint. Then the moves and runbooks, the flag plan, the facts'
sources (a real gateway registry scraped through httpx.MockTransport), and the CLI's exits.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryctl.cli.main import main
from canaryctl.controller.step import Finish, Promote, RolloutState, WeightSet, tick
from canaryctl.cost.flagplan import tier_splits, with_plan
from canaryctl.cost.observed import scrape_observed
from canaryctl.cost.optimize import ModelFacts, TierGoal, TierPlan, solve
from canaryctl.cost.runbooks import Move, moves, rollout_documents
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.retry import BACKEND
from canaryctl.runbook import Rollout
from canaryctl.runbook.optimize import RolloutTemplate
from tests.cost_lab import write_document

DEFAULTS = Path(__file__).resolve().parent.parent / "canaryctl" / "defaults"
TOL = 1e-6


# -- the solver ---------------------------------------------------------------------------------


@st.composite
def fleets(draw: st.DrawFn) -> list[ModelFacts]:
    count = draw(st.integers(1, 5))
    return [
        ModelFacts(
            name=f"m{i}",
            accuracy=draw(st.floats(0, 1)),
            p95_seconds=draw(st.floats(0.05, 5)),
            cost_per_query=draw(st.floats(0, 0.01)),
        )
        for i in range(count)
    ]


@st.composite
def goals(draw: st.DrawFn, names: list[str]) -> TierGoal:
    allow = draw(st.none() | st.sets(st.sampled_from(names), min_size=1))
    return TierGoal(
        name=draw(st.sampled_from(["free", "paid", "enterprise"])),
        monthly_queries=draw(st.floats(1, 1e8)),
        max_p95_seconds=draw(st.none() | st.floats(0.05, 5)),
        min_accuracy=draw(st.floats(0, 1)),
        models=None if allow is None else frozenset(allow),
    )


def _allowed(goal: TierGoal, model: ModelFacts) -> bool:
    in_list = goal.models is None or model.name in goal.models
    bound = goal.max_p95_seconds
    return in_list and (bound is None or (model.p95_seconds or 0) <= bound)


def _brute_force(models: list[ModelFacts], goal: TierGoal) -> float | None:
    """The cheapest cost per query over every vertex: one model alone, or two mixed so the
    floor holds exactly; None when none meets the floor."""
    usable = [m for m in models if _allowed(goal, m)]
    costs = [m.cost_per_query for m in usable if (m.accuracy or 0) >= goal.min_accuracy]
    for a, b in itertools.combinations(usable, 2):
        lo, hi = sorted((a, b), key=lambda m: m.accuracy or 0)
        if (lo.accuracy or 0) < goal.min_accuracy <= (hi.accuracy or 0):
            share = (goal.min_accuracy - (lo.accuracy or 0)) / (
                (hi.accuracy or 0) - (lo.accuracy or 0)
            )
            costs.append(share * (hi.cost_per_query or 0) + (1 - share) * (lo.cost_per_query or 0))
    return min((c for c in costs if c is not None), default=None)


def _check_plan(plan: TierPlan, models: list[ModelFacts]) -> None:
    facts = {m.name: m for m in models}
    goal = plan.goal
    assert math.isclose(sum(plan.split.values()), 1.0, abs_tol=TOL)
    assert all(share > 0 for share in plan.split.values())
    assert len(plan.split) <= 2, "a vertex of one tier's LP mixes at most two models"
    for name in plan.split:
        assert _allowed(goal, facts[name]), f"{name} breaks the allow-list or the p95 bound"
    accuracy = sum((facts[n].accuracy or 0) * s for n, s in plan.split.items())
    assert accuracy >= goal.min_accuracy - TOL
    assert math.isclose(accuracy, plan.accuracy, abs_tol=TOL)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_a_plan_meets_every_constraint_at_the_least_cost(data: st.DrawFn) -> None:
    models = data.draw(fleets())
    goal = data.draw(goals([m.name for m in models]))
    solution = solve(models, [goal])
    cheapest = _brute_force(models, goal)
    if cheapest is None:
        assert not solution.feasible and not solution.plans
        assert {b.tier for b in solution.infeasible} == {goal.name}
        assert {b.constraint for b in solution.infeasible} & {"p95", "min_accuracy", "models"}
        return
    assert solution.feasible, solution.infeasible
    (plan,) = solution.plans
    _check_plan(plan, models)
    # optimal within the solver's tolerance: 1e-7 of the costliest model's cost per query
    slack = 1e-6 * max(m.cost_per_query or 0 for m in models)
    assert math.isclose(plan.cost_per_query, cheapest, rel_tol=1e-6, abs_tol=slack)
    assert plan.monthly_usd == pytest.approx(plan.cost_per_query * goal.monthly_queries)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_adding_a_constraint_never_lowers_the_cost(data: st.DrawFn) -> None:
    models = data.draw(fleets())
    goal = data.draw(goals([m.name for m in models]))
    names = [m.name for m in models]
    tighter = data.draw(
        st.sampled_from(["floor", "p95", "models"]).flatmap(
            lambda kind: {
                "floor": st.floats(goal.min_accuracy, 1).map(
                    lambda a: replace(goal, min_accuracy=a)
                ),
                "p95": st.floats(0.05, goal.max_p95_seconds or 5).map(
                    lambda p: replace(goal, max_p95_seconds=p)
                ),
                "models": st.sets(st.sampled_from(sorted(goal.models or names)), min_size=1).map(
                    lambda allow: replace(goal, models=frozenset(allow))
                ),
            }[kind]
        )
    )
    loose, tight = solve(models, [goal]), solve(models, [tighter])
    if not loose.feasible:
        assert not tight.feasible, "a tighter problem cannot become feasible"
        return
    if tight.feasible:
        _check_plan(tight.plans[0], models)
        slack = 1e-6 * max(m.cost_per_query or 0 for m in models) * goal.monthly_queries
        assert tight.monthly_usd >= loose.monthly_usd - slack


def test_tiers_are_planned_together_and_explained_apart() -> None:
    models = [
        ModelFacts("big", 0.9, 1.4, 0.005),
        ModelFacts("mini", 0.85, 1.0, 0.0001),
        ModelFacts("slow", 0.95, 3.0, 0.0002),
    ]
    solution = solve(
        models,
        [
            TierGoal("free", 6e6, 2.0, 0.8),
            TierGoal("paid", 3e6, 2.0, 0.88),
            TierGoal("fast", 1e6, 0.5, 0.5),
            TierGoal("perfect", 1e6, 2.0, 0.93),
        ],
    )
    plans = {p.goal.name: p for p in solution.plans}
    assert plans["free"].split == {"mini": 1.0}
    paid = plans["paid"]
    assert set(paid.split) == {"big", "mini"} and math.isclose(paid.accuracy, 0.88)
    assert any(b.constraint == "min_accuracy" for b in paid.binding)
    assert any(b.constraint == "p95" and "slow" in b.message for b in paid.binding)
    assert paid.accuracy_price is not None and paid.accuracy_price > 0
    why = {(b.tier, b.constraint): b.message for b in solution.infeasible}
    assert "fastest: mini at 1.00s" in why[("fast", "p95")]
    assert "big at 0.9000" in why[("perfect", "min_accuracy")]
    assert "slow reaches the floor" in why[("perfect", "p95")], "the p95 bound binds jointly"


# -- moves and runbooks ------------------------------------------------------------------------


def _plan(split: dict[str, float], p95: float | None = 2.0) -> TierPlan:
    return TierPlan(TierGoal("paid", 1e6, p95, 0.8), split, 0.8, 1.0, 0.001, (), 0.0)


ACCURACY = {"big": 0.9, "mini": 0.85, "tiny": 0.7}


@pytest.mark.parametrize(
    ("today", "split", "expected"),
    [
        ({"big": 1.0}, {"big": 1.0}, []),
        ({"big": 1.0}, {"mini": 1.0}, [Move("big", "mini", 100.0)]),
        ({"big": 1.0}, {"big": 0.25, "tiny": 0.75}, [Move("big", "tiny", 75.0)]),
        ({"tiny": 1.0}, {"big": 0.25, "tiny": 0.75}, [Move("tiny", "big", 25.0)]),
        (
            {"other": 1.0},
            {"mini": 0.4, "tiny": 0.6},
            [Move("other", "mini", 100.0), Move("mini", "tiny", 60.0)],
        ),
    ],
)
def test_moves_go_through_the_more_accurate_model(
    today: dict[str, float], split: dict[str, float], expected: list[Move]
) -> None:
    assert moves(today, _plan(split), ACCURACY) == expected


LD_TEMPLATE = RolloutTemplate(
    flag={"provider": "launchdarkly", "project": "p", "environment": "e", "key": "bot"},
    metrics={"provider": "prometheus", "url": "http://prometheus:9090", "route": "bot"},
    weights=[5, 50, 100],
    pause=60,
)


def test_runbooks_scope_each_move_to_its_tier_and_keep_a_mixed_split() -> None:
    documents = rollout_documents(
        "plan", LD_TEMPLATE, _plan({"mini": 0.4, "tiny": 0.6}), {"big": 1.0}, ACCURACY
    )
    first, second = (Rollout.model_validate(d).spec for d in documents)
    assert (first.flag.baseline, first.flag.canary, first.finish) == ("big", "mini", "promote")
    assert [s.set_weight for s in first.steps if s.set_weight] == [5, 50, 100]
    assert (second.flag.baseline, second.flag.canary, second.finish) == ("mini", "tiny", "keep")
    assert [s.set_weight for s in second.steps if s.set_weight] == [5, 50, 60]
    assert second.flag.rule == "tier paid"
    assert second.metrics.selector == {"tier": "paid"}
    # The plan's accuracy holds only while each canary answers as well as its eval said.
    assert [s.describe() for s in first.slos] == [
        "error_rate <= 0.02", "latency_p95_seconds <= 2", "quality_score >= 0.85"
    ]
    assert [s.describe() for s in second.slos] == [
        "error_rate <= 0.02", "latency_p95_seconds <= 2", "quality_score >= 0.7"
    ]


def test_split_runbooks_scope_each_move_to_the_tiers_rule() -> None:
    """Split moves one rule by `attribute=value`; the gateway sends the tier as an attribute."""
    template = RolloutTemplate(
        flag={"provider": "split", "workspace": "w", "environment": "prod", "key": "bot"},
        metrics=LD_TEMPLATE.metrics,
        weights=[5, 50, 100],
    )
    documents = rollout_documents(
        "plan", template, _plan({"mini": 0.4, "tiny": 0.6}), {"big": 1.0}, ACCURACY
    )
    assert [Rollout.model_validate(d).spec.flag.rule for d in documents] == ["tier=paid"] * 2


def test_a_file_flag_cannot_move_one_tier_of_several() -> None:
    template = RolloutTemplate(
        flag={"provider": "file", "path": "/tmp/flags.json", "key": "bot"},
        metrics={"provider": "scrape", "targets": ["http://127.0.0.1:8080/metrics"]},
    )
    with pytest.raises(Exception, match="default rule only"):
        rollout_documents("plan", template, _plan({"mini": 1.0}), {"big": 1.0}, ACCURACY)
    (single,) = rollout_documents(
        "plan", template, _plan({"mini": 1.0}), {"big": 1.0}, ACCURACY, multi_tier=False
    )
    assert Rollout.model_validate(single).spec.flag.canary == "mini"


def test_finish_keep_ends_promoted_at_the_last_weight_without_promoting() -> None:
    (document,) = rollout_documents(
        "plan", LD_TEMPLATE, _plan({"big": 0.7, "tiny": 0.3}), {"big": 1.0}, ACCURACY
    )
    spec = Rollout.model_validate(document).spec
    state = RolloutState(item=len(spec.steps), weight=30.0, window_start=0.0)
    decision = tick(spec, state, 100.0, None)
    assert isinstance(decision.action, Finish) and decision.action.outcome == "promoted"
    assert decision.state.weight == 30.0
    promoting = spec.model_copy(update={"finish": "promote"})
    assert isinstance(tick(promoting, state, 100.0, None).action, Promote)
    assert not isinstance(tick(spec, RolloutState(), 0.0, WeightSet(0.0)).action, Promote)


# -- the flag plan and the facts -----------------------------------------------------------------


def test_a_plan_written_into_a_flag_reads_back() -> None:
    flag = json.loads((DEFAULTS / "flags.json").read_text())["flags"]["support-bot-model"]
    assert tier_splits(flag, ["free", "paid"]) == {
        "free": {"gpt-4-turbo": 1.0},
        "paid": {"gpt-4-turbo": 1.0},
    }
    plan = {"free": {"llama3-local": 1.0}, "paid": {"gpt-4o-mini": 0.7334, "llama3-local": 0.2666}}
    planned = with_plan(flag, plan)
    assert planned["version"] == flag["version"] + 1
    assert planned["variations"][:3] == flag["variations"], "indices keep their meaning"
    read = tier_splits(planned, ["free", "paid", "enterprise"])
    assert read["free"] == {"llama3-local": 1.0}
    assert read["paid"] == pytest.approx({"gpt-4o-mini": 0.7334, "llama3-local": 0.2666})
    assert read["enterprise"] == {"gpt-4-turbo": 1.0}, "an unplanned tier keeps the default"
    assert tier_splits(with_plan(planned, {"free": {"gpt-4o-mini": 1.0}}), ["free"]) == {
        "free": {"gpt-4o-mini": 1.0}
    }


def _exposition() -> bytes:
    metrics = GatewayMetrics()
    for model, seconds, completion in (("fast", 0.4, 100), ("slow", 2.6, 300)):
        labels = {"route": "bot", "variant": "fast", "model": model, "provider": "openai"}
        for i in range(100):
            metrics.duration.labels(**labels, tier="free").observe(seconds * (0.5 + i / 100))
            metrics.requests.labels(**labels, tier="free", outcome="ok").inc()
            metrics.tokens.labels(**labels, tier="free", kind="prompt").inc(20)
            metrics.tokens.labels(**labels, tier="free", kind="completion").inc(completion)
        other = {**labels, "route": "elsewhere"}
        metrics.requests.labels(**other, tier="free", outcome="ok").inc(1000)
    return metrics.exposition()


def test_p95_and_tokens_per_model_come_from_a_gateway_scrape() -> None:
    body = _exposition()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    with httpx.Client(transport=transport) as client:
        observed = scrape_observed(["http://gw/metrics"], "bot", client=client)
    assert observed["fast"].requests == 100, "other routes are not counted"
    assert 0.55 < (observed["fast"].p95_seconds or 0) < 0.75
    assert 3.0 < (observed["slow"].p95_seconds or 0) < 4.0
    assert observed["slow"].prompt_tokens == 20 and observed["slow"].completion_tokens == 300


def test_an_unreadable_gateway_is_a_backend_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    with httpx.Client(transport=transport) as client, pytest.raises(Exception) as caught:
        scrape_observed(
            ["http://user:pw@gw/metrics"],
            "bot",
            client=client,
            policy=replace(BACKEND, attempts=2, backoff=0, jitter=0),
        )
    assert caught.value.exit_code == 3  # type: ignore[attr-defined]
    assert "pw" not in str(caught.value) and "HTTP 503" in str(caught.value)


# -- the command ---------------------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["cost", "optimize", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_command_prints_the_plan_and_writes_valid_runbooks(tmp_path: Path) -> None:
    path = write_document(tmp_path)
    code, out, err = _run(str(path), "-o", "json", "--runbooks", str(tmp_path / "runbooks"))
    assert code == 0, err
    report = json.loads(out)
    tiers = {t["tier"]: t for t in report["tiers"]}
    # llama3-local has no price in the lab (its eval priced it at the default $0): its cost is
    # unknown, so the free tier goes to the cheapest priced model that meets its floor.
    assert tiers["free"]["plan"]["split"] == {"gpt-4o-mini": 1.0}
    (note,) = report["notes"]
    assert note.startswith("llama3-local has no price") and "cost_per_query_usd" in note
    assert report["models"][3]["cost_per_query_usd"] is None
    assert tiers["enterprise"]["today"]["monthly_usd"] == pytest.approx(4700.0)
    assert report["today_monthly_usd"] == pytest.approx(47_000.0)
    assert report["planned_monthly_usd"] < report["today_monthly_usd"]
    assert report["models"][0]["sources"]["accuracy"].startswith("eval evals.json")
    assert report["models"][0]["accuracy"] == 0.87, "the interval's low end by default"
    paths = [entry["path"] for entry in report["runbooks"]]
    assert paths and all(Path(p).exists() for p in paths)
    result = CliRunner().invoke(main, ["validate", *paths])
    assert result.exit_code == 0, result.output
    assert _run(str(path), "-o", "text")[0] == 0


def test_infeasible_constraints_exit_1_naming_the_binding_one(tmp_path: Path) -> None:
    path = write_document(
        tmp_path,
        tiers={"paid": {"share": 1, "p95": "1.1s", "min_accuracy": 0.86}},
    )
    code, out, _ = _run(str(path), "-o", "json")
    assert code == 1
    report = json.loads(out)
    assert report["feasible"] is False and report["runbooks"] == []
    (binding, *_) = report["infeasible"]
    assert binding["constraint"] == "min_accuracy" and "gpt-4o-mini" in binding["message"]
    assert any(
        b["constraint"] == "p95" and "gpt-4-turbo" in b["message"] for b in report["infeasible"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"evals": ["missing.json"]}, "missing.json"),
        ({"gateway": "evals.json"}, "evals.json: must be a mapping"),
        ({"route": "nope"}, "spec.route: 'nope' is not a route"),
        ({"models": {"gpt-5": {"accuracy": 0.99}}}, "spec.models: 'gpt-5' is not a model"),
        (
            {"today": {"free": {"gpt-4-turbo": 1}}},
            "spec.today: no split for tier(s) enterprise, paid",
        ),
        ({"tiers": {"free": {"share": 1, "min_accuracy": 1.5}}}, "min_accuracy"),
        (
            {"rollout": {"flag": {"provider": "file", "key": "k"}, "metrics": {}}},
            "spec.rollout.flag.path: required field is missing",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    code, _, err = _run(str(write_document(tmp_path, **change)), "-o", "json")
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_a_broken_eval_file_exits_2_naming_it(tmp_path: Path) -> None:
    path = write_document(tmp_path)
    (tmp_path / "evals.json").write_text('[{"model": "gpt-4-turbo", "score": 2}]')
    code, _, err = _run(str(path))
    assert code == 2 and "evals.json" in err
    (tmp_path / "evals.json").write_text('{"eval": null}')
    code, _, err = _run(str(path))
    assert code == 2 and "the gate ran no eval" in err


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 500) | st.floats(-1, 2) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "model",
                    "score",
                    "items",
                    "interval",
                    "eval",
                    "baseline",
                    "canary",
                    "latency_p95_seconds",
                    "cost_per_query_usd",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None)
@given(evals=JSON)
def test_any_eval_file_gets_an_answer_never_a_traceback(tmp_path_factory: Any, evals: Any) -> None:
    folder = tmp_path_factory.mktemp("hostile")
    path = write_document(folder)
    (folder / "evals.json").write_text(json.dumps(evals))
    code, _, err = _run(str(path), "-o", "json")
    assert code in (0, 1, 2), err
    assert "unexpected" not in err and "Traceback" not in err


def test_a_run_with_finish_keep_ends_promoted_at_the_planned_split(tmp_path: Path) -> None:
    """The whole runner on fakes (memory flag, scripted metrics, fake clock): the planned share
    is the end state, and the canary is never moved to 100%."""
    from tests.test_controller import Harness, make_rollout, steady

    rollout = make_rollout(steps=[{"set_weight": 5}, {"pause": 30}, {"set_weight": 37.5}])
    keep = rollout.model_copy(update={"spec": rollout.spec.model_copy(update={"finish": "keep"})})
    harness = Harness(tmp_path, keep, steady())
    result = harness.run()
    assert (result.outcome, result.exit_code) == ("promoted", 0)
    assert result.final_split is not None and result.final_split.canary == 37.5
    assert harness.weights_written() == ["canary to 5%", "canary to 37.5%"]
    assert harness.canary_weight() == 37.5


def test_a_model_priced_at_zero_on_purpose_serves_like_any_other(tmp_path: Path) -> None:
    path = write_document(tmp_path)
    lab = (tmp_path / "lab.yaml").read_text()
    marker = "        upstream_model: llama3:8b\n"
    assert marker in lab
    free = marker + "        price: {prompt_per_1k: 0, completion_per_1k: 0}\n"
    (tmp_path / "lab.yaml").write_text(lab.replace(marker, free))
    code, out, err = _run(str(path), "-o", "json")
    assert code == 0, err
    report = json.loads(out)
    tiers = {t["tier"]: t for t in report["tiers"]}
    assert tiers["free"]["plan"]["split"] == {"llama3-local": 1.0}
    assert report["notes"] == []


def test_runbooks_naming_a_variation_the_flag_lacks_are_not_written(tmp_path: Path) -> None:
    # One tier on a file flag whose variations lack the planned model: every runbook would stop
    # at its dry run, so none is written and the answer is exit 1 naming the variation.
    flag_path = tmp_path / "flags.json"
    rollout = {
        "flag": {"provider": "file", "path": "flags.json", "key": "support-bot-model"},
        "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:8080/metrics"]},
    }
    tiers = {"free": {"share": 1, "p95": "2s", "min_accuracy": 0.6}}
    path = write_document(tmp_path, tiers=tiers, rollout=rollout)
    flags = json.loads(flag_path.read_text())
    flags["flags"]["support-bot-model"]["variations"] = ["gpt-4-turbo", "mixtral-8x7b"]
    flag_path.write_text(json.dumps(flags))
    code, out, _ = _run(str(path), "-o", "json", "--runbooks", str(tmp_path / "out"))
    assert code == 1
    report = json.loads(out)
    assert report["unservable"] == ["gpt-4o-mini"] and report["runbooks"] == []
    assert any("no variation 'gpt-4o-mini'" in n for n in report["notes"])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    code, text, _ = _run(str(path), "-o", "text")
    assert code == 1 and "no variation 'gpt-4o-mini'" in text
    # With the variation added, the same plan is written and validates.
    flags["flags"]["support-bot-model"]["variations"].append("gpt-4o-mini")
    flag_path.write_text(json.dumps(flags))
    code, out, err = _run(str(path), "-o", "json", "--runbooks", str(tmp_path / "out"))
    assert code == 0, err
    assert [e["name"] for e in json.loads(out)["runbooks"]] == ["bot-free"]
