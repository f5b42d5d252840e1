"""Two real `canaryctl rollout run` processes, two state databases, one flag file: the claim
beside the flag lets one drive and refuses the other; the flag ends where the driver left it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_e2e import DEFAULTS, runbook

from canaryctl.flags import FileFlagStore
from canaryctl.lab import LabStack
from canaryctl.runbook import Lab, parse_document

pytestmark = pytest.mark.e2e

KEY = "support-bot-model"


def rollout_run(path: Path, state: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "canaryctl", "rollout", "run", str(path), "--state", str(state),
            "-o", "json", *more]  # fmt: skip


def test_a_second_run_with_another_state_is_refused_while_the_first_drives_the_flag(
    tmp_path: Path,
) -> None:
    flags = tmp_path / "flags.json"
    flags.write_text((DEFAULTS / "flags.json").read_text())
    store = FileFlagStore(flags, KEY, "gpt-4-turbo", "gpt-4o-mini")
    claim_file = tmp_path / f"flags.json.{KEY}.canaryctl-claim"
    lab = parse_document((DEFAULTS / "lab.yaml").read_text(), "lab.yaml", expect=Lab)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with LabStack(lab, flags_path=flags) as stack:
        good = runbook(tmp_path, "to-gpt4o-mini", "gpt-4o-mini", flags, stack.metrics_url)
        first = subprocess.Popen(
            rollout_run(good, tmp_path / "a.db"), stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            deadline = time.monotonic() + 60
            while store.split(store.snapshot()).canary != 20:
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the first run never moved the flag"
                time.sleep(0.1)
            second = subprocess.run(
                rollout_run(good, tmp_path / "b.db"), capture_output=True, text=True, env=env
            )
            output, _ = first.communicate(timeout=120)
        finally:
            first.kill()
    assert second.returncode == 2, second.stderr
    a_db = (tmp_path / "a.db").resolve()
    assert f"claimed by run 1 (state {a_db}; process {first.pid}" in second.stderr
    assert "still running" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, output
    assert json.loads(output.splitlines()[-1])["outcome"] == "promoted"
    flag = json.loads(flags.read_text())["flags"][KEY]
    assert flag["variations"][flag["fallthrough"]["variation"]] == "gpt-4o-mini"
    assert not claim_file.exists()  # released when the run ended


def test_a_flag_a_run_promoted_is_refused_for_a_new_run_with_what_to_do(tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    flags.write_text((DEFAULTS / "flags.json").read_text())
    store = FileFlagStore(flags, KEY, "gpt-4-turbo", "gpt-4o-mini")
    store.promote(expect_version=store.snapshot().version, comment="an earlier run")
    before = flags.read_text()
    good = runbook(tmp_path, "again", "gpt-4o-mini", flags, "http://127.0.0.1:9/metrics")
    result = subprocess.run(rollout_run(good, tmp_path / "s.db"), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "serves gpt-4o-mini 100%, gpt-4-turbo 0%" in result.stderr
    assert "promoted already" in result.stderr
    assert flags.read_text() == before
    assert not (tmp_path / f"flags.json.{KEY}.canaryctl-claim").exists()
