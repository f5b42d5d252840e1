"""The CLI's top level: a bug is one line naming a traceback file, exit 3, after the restore."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import canaryctl.controller.runner as runner_module
import canaryctl.flags.factory
import canaryctl.metrics.factory
import canaryctl.runbook.loader
from canaryctl.cli import main
from canaryctl.clock import FakeClock
from canaryctl.flags import MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats

RUNBOOK = """\
apiVersion: canaryctl/v1
kind: Rollout
metadata: {name: support-bot}
spec:
  flag: {provider: file, path: flags.json, key: support-bot-model, baseline: old, canary: new}
  metrics: {provider: scrape, targets: ["http://127.0.0.1:9/metrics"]}
  slos:
    - {metric: error_rate, max: 0.02}
  analysis: {interval: 10s, min_requests: 50}
  steps:
    - set_weight: 10
    - pause: 30s
    - set_weight: 100
"""
SECRET = "sk-planted-0123456789abcdef"
LOG = re.compile(r"the traceback is in (\S+); please report this bug with it")


class Bug(RuntimeError):
    """Stands for any mistake in canaryctl's own code."""


def one_error_line(stderr: str) -> Path:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    found = LOG.search(lines[0])
    assert found is not None, stderr
    return Path(found[1])


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    crashes = tmp_path / "tmp"
    crashes.mkdir()
    monkeypatch.setenv("TMPDIR", str(crashes))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    monkeypatch.setenv("CANARYCTL_TEST_TOKEN", SECRET)
    return crashes


def test_a_bug_mid_rollout_restores_the_flag_then_exits_3_naming_the_log(
    tmp_path: Path, tmpdir_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    flags = MemoryFlagStore("support-bot-model", "old", "new")
    prior = flags.snapshot().raw
    calls = 0

    def script(since: float, now: float) -> Observation:
        nonlocal calls
        calls += 1
        if calls == 3:  # the canary is at 10% by now
            raise Bug("a mistake in the analysis")
        stats = VariantStats(requests=10 * (now - since))
        return Observation(since, now, {"old": stats, "new": stats})

    monkeypatch.setattr(canaryctl.flags.factory, "flag_store_for", lambda spec: flags)
    monkeypatch.setattr(
        canaryctl.metrics.factory,
        "metrics_source_for",
        lambda spec, **_: ScriptedMetricsSource(script, clock.now),
    )
    monkeypatch.setattr(runner_module, "SystemClock", lambda: clock)
    runbook = tmp_path / "rollout.yaml"
    runbook.write_text(RUNBOOK)

    result = CliRunner().invoke(
        main, ["rollout", "run", str(runbook), "--state", str(tmp_path / "s.db"), "-o", "json"]
    )

    assert result.exit_code == 3, result.output
    assert any(flags.split(snapshot).canary == 10 for _, snapshot in flags.history)
    assert flags.snapshot().raw == prior  # restored before the handler ran
    log = one_error_line(result.stderr)
    assert log.parent == tmpdir_env and log.stat().st_mode & 0o077 == 0
    text = log.read_text()
    assert "Traceback" in text and "Bug: a mistake in the analysis" in text
    assert SECRET not in text and SECRET not in result.output
    assert "Traceback" not in result.output


def test_a_bug_in_validate_is_exit_3_not_1(
    tmp_path: Path, tmpdir_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: str) -> None:
        raise Bug("validate broke")

    monkeypatch.setattr(canaryctl.runbook.loader, "load_document", broken)
    doc = tmp_path / "doc.yaml"
    doc.write_text(RUNBOOK)
    result = CliRunner().invoke(main, ["validate", str(doc)])
    assert result.exit_code == 3
    assert "error: unexpected Bug;" in result.stderr
    assert "Bug: validate broke" in one_error_line(result.stderr).read_text()


def test_ctrl_c_outside_a_rollout_is_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(path: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(canaryctl.runbook.loader, "load_document", interrupted)
    doc = tmp_path / "doc.yaml"
    doc.write_text(RUNBOOK)
    result = CliRunner().invoke(main, ["validate", str(doc)])
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted"


def test_an_unwritable_tmpdir_still_exits_3_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))
    monkeypatch.setattr(
        canaryctl.runbook.loader, "load_document", lambda path: (_ for _ in ()).throw(Bug())
    )
    doc = tmp_path / "doc.yaml"
    doc.write_text(RUNBOOK)
    result = CliRunner().invoke(main, ["validate", str(doc)])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "error: unexpected Bug; the traceback could not be saved (No such file or directory); "
        "please report this bug"
    )


def test_a_reader_that_leaves_is_not_a_crash(tmp_path: Path) -> None:
    """`canaryctl schema Rollout | head -1`: the pipe closes before the output is written."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    child = subprocess.Popen(
        [sys.executable, "-m", "canaryctl", "schema", "Rollout"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # long before the child has started, let alone written
    errors = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141
    assert errors == ""
    assert not list(tmp_path.glob("canaryctl-crash-*"))
