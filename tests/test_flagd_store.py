"""The flagd flag store against real files, with flagd's own evaluator (openfeature-flagd-core,
what the Python flagd provider evaluates with in-process) judging what was written."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from canaryctl.cli import main
from canaryctl.errors import FlagClaimed, FlagConflict, FlagMismatch
from canaryctl.flags import FlagClaim, FlagStore, Split, flag_store_for
from canaryctl.flags.base import SplitStore
from canaryctl.flags.factory import split_store_for
from canaryctl.flags.flagd import FlagdFlagStore
from canaryctl.runbook import load_document
from tests.processes import dead_pid

ROOT = Path(__file__).resolve().parent.parent
KEY = "support-bot-model"
SCHEMA = "https://flagd.dev/schema/v0/flags.json"


def flag_json(**overrides: Any) -> dict[str, Any]:
    """A flag as a person writes it for flagd, with members a rollout must not touch."""
    flag: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"turbo": "gpt-4-turbo", "mini": "gpt-4o-mini", "mixtral": "mixtral-8x7b"},
        "defaultVariant": "turbo",
        "metadata": {"owner": "sre", "canaryctlVersion": 3},
    }
    flag.update(overrides)
    return flag


def write_flags(path: Path, **overrides: Any) -> str:
    other = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
    doc = {"$schema": SCHEMA, "flags": {KEY: flag_json(**overrides), "other": other}}
    text = json.dumps(doc, indent=2) + "\n"
    path.write_text(text)
    return text


def new_flag_file(tmp_path: Path) -> Path:
    path = tmp_path / "flags.flagd.json"
    write_flags(path)
    return path


@pytest.fixture
def flag_file(tmp_path: Path) -> Path:
    return new_flag_file(tmp_path)


@pytest.fixture
def store(flag_file: Path) -> FlagdFlagStore:
    return FlagdFlagStore(flag_file, KEY, "turbo", "mini")


def served(path: Path, users: int) -> list[str]:
    """What flagd's evaluator serves `users` distinct targeting keys from the file."""
    core = FlagdCore()
    core.set_flags(path.read_text())
    out = []
    for i in range(users):
        context = EvaluationContext(targeting_key=f"user-{i}", attributes={"tier": "free"})
        out.append(core.resolve_string_value(KEY, "default", context).value)
    return out


def entry(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["flags"][KEY]


def test_is_a_flag_store_and_a_split_store(store: FlagdFlagStore) -> None:
    assert isinstance(store, FlagStore)
    assert isinstance(store, SplitStore)


def test_snapshot_reads_the_version_from_metadata_and_names_variants_by_value(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    snap = store.snapshot()
    assert snap.version == 3
    assert json.loads(snap.raw) == flag_json()
    assert snap.raw in flag_file.read_text()  # the entry's exact text
    assert store.split(snap) == Split(baseline=100.0, canary=0.0)
    assert store.variants(snap) == ("gpt-4-turbo", "gpt-4o-mini")


def test_a_split_is_one_fractional_canary_first_and_nothing_else_changes(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    before = flag_file.read_text()
    moved = store.set_canary_weight(30, expect_version=3, comment="step 1")
    doc = json.loads(flag_file.read_text())
    assert doc["$schema"] == SCHEMA
    assert doc["flags"][KEY] == flag_json(
        targeting={"fractional": [["mini", 30], ["turbo", 70]]},
        metadata={"owner": "sre", "canaryctlVersion": 4},
    )
    assert json.loads(before)["flags"]["other"] == doc["flags"]["other"]
    assert moved.version == 4
    assert store.split(moved) == Split(baseline=70.0, canary=30.0)
    # A share that is not a whole percent is written in thousandths of a percent.
    finer = store.set_canary_weight(2.5, expect_version=4, comment="step 2")
    assert entry(flag_file)["targeting"] == {"fractional": [["mini", 2500], ["turbo", 97500]]}
    assert store.split(finer) == Split(baseline=97.5, canary=2.5)


def test_flagd_serves_the_split_written_and_each_user_keeps_the_canary_as_it_grows(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    users = 2000
    at_10 = store.set_canary_weight(10, expect_version=3, comment="")
    first = served(flag_file, users)
    store.set_canary_weight(30, expect_version=at_10.version, comment="")
    second = served(flag_file, users)
    assert set(first) == set(second) == {"gpt-4-turbo", "gpt-4o-mini"}
    # Binomial bounds at 6 standard deviations: a broken split fails, chance never does.
    for share, answers in ((0.10, first), (0.30, second)):
        sd = (users * share * (1 - share)) ** 0.5
        assert abs(answers.count("gpt-4o-mini") - users * share) < 6 * sd
    kept = [b for a, b in zip(first, second, strict=True) if a == "gpt-4o-mini"]
    assert kept and set(kept) == {"gpt-4o-mini"}


def test_promote_serves_the_canary_to_everyone_and_restore_gives_back_the_bytes(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    original = flag_file.read_text()
    saved = store.snapshot()
    moved = store.set_canary_weight(50, expect_version=3, comment="")
    promoted = store.promote(expect_version=moved.version, comment="")
    assert entry(flag_file)["defaultVariant"] == "mini"
    assert set(served(flag_file, 200)) == {"gpt-4o-mini"}
    restored = store.restore(saved, expect_version=promoted.version, comment="")
    assert restored.version == 6
    assert flag_file.read_text() == original.replace(
        '"canaryctlVersion": 3', '"canaryctlVersion": 6'
    )
    assert set(served(flag_file, 200)) == {"gpt-4-turbo"}


def test_a_flag_without_metadata_is_version_0_and_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    flag = flag_json()
    del flag["metadata"]
    path.write_text(json.dumps({"flags": {KEY: flag}}))
    store = FlagdFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")  # named by value
    saved = store.snapshot()
    assert saved.version == 0
    moved = store.set_canary_weight(20, expect_version=0, comment="")
    assert entry(path)["metadata"] == {"canaryctlVersion": 1}
    store.restore(saved, expect_version=moved.version, comment="")
    assert entry(path) == {**flag, "metadata": {"canaryctlVersion": 2}}
    assert set(served(path, 50)) == {"gpt-4-turbo"}


def test_an_empty_metadata_object_takes_the_version(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, metadata={})
    store = FlagdFlagStore(path, KEY, "turbo", "mini")
    store.set_canary_weight(5, expect_version=0, comment="")
    assert entry(path)["metadata"] == {"canaryctlVersion": 1}


def test_a_bucketing_expression_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    by_team = {"cat": [{"var": "$flagd.flagKey"}, {"var": "team"}]}
    write_flags(path, targeting={"fractional": [by_team, ["turbo", 1]]})
    store = FlagdFlagStore(path, KEY, "turbo", "mini")
    store.set_canary_weight(25, expect_version=3, comment="")
    assert entry(path)["targeting"] == {"fractional": [by_team, ["mini", 25], ["turbo", 75]]}


ENTERPRISE = {"==": [{"var": "tier"}, "enterprise"]}


def served_to(path: Path, tier: str, users: int) -> list[str]:
    core = FlagdCore()
    core.set_flags(path.read_text())
    return [
        core.resolve_string_value(
            KEY, "default", EvaluationContext(targeting_key=f"u-{i}", attributes={"tier": tier})
        ).value
        for i in range(users)
    ]


@pytest.mark.parametrize("otherwise", [None, "turbo"], ids=["else-null", "else-variant"])
def test_an_if_rule_keeps_its_conditions_and_the_split_moves_its_last_else(
    tmp_path: Path, otherwise: str | None
) -> None:
    """The `else` that no condition catches is the flag's default rule, as LaunchDarkly's
    fallthrough is: a rollout moves it and leaves every condition serving what it served."""
    path = tmp_path / "flags.json"
    tiers = {"if": [ENTERPRISE, "mixtral", {"if": [{"var": "beta"}, "mini", otherwise]}]}
    original = write_flags(path, targeting=tiers)
    store = FlagdFlagStore(path, KEY, "turbo", "mini")
    saved = store.snapshot()
    assert store.split(saved) == Split(baseline=100.0, canary=0.0)
    moved = store.set_canary_weight(30, expect_version=3, comment="")
    split = {"fractional": [["mini", 30], ["turbo", 70]]}
    assert entry(path)["targeting"] == {
        "if": [ENTERPRISE, "mixtral", {"if": [{"var": "beta"}, "mini", split]}]
    }
    assert store.split(moved) == Split(baseline=70.0, canary=30.0)
    assert set(served_to(path, "enterprise", 200)) == {"mixtral-8x7b"}
    free = served_to(path, "free", 2000)
    sd = (2000 * 0.3 * 0.7) ** 0.5
    assert abs(free.count("gpt-4o-mini") - 600) < 6 * sd
    promoted = store.promote(expect_version=moved.version, comment="")
    assert entry(path)["defaultVariant"] == "turbo"  # the rules' default rule moved instead
    assert set(served_to(path, "free", 200)) == {"gpt-4o-mini"}
    assert set(served_to(path, "enterprise", 200)) == {"mixtral-8x7b"}
    store.restore(saved, expect_version=promoted.version, comment="")
    assert path.read_text() == original.replace('"canaryctlVersion": 3', '"canaryctlVersion": 6')


@pytest.mark.parametrize(
    "targeting",
    [
        {"if": [ENTERPRISE, "mixtral"]},
        {"if": [ENTERPRISE, "mixtral", {"==": [1, 1]}]},
        {"if": [ENTERPRISE, "mixtral", {"$ref": "tiers"}]},
        {"if": [ENTERPRISE, "mixtral", "claude"]},
    ],
    ids=["no-else", "else-a-condition", "else-a-ref", "else-no-variant"],
)
def test_an_if_rule_whose_default_canaryctl_cannot_read_is_refused(
    tmp_path: Path, targeting: dict[str, Any]
) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, targeting=targeting)
    with pytest.raises(FlagMismatch, match=rf"flags.{KEY}.targeting"):
        FlagdFlagStore(path, KEY, "turbo", "mini").snapshot()


def test_a_hand_edit_that_kept_the_version_is_a_conflict_naming_the_change(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    moved = store.set_canary_weight(10, expect_version=3, comment="")
    edited = entry(flag_file)
    edited["targeting"] = {"fractional": [["mini", 90], ["turbo", 10]]}
    doc = json.loads(flag_file.read_text())
    doc["flags"][KEY] = edited
    flag_file.write_text(json.dumps(doc))
    theirs = flag_file.read_text()
    with pytest.raises(FlagConflict, match="targeting changed"):
        store.snapshot()
    with pytest.raises(FlagConflict, match="not overwriting"):
        store.restore(moved, expect_version=moved.version, comment="")
    assert flag_file.read_text() == theirs


@pytest.mark.parametrize(
    ("overrides", "args", "expected"),
    [
        ({}, ("other-flag", "turbo", "mini"), r"no flag 'other-flag' under 'flags' \(flags"),
        ({}, (KEY, "turbo", "claude"), r"no variant 'claude': no variant has that key"),
        ({}, (KEY, "turbo", "gpt-4-turbo"), r"'turbo' and canary 'gpt-4-turbo' both name variant"),
        ({"state": "DISABLED"}, (KEY, "turbo", "mini"), "is DISABLED"),
        ({"state": "on"}, (KEY, "turbo", "mini"), f"flags.{KEY}.state: "),
        ({"version": 3}, (KEY, "turbo", "mini"), f"flags.{KEY}.version: "),
        (
            {"metadata": {"canaryctlVersion": "3"}},
            (KEY, "turbo", "mini"),
            rf"flags.{KEY}.metadata.canaryctlVersion: must be a whole number",
        ),
        (
            {"targeting": {"in": [{"var": "tier"}, ["paid"]]}},
            (KEY, "turbo", "mini"),
            f"flags.{KEY}.targeting is a rule canaryctl does not move",
        ),
        (
            {"targeting": {"fractional": [["mini", "ten"]]}},
            (KEY, "turbo", "mini"),
            r"targeting.fractional\[0\]: must be \[variant, weight\]",
        ),
        (
            {"targeting": {"fractional": [["mini", 10], 5]}},
            (KEY, "turbo", "mini"),
            r"targeting.fractional\[1\]: must be \[variant, weight\] with a whole weight, not 5",
        ),
        (
            {"targeting": {"fractional": [["claude", 10], ["turbo", 90]]}},
            (KEY, "turbo", "mini"),
            r"targeting.fractional\[0\]: no variant 'claude'",
        ),
    ],
    ids=[
        "no-key",
        "no-variant",
        "same-variant",
        "disabled",
        "bad-state",
        "unknown-member",
        "bad-version",
        "other-rule",
        "bad-weight",
        "bad-bucket",
        "unknown-variant",
    ],
)
def test_mismatch_names_the_path_and_the_field(
    tmp_path: Path, overrides: dict[str, Any], args: tuple[str, str, str], expected: str
) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, **overrides)
    with pytest.raises(FlagMismatch, match=expected) as caught:
        FlagdFlagStore(path, *args).snapshot()
    assert str(path) in str(caught.value)


def test_an_experiment_split_serves_each_variant_its_share(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_flags(path)
    store = FlagdFlagStore(path, KEY, "turbo", "mini")
    snap = store.snapshot()
    assert store.values(snap, ["turbo", "gpt-4o-mini"]) == ("gpt-4-turbo", "gpt-4o-mini")
    weights = {"gpt-4-turbo": 50.0, "gpt-4o-mini": 25.0, "mixtral-8x7b": 25.0}
    split = store.set_split(weights, expect_version=3, comment="")
    assert store.weights(split) == weights
    answers = served(path, 2000)
    for value, percent in weights.items():
        share = percent / 100
        sd = (2000 * share * (1 - share)) ** 0.5
        assert abs(answers.count(value) - 2000 * share) < 6 * sd
    alone = store.set_split({"gpt-4o-mini": 100.0}, expect_version=split.version, comment="")
    assert store.weights(alone) == {"gpt-4o-mini": 100.0}


def claim(token: str, epoch: int = 0, pid: int = 1, host: str = "elsewhere") -> FlagClaim:
    return FlagClaim(token, 7, "state.db", host, pid, 0.0, epoch=epoch)


def test_a_claim_is_a_file_beside_the_flag_and_refuses_another_run(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    ours = claim("ours", host=socket.gethostname(), pid=dead_pid())
    assert store.claim(ours) is None
    assert store.claim_path.parent == flag_file.parent
    other = FlagdFlagStore(flag_file, KEY, "turbo", "mini")
    with pytest.raises(FlagClaimed, match="run 7"):
        other.claim(claim("theirs"))
    assert other.claim(claim("theirs"), take_over=True) == ours  # its process is gone
    store.release(ours)  # not ours any more: left in place
    assert json.loads(store.claim_path.read_text())["token"] == "theirs"


RUNBOOK = """\
apiVersion: canaryctl/v1
kind: Rollout
metadata: {name: flagd}
spec:
  flag: FLAG
  metrics: {provider: scrape, targets: ["http://127.0.0.1:8080/metrics"]}
  slos:
    - {metric: error_rate, max: 0.02}
  steps:
    - set_weight: 5
    - set_weight: 100
"""


def test_a_runbook_names_a_flagd_flag_and_the_factory_builds_its_store(
    tmp_path: Path, flag_file: Path
) -> None:
    path = tmp_path / "rollout.yaml"
    flag = f"{{provider: flagd, path: {flag_file}, key: {KEY}, baseline: turbo, canary: mini}}"
    path.write_text(RUNBOOK.replace("FLAG", flag))
    rollout = load_document(path)
    built = flag_store_for(rollout.spec.flag)
    assert isinstance(built, FlagdFlagStore)
    assert built.variants(built.snapshot()) == ("gpt-4-turbo", "gpt-4o-mini")


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("{provider: flagd, path: f.json, baseline: a, canary: b}", "spec.flag.key: "),
        (
            "{provider: flagd, path: f.json, key: k, baseline: a, canary: a}",
            "must name different variations",
        ),
        ("{provider: flagd, key: k, baseline: a, canary: b}", "spec.flag.path: "),
        ("{provider: flagd, path: f.json, key: k, baseline: a, canary: b, rule: x}", "rule"),
    ],
    ids=["no-key", "same-variant", "no-path", "unknown-field"],
)
def test_a_bad_flagd_flag_spec_is_exit_2_naming_the_field(
    tmp_path: Path, flag: str, expected: str
) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text(RUNBOOK.replace("FLAG", flag))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_an_old_snapshot_restores_after_the_flag_lost_a_variant(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    saved = store.snapshot()
    moved = store.set_canary_weight(10, expect_version=3, comment="")
    doc = json.loads(flag_file.read_text())
    del doc["flags"][KEY]["variants"]["mini"]
    doc["flags"][KEY]["targeting"] = {}
    doc["flags"][KEY]["metadata"]["canaryctlVersion"] = 9
    flag_file.write_text(json.dumps(doc))
    fresh = FlagdFlagStore(flag_file, KEY, "turbo", "mini")
    restored = fresh.restore(saved, expect_version=9, comment="")
    assert restored.version == 10
    assert json.loads(restored.raw) == flag_json(metadata={"owner": "sre", "canaryctlVersion": 10})
    assert moved.version == 4


def test_a_write_moves_the_file_s_modification_time_forward_even_behind_the_clock(
    store: FlagdFlagStore, flag_file: Path
) -> None:
    """flagd's providers reload the file when its mtime grows: a write must always grow it."""
    ahead = time.time_ns() + 3600 * 10**9  # as if the last write landed later in the same tick
    os.utime(flag_file, ns=(ahead, ahead))
    moved = store.set_canary_weight(10, expect_version=3, comment="")
    assert os.stat(flag_file).st_mtime > ahead / 1e9  # what the provider compares: float seconds
    store.set_canary_weight(20, expect_version=moved.version, comment="")
    assert os.stat(flag_file).st_mtime_ns > ahead + 10**6


def test_an_experiment_names_a_flagd_flag_and_the_factory_builds_its_split_store(
    tmp_path: Path, flag_file: Path
) -> None:
    doc = (ROOT / "runbooks" / "support-bot-experiment.yaml").read_text()
    flag = f"{{provider: flagd, path: {flag_file}, key: {KEY}}}"
    path = tmp_path / "experiment.yaml"
    path.write_text(doc.replace("{provider: file, path: flags.json, key: support-bot-model}", flag))
    experiment = load_document(path)
    store = split_store_for(experiment.spec.flag, "gpt-4-turbo", "gpt-4o-mini")
    assert isinstance(store, FlagdFlagStore)
    values = [v.value for v in experiment.spec.variations]
    assert store.values(store.snapshot(), values) == tuple(values)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5)
    | st.sampled_from(["turbo", "mini", "fractional", "if", "ENABLED", "canaryctlVersion", "$ref"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["turbo", "mini", "fractional", "if", "var", "canaryctlVersion"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    member=st.sampled_from(["state", "variants", "defaultVariant", "targeting", "metadata"]),
    value=JSON,
)
def test_any_flag_entry_is_read_or_refused_by_name_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, member: str, value: Any
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "flags.json"
    write_flags(path, **{member: value})
    store = FlagdFlagStore(path, KEY, "turbo", "mini")
    try:
        snap = store.snapshot()
    except FlagMismatch as exc:
        assert str(path) in str(exc)
        return
    split = store.split(snap)
    assert abs(split.baseline + split.canary + split.other - 100.0) < 1e-6 or split == Split(0, 0)
    store.set_canary_weight(10, expect_version=snap.version, comment="")
    assert store.split(store.snapshot()) == Split(baseline=90.0, canary=10.0)
