"""The multi-variation split write an experiment needs, in every flag store, with a rollout's
guarantees: the version it expects, versions only forward, a human's edit refused, the prior
targeting restored exactly. The file store's split is served by the real SDK in the shares
written; LaunchDarkly's goes through the emulated REST API (semantic patch, a rule only)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ldclient import Config, Context, LDClient
from ldclient.integrations import Files

from canaryctl.errors import FlagConflict, FlagMismatch
from canaryctl.flags.base import SplitStore
from canaryctl.flags.file import FileFlagStore
from canaryctl.flags.launchdarkly import LaunchDarklyFlagStore
from canaryctl.flags.memory import MemoryFlagStore
from tests.conftest import FLAG_KEY
from tests.ld_server import LDServer, make_flag, serve

WriteFlags = Callable[..., Path]
SPLIT = {"a": 50.0, "b": 30.0, "c": 20.0}


def test_the_file_store_writes_a_three_way_split_the_sdk_serves(write_flags: WriteFlags) -> None:
    path = write_flags(["a", "b", "c"])
    original = path.read_text()
    store = FileFlagStore(path, FLAG_KEY, "a", "b")
    assert isinstance(store, SplitStore)
    saved = store.snapshot()
    assert store.values(saved, ["a", "b", "c"]) == ("a", "b", "c")
    written = store.set_split(SPLIT, expect_version=saved.version, comment="experiment")
    assert written.version == saved.version + 1
    assert store.weights(written) == SPLIT
    rollout = json.loads(path.read_text())["flags"][FLAG_KEY]["fallthrough"]["rollout"]
    assert rollout["variations"] == [
        {"variation": 0, "weight": 50_000},
        {"variation": 1, "weight": 30_000},
        {"variation": 2, "weight": 20_000},
    ]

    source = Files.new_data_source(paths=[str(path)], auto_update=False)
    client = LDClient(Config(sdk_key="x", send_events=False, update_processor_class=source))
    try:
        served = Counter(
            client.variation(FLAG_KEY, Context.create(f"user-{i}"), "none") for i in range(3000)
        )
    finally:
        client.close()
    assert set(served) == {"a", "b", "c"}
    for value, percent in SPLIT.items():
        assert abs(served[value] / 3000 - percent / 100) < 0.04, served

    # A human's edit since our write is refused; the restore puts back every byte but the version.
    with pytest.raises(FlagConflict):
        store.set_split(SPLIT, expect_version=saved.version, comment="stale")
    restored = store.restore(saved, expect_version=written.version, comment="restore")
    assert restored.version == written.version + 1
    assert path.read_text() == original.replace('"version": 1', f'"version": {restored.version}')


def test_one_variation_at_100_is_served_to_everyone_and_a_missing_one_is_named(
    write_flags: WriteFlags,
) -> None:
    path = write_flags(["a", "b", "c"])
    store = FileFlagStore(path, FLAG_KEY, "a", "b")
    saved = store.snapshot()
    won = store.set_split({"c": 100.0}, expect_version=saved.version, comment="c won")
    assert json.loads(path.read_text())["flags"][FLAG_KEY]["fallthrough"] == {"variation": 2}
    assert store.weights(won) == {"c": 100.0}
    with pytest.raises(FlagMismatch, match="no variation 'd'"):
        store.values(won, ["a", "d"])
    with pytest.raises(FlagMismatch, match="sum to 100"):
        store.set_split({"a": 60.0, "b": 30.0}, expect_version=won.version, comment="bad")


def test_the_memory_store_keeps_the_split_and_restores() -> None:
    store = MemoryFlagStore(FLAG_KEY, "a", "b")
    saved = store.snapshot()
    written = store.set_split(SPLIT, expect_version=saved.version, comment="experiment")
    assert store.weights(written) == SPLIT
    store.edit_by_someone_else(10)
    with pytest.raises(FlagConflict):
        store.restore(saved, expect_version=written.version, comment="restore")


@pytest.fixture
def ld() -> Iterator[LDServer]:
    server = LDServer("api-token")
    free = {
        "_id": "rule-free",
        "description": "free tier",
        "clauses": [{"attribute": "tier", "op": "in", "values": ["free"]}],
        "variation": 0,
    }
    server.add("proj", make_flag(FLAG_KEY, [("id-a", "a", "A"), ("id-b", "b", "B"),
                                             ("id-c", "c", "C")],
                                 {"production": {"fallthrough": {"variation": 0},
                                                 "rules": [free]}}))  # fmt: skip
    with serve(server):
        yield server


def test_launchdarkly_splits_one_rule_by_name_and_restores_it(ld: LDServer) -> None:
    store = LaunchDarklyFlagStore(
        project="proj", environment="production", key=FLAG_KEY, baseline="a", canary="B",
        token="api-token", base_url=ld.base_url, rule="free tier", sleep=lambda s: None,
    )  # fmt: skip
    before = ld.env("proj", FLAG_KEY, "production")
    saved = store.snapshot()
    assert store.values(saved, ["a", "B", "C"]) == ("a", "b", "c")  # names become values
    written = store.set_split(SPLIT, expect_version=saved.version, comment="experiment")
    after = ld.env("proj", FLAG_KEY, "production")
    weights = {v["variation"]: v["weight"] for v in after["rules"][0]["rollout"]["variations"]}
    assert weights == {0: 50_000, 1: 30_000, 2: 20_000}
    assert after["fallthrough"] == before["fallthrough"]  # only the rule moved
    assert store.weights(written) == SPLIT

    ld.edit("proj", FLAG_KEY, "production", on=True)  # someone else's write moves the version
    with pytest.raises(FlagConflict):
        store.set_split({"c": 100.0}, expect_version=written.version, comment="stale")
    current = store.snapshot()
    store.restore(saved, expect_version=current.version, comment="restore")
    assert ld.env("proj", FLAG_KEY, "production")["rules"] == before["rules"]
