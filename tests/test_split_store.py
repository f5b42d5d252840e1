"""The Split flag backend against a local server that follows Split's Admin API reference."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from canaryctl.controller import RolloutRunner
from canaryctl.errors import (
    FlagMismatch,
    InvalidInput,
)
from canaryctl.flags import FlagClaim, Split, SplitFlagStore, flag_store_for
from canaryctl.flags.factory import split_store_for
from canaryctl.runbook.experiment import SplitExperimentFlag
from canaryctl.runbook.loader import parse_document
from canaryctl.runbook.rollout import SplitFlagSpec
from tests.split_server import Fault, SplitServer, make_definition, serve, tier_rule
from tests.test_controller import BASELINE, CANARY, T0, make_rollout
from tests.test_flag_store_contract import scripted_runner

API_KEY = "split-admin-7f3e-SECRET-KEY-do-not-print"
WS, ENV, KEY = "ws-1234", "production", "support-bot-model"
TREATMENTS = ["gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b"]
FREE = tier_rule("free", [("gpt-4-turbo", 100)])
PAID = tier_rule("paid", [("gpt-4-turbo", 100)])


@pytest.fixture
def split() -> Iterator[SplitServer]:
    server = SplitServer(API_KEY)
    server.add(
        WS,
        KEY,
        {
            ENV: make_definition(TREATMENTS, [("gpt-4-turbo", 100)], [FREE, PAID]),
            "staging": make_definition(TREATMENTS, [("gpt-4o-mini", 100)]),
        },
        description="Which model the support bot answers with.",
    )
    with serve(server):
        yield server


def _store(split: SplitServer, sleeps: list[float], **overrides: Any) -> SplitFlagStore:
    options: dict[str, Any] = {
        "workspace": WS,
        "environment": ENV,
        "key": KEY,
        "baseline": "gpt-4-turbo",
        "canary": "gpt-4o-mini",
        "api_key": API_KEY,
        "base_url": split.base_url,
        "sleep": sleeps.append,
        **overrides,
    }
    return SplitFlagStore(**options)


def _writes(split: SplitServer) -> list[tuple[str, str, dict[str, str], str]]:
    return [r for r in split.requests if r[0] in ("PUT", "PATCH")]


def _puts(split: SplitServer) -> list[tuple[str, str, dict[str, str], str]]:
    return [r for r in split.requests if r[0] == "PUT"]


def _default_rule(split: SplitServer, env: str = ENV) -> list[dict[str, Any]]:
    return split.definition(WS, KEY, env)["defaultRule"]


def test_round_trip_sets_weights_promotes_and_restores_exactly(split: SplitServer) -> None:
    store = _store(split, [])
    before = split.definition(WS, KEY, ENV)
    saved = store.snapshot()
    assert store.split(saved) == Split(baseline=100.0, canary=0.0)
    assert store.variants(saved) == ("gpt-4-turbo", "gpt-4o-mini")

    step = store.set_canary_weight(10, expect_version=saved.version, comment="run r1 step 1: 10%")
    assert _default_rule(split) == [
        {"treatment": "gpt-4o-mini", "size": 10},
        {"treatment": "gpt-4-turbo", "size": 90},
    ]
    assert store.split(step) == Split(baseline=90.0, canary=10.0)
    assert step.version > saved.version

    _, path, headers, body = _puts(split)[-1]
    assert path == f"/internal/api/v2/splits/ws/{WS}/{KEY}/environments/{ENV}"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    sent = json.loads(body)
    assert sent["comment"] == "run r1 step 1: 10%"
    assert sent["rules"] == [FREE, PAID]  # the rules went back as they were

    promoted = store.promote(expect_version=step.version, comment="run r1 promote")
    assert _default_rule(split) == [{"treatment": "gpt-4o-mini", "size": 100}]
    assert store.split(promoted) == Split(baseline=0.0, canary=100.0)

    restored = store.restore(saved, expect_version=promoted.version, comment="run r1 rollback")
    after = split.definition(WS, KEY, ENV)
    for field in ("defaultRule", "rules", "treatments", "defaultTreatment", "trafficAllocation"):
        assert after[field] == before[field], field
    assert store.split(restored) == Split(baseline=100.0, canary=0.0)
    # The old targeting at a newer version: an SDK that took the promotion takes this too.
    assert restored.version > promoted.version > saved.version
    assert [c for _, env, c, _ in split.history if env == ENV][-3:] == [
        "run r1 step 1: 10%",
        "run r1 promote",
        "run r1 rollback",
    ]
    assert split.definition(WS, KEY, "staging")["defaultRule"] == [
        {"treatment": "gpt-4o-mini", "size": 100}
    ]


def test_restore_puts_back_a_prior_three_way_split(split: SplitServer) -> None:
    prior = [{"treatment": "gpt-4-turbo", "size": 70}, {"treatment": "mixtral-8x7b", "size": 30}]
    split.edit(WS, KEY, ENV, defaultRule=prior)
    store = _store(split, [])
    saved = store.snapshot()
    assert store.split(saved) == Split(baseline=70.0, canary=0.0, other=30.0)
    step = store.set_canary_weight(5, expect_version=saved.version, comment="run r2 step 1")
    store.restore(saved, expect_version=step.version, comment="run r2 rollback")
    assert _default_rule(split) == prior


def test_rule_scoped_rollout_moves_only_the_free_tier(split: SplitServer) -> None:
    before = split.definition(WS, KEY, ENV)
    store = _store(split, [], canary="mixtral-8x7b", rule="tier=free")
    saved = store.snapshot()
    step = store.set_canary_weight(25, expect_version=saved.version, comment="run r3 step 1")
    after = split.definition(WS, KEY, ENV)
    free, paid = after["rules"]
    assert free["buckets"] == [
        {"treatment": "mixtral-8x7b", "size": 25},
        {"treatment": "gpt-4-turbo", "size": 75},
    ]
    assert free["condition"] == FREE["condition"]
    assert paid == PAID
    assert after["defaultRule"] == before["defaultRule"]
    assert store.split(step) == Split(baseline=75.0, canary=25.0)

    store.restore(saved, expect_version=step.version, comment="run r3 rollback")
    assert split.definition(WS, KEY, ENV)["rules"] == before["rules"]


def test_a_missing_rule_or_treatment_is_named_before_any_write(split: SplitServer) -> None:
    with pytest.raises(FlagMismatch, match=r"no rule for 'tier=gold'"):
        _store(split, [], rule="tier=gold").snapshot()
    with pytest.raises(FlagMismatch, match=r"no treatment 'llama-3' \(treatments: \"gpt-4-turbo"):
        _store(split, [], canary="llama-3").snapshot()
    with pytest.raises(InvalidInput, match=r"flag\.rule"):
        _store(split, [], rule="free")
    split.edit(WS, KEY, ENV, killed=True)
    with pytest.raises(FlagMismatch, match="is killed"):
        _store(split, []).snapshot()
    split.edit(WS, KEY, ENV, killed=False, trafficAllocation=50)
    for rule in (None, "tier=free"):  # Split allocates before any rollout rule
        with pytest.raises(FlagMismatch, match="allocates 50% of traffic"):
            _store(split, [], rule=rule).snapshot()
    split.edit(WS, KEY, ENV, trafficAllocation=100)
    with pytest.raises(FlagMismatch, match="not a whole percent"):
        store = _store(split, [], rule="tier=free")
        store.set_canary_weight(2.5, expect_version=store.snapshot().version, comment="x")
    assert _writes(split) == []


def test_a_429_storm_is_survived_honouring_the_longer_rate_limit_window(
    split: SplitServer,
) -> None:
    sleeps: list[float] = []
    store = _store(split, sleeps)
    saved = store.snapshot()
    windows = {"X-RateLimit-Reset-Seconds-Org": "3", "X-RateLimit-Reset-Seconds-IP": "7"}
    split.faults = [Fault(429, windows, "PUT")] * 3 + [
        Fault(429, {"X-RateLimit-Reset-Seconds-Org": "600"}, "PUT")
    ]
    step = store.set_canary_weight(10, expect_version=saved.version, comment="run r5 step 1")
    assert store.split(step) == Split(baseline=90.0, canary=10.0)
    assert len(sleeps) == 4
    assert all(s >= 7 for s in sleeps[:3])  # the longer of the two windows, as Split asks
    assert sleeps[3] >= 30  # ten minutes away: the policy's ceiling, beyond any backoff step
    assert len(_puts(split)) == 5


def test_the_factory_builds_the_stores_from_runbook_specs(
    split: SplitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {"workspace": WS, "environment": ENV, "key": KEY, "base_url": split.base_url}
    spec = SplitFlagSpec.model_validate(
        {
            "provider": "split",
            **fields,
            "baseline": "gpt-4-turbo",
            "canary": "gpt-4o-mini",
            "api_key_env": "CANARY_SPLIT_KEY",
        }
    )
    monkeypatch.delenv("CANARY_SPLIT_KEY", raising=False)
    with pytest.raises(InvalidInput, match="CANARY_SPLIT_KEY is not set"):
        flag_store_for(spec)
    monkeypatch.setenv("CANARY_SPLIT_KEY", API_KEY)
    store = flag_store_for(spec)
    assert isinstance(store, SplitFlagStore)
    assert store.split(store.snapshot()) == Split(baseline=100.0, canary=0.0)

    experiment = SplitExperimentFlag.model_validate(
        {"provider": "split", **fields, "rule": "tier=paid", "api_key_env": "CANARY_SPLIT_KEY"}
    )
    arms = split_store_for(experiment, "gpt-4-turbo", "mixtral-8x7b")
    saved = arms.snapshot()
    weights = {"gpt-4-turbo": 100 / 3, "gpt-4o-mini": 100 / 3, "mixtral-8x7b": 100 / 3}
    moved = arms.set_split(weights, expect_version=saved.version, comment="experiment e1")
    sizes = [b["size"] for b in split.definition(WS, KEY, ENV)["rules"][1]["buckets"]]
    assert sorted(sizes) == [33, 33, 34]  # whole percents by the largest remainder
    assert sum(arms.weights(moved).values()) == 100
    assert arms.values(moved, ["gpt-4o-mini"]) == ("gpt-4o-mini",)


def test_runbooks_refuse_a_bad_rule_and_fractional_steps() -> None:
    base = {
        "provider": "split",
        "workspace": WS,
        "environment": ENV,
        "key": KEY,
        "baseline": BASELINE,
        "canary": CANARY,
    }
    with pytest.raises(ValidationError, match="rule"):
        SplitFlagSpec.model_validate({**base, "rule": "free"})
    rollout = make_rollout(steps=[{"set_weight": 2.5}, {"set_weight": 100}], hooks=False)
    spec = rollout.spec.model_dump(by_alias=True, exclude_unset=True)
    spec["flag"] = base
    with pytest.raises(ValidationError, match=r"steps\[0\].set_weight: 2.5 is not a whole percent"):
        type(rollout.spec).model_validate(spec)


# -- the controller driving Split ------------------------------------------------------------


def _runner(split: SplitServer, tmp_path: Path) -> RolloutRunner:
    """The real controller driving the Split store (tests/test_flag_store_contract.py)."""
    spec = {"provider": "split", "workspace": WS, "environment": ENV, "key": KEY}
    spec |= {"baseline": BASELINE, "canary": CANARY, "base_url": split.base_url}
    return scripted_runner(SplitFlagSpec.model_validate(spec), _store(split, []), tmp_path)


def _claim_lines(split: SplitServer) -> list[str]:
    prefix = f"canaryctl-claim[{ENV}]: "
    description = split.flags[(WS, KEY)]["description"]
    return [line[len(prefix) :] for line in description.splitlines() if line.startswith(prefix)]


def test_a_run_claims_the_flag_in_its_description_and_releases_it(
    split: SplitServer, tmp_path: Path
) -> None:
    runner = _runner(split, tmp_path)
    seen: list[list[str]] = []
    runner.clock.call_at(T0 + 30, lambda: seen.append(_claim_lines(split)))
    result = runner.run()
    assert result.outcome == "promoted"
    (held,) = seen[0]
    claim = FlagClaim.from_json(held)
    assert (claim.run_id, claim.pid) == (result.run_id, os.getpid())
    assert claim.state == str((tmp_path / "state.db").resolve())
    # Released at the end; the human's description is as it was.
    assert split.flags[(WS, KEY)]["description"] == "Which model the support bot answers with."
    patches = [json.loads(b) for m, _, _, b in split.requests if m == "PATCH"]
    assert all(p[0]["path"] == "/description" for p in patches) and len(patches) >= 2
    assert _default_rule(split) == [{"treatment": CANARY, "size": 100}]


def test_the_documents_in_docs_split_md_validate_and_its_shell_blocks_say_why_not_run(
    tmp_path: Path,
) -> None:
    text = (Path(__file__).parent.parent / "docs" / "split.md").read_text()
    blocks = re.findall(r"^```(\S*)([^\n]*)\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    kinds = []
    for language, note, body in blocks:
        if language == "yaml":
            kinds.append(parse_document(body, "docs/split.md", base_dir=tmp_path).kind)
        else:
            assert language == "sh" and re.match(r" not-run: \S.+", note), (language, note)
    assert kinds == ["Rollout", "Gateway"]
