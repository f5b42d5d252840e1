"""The flag file store against real files and the real LaunchDarkly SDK reading them."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ldclient import Context, LDClient

from canaryctl.cli import main
from canaryctl.errors import FlagBackendError, FlagClaimed, FlagConflict, FlagMismatch
from canaryctl.flags import (
    FileFlagStore,
    FlagClaim,
    FlagSnapshot,
    FlagStore,
    Split,
    flag_store_for,
)
from canaryctl.runbook.rollout import FileFlagSpec
from tests.processes import dead_pid

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
    assert snap.raw in flag_file.read_text()  # this flag's entry, byte for byte
    assert json.loads(snap.raw) == flag_json()
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

    restored = store.restore(saved, expect_version=4, comment="rolled back")
    assert restored.version == 5  # forward: the old targeting, a new version
    wait_for_version(sdk, 5)
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
    assert json.loads(promoted.raw) == json.loads(flag_file.read_text())["flags"][KEY]
    assert json.loads(promoted.raw)["fallthrough"] == {"variation": 1}
    assert store.split(promoted) == Split(baseline=0.0, canary=100.0)
    assert store.snapshot() == promoted


def test_restore_is_byte_for_byte_but_for_a_higher_version(tmp_path: Path) -> None:
    # Odd but valid formatting a re-serialiser would change: CRLF, tabs, unicode, key order.
    path = tmp_path / "flags.json"
    flag = json.dumps(flag_json(description="modèle"), ensure_ascii=False, indent="\t")
    original = '{"segments": {},\r\n "flags": {"' + KEY + '": ' + flag + "}}"
    path.write_bytes(original.encode())
    store = FileFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")

    saved = store.snapshot()
    moved = store.set_canary_weight(50, expect_version=saved.version, comment="")
    promoted = store.promote(expect_version=moved.version, comment="")
    restored = store.restore(saved, expect_version=promoted.version, comment="rollback")

    assert (moved.version, promoted.version, restored.version) == (4, 5, 6)
    assert path.read_bytes() == original.replace('"version": 3', '"version": 6').encode()
    assert store.split(restored) == store.split(saved)


def test_writes_change_only_the_default_rule_and_version_bytes_of_the_entry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flags.json"
    flag = json.dumps(flag_json(), indent="\t")
    original = '{"flags": {"' + KEY + '": ' + flag + '},\n  "segments": {"beta": {}}}'
    path.write_text(original)
    store = FileFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")
    store.promote(expect_version=3, comment="")
    assert path.read_text() == original.replace('"version": 3', '"version": 4').replace(
        '"fallthrough": {\n\t\t"variation": 0\n\t}', '"fallthrough": {"variation": 1}'
    )


def test_an_old_journal_holding_the_whole_file_still_restores_this_entry(
    store: FileFlagStore, flag_file: Path
) -> None:
    whole = FlagSnapshot(KEY, 3, flag_file.read_text())
    moved = store.set_canary_weight(40, expect_version=3, comment="")
    restored = store.restore(whole, expect_version=moved.version, comment="")
    assert restored.version == 5
    assert json.loads(flag_file.read_text())["flags"][KEY] == flag_json(version=5)


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
    assert sorted(os.listdir(flag_file.parent)) == [".flags.json.canaryctl-lock", "flags.json"]


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
    assert sorted(os.listdir(flag_file.parent)) == [".flags.json.canaryctl-lock", "flags.json"]


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


# -- other flags in the same file, and two writers at once ---------------------------------------

OTHER = "summarizer-model"


def two_flag_file(path: Path) -> None:
    other = {**flag_json(), "key": OTHER, "version": 8, "variations": ["a", "b"]}
    doc = {"flags": {KEY: flag_json(), OTHER: other}, "segments": {}}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def test_a_restore_keeps_an_edit_made_to_another_flag_during_the_run(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    two_flag_file(path)
    store = FileFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")
    saved = store.snapshot()
    moved = store.set_canary_weight(30, expect_version=3, comment="")
    # Someone promotes the other flag by hand while our canary is at 30%.
    doc = json.loads(path.read_text())
    doc["flags"][OTHER].update(fallthrough={"variation": 1}, version=9)
    path.write_text(json.dumps(doc, indent=4))
    store.restore(saved, expect_version=moved.version, comment="rollback")
    after = json.loads(path.read_text())["flags"]
    assert after[OTHER]["fallthrough"] == {"variation": 1} and after[OTHER]["version"] == 9
    assert after[KEY] == flag_json(version=5)


def test_an_edit_of_our_flag_that_kept_its_version_is_a_conflict(
    store: FileFlagStore, flag_file: Path
) -> None:
    store.set_canary_weight(10, expect_version=3, comment="")
    doc = json.loads(flag_file.read_text())
    doc["flags"][KEY]["fallthrough"] = {"variation": 2}  # a hand edit, version left at 4
    flag_file.write_text(json.dumps(doc))
    with pytest.raises(FlagConflict, match="without changing its version"):
        store.set_canary_weight(20, expect_version=4, comment="")
    assert json.loads(flag_file.read_text())["flags"][KEY]["fallthrough"] == {"variation": 2}


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("fallthrough", {"variation": 1}),  # the split itself
        ("rules", [{"variation": 1, "clauses": [], "id": "r1"}]),  # targeting, split untouched
        ("targets", []),
    ],
)
def test_a_read_after_an_edit_that_kept_the_version_is_a_conflict_naming_the_change(
    store: FileFlagStore, flag_file: Path, member: str, value: Any
) -> None:
    assert store.snapshot().version == 3  # before any write of ours there is nothing to compare
    store.set_canary_weight(10, expect_version=3, comment="")
    assert store.snapshot().version == 4  # our own write reads back as ours
    doc = json.loads(flag_file.read_text())
    doc["flags"][KEY][member] = value  # a hand edit, version left at 4
    flag_file.write_text(json.dumps(doc))
    with pytest.raises(
        FlagConflict, match=rf"without changing its version \(4\): {member} changed"
    ):
        store.snapshot()


def test_an_edit_elsewhere_in_the_file_is_not_an_edit_of_our_flag(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    two_flag_file(path)
    store = FileFlagStore(path, KEY, "gpt-4-turbo", "gpt-4o-mini")
    store.set_canary_weight(10, expect_version=3, comment="")
    doc = json.loads(path.read_text())
    doc["flags"][OTHER]["fallthrough"] = {"variation": 1}  # same version, other flag
    path.write_text(json.dumps(doc))
    assert store.split(store.snapshot()).canary == 10


def _drive(path: Path, key: str, baseline: str, canary: str, steps: int) -> tuple[int, int]:
    """One rollout's writes: `steps` weights, then a restore; (final version, final canary)."""
    store = FileFlagStore(path, key, baseline, canary)
    saved = store.snapshot()
    version = saved.version
    for step in range(1, steps + 1):
        version = store.set_canary_weight(step % 100, expect_version=version, comment="").version
    restored = store.restore(saved, expect_version=version, comment="")
    return restored.version, int(store.split(restored).canary)


def test_two_runs_on_two_flags_of_one_file_both_end_right_in_threads(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    two_flag_file(path)
    results: dict[str, tuple[int, int]] = {}
    threads = [
        threading.Thread(target=lambda: results.update(a=_drive(path, KEY, "gpt-4-turbo",
                                                                 "gpt-4o-mini", 60))),
        threading.Thread(target=lambda: results.update(b=_drive(path, OTHER, "a", "b", 60))),
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"a": (64, 0), "b": (69, 0)}  # every write landed, none was undone
    after = json.loads(path.read_text())["flags"]
    assert after[KEY] == flag_json(version=64)
    assert after[OTHER]["version"] == 69 and after[OTHER]["fallthrough"] == {"variation": 0}


def test_two_processes_writing_two_flags_of_one_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    two_flag_file(path)
    script = (
        "import sys; sys.path[:0] = [sys.argv[1]]\n"
        "from test_flags_file import _drive\n"
        "from pathlib import Path\n"
        "print(*_drive(Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], 80))\n"
    )
    tests = str(Path(__file__).parent)
    args = [(KEY, "gpt-4-turbo", "gpt-4o-mini"), (OTHER, "a", "b")]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, tests, str(path), *arg],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        for arg in args
    ]
    outputs = [child.communicate(timeout=120)[0].decode().split() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert outputs == [["84", "0"], ["89", "0"]]
    after = json.loads(path.read_text())["flags"]
    assert after[KEY] == flag_json(version=84)
    assert after[OTHER]["version"] == 89


# -- the claim beside the flag file -------------------------------------------------------------


def claim(token: str, run_id: int | None = 7, pid: int | None = None) -> FlagClaim:
    return FlagClaim(token, run_id, "/srv/a/state.db", socket.gethostname(), pid or os.getpid(), 0)


def test_a_claim_is_a_file_beside_the_flag_taken_once_and_released_by_its_owner(
    store: FileFlagStore, flag_file: Path
) -> None:
    mine = claim("mine")
    store.claim(mine)
    path = flag_file.parent / f"flags.json.{KEY}.canaryctl-claim"
    assert FlagClaim.from_json(path.read_text()) == mine
    with pytest.raises(FlagClaimed, match=r"claimed by run 7 .*still running"):
        store.claim(claim("theirs"), take_over=True)  # never from a live process
    store.claim(replace(mine, run_id=8))  # our own claim, re-taken (a resume)
    assert FlagClaim.from_json(path.read_text()).run_id == 8
    store.release(claim("theirs"))
    assert path.exists()
    store.release(mine)
    assert not path.exists()


def test_a_claim_left_by_a_dead_process_names_the_run_and_what_to_do(
    store: FileFlagStore, flag_file: Path
) -> None:
    left = claim("dead", pid=dead_pid())
    store.claim(left)
    with pytest.raises(FlagClaimed) as caught:
        store.claim(claim("new", run_id=None))
    message = str(caught.value)
    assert f"flag '{KEY}' in {flag_file} is claimed by run 7 (state /srv/a/state.db" in message
    assert "whose process is gone" in message
    assert "`canaryctl rollout resume 7 --state /srv/a/state.db` continues it" in message
    assert "`canaryctl rollout abort 7 --state /srv/a/state.db` then `resume`" in message
    assert "--break-claim" in message
    store.claim(claim("new", run_id=None), take_over=True)
    held = flag_file.parent / f"flags.json.{KEY}.canaryctl-claim"
    assert FlagClaim.from_json(held.read_text()).token == "new"


def test_an_unreadable_claim_file_is_refused_unless_broken(
    store: FileFlagStore, flag_file: Path
) -> None:
    held = flag_file.parent / f"flags.json.{KEY}.canaryctl-claim"
    held.write_text('{"tok')
    with pytest.raises(FlagMismatch, match=r"cannot read.*--break-claim"):
        store.claim(claim("new"))
    store.claim(claim("new"), take_over=True)
    assert FlagClaim.from_json(held.read_text()).token == "new"


def test_an_experiment_s_or_guard_s_claim_is_named_as_such_without_rollout_commands(
    store: FileFlagStore, flag_file: Path
) -> None:
    for holder, named in (("experiment", "an experiment"), ("guard", "a guard")):
        left = replace(claim("dead", pid=dead_pid(), run_id=None), holder=holder)
        store.claim(left)
        with pytest.raises(FlagClaimed) as caught:
            store.claim(claim("new", run_id=None))
        message = str(caught.value)
        assert f"is claimed by {named} (state /srv/a/state.db" in message, message
        assert "canaryctl rollout" not in message
        store.release(left)
    old = json.loads(claim("old").to_json())
    del old["holder"]  # a claim written before claims said who holds them
    assert FlagClaim.from_json(json.dumps(old)).holder == "rollout"
