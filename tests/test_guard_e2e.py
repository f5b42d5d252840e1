"""The seed's story as a runbook, end to end over loopback: the lab's providers behind the
gateway, the flag file, `canaryctl guard run` in its own process. The model serving everyone
fails over the threshold: the guard moves the flag and all traffic goes back to GPT-4. An
Alertmanager payload posted to the guard's webhook trips it the same way; it then does nothing
until `canaryctl guard rearm`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from gateway_probe import serves_soon
from loopback import free_port

from canaryctl.cli import main
from canaryctl.guard import GuardJournal
from canaryctl.lab import LabStack
from canaryctl.runbook import Lab, parse_document
from tests.api_world import OPERATOR, TOKENS, VIEWER, auth

pytestmark = pytest.mark.e2e

DEFAULTS = resources.files("canaryctl") / "defaults"
VARIATIONS = ["gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b"]
TOKENS_ENV = f"ops:operator:{OPERATOR},grafana:viewer:{VIEWER}"
assert TOKENS.caller(f"Bearer {OPERATOR}") is not None


def serving(flags: Path, model: str) -> None:
    document = json.loads((DEFAULTS / "flags.json").read_text())
    document["flags"]["support-bot-model"]["fallthrough"] = {"variation": VARIATIONS.index(model)}
    flags.write_text(json.dumps(document))


def flag_serves(flags: Path) -> dict[str, Any]:
    return dict(json.loads(flags.read_text())["flags"]["support-bot-model"]["fallthrough"])


def guard_file(tmp_path: Path, flags: Path, metrics_url: str, watched: str) -> Path:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Guard",
        "metadata": {"name": "support-bot-guard"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": "support-bot-model",
                     "baseline": "gpt-4-turbo", "canary": watched},
            "metrics": {"provider": "scrape", "targets": [metrics_url], "route": "support-bot"},
            "slos": [{"metric": "error_rate", "max": 0.03}],
            "analysis": {"interval": "3s", "min_requests": 60},
            "trip_on": [{"alertname": "LLMHighErrorRate", "route": "support-bot"}],
        },
    }  # fmt: skip
    path = tmp_path / "guard.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@contextmanager
def guard_process(guard: Path, tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "CANARYCTL_API_TOKENS": TOKENS_ENV}
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryctl", "guard", "run", str(guard), "--journal",
         str(tmp_path / "guard.jsonl"), "--state", str(tmp_path / "state.db"), "-o", "json",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(30)


def wait_for(journal: GuardJournal, event: str, process: subprocess.Popen[str],
             timeout: float = 60) -> list[dict[str, Any]]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = journal.entries()
        if any(e["event"] == event for e in entries):
            return entries
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.2)
    raise AssertionError(f"no {event} in {journal.entries()}")


def lab() -> Lab:
    return parse_document((DEFAULTS / "lab.yaml").read_text(), "lab.yaml", expect=Lab)


def test_errors_over_the_threshold_send_all_traffic_back_to_gpt4(tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    serving(flags, "mixtral-8x7b")  # 8% of its requests fail
    journal = GuardJournal(tmp_path / "guard.jsonl")
    with LabStack(lab(), flags_path=flags) as stack:
        guard = guard_file(tmp_path, flags, stack.metrics_url, watched="mixtral-8x7b")
        with guard_process(guard, tmp_path) as process:
            entries = wait_for(journal, "flag_safe", process)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        assert process.returncode == 130, err[-2000:]
        serves_soon(stack, {"gpt-4-turbo"}, users=60)
    events = [e["event"] for e in entries]
    assert events[0] == "watching" and events[-2:] == ["tripped", "flag_safe"]
    trip = entries[-2]
    assert trip["reason"].startswith("SLO failed: error_rate = ")
    assert "is above the maximum 0.03" in trip["reason"]
    assert entries[-1]["before"]["canary"] == 100 and entries[-1]["after"]["baseline"] == 100
    rollout = flag_serves(flags)["rollout"]["variations"]
    weights = {VARIATIONS[v["variation"]]: v["weight"] for v in rollout}
    assert weights == {"gpt-4-turbo": 100_000, "mixtral-8x7b": 0}
    printed = [json.loads(line)["event"] for line in out.splitlines()]
    assert printed == events
    assert "interrupted" in err


def test_an_alert_trips_the_guard_and_only_a_rearm_lets_it_act_again(tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    serving(flags, "gpt-4o-mini")  # healthy: only the alert trips it
    journal = GuardJournal(tmp_path / "guard.jsonl")
    port = free_port()
    hook = f"http://127.0.0.1:{port}/api/v1/alertmanager"
    alert = {"version": "4", "status": "firing", "alerts": [{"status": "firing",
             "fingerprint": "c6eadffa33fcdf37", "labels": {"alertname": "LLMHighErrorRate",
             "route": "support-bot", "severity": "page"}}]}  # fmt: skip
    cli = CliRunner()
    with LabStack(lab(), flags_path=flags) as stack:
        guard = guard_file(tmp_path, flags, stack.metrics_url, watched="gpt-4o-mini")
        status = ["guard", "status", str(guard), "--journal", str(journal.path), "-o", "json"]
        with guard_process(guard, tmp_path, "--listen", f"127.0.0.1:{port}") as process:
            wait_for(journal, "watching", process)
            deadline = time.monotonic() + 20
            while True:  # the webhook's server starts beside the watch
                try:
                    refused = httpx.post(hook, json=alert, headers=auth(VIEWER))
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert refused.status_code == 403
            assert httpx.post(hook, json=alert).status_code == 401
            answer = httpx.post(hook, json=alert, headers=auth(OPERATOR))
            assert answer.status_code == 200, answer.text
            assert answer.json()["tripping"] == [
                {"alertname": "LLMHighErrorRate", "fingerprint": "c6eadffa33fcdf37"}]  # fmt: skip
            wait_for(journal, "flag_safe", process, timeout=10)
            serves_soon(stack, {"gpt-4-turbo"}, users=60)
            shown = cli.invoke(main, status)
            assert shown.exit_code == 0 and json.loads(shown.output)["state"] == "tripped"
            # Someone puts the model back by hand: a tripped guard does nothing.
            serving(flags, "gpt-4o-mini")
            time.sleep(3)
            assert flag_serves(flags) == {"variation": 1}
            rearmed = cli.invoke(main, ["guard", "rearm", str(guard), "--journal",
                                        str(journal.path)])  # fmt: skip
            assert rearmed.exit_code == 0, rearmed.output
            deadline = time.monotonic() + 10
            while [e["event"] for e in journal.entries()][-1] != "watching":
                assert time.monotonic() < deadline, journal.entries()
                time.sleep(0.2)
            shown = cli.invoke(main, status)
            assert json.loads(shown.output)["state"] == "armed"
    again = cli.invoke(main, ["guard", "rearm", str(guard), "--journal", str(journal.path)])
    assert again.exit_code == 2 and "is not tripped" in again.output
    events = [e["event"] for e in journal.entries()]
    assert events == ["watching", "tripped", "flag_safe", "rearmed", "watching"]
