"""`canaryctl flags show` reads every flag provider a runbook may name: a LaunchDarkly
file-data-source file or a flagd flag-definition file directly, and any runbook's flag (file,
flagd, LaunchDarkly, Split) through the flag store its `flag:` section builds. The expected
weights are written into the flags by hand here, never read back from canaryctl's own writer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.cli import main
from tests.split_server import SplitServer, make_definition, serve, tier_rule

RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"
KEY = "support-bot-model"
SPLIT_KEY = "split-admin-1a2b-SECRET-do-not-print"


def show(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["flags", "show", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def shown_weights(output: str) -> dict[str, float]:
    return {w["value"]: w["percent"] for w in json.loads(output)["weights"]}


def flagd_file(path: Path) -> Path:
    """A flagd definition: the enterprise tier on `turbo` by an `if`, everyone else split
    90/10 by `fractional` (weights 9 and 1), canaryctl's version 4 in its metadata."""
    definition = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {
            KEY: {
                "state": "ENABLED",
                "variants": {"turbo": "gpt-4-turbo", "mini": "gpt-4o-mini", "mixtral": "mixtral"},
                "defaultVariant": "turbo",
                "targeting": {
                    "if": [
                        {"==": [{"var": "tier"}, "enterprise"]},
                        "turbo",
                        {"fractional": [["turbo", 9], ["mini", 1]]},
                    ]
                },
                "metadata": {"canaryctlVersion": 4},
            }
        },
    }
    path.write_text(json.dumps(definition, indent=2))
    return path


def test_a_flagd_file_shows_its_default_rule_split(tmp_path: Path) -> None:
    path = flagd_file(tmp_path / "flags.flagd.json")
    code, output = show(str(path), KEY, "-o", "json")
    assert code == 0, output
    record = json.loads(output)
    assert (record["format"], record["version"], record["on"]) == ("flagd", 4, True)
    assert (record["rules"], record["default_rule"]) == (1, "fractional")
    assert shown_weights(output) == {"gpt-4-turbo": 90.0, "gpt-4o-mini": 10.0, "mixtral": 0.0}
    code, text = show(str(path), KEY, "-o", "text")
    assert code == 0, text
    assert f"{KEY} in {path} (flagd): version 4, on" in text
    assert "1 rule(s) and 0 targeted key(s) match before the default rule" in text
    assert "mini = gpt-4o-mini" in text


def test_a_launchdarkly_file_still_shows_as_before() -> None:
    code, output = show(str(RUNBOOKS / "flags.json"), KEY, "-o", "json")
    assert code == 0, output
    assert json.loads(output)["format"] == "file"
    assert shown_weights(output) == {"gpt-4-turbo": 100.0, "gpt-4o-mini": 0.0,
                                     "mixtral-8x7b": 0.0}  # fmt: skip


def test_a_shipped_runbook_shows_the_flag_it_moves() -> None:
    code, output = show(str(RUNBOOKS / "support-bot-gpt4o-mini.yaml"), "-o", "json")
    assert code == 0, output
    record = json.loads(output)
    assert (record["provider"], record["key"]) == ("file", KEY)
    assert (record["baseline"], record["canary"]) == ("gpt-4-turbo", "gpt-4o-mini")
    assert shown_weights(output)["gpt-4-turbo"] == 100.0


def test_a_runbook_on_a_flagd_file_reads_it_through_the_flagd_store(tmp_path: Path) -> None:
    flagd_file(tmp_path / "flags.flagd.json")
    rollout = yaml.safe_load((RUNBOOKS / "support-bot-gpt4o-mini.yaml").read_text())
    rollout["spec"]["flag"] = {"provider": "flagd", "path": "flags.flagd.json", "key": KEY,
                               "baseline": "turbo", "canary": "mini"}  # fmt: skip
    runbook = tmp_path / "rollout.yaml"
    runbook.write_text(yaml.safe_dump(rollout))
    code, output = show(str(runbook), "-o", "json")
    assert code == 0, output
    record = json.loads(output)
    assert (record["provider"], record["version"]) == ("flagd", 4)
    assert (record["baseline"], record["canary"]) == ("gpt-4-turbo", "gpt-4o-mini")
    assert shown_weights(output) == {"gpt-4-turbo": 90.0, "gpt-4o-mini": 10.0}


@pytest.fixture
def split() -> Iterator[SplitServer]:
    server = SplitServer(SPLIT_KEY)
    treatments = ["gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b"]
    free = tier_rule("free", [("gpt-4-turbo", 40), ("gpt-4o-mini", 60)])
    definition = make_definition(treatments, [("gpt-4-turbo", 70), ("gpt-4o-mini", 30)], [free])
    server.add("ws-1", KEY, {"production": definition})
    with serve(server):
        yield server


def split_runbook(tmp_path: Path, server: SplitServer, **flag: str) -> Path:
    rollout: dict[str, Any] = yaml.safe_load((RUNBOOKS / "support-bot-gpt4o-mini.yaml").read_text())
    rollout["spec"]["flag"] = {"provider": "split", "workspace": "ws-1",
                               "environment": "production", "key": KEY,
                               "baseline": "gpt-4-turbo", "canary": "gpt-4o-mini",
                               "base_url": server.base_url, **flag}  # fmt: skip
    path = tmp_path / "rollout-split.yaml"
    path.write_text(yaml.safe_dump(rollout))
    return path


def test_a_runbook_on_split_reads_the_flag_through_the_admin_api(
    tmp_path: Path, split: SplitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLIT_ADMIN_API_KEY", SPLIT_KEY)
    runbook = split_runbook(tmp_path, split)
    code, output = show(str(runbook), "-o", "json")
    assert code == 0, output
    assert json.loads(output)["provider"] == "split"
    assert shown_weights(output) == {"gpt-4-turbo": 70.0, "gpt-4o-mini": 30.0}
    code, text = show(str(runbook), KEY, "-o", "text")
    assert code == 0, text
    assert f"{KEY} in {runbook} (split)" in text and "gpt-4o-mini" in text
    assert SPLIT_KEY not in output + text
    free = split_runbook(tmp_path, split, rule="tier=free")
    code, output = show(str(free), "-o", "json")
    assert code == 0 and json.loads(output)["rule"] == "tier=free", output
    assert shown_weights(output) == {"gpt-4-turbo": 40.0, "gpt-4o-mini": 60.0}
    code, text = show(str(free), "-o", "text")
    assert "rule tier=free" in text, text


def test_what_cannot_be_shown_is_one_line_and_exit_2(
    tmp_path: Path, split: SplitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = show(str(RUNBOOKS / "flags.json"))
    assert code == 2 and "KEY" in output and len(output.strip().splitlines()) == 1, output
    code, output = show(str(RUNBOOKS / "support-bot-gpt4o-mini.yaml"), "other-flag")
    assert code == 2 and f"moves flag '{KEY}', not 'other-flag'" in output, output
    code, output = show(str(RUNBOOKS / "gateway.yaml"))
    assert code == 2 and "a Gateway names no flag to show" in output, output
    monkeypatch.delenv("SPLIT_ADMIN_API_KEY", raising=False)
    code, output = show(str(split_runbook(tmp_path, split)))
    assert code == 2 and "SPLIT_ADMIN_API_KEY is not set" in output, output
