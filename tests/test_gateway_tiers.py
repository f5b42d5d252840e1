"""Tiered routing with the shipped example flag (runbooks/tiered/flags.json) and the real
LaunchDarkly SDK: tier and team reach the flag's rules, the `tier` metric label stays bounded,
and moving the flag's default rule (what the free-tier runbook does) moves the free tier only."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.flags import FileFlagStore
from canaryctl.lab import LabStack
from canaryctl.runbook import Gateway, Rollout, load_document
from canaryctl.runbook.lab import LabSpec

RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks" / "tiered"
MODELS = ["gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b", "support-ft"]
FAST = {"median": 0.001, "p95": 0.003}


def tiered_lab(flags: Path) -> LabSpec:
    gateway = {
        "listen": "127.0.0.1:0",
        "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
        "routes": [
            {"name": "support-bot", "flag": "support-bot-model", "default_model": "mixtral-8x7b"}
        ],
        "models": [{"name": m, "base_url": f"lab://{m}"} for m in MODELS],
    }
    providers = [{"name": m, "latency": FAST} for m in MODELS]
    return LabSpec.model_validate({"providers": providers, "gateway": gateway})


def ask(stack: LabStack, user: str, **headers: str) -> str:
    response = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        json={"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-User": user, **headers},
    )
    assert response.status_code == 200
    return response.headers["x-canaryctl-variant"]


def requests_by_tier(stack: LabStack) -> dict[str, float]:
    text = httpx.get(stack.metrics_url).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "llm_requests_total":
                totals[s.labels["tier"]] = totals.get(s.labels["tier"], 0) + s.value
    return totals


def with_team_rule(flags: Path) -> None:
    """Add a rule on the `team` attribute ahead of the tier rules: the ml team tries GPT-4o-mini."""
    document = json.loads(flags.read_text())
    flag = document["flags"]["support-bot-model"]
    clause = {"contextKind": "user", "attribute": "team", "op": "in", "values": ["ml"]}
    flag["rules"].insert(0, {"id": "ml-team", "clauses": [clause], "variation": 1})
    flags.write_text(json.dumps(document))


def test_each_tier_gets_its_model_and_its_own_bounded_metric_label(tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    shutil.copy(RUNBOOKS / "flags.json", flags)
    with_team_rule(flags)
    with LabStack(tiered_lab(flags), traffic=False) as stack:
        assert ask(stack, "u1", **{"X-Tier": "free"}) == "mixtral-8x7b"
        assert ask(stack, "u2", **{"X-Tier": "paid"}) == "gpt-4-turbo"
        assert ask(stack, "u3", **{"X-Tier": "enterprise"}) == "support-ft"
        assert ask(stack, "u4") == "mixtral-8x7b"  # no tier: the default tier, free
        assert ask(stack, "u5", **{"X-Tier": "gold"}) == "mixtral-8x7b"  # unknown: default rule
        assert ask(stack, "u6", **{"X-Tier": "paid", "X-Team": "ml"}) == "gpt-4o-mini"
        for i in range(20):  # tiers nobody configured do not grow the label set
            ask(stack, f"v{i}", **{"X-Tier": f"made-up-{i}"})
        assert requests_by_tier(stack) == {"free": 2, "paid": 2, "enterprise": 1, "other": 21}


def test_moving_the_default_rule_moves_the_free_tier_only(tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    shutil.copy(RUNBOOKS / "flags.json", flags)
    runbook = load_document(RUNBOOKS / "rollout-free-tier.yaml", expect=Rollout).spec
    assert runbook.flag.provider == "file"
    store = FileFlagStore(flags, runbook.flag.key, runbook.flag.baseline, runbook.flag.canary)
    with LabStack(tiered_lab(flags), traffic=False) as stack:
        before = store.snapshot()
        store.set_canary_weight(50, expect_version=before.version, comment="test")
        users = [f"user-{i}" for i in range(60)]
        deadline = time.monotonic() + 5
        while all(ask(stack, u, **{"X-Tier": "free"}) == "mixtral-8x7b" for u in users[:20]):
            assert time.monotonic() < deadline, "the SDK did not pick up the new split"
            time.sleep(0.05)
        free = {ask(stack, u, **{"X-Tier": "free"}) for u in users}
        paid = {ask(stack, u, **{"X-Tier": "paid"}) for u in users}
        enterprise = {ask(stack, u, **{"X-Tier": "enterprise"}) for u in users}
        assert free == {"mixtral-8x7b", "gpt-4o-mini"}
        assert paid == {"gpt-4-turbo"}
        assert enterprise == {"support-ft"}


def test_the_tiered_examples_are_valid_documents() -> None:
    gateway: Any = load_document(RUNBOOKS / "gateway.yaml", expect=Gateway).spec
    assert {m.name for m in gateway.models} >= set(MODELS)
    assert [b.name for b in gateway.budgets.limits] == ["team-daily", "user-hourly", "nightly-eval"]
