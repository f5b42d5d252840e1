"""What users actually get: the real SDK bucketing 20,000 users on the weights we write."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ldclient import Context, LDClient

from canaryctl.flags import FileFlagStore, FlagSnapshot

KEY = "support-bot-model"
USERS = range(20_000)


@pytest.fixture
def flag_file(tmp_path: Path) -> Path:
    path = tmp_path / "flags.json"
    flag = {
        "key": KEY,
        "version": 1,
        "on": True,
        "variations": ["gpt-4-turbo", "gpt-4o-mini"],
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "salt": "9f8e7d",
        "targets": [],
        "rules": [],
    }
    path.write_text(json.dumps({"flags": {KEY: flag}, "segments": {}}))
    return path


def canary_users(client: LDClient, written: FlagSnapshot) -> set[int]:
    """The users served the canary once the SDK has loaded `written` (waits for the reload)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = client.all_flags_state(Context.create("probe")).to_json_dict()
        if state["$flagsState"][KEY]["version"] == written.version:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the SDK never loaded version {written.version}")
    return {
        i
        for i in USERS
        if client.variation(KEY, Context.create(f"user-{i}"), None) == "gpt-4o-mini"
    }


def test_ten_percent_serves_the_canary_to_ten_percent_of_users(
    store: FileFlagStore, sdk: LDClient
) -> None:
    written = store.set_canary_weight(10, expect_version=1, comment="")
    share = len(canary_users(sdk, written)) / len(USERS)
    assert 0.09 <= share <= 0.11


def test_users_who_got_the_canary_keep_it_as_the_weight_grows(
    store: FileFlagStore, sdk: LDClient
) -> None:
    # Through 50%, so an order that depended on which side is bigger would show up here.
    version, previous = 1, set[int]()
    for percent in (1, 5, 25, 50, 75):
        written = store.set_canary_weight(percent, expect_version=version, comment="")
        version, cohort = written.version, canary_users(sdk, written)
        assert previous <= cohort, f"{len(previous - cohort)} users lost the canary at {percent}%"
        assert abs(len(cohort) / len(USERS) - percent / 100) <= 0.01
        previous = cohort
