"""Documents: good files load, bad files name every problem with its path and line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryctl.cli import main
from canaryctl.errors import InvalidDocument
from canaryctl.runbook import Rollout, load_document, parse_duration

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
apiVersion: canaryctl/v1
kind: Rollout
metadata: {name: demo}
spec:
  flag: {provider: file, path: flags.json, key: k, baseline: a, canary: b}
  metrics: {provider: scrape, targets: ["http://127.0.0.1:8080/metrics"]}
  slos:
    - {metric: error_rate, max: 0.02}
  steps:
    - set_weight: 5
    - pause: 1h30m
    - set_weight: 100
"""


def write(tmp_path: Path, text: str, name: str = "doc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InvalidDocument) as caught:
        load_document(path)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (12, 12), ("2d", 172800)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "1x", "-5s", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_good_rollout_resolves_paths_against_the_document(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path, GOOD), expect=Rollout)
    assert doc.spec.flag.path == tmp_path / "flags.json"
    assert doc.spec.steps[1].pause == 5400
    assert doc.spec.analysis.failure_limit == 0


def test_weight_out_of_range_names_field_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("set_weight: 100", "set_weight: 101"))
    assert problems_of(path) == [f"{path}:12: spec.steps[2].set_weight: must be between 0 and 100"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        GOOD.replace("canary: b}", "canary: b, colour: red}")
        .replace("error_rate, max", "error_rat, max")
        .replace("pause: 1h30m", "pause: soon")
    )
    problems = problems_of(write(tmp_path, text))
    assert len(problems) == 3
    assert "spec.flag.colour: unknown field" in problems[0]
    assert ":5:" in problems[0]
    assert "spec.slos[0].metric" in problems[1]
    assert "spec.steps[1].pause" in problems[2]


def test_set_weight_after_full_rollout_is_refused(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, GOOD + "    - set_weight: 50\n"))
    assert problems == [
        f"{tmp_path / 'doc.yaml'}:13: spec.steps[3]: "
        "set_weight after the 100% step at steps[2] makes no sense"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("apiVersion: canaryctl/v1\nkind: Rollot\n", "kind: unknown kind 'Rollot'"),
        (GOOD.replace("canaryctl/v1", "canaryctl/v2"), "apiVersion"),
        (GOOD.replace("provider: scrape", "provider: scraper"), "spec.metrics.provider"),
        (GOOD.replace("max: 0.02", "max: lots"), "spec.slos[0].max"),
        (GOOD.replace("canary: b", "canary: a"), "baseline and canary must name different"),
        (
            GOOD.replace("- {metric: error_rate, max: 0.02}", "- {metric: error_rate}"),
            "needs a bound",
        ),
    ],
)
def test_bad_documents(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(write(tmp_path, text))
    assert any(expected in p for p in problems), problems


def test_validate_cli_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, GOOD.replace("set_weight: 5", "set_weight: -1"), "bad.yaml")
    runner = CliRunner()

    ok = runner.invoke(main, ["validate", str(good), "-o", "json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == {"file": str(good), "kind": "Rollout", "valid": True}

    failed = runner.invoke(main, ["validate", str(good), str(bad)])
    assert failed.exit_code == 2
    assert "Traceback" not in failed.output
    assert f"{bad}:10: spec.steps[0].set_weight: must be between 0 and 100" in failed.output


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_shipped_documents_validate() -> None:
    files = sorted((ROOT / "runbooks").glob("*.yaml")) + sorted(
        (ROOT / "canaryctl" / "defaults").glob("*.yaml")
    )
    assert files
    result = CliRunner().invoke(main, ["validate", *map(str, files)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("kind", ["Rollout", "Gateway", "Lab"])
def test_schema_is_json_schema(kind: str) -> None:
    result = CliRunner().invoke(main, ["schema", kind])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["properties"]["kind"]["const"] == kind
    assert schema["additionalProperties"] is False


def test_locations_never_show_the_provider_tag_pydantic_inserts(tmp_path: Path) -> None:
    text = GOOD.replace(
        "{provider: file, path: flags.json, key: k, baseline: a, canary: b}",
        "{provider: launchdarkly, project: p, environment: e, key: k, baseline: a, canary: b, "
        "colour: red}",
    ).replace(
        '{provider: scrape, targets: ["http://127.0.0.1:8080/metrics"]}',
        '{provider: prometheus, url: "http://127.0.0.1:9090", timeout: soon}',
    )
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:5: spec.flag.colour: unknown field (check the spelling)",
        f"{path}:6: spec.metrics.timeout: 'soon' is not a duration such as 30s, 5m or 1h30m",
    ]
