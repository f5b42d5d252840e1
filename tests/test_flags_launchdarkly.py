"""The LaunchDarkly REST flag backend against a local server speaking the same REST subset."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canaryctl.controller import RolloutRunner
from canaryctl.errors import (
    FlagMismatch,
    InvalidInput,
)
from canaryctl.flags import FlagClaim, LaunchDarklyFlagStore, Split, flag_store_for
from canaryctl.runbook.rollout import LaunchDarklyFlagSpec
from tests.ld_server import Fault, LDServer, make_flag, serve
from tests.test_controller import BASELINE, CANARY, T0
from tests.test_flag_store_contract import scripted_runner

TOKEN = "api-0c1d2e3f-SECRET-TOKEN-do-not-print"
PROJECT, ENV, KEY = "default", "production", "support-bot-model"

FREE_RULE = {
    "_id": "rule-free",
    "description": "free tier",
    "clauses": [{"attribute": "tier", "op": "in", "values": ["free"]}],
    "variation": 0,
}
PAID_RULE = {
    "_id": "rule-paid",
    "description": "paid tier",
    "clauses": [{"attribute": "tier", "op": "in", "values": ["paid"]}],
    "variation": 0,
}
ENTERPRISE_RULE = {
    "_id": "rule-enterprise",
    "description": "enterprise tier",
    "clauses": [{"attribute": "tier", "op": "in", "values": ["enterprise"]}],
    "variation": 3,
}


@pytest.fixture
def ld() -> Iterator[LDServer]:
    server = LDServer(TOKEN)
    server.add(
        PROJECT,
        make_flag(
            KEY,
            [
                ("id-gpt4", "gpt-4-turbo", "GPT-4 Turbo"),
                ("id-mini", "gpt-4o-mini", "GPT-4o mini"),
                ("id-mixtral", "mixtral-8x7b", "Mixtral"),
                ("id-ft", "ft:gpt-4o:enterprise", "Enterprise fine-tune"),
            ],
            {
                ENV: {
                    "fallthrough": {"variation": 0},
                    "rules": [FREE_RULE, PAID_RULE, ENTERPRISE_RULE],
                },
                "staging": {"fallthrough": {"variation": 1}},
            },
        ),
    )
    with serve(server):
        yield server


def _store(ld: LDServer, sleeps: list[float], **overrides: Any) -> LaunchDarklyFlagStore:
    options: dict[str, Any] = {
        "project": PROJECT,
        "environment": ENV,
        "key": KEY,
        "baseline": "gpt-4-turbo",  # by value
        "canary": "GPT-4o mini",  # by name
        "token": TOKEN,
        "base_url": ld.base_url,
        "sleep": sleeps.append,
        **overrides,
    }
    return LaunchDarklyFlagStore(**options)


def _patches(ld: LDServer) -> list[tuple[str, str, dict[str, str], Any]]:
    return [r for r in ld.requests if r[0] == "PATCH"]


def test_round_trip_sets_weights_promotes_and_restores_exactly(ld: LDServer) -> None:
    store = _store(ld, [])
    before = ld.env(PROJECT, KEY, ENV)
    saved = store.snapshot()
    assert store.split(saved) == Split(baseline=100.0, canary=0.0)
    assert store.variants(saved) == ("gpt-4-turbo", "gpt-4o-mini")  # the canary named by name

    step = store.set_canary_weight(10, expect_version=saved.version, comment="run r1 step 1: 10%")
    fallthrough = ld.env(PROJECT, KEY, ENV)["fallthrough"]
    weights = {
        ["id-gpt4", "id-mini", "id-mixtral", "id-ft"][v["variation"]]: v["weight"]
        for v in fallthrough["rollout"]["variations"]
    }
    assert weights == {"id-mini": 10_000, "id-gpt4": 90_000}
    assert store.split(step) == Split(baseline=90.0, canary=10.0)
    assert step.version == saved.version + 1

    _, path, headers, body = _patches(ld)[-1]
    assert path == f"/api/v2/flags/{PROJECT}/{KEY}"
    assert headers["content-type"] == "application/json; domain-model=launchdarkly.semanticpatch"
    assert headers["ld-api-version"] == "20240415"
    sent = json.loads(body)
    assert (sent["comment"], sent["environmentKey"]) == ("run r1 step 1: 10%", ENV)

    promoted = store.promote(expect_version=step.version, comment="run r1 promote")
    assert ld.env(PROJECT, KEY, ENV)["fallthrough"] == {"variation": 1}
    assert store.split(promoted) == Split(baseline=0.0, canary=100.0)

    restored = store.restore(saved, expect_version=promoted.version, comment="run r1 rollback")
    after = ld.env(PROJECT, KEY, ENV)
    assert after["fallthrough"] == before["fallthrough"]
    assert after["rules"] == before["rules"]
    assert after["on"] is True
    assert store.split(restored) == Split(baseline=100.0, canary=0.0)
    # The old targeting at a new version: an SDK that saw the promotion takes the restore too.
    assert restored.version == promoted.version + 1 > saved.version
    assert ld.env(PROJECT, KEY, ENV)["_version"] == restored.version
    assert ld.env(PROJECT, KEY, "staging")["_version"] == 1


def test_restore_puts_back_a_prior_rollout_with_its_bucketing(ld: LDServer) -> None:
    prior = {
        "rollout": {
            "variations": [{"variation": 0, "weight": 70_000}, {"variation": 2, "weight": 30_000}],
            "bucketBy": "orgId",
            "contextKind": "organization",
        }
    }
    ld.edit(PROJECT, KEY, ENV, fallthrough=prior)
    store = _store(ld, [])
    saved = store.snapshot()
    assert store.split(saved) == Split(baseline=70.0, canary=0.0, other=30.0)
    step = store.set_canary_weight(5, expect_version=saved.version, comment="run r2 step 1")
    rollout = ld.env(PROJECT, KEY, ENV)["fallthrough"]["rollout"]
    assert (rollout["bucketBy"], rollout["contextKind"]) == ("orgId", "organization")
    store.restore(saved, expect_version=step.version, comment="run r2 rollback")
    assert ld.env(PROJECT, KEY, ENV)["fallthrough"] == prior


def test_rule_scoped_rollout_moves_only_the_free_tier(ld: LDServer) -> None:
    before = ld.env(PROJECT, KEY, ENV)
    store = _store(ld, [], canary="mixtral-8x7b", rule="free tier")
    saved = store.snapshot()
    step = store.set_canary_weight(25, expect_version=saved.version, comment="run r3 step 1")
    after = ld.env(PROJECT, KEY, ENV)
    free, paid, enterprise = after["rules"]
    assert free["rollout"]["variations"] == [
        {"variation": 2, "weight": 25_000},
        {"variation": 0, "weight": 75_000},
    ]
    assert "variation" not in free
    assert free["clauses"] == FREE_RULE["clauses"]
    assert (paid, enterprise) == (PAID_RULE, ENTERPRISE_RULE)
    assert after["fallthrough"] == before["fallthrough"]
    assert store.split(step) == Split(baseline=75.0, canary=25.0)

    store.restore(saved, expect_version=step.version, comment="run r3 rollback")
    assert ld.env(PROJECT, KEY, ENV)["rules"] == before["rules"]


def test_a_rule_is_found_by_id_too_and_a_missing_one_is_named(ld: LDServer) -> None:
    assert _store(ld, [], rule="rule-paid").snapshot().key == KEY
    with pytest.raises(FlagMismatch, match=r"no targeting rule .*'gold tier'.*free tier"):
        _store(ld, [], rule="gold tier").snapshot()


def test_a_429_storm_is_survived_honouring_retry_after_then_ratelimit_reset(ld: LDServer) -> None:
    sleeps: list[float] = []
    store = _store(ld, sleeps)
    saved = store.snapshot()
    reset_ms = int((time.time() + 600) * 1000)
    ld.faults = [Fault(429, {"Retry-After": "7"}, "PATCH")] * 3 + [
        Fault(429, {"X-Ratelimit-Reset": str(reset_ms)}, "PATCH")
    ]
    step = store.set_canary_weight(10, expect_version=saved.version, comment="run r5 step 1")
    assert store.split(step) == Split(baseline=90.0, canary=10.0)
    assert len(sleeps) == 4
    assert all(s >= 7 for s in sleeps[:3])
    # Ten minutes away: waited the policy's ceiling, far beyond any exponential backoff step.
    assert sleeps[3] >= 30
    assert len(_patches(ld)) == 5


def test_the_factory_builds_the_store_from_a_runbook_spec(
    ld: LDServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = LaunchDarklyFlagSpec.model_validate(
        {
            "provider": "launchdarkly",
            "project": PROJECT,
            "environment": ENV,
            "key": KEY,
            "baseline": "gpt-4-turbo",
            "canary": "gpt-4o-mini",
            "base_url": ld.base_url,
            "token_env": "CANARY_LD_TOKEN",
        }
    )
    monkeypatch.delenv("CANARY_LD_TOKEN", raising=False)
    with pytest.raises(InvalidInput, match="CANARY_LD_TOKEN is not set"):
        flag_store_for(spec)
    monkeypatch.setenv("CANARY_LD_TOKEN", TOKEN)
    store = flag_store_for(spec)
    assert isinstance(store, LaunchDarklyFlagStore)
    assert store.split(store.snapshot()) == Split(baseline=100.0, canary=0.0)


# -- the controller driving LaunchDarkly ---------------------------------------------------------


def _runner(ld: LDServer, tmp_path: Path) -> RolloutRunner:
    """The real controller driving the REST store (tests/test_flag_store_contract.py)."""
    spec = {"provider": "launchdarkly", "project": PROJECT, "environment": ENV, "key": KEY}
    spec |= {"baseline": BASELINE, "canary": CANARY, "base_url": ld.base_url}
    return scripted_runner(LaunchDarklyFlagSpec.model_validate(spec), _store(ld, []), tmp_path)


def _targeting_patches(ld: LDServer) -> list[tuple[str, str, dict[str, str], Any]]:
    """Semantic patches naming the environment, and JSON patches (a claimed flag's writes)."""
    return [r for r in _patches(ld) if {"environmentKey", "patch"} & set(json.loads(r[3]))]


def _claim_values(ld: LDServer) -> list[str]:
    flag = ld.flags[(PROJECT, KEY)]
    return (flag.get("customProperties") or {}).get(f"canaryctl-claim-{ENV}", {}).get("value", [])


def test_a_run_claims_the_flag_in_launchdarkly_and_releases_it(
    ld: LDServer, tmp_path: Path
) -> None:
    runner = _runner(ld, tmp_path)
    seen: list[list[str]] = []
    runner.clock.call_at(T0 + 30, lambda: seen.append(_claim_values(ld)))
    result = runner.run()
    assert result.outcome == "promoted"
    (held,) = seen[0]
    claim = FlagClaim.from_json(held)
    assert (claim.run_id, claim.pid) == (result.run_id, os.getpid())
    assert claim.state == str((tmp_path / "state.db").resolve())
    assert _claim_values(ld) == []  # released at the end
    bodies = [json.loads(b) for *_, b in _patches(ld)]
    settings = [b for b in bodies if "instructions" in b and "environmentKey" not in b]
    kinds = [s["instructions"][0]["kind"] for s in settings]
    assert kinds == ["addCustomProperties", "replaceCustomProperties", "removeCustomProperties"]
    # Every targeting write of the run was a compare-and-swap on the flag and on the claim.
    for *_, headers, body in _targeting_patches(ld):
        tests = [op["path"] for op in json.loads(body)["patch"] if op["op"] == "test"]
        assert headers["content-type"] == "application/json"
        assert tests == ["/_version", f"/customProperties/canaryctl-claim-{ENV}/value/0"]
    # Taking and dropping the claim never moved the targeting's version.
    assert ld.env(PROJECT, KEY, ENV)["_version"] == 1 + len(_targeting_patches(ld))


def test_a_flag_that_is_off_or_lacks_a_variation_is_refused_before_any_write(
    ld: LDServer,
) -> None:
    with pytest.raises(FlagMismatch, match="no variation with value or name 'llama-3'"):
        _store(ld, [], canary="llama-3").snapshot()
    ld.edit(PROJECT, KEY, ENV, on=False)
    with pytest.raises(FlagMismatch, match="is off"):
        _store(ld, []).snapshot()
    assert _patches(ld) == []
