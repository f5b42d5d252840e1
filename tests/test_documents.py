"""Documents: good files load, bad files name every problem with its path and line, exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.cli import main
from canaryctl.errors import InvalidDocument
from canaryctl.runbook import AnalysisSpec, Rollout, load_document, parse_duration
from canaryctl.runbook.reading import MAX_BYTES, parse_json
from canaryctl.runbook.yaml_scan import MAX_DOCUMENT_BYTES

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


UNDECIDED = GOOD.replace(
    "  steps:", "  analysis: {on_inconclusive: pause, max_wait: 20m}\n  steps:"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            UNDECIDED.replace("on_inconclusive: pause, ", ""),
            "spec.analysis: max_wait applies only to on_inconclusive: pause",
        ),
        (
            UNDECIDED.replace("on_inconclusive: pause", "on_inconclusive: wait"),
            "spec.analysis.on_inconclusive: Input should be 'rollback' or 'pause'",
        ),
        (UNDECIDED.replace("max_wait: 20m", "max_wait: 0s"), "spec.analysis.max_wait"),
    ],
)
def test_on_inconclusive_and_max_wait_are_checked(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(write(tmp_path, text))
    assert any(expected in p for p in problems), problems


def test_an_undecided_pause_waits_an_hour_unless_told() -> None:
    analysis = AnalysisSpec(on_inconclusive="pause")
    assert (analysis.max_wait, analysis.pause_limit) == (None, 3600)
    assert AnalysisSpec(on_inconclusive="pause", max_wait="20m").pause_limit == 1200
    assert AnalysisSpec().on_inconclusive == "rollback"


def test_validate_cli_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, GOOD.replace("set_weight: 5", "set_weight: -1"), "bad.yaml")
    runner = CliRunner()

    ok = runner.invoke(main, ["validate", str(good), "-o", "json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == {
        "file": str(good), "kind": "Rollout", "valid": True, "warnings": []
    }  # fmt: skip

    failed = runner.invoke(main, ["validate", str(good), str(bad)])
    assert failed.exit_code == 2
    assert "Traceback" not in failed.output
    assert f"{bad}:10: spec.steps[0].set_weight: must be between 0 and 100" in failed.output


RELATIVE = "- {metric: error_rate, compare: baseline, max_increase: 0.01}"


@pytest.mark.parametrize(
    ("change", "warnings"),
    [
        ((), []),
        ((("- {metric: error_rate, max: 0.02}", RELATIVE),), ["spec.slos: no absolute bound"]),
        (
            (("- {metric: error_rate, max: 0.02}", f"{RELATIVE}\n    - {{metric: "
              "latency_p95_seconds, max: 2}"),),
            ["spec.slos: no absolute bound on a failure rate"],
        ),
        (
            (("- {metric: error_rate, max: 0.02}", "- {metric: served_error_rate, max: 0.02}"),),
            [],
        ),
        (
            (("set_weight: 100", "set_weight: 50"),),
            ["steps[2].set_weight: the last weight is 50%, so the canary is promoted to 100% "
             "without an analysis there"],
        ),
        (
            (("- {metric: error_rate, max: 0.02}", f"{RELATIVE}\n    - {{metric: error_rate, "
              "max: 0.02}"), ("set_weight: 5", "set_weight: 0")),
            ["slos[0] (error_rate <= baseline + 0.01): no set_weight step serves both variants "
             "(between 0 and 100), so this bound against the baseline can never be judged"],
        ),
    ],
)  # fmt: skip
def test_validate_warns_on_stderr_and_exits_0_when_a_runbook_judges_less_than_it_seems(
    tmp_path: Path, change: tuple[tuple[str, str], ...], warnings: list[str]
) -> None:
    text = GOOD
    for old, new in change:
        assert old in text
        text = text.replace(old, new)
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path), "-o", "text"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: valid Rollout 'demo'\n"
    shown = [line for line in result.stderr.splitlines() if line]
    assert len(shown) == len(warnings), shown
    for line, warning in zip(shown, warnings, strict=True):
        assert line.startswith(f"{path}: warning: {warning}")
    as_json = CliRunner().invoke(main, ["validate", str(path), "-o", "json"])
    assert [w[: len(e)] for w, e in zip(json.loads(as_json.stdout)["warnings"], warnings,
                                          strict=True)] == warnings  # fmt: skip


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.yaml'}: no such file" in result.output


def test_shipped_documents_validate() -> None:
    files = sorted((ROOT / "runbooks").rglob("*.yaml")) + sorted(
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


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max: 0.02}", "max: .nan}", ":8: spec.slos[0].max: must be a finite number, not nan"),
        ("max: 0.02}", "max: .inf}", ":8: spec.slos[0].max: must be a finite number, not inf"),
        ("max: 0.02}", "max: -.inf}", ":8: spec.slos[0].max: must be a finite number, not -inf"),
        ("max: 0.02}", "max: 'NaN'}", ":8: spec.slos[0].max: must be a finite number, not NaN"),
        ("max: 0.02}", "max: -0.1}", "spec.slos[0].max: must not be negative"),
        ("max: 0.02}", "max: 1.5}", "spec.slos[0].max: must be at most 1"),
        ("max: 0.02}", "max: 0.02, min: 0.5}", "spec.slos[0].min: above max"),
        ("error_rate, max: 0.02", "error_rate, compare: baseline, max_increase: 2", "at most 1"),
        ("error_rate, max: 0.02", "error_rate, compare: baseline, max_ratio: .nan", "finite"),
        ("pause: 1h30m", "pause: 99999999999h", ":11: spec.steps[1].pause: must be at most 30 d"),
        ("pause: 1h30m", "pause: 31d", "spec.steps[1].pause: must be at most 30 days"),
        ("pause: 1h30m", "pause: .nan", "spec.steps[1].pause: must be a finite number, not nan"),
        ("set_weight: 5", "set_weight: .nan", "spec.steps[0].set_weight: must be a finite number"),
        ("canary: b}", "canary: b}\n  analysis: {alpha: .nan}", "spec.analysis.alpha: must be a"),
        ("canary: b}", "canary: b}\n  analysis: {interval: 1e400}", "spec.analysis.interval"),
    ],
)
def test_every_number_is_finite_and_in_range(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in GOOD
    problems = problems_of(write(tmp_path, GOOD.replace(old, new, 1)))
    assert any(expected in p for p in problems), problems


def test_a_bound_of_nan_no_longer_passes_a_canary_at_100_percent_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["validate", str(write(tmp_path, GOOD.replace("max: 0.02", "max: .nan")))]
    )
    assert result.exit_code == 2
    assert "spec.slos[0].max: must be a finite number, not nan" in result.output


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    - {metric: error_rate, max: 0.02}\n",
        "    - metric: error_rate\n      max: 0.5\n      min: 0\n      max: 0.02\n",
    )
    path = write(tmp_path, text)
    assert problems_of(path) == [f"{path}:11: spec.slos[0]: duplicate key 'max' (first at line 9)"]
    top = write(tmp_path, GOOD + "kind: Gateway\n", "top.yaml")
    assert problems_of(top) == [f"{top}:13: duplicate key 'kind' (first at line 2)"]


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = GOOD.replace(
        "metadata: {name: demo}", "x-base: &base {name: demo}\nmetadata: {<<: *base}"
    ).replace("kind: Rollout\n", "kind: Rollout\n", 1)
    problems = problems_of(write(tmp_path, text))
    assert all("duplicate" not in p for p in problems) and "x-base" in problems[0]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: " + "[" * 5000, ":1: ", "nested too deep"),
        ("a: " + "{b: " * 900 + "1" + "}" * 900, ":1: a.b.b.b", "nested too deep (more than 64"),
        ("".join(" " * i + "a:\n" for i in range(200)), ":65: a.a.a", "nested too deep (more"),
        ("a: " + "9" * 5000, ": ", "not valid YAML: Exceeds the limit (4300 digits)"),
        ("a: 2001-13-45", ": ", "not valid YAML: month must be in 1..12"),
        ("a: 1\nb: \x07", ":2: ", "not valid YAML: unacceptable character #x0007"),
        ("&a [*a]", ": ", "must be a mapping"),
    ],
)
def test_hostile_yaml_is_one_located_line(
    tmp_path: Path, text: str, line: str, message: str
) -> None:
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}{line}"), problems
    assert message in problems[0]


def test_recursive_aliases_are_refused_not_followed(tmp_path: Path) -> None:
    text = GOOD.replace("metadata: {name: demo}", "metadata: &m {name: demo, labels: *m}")
    problems = problems_of(write(tmp_path, text))
    assert any("spec" not in p and "metadata.labels" in p for p in problems), problems


def bytes_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "doc.yaml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (GOOD.encode("utf-16"), ": not UTF-8 text (UTF-16 byte order mark); save it as UTF-8"),
        (GOOD.encode("utf-32"), ": not UTF-8 text (UTF-32 byte order mark); save it as UTF-8"),
        (GOOD.encode() + b"# caf\xe9\n", ":13: not UTF-8 text (byte 0xe9)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", ":1: not UTF-8 text (byte 0x89)"),
    ],
)
def test_bytes_that_are_not_utf8(tmp_path: Path, data: bytes, expected: str) -> None:
    path = bytes_file(tmp_path, data)
    assert problems_of(path) == [f"{path}{expected}"]


@pytest.mark.timeout(30)
def test_special_files_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # opening it for a blocking read would hang until a writer came
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")  # reading it whole would never end
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    for path in (fifo, zero):
        assert problems_of(path) == [f"{path}: not a regular file (a FIFO, socket or device)"]
    assert problems_of(folder) == [f"{folder}: is a directory, not a file"]


def test_unreadable_names_and_sizes(tmp_path: Path) -> None:
    long_name = tmp_path / ("x" * 300 + ".yaml")
    assert problems_of(long_name) == [f"{long_name}: file name too long"]
    assert problems_of(tmp_path / "gone.yaml") == [f"{tmp_path / 'gone.yaml'}: no such file"]
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as file:
        file.truncate(MAX_BYTES + 1)  # sparse: costs no disk, and is never read whole
    assert problems_of(huge) == [f"{huge}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0)
    assert problems_of(path) == [f"{path}: permission denied"]


def test_validate_reports_hostile_files_with_exit_2(tmp_path: Path) -> None:
    bom = bytes_file(tmp_path, GOOD.encode("utf-16"))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    good = write(tmp_path, GOOD, "good.yaml")
    result = CliRunner().invoke(main, ["validate", str(good), str(bom), str(fifo)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.splitlines()[1:] == [
        f"{bom}: not UTF-8 text (UTF-16 byte order mark); save it as UTF-8",
        f"{fifo}: not a regular file (a FIFO, socket or device)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1,\n "b": {"c": 2,\n  "c": 3}}', ":3: duplicate key 'c' (first at line 2)"),
        ('{"c": 1, "c": 2}', ":1: duplicate key 'c' (first at line 1)"),
        ('{"a": NaN}', ": not JSON: NaN is not a JSON number"),
        ('{"a": -Infinity}', ": not JSON: -Infinity is not a JSON number"),
        ("[" * 100_000, ": nested too deep"),
        ("[" * 65 + "]" * 65, ": nested too deep (more than 64 levels)"),
        ('{"a": 1', ":1: not JSON: Expecting ',' delimiter (column 8)"),
    ],
)
def test_strict_json(text: str, expected: str) -> None:
    with pytest.raises(InvalidDocument) as caught:
        parse_json(text, "f.json")
    assert [str(p) for p in caught.value.problems] == [f"f.json{expected}"]


def test_flags_show_on_hostile_files_is_one_line_exit_2(tmp_path: Path) -> None:
    utf16 = tmp_path / "flags.json"
    utf16.write_bytes('{"flags": {}}'.encode("utf-16"))
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    duplicate = tmp_path / "dup.json"
    duplicate.write_text('{"flags": {"k": {"on": true},\n  "k": {"on": false}}}')
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)  # past the JSON scanner's recursion limit, then cut
    for path, message in [
        (utf16, "not UTF-8 text (UTF-16 byte order mark)"),
        (fifo, "not a regular file"),
        (duplicate, ":2: duplicate key 'k' (first at line 1)"),
        (deep, "nested too deep"),
    ]:
        result = CliRunner().invoke(main, ["flags", "show", str(path), "k"])
        assert result.exit_code == 2, result.output
        assert len(result.output.splitlines()) == 1 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_a_thousand_problems_print_fifty_lines(tmp_path: Path) -> None:
    steps = "".join("    - set_weight: 500\n" for _ in range(1000))
    path = write(tmp_path, GOOD.replace("  steps:\n", "  steps:\n" + steps))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 51 and lines[-1] == f"{path}: and 950 more problems"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Z" * 300, "String should have at most 64 characters"),
        ("../../../../dev/zero", "is not an IANA time zone"),
        ("Mars/Olympus_Mons", "is not an IANA time zone"),
    ],
)
def test_time_zones_are_names_never_paths(tmp_path: Path, name: str, expected: str) -> None:
    scenario = yaml.safe_load((ROOT / "scenarios" / "primary-503.yaml").read_text())
    scenario["spec"]["window"] = {"timezone": name}
    path = write(tmp_path, yaml.safe_dump(scenario))
    problems = problems_of(path)
    assert len(problems) == 1 and "spec.window.timezone: " in problems[0], problems
    assert expected in problems[0]


def test_a_profile_name_is_looked_up_never_opened(tmp_path: Path) -> None:
    text = GOOD.replace(
        '{provider: scrape, targets: ["http://127.0.0.1:8080/metrics"]}',
        '{provider: prometheus, url: "http://127.0.0.1:9090", profile: ' + "p" * 300 + "}",
    )
    problems = problems_of(write(tmp_path, text))
    assert len(problems) == 1 and "spec.metrics.profile: no shipped profile 'ppp" in problems[0]


def test_a_nested_model_built_on_use_still_shows_its_default_in_the_schema() -> None:
    schema = Rollout.model_json_schema(by_alias=True)
    shown = schema["$defs"]["RolloutSpec"]["properties"]["analysis"]["default"]
    assert shown == AnalysisSpec().model_dump(mode="json", by_alias=True)


def bomb(levels: int = 10, width: int = 10) -> str:
    """The issue's alias bomb: each anchor a list of `width` aliases of the one before, the
    last quoted where an error message would show it (a pause must be a duration)."""
    lines = ["x0: &x0 [" + ",".join(["a"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * width) + "]")
    anchors = "x-anchors:\n" + "".join(f"  {line}\n" for line in lines)
    return GOOD.replace("spec:\n", anchors + "spec:\n").replace(
        "    - pause: 1h30m\n", f"    - pause: *x{levels - 1}\n"
    )


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = write(tmp_path, bomb())
    assert len(path.read_bytes()) < 1500  # ten billion values once expanded
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    # x0..x2 are 11, 111 and 1,111 nodes once expanded; with their keys and the 11 nodes
    # before them that is 1,249 when x3's list opens, and each alias in it (*x2) adds 1,111:
    # the eighth, x3[7], passes 10,000.
    assert 1_249 + 7 * 1_111 <= 10_000 < 1_249 + 8 * 1_111
    assert result.output.splitlines() == [
        f"{path}:8: x-anchors.x3[7]: more than 10,000 keys and values (an alias counts as "
        "many as the value it names)"
    ]


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    - {metric: error_rate, max: 0.02}\n",
        "    - &slo {metric: error_rate, max: 0.02}\n    - *slo\n",
    )
    doc = load_document(write(tmp_path, text), expect=Rollout)
    assert [s.metric for s in doc.spec.slos] == ["error_rate", "error_rate"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("!!bool x", "tag !!bool on 'x'"),
        ('!!int ""', "tag !!int on ''"),
        ('!!int "+"', "tag !!int on '+'"),
        ('!!float ""', "tag !!float on ''"),
        ('!!timestamp ""', "tag !!timestamp on ''"),
        ("!!binary aGk=", "tag !!binary on 'aGk='"),
        ("!!set {a, b}", "tag !!set on a mapping"),
        ("!!python/object:os.system x", "tag !!python/object:os.system on 'x'"),
        ("!local x", "tag !local on 'x'"),
    ],
)
def test_explicit_tags_outside_the_safe_set_are_refused(
    tmp_path: Path, value: str, shown: str
) -> None:
    path = write(tmp_path, GOOD.replace("metadata: {name: demo}", f"metadata: {{name: {value}}}"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"{path}:3: metadata.name: {shown} is refused: a tag may only be !!str or name what "
        "the value is"
    ]


def test_tags_that_say_what_the_value_is_are_accepted(tmp_path: Path) -> None:
    text = GOOD.replace("name: demo", "name: !!str demo").replace(
        "set_weight: 5", 'set_weight: !!int "5"'
    )
    doc = load_document(write(tmp_path, text), expect=Rollout)
    assert doc.metadata.name == "demo" and doc.spec.steps[0].set_weight == 5


def test_a_document_of_more_than_a_mebibyte_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "#" * 2**20 + "\n")
    assert problems_of(path) == [f"{path}: larger than 1 MiB"]


def test_too_many_values_are_refused_where_the_limit_is_passed(tmp_path: Path) -> None:
    steps = "".join(f"    - set_weight: {i % 100}\n" for i in range(12_000))
    path = write(tmp_path, GOOD.replace("  steps:\n", "  steps:\n" + steps))
    (problem,) = problems_of(path)
    # 39 nodes come before the first step and each step is three (a mapping, a key, a value):
    # node 10,001 is the key of step 3,320 (39 + 3 * 3,320 + 2), on line 10 + 3,320.
    assert 39 + 3 * 3_320 + 2 == 10_001
    assert problem.startswith(f"{path}:3330: spec.steps[3320]: more than 10,000 keys")


def test_thousands_of_unknown_keys_name_each_line(tmp_path: Path) -> None:
    keys = "".join(f"  k{i}: 1\n" for i in range(4_900))
    path = write(tmp_path, GOOD.replace("spec:\n", "spec:\n" + keys))
    with pytest.raises(InvalidDocument) as caught:
        load_document(path)
    found = {p.location: p.line for p in caught.value.problems}
    assert all(found[f"spec.k{i}"] == 5 + i for i in range(4_900))


PROMETHEUS = '{provider: prometheus, url: "http://127.0.0.1:9090", profile: PROFILE}'


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("spec.flag.path", GOOD.replace("path: flags.json", "path: ~nosuchuser/flags.json")),
        (
            "spec.metrics.profile",
            GOOD.replace(
                '{provider: scrape, targets: ["http://127.0.0.1:8080/metrics"]}',
                PROMETHEUS.replace("PROFILE", "~nosuchuser/profile.yaml"),
            ),
        ),
        ("spec.steps[1].chaos", GOOD.replace("pause: 1h30m", "chaos: ~nosuchuser/s.yaml")),
    ],
)
def test_a_home_of_no_user_is_a_problem_naming_the_field(
    tmp_path: Path, field: str, text: str
) -> None:
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f": {field}: cannot expand '~nosuchuser': no such user" in result.output
    assert "Traceback" not in result.output


def test_a_home_that_exists_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    doc = load_document(write(tmp_path, GOOD.replace("path: flags.json", "path: ~/f.json")))
    assert doc.spec.flag.path == tmp_path / "home" / "f.json"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["-1" + "0" * 400, "1" + "0" * 400])
def test_a_duration_of_a_huge_integer_is_a_problem_not_a_crash(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, GOOD.replace("pause: 1h30m", f"pause: {value}"))
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:11: spec.steps[1].pause: must ")


@pytest.mark.parametrize(
    ("shadow", "where"),
    [({"flag": 1.5}, "shadow.flag"), ({"model": "m", "percent": "nan"}, "shadow.percent")],
)
def test_a_bad_shadow_block_is_named_by_its_own_path(
    tmp_path: Path, shadow: dict[str, object], where: str
) -> None:
    """The shadow block's two forms are told apart by a tag pydantic puts in the error's
    path; the path shown is the document's (a tag named `flag` once made it `shadow.flag.flag`)."""
    document = yaml.safe_load((ROOT / "runbooks" / "gateway.yaml").read_text())
    document["spec"]["routes"][0]["shadow"] = shadow
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(InvalidDocument) as raised:
        load_document(path)
    assert f": spec.routes[0].{where}: " in str(raised.value)
