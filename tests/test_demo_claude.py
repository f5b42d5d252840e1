"""`canaryctl demo --scenario claude`: the seed's story, end to end. A monitor polls Claude's
error rate; when Anthropic's overloaded errors pass the threshold, the flag reverts all traffic
to GPT-4."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from canaryctl.lab.behaviour import decide, request_rng
from canaryctl.runbook.lab import ProviderProfile


def test_errors_climb_from_the_providers_nth_request() -> None:
    profile = ProviderProfile.model_validate(
        {
            "name": "claude",
            "api": "anthropic",
            "errors": {"rate": 0.0, "kinds": {"529": 1.0}, "climb": {"after": 50, "rate": 1.0}},
        }
    )
    fates = [decide(profile, "hi", request_rng(0, "claude", n), sequence=n) for n in range(1, 101)]
    assert [f.error for f in fates[:50]] == [None] * 50
    assert [f.error for f in fates[50:]] == ["529"] * 50


@pytest.mark.e2e
def test_the_claude_canary_is_rolled_back_to_gpt4_when_overloaded() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "canaryctl", "demo", "--scenario", "claude", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["ok"] is True
    [rollout] = summary["rollouts"]
    assert (rollout["name"], rollout["outcome"]) == ("support-bot-claude", "rolled_back")
    assert rollout["reason"].startswith("SLO failed: error_rate")
    assert rollout["final_split"]["canary"] == 0.0
    # Claude served traffic before it was rolled back; GPT-4's fallback answered nearly every
    # request Claude failed (both failing is about one in a thousand).
    claude = summary["served"]["claude-sonnet"]
    assert sum(claude.values()) > 100
    assert claude.get("200", 0) >= 0.99 * sum(claude.values()), claude
