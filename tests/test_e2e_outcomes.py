"""End to end over real loopback HTTP: lab traffic through the gateway, `canaryctl rollout run`
with a runbook that judges latency only, and canaries whose model fails every request (401, 404,
`{}`, empty completions, malformed usage, or always rescued by its fallback). Whatever the SLOs,
each is rolled back and the flag file restored byte for byte; a healthy canary is promoted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import FLAG_KEY, _flag_document
from misbehaving_upstream import misbehaving_app

from canaryctl.chaos.server import BackgroundServer
from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec

pytestmark = pytest.mark.e2e

FAST = {"median": 0.005, "p95": 0.02}
BROKEN = {
    "answers-401": "401",
    "answers-404": "404",
    "answers-empty-object": "empty_object",
    "answers-empty-completion": "empty_completion",
    "answers-bad-usage": "bad_usage",
    "answers-negative-usage": "negative_usage",
}
RESCUED = "always-falls-back"
VARIATIONS = ["baseline", *BROKEN, RESCUED, "healthy"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabStack, Path]]:
    tmp = tmp_path_factory.mktemp("e2e-outcomes")
    flags = tmp / "flags.json"
    flags.write_text(_flag_document(VARIATIONS, {"variation": 0}, 1))
    with BackgroundServer(misbehaving_app()) as upstream:
        models: list[dict[str, Any]] = [
            {"name": "baseline", "base_url": "lab://baseline"},
            {"name": "healthy", "base_url": "lab://healthy"},
            {"name": "backup", "base_url": "lab://backup"},
            *(
                {"name": name, "base_url": f"{upstream.url}/{kind}"}
                for name, kind in BROKEN.items()
            ),
            {"name": RESCUED, "base_url": f"{upstream.url}/503", "fallback": ["backup"]},
        ]
        spec = LabSpec.model_validate(
            {
                "seed": 7,
                "providers": [
                    {"name": name, "latency": FAST} for name in ("baseline", "healthy", "backup")
                ],
                "gateway": {
                    "listen": "127.0.0.1:0",
                    "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
                    "routes": [{"name": "bot", "flag": FLAG_KEY, "default_model": "baseline"}],
                    "models": models,
                },
                "traffic": {"route": "bot", "rate": 60, "users": 400, "feedback": 0},
            }
        )
        with LabStack(spec) as stack:
            yield stack, flags


def rollout(tmp_path: Path, canary: str, flags: Path, metrics_url: str) -> Path:
    """50% then 100%, judged on latency alone, every half second."""
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": f"to-{canary}"},
        "spec": {
            "flag": {
                "provider": "file",
                "path": str(flags),
                "key": FLAG_KEY,
                "baseline": "baseline",
                "canary": canary,
            },
            "metrics": {"provider": "scrape", "targets": [metrics_url], "route": "bot"},
            "slos": [{"metric": "latency_p95_seconds", "max": 5}],
            # inconclusive_limit: a bound, not a pace (a loaded lab serves slowly)
            "analysis": {"interval": "0.5s", "min_requests": 5, "inconclusive_limit": 240},
            "steps": [
                {"set_weight": 50},
                {"pause": "2s"},
                {"set_weight": 100},
                {"pause": "1s"},
            ],
        },
    }
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(tmp_path: Path, canary: str, lab: tuple[LabStack, Path]) -> list[dict[str, Any]]:
    stack, flags = lab
    runbook = rollout(tmp_path, canary, flags, stack.metrics_url)
    state = str(tmp_path / "state.db")
    result = CliRunner().invoke(
        main, ["rollout", "run", str(runbook), "--state", state, "-o", "json"]
    )
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    events[-1]["exit_code"] = result.exit_code
    return events


@pytest.mark.parametrize("canary", [*BROKEN, RESCUED])
def test_a_canary_whose_model_fails_every_request_is_rolled_back_whatever_the_slos(
    tmp_path: Path, lab: tuple[LabStack, Path], canary: str
) -> None:
    flags = lab[1]
    original = flags.read_text()
    events = run(tmp_path, canary, lab)
    finish = events[-1]
    assert finish["exit_code"] == 1, events
    assert finish["event"] == "finish" and finish["outcome"] == "rolled_back"
    assert f"the canary '{canary}' model failed every one of its" in finish["reason"]
    restored = flags.read_text()
    # restored byte for byte but for the version, which only moves forward
    assert re.sub(r'"version": \d+', "", restored) == re.sub(r'"version": \d+', "", original)
    version = json.loads(restored)["flags"][FLAG_KEY]["version"]
    assert version > json.loads(original)["flags"][FLAG_KEY]["version"]


def test_a_healthy_canary_is_still_promoted(tmp_path: Path, lab: tuple[LabStack, Path]) -> None:
    finish = run(tmp_path, "healthy", lab)[-1]
    assert finish["exit_code"] == 0, finish
    assert finish["outcome"] == "promoted"
    flag = json.loads(lab[1].read_text())["flags"][FLAG_KEY]
    assert flag["variations"][flag["fallthrough"]["variation"]] == "healthy"
