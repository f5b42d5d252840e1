"""The flag file store against real files and the real LaunchDarkly SDK reading them."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ldclient import Context, LDClient

from canaryctl.cli import main
from canaryctl.errors import FlagBackendError, FlagConflict, FlagMismatch
from canaryctl.flags import FileFlagStore, FlagStore, Split, flag_store_for
from canaryctl.runbook.rollout import FileFlagSpec

KEY = "support-bot-model"


def flag_json(**overrides: Any) -> dict[str, Any]:
    """A flag as LaunchDarkly exports it, with fields a rollout must not touch."""
    flag = {
        "key": KEY,
        "version": 3,
        "on": True,
        "variations": ["gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b"],
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "salt": "a1b2c3",
        "targets": [{"variation": 2, "values": ["qa-bot"]}],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "trackEvents": False,
        "clientSide": False,
    }
    flag.update(overrides)
    return flag


def write_flag_file(path: Path, **overrides: Any) -> str:
    text = json.dumps({"flags": {KEY: flag_json(**overrides)}, "segments": {}}, indent=4) + "\n"
    path.write_text(text)
    return text


@pytest.fixture
def flag_file(tmp_path: Path) -> Path:
    path = tmp_path / "flags.json"
    write_flag_file(path)
    return path


def wait_for_version(client: LDClient, version: int) -> None:
    """Block until the SDK has reloaded the file; a generous deadline, not a timing assertion."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = client.all_flags_state(Context.create("probe")).to_json_dict()
        if state["$flagsState"].get(KEY, {}).get("version") == version:
            return
        time.sleep(0.05)
    pytest.fail(f"the SDK never loaded version {version} of the flag")


def served(client: LDClient, keys: range) -> list[str]:
    return [client.variation(KEY, Context.create(f"user-{i}"), "default") for i in keys]


def test_is_a_flag_store(store: FileFlagStore) -> None:
    assert isinstance(store, FlagStore)


def test_snapshot_is_the_exact_text_and_the_flag_version(
    store: FileFlagStore, flag_file: Path
) -> None:
    snap = store.snapshot()
    assert snap.key == KEY
    assert snap.version == 3
    assert snap.raw == flag_file.read_text()
    assert store.split(snap) == Split(baseline=100.0, canary=0.0)


def test_sdk_serves_the_weights_written_and_the_restored_file(
    store: FileFlagStore, flag_file: Path, sdk: LDClient
) -> None:
    saved = store.snapshot()
    assert set(served(sdk, range(2000))) == {"gpt-4-turbo"}

    ten = store.set_canary_weight(10, expect_version=3, comment="step 1")
    wait_for_version(sdk, 4)
    share = served(sdk, range(5000)).count("gpt-4o-mini") / 5000
    assert 0.08 <= share <= 0.12
    assert store.split(ten) == Split(baseline=90.0, canary=10.0)

    store.restore(saved, expect_version=4, comment="rolled back")
    wait_for_version(sdk, 3)  # the version goes back with the bytes; the SDK reloads anyway
    assert set(served(sdk, range(2000))) == {"gpt-4-turbo"}


def test_weights_are_written_canary_first_and_nothing_else_changes(
    store: FileFlagStore, flag_file: Path
) -> None:
    before = json.loads(flag_file.read_text())
    store.set_canary_weight(12.345, expect_version=3, comment="")
    after = json.loads(flag_file.read_text())

    flag = after["flags"][KEY]
    assert flag["fallthrough"] == {
        "rollout": {
            "variations": [{"variation": 1, "weight": 12345}, {"variation": 0, "weight": 87655}],
            "bucketBy": "key",
        }
    }
    assert flag.pop("version") == 4
    del flag["fallthrough"]
    old = before["flags"][KEY]
    del old["version"], old["fallthrough"]
    assert after == before


def test_an_existing_rollouts_context_kind_and_seed_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    rollout = {"variations": [{"variation": 0, "weight": 100000}], "contextKind": "org", "seed": 7}
    write_flag_file(path, fallthrough={"rollout": rollout})
    store = FileFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")
    store.set_canary_weight(5, expect_version=3, comment="")
    written = json.loads(path.read_text())["flags"][KEY]["fallthrough"]["rollout"]
    assert (written["contextKind"], written["seed"]) == ("org", 7)


def test_version_increases_on_each_write_and_promote_serves_the_canary(
    store: FileFlagStore, flag_file: Path
) -> None:
    five = store.set_canary_weight(5, expect_version=3, comment="")
    quarter = store.set_canary_weight(25, expect_version=five.version, comment="")
    promoted = store.promote(expect_version=quarter.version, comment="")
    assert [five.version, quarter.version, promoted.version] == [4, 5, 6]
    assert promoted.raw == flag_file.read_text()
    assert json.loads(promoted.raw)["flags"][KEY]["fallthrough"] == {"variation": 1}
    assert store.split(promoted) == Split(baseline=0.0, canary=100.0)
    assert store.snapshot() == promoted


def test_restore_is_byte_for_byte(tmp_path: Path) -> None:
    # Odd but valid formatting a re-serialiser would change: CRLF, tabs, unicode, key order.
    path = tmp_path / "flags.json"
    flag = json.dumps(flag_json(description="modèle"), ensure_ascii=False, indent="\t")
    original = ('{"segments": {},\r\n "flags": {"' + KEY + '": ' + flag + "}}").encode()
    path.write_bytes(original)
    store = FileFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")

    saved = store.snapshot()
    moved = store.set_canary_weight(50, expect_version=saved.version, comment="")
    promoted = store.promote(expect_version=moved.version, comment="")
    restored = store.restore(saved, expect_version=promoted.version, comment="rollback")

    assert path.read_bytes() == original
    assert restored == saved


def test_an_outside_edit_raises_conflict_and_is_not_overwritten(
    store: FileFlagStore, flag_file: Path
) -> None:
    saved = store.snapshot()
    theirs = write_flag_file(flag_file, version=4, fallthrough={"variation": 2})

    with pytest.raises(FlagConflict, match=r"from version 3 to 4"):
        store.set_canary_weight(10, expect_version=saved.version, comment="")
    with pytest.raises(FlagConflict):
        store.promote(expect_version=saved.version, comment="")
    with pytest.raises(FlagConflict):
        store.restore(saved, expect_version=saved.version, comment="")
    assert flag_file.read_text() == theirs


@pytest.mark.parametrize(
    ("content", "store_args", "expected"),
    [
        (None, (KEY, "gpt-4-turbo", "gpt-4o-mini"), ": no such file"),
        ("flags:\n  - yaml", (KEY, "gpt-4-turbo", "gpt-4o-mini"), "not JSON"),
        ("{}", (KEY, "gpt-4-turbo", "gpt-4o-mini"), f"no flag '{KEY}'"),
        (
            "valid",
            ("other-flag", "gpt-4-turbo", "gpt-4o-mini"),
            f"no flag 'other-flag' under 'flags' \\(flags there: {KEY}\\)",
        ),
        (
            "valid",
            (KEY, "gpt-4-turbo", "claude-3-haiku"),
            'no variation \'claude-3-haiku\' .*"gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b"',
        ),
        ("off", (KEY, "gpt-4-turbo", "gpt-4o-mini"), f"flag '{KEY}' is off"),
    ],
    ids=["no-file", "not-json", "no-flags", "no-key", "no-variation", "off"],
)
def test_mismatch_names_the_path_and_what_is_missing(
    tmp_path: Path, content: str | None, store_args: tuple[str, str, str], expected: str
) -> None:
    path = tmp_path / "flags.json"
    if content == "valid":
        write_flag_file(path)
    elif content == "off":
        write_flag_file(path, on=False)
    elif content is not None:
        path.write_text(content)
    store = FileFlagStore(path, *store_args)
    with pytest.raises(FlagMismatch, match=expected) as caught:
        store.snapshot()
    assert str(path) in str(caught.value)


def test_a_variation_named_by_its_launchdarkly_name_is_refused_with_the_reason(
    flag_file: Path,
) -> None:
    store = FileFlagStore(flag_file, KEY, baseline="GPT-4 Turbo", canary="gpt-4o-mini")
    with pytest.raises(FlagMismatch, match=r"no variation 'GPT-4 Turbo'.*values only"):
        store.snapshot()


def test_writes_refuse_a_variation_that_is_gone(store: FileFlagStore, flag_file: Path) -> None:
    write_flag_file(flag_file, variations=["gpt-4-turbo"])
    with pytest.raises(FlagMismatch, match="no variation 'gpt-4o-mini'"):
        store.set_canary_weight(5, expect_version=3, comment="")


def test_a_weight_outside_0_to_100_is_refused(store: FileFlagStore) -> None:
    with pytest.raises(FlagMismatch, match=r"outside 0\.\.100"):
        store.set_canary_weight(101, expect_version=3, comment="")


def test_split_counts_other_variations(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    weights = [(0, 50000), (1, 25000), (2, 25000)]
    rollout = {"variations": [{"variation": v, "weight": w} for v, w in weights]}
    write_flag_file(path, fallthrough={"rollout": rollout})
    store = FileFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")
    assert store.split(store.snapshot()) == Split(baseline=50.0, canary=25.0, other=25.0)


def test_writes_keep_the_file_mode_and_leave_no_temp_files(
    store: FileFlagStore, flag_file: Path
) -> None:
    flag_file.chmod(0o640)
    store.set_canary_weight(5, expect_version=3, comment="")
    assert flag_file.stat().st_mode & 0o7777 == 0o640
    assert os.listdir(flag_file.parent) == ["flags.json"]


def test_a_write_failing_midway_leaves_the_file_whole(
    store: FileFlagStore, flag_file: Path
) -> None:
    # A real short write: cap this process's file size below the new file's size, so the temp
    # file's write stops partway with EFBIG (SIGXFSZ ignored so the OS reports it as an error).
    original = flag_file.read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(original) // 2, limits[1]))
    try:
        with pytest.raises(FlagBackendError, match=str(flag_file)) as caught:
            store.set_canary_weight(10, expect_version=3, comment="")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.EFBIG
    assert flag_file.read_bytes() == original
    assert os.listdir(flag_file.parent) == ["flags.json"]


def test_a_reader_polling_during_200_writes_always_parses_the_file(
    store: FileFlagStore, flag_file: Path
) -> None:
    stop = threading.Event()
    reads: list[int] = []
    broken: list[str] = []

    def read_all_the_time() -> None:
        while not stop.is_set():
            text = flag_file.read_text()
            try:
                reads.append(json.loads(text)["flags"][KEY]["version"])
            except (ValueError, KeyError):
                broken.append(text)

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        version = 3
        for step in range(200):
            version = store.set_canary_weight(
                step % 100, expect_version=version, comment=""
            ).version
    finally:
        stop.set()
        reader.join()
    assert broken == []
    assert reads and reads == sorted(reads)  # never an older file after a newer one
    assert version == 203


def test_factory_builds_the_file_store(flag_file: Path) -> None:
    spec = FileFlagSpec(
        provider="file", path=flag_file, key=KEY, baseline="gpt-4-turbo", canary="gpt-4o-mini"
    )
    built = flag_store_for(spec)
    assert isinstance(built, FileFlagStore)
    assert built.snapshot().version == 3


def test_cli_show_as_json(store: FileFlagStore, flag_file: Path) -> None:
    store.set_canary_weight(5, expect_version=3, comment="")
    result = CliRunner().invoke(main, ["flags", "show", str(flag_file), KEY, "-o", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["version"] == 4
    assert shown["on"] is True
    assert shown["default_rule"] == "rollout"
    assert (shown["rules"], shown["targeted_keys"]) == (0, 1)
    assert [(w["value"], w["percent"]) for w in shown["weights"]] == [
        ("gpt-4-turbo", 95.0),
        ("gpt-4o-mini", 5.0),
        ("mixtral-8x7b", 0.0),
    ]


def test_cli_show_as_text(flag_file: Path) -> None:
    result = CliRunner().invoke(main, ["flags", "show", str(flag_file), KEY, "-o", "text"])
    assert result.exit_code == 0, result.output
    assert f"{KEY} in {flag_file}: version 3, on" in result.output
    assert "0 rule(s) and 1 targeted key(s) match before the default rule" in result.output
    assert "gpt-4o-mini" in result.output


def test_cli_show_a_missing_flag_is_one_line_and_exit_2(flag_file: Path) -> None:
    result = CliRunner().invoke(main, ["flags", "show", str(flag_file), "nope"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "no flag 'nope'" in result.output
