"""The controller's JSON API over real HTTP on loopback, on a real state file: what it serves is
exactly what /openapi.json says (every answer validated against its schema), tokens and roles,
approve and abort through the request table, client mistakes as 4xx."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from starlette.routing import Route

import canaryctl.api.app
from canaryctl.api import ApiTokens, api_routes, create_app, json_errors
from canaryctl.api.app import MAX_API_BODY_BYTES
from canaryctl.chaos.server import BackgroundServer
from canaryctl.controller import StateStore
from canaryctl.controller.service import Controller
from canaryctl.controller.service import create_app as service_app
from canaryctl.errors import InvalidInput
from canaryctl.flags.base import FlagSnapshot
from canaryctl.runbook import Rollout
from tests.api_world import OPERATOR, TOKENS, VIEWER, api_server, auth, rolled_back
from tests.hostile_documents import hostile
from tests.rollout_world import RUNBOOK

Checked = dict[tuple[str, str], set[int]]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """Run 1 rolled back; run 2 unfinished, awaiting approval (its process is elsewhere)."""
    world = rolled_back(tmp_path)
    with StateStore(world.state) as store:
        store.create_run(name="waiting", runbook=world.rollout.model_dump(mode="json",
                         by_alias=True), host="elsewhere", pid=1, version="test",
                         started_at=1.7e9, prior_flag=FlagSnapshot("support-bot-model", 1, {}),
                         phase="awaiting_approval", state={"weight": 10, "item": 1})  # fmt: skip
    return world.state


class Validated:
    """A client that checks every answer against the OpenAPI document it was given."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.document = httpx.get(f"{url}/openapi.json").json()
        self.seen: Checked = {}

    def call(self, method: str, path: str, template: str, **kwargs: Any) -> httpx.Response:
        answer = httpx.request(method, self.url + path, **kwargs)
        operation = self.document["paths"][template][method.lower()]
        assert str(answer.status_code) in operation["responses"], (path, answer.status_code)
        described = operation["responses"][str(answer.status_code)]
        media = next(iter(described["content"]))
        assert answer.headers["content-type"].startswith(media)
        if media == "application/json":
            schema = {**described["content"][media]["schema"],
                      "components": self.document["components"]}  # fmt: skip
            Draft202012Validator(schema).validate(answer.json())
        self.seen.setdefault((method, template), set()).add(answer.status_code)
        return answer


def served_routes(tokens: ApiTokens, submit: Any = None) -> set[tuple[str, str]]:
    app = create_app(lambda: StateStore(":memory:"), tokens, submit=submit)
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def test_the_document_is_valid_openapi_31_and_names_every_route_served(state: Path) -> None:
    with api_server(state) as server:
        document = httpx.get(f"{server.url}/openapi.json").json()
    validate_openapi(document)
    assert document["openapi"] == "3.1.0"
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert described == served_routes(TOKENS)
    assert ("POST", "/api/v1/alertmanager") in described
    assert ("POST", "/api/v1/runs") not in described  # no submit given: not served


def test_submit_is_served_and_described_when_the_store_can_submit(state: Path) -> None:
    filed: list[Rollout] = []

    def submit(rollout: Rollout) -> int:
        if rollout.metadata.name == "held":
            raise InvalidInput("flag 'support-bot-model' is still held by run 2")
        filed.append(rollout)
        return 3

    runbook = yaml.safe_dump(RUNBOOK)
    app = create_app(lambda: StateStore(state), TOKENS, submit=submit)
    with BackgroundServer(app) as server:
        api = Validated(server.url)
        runs = "/api/v1/runs"
        described = {(m.upper(), p) for p, ops in api.document["paths"].items() for m in ops}
        assert described == served_routes(TOKENS, submit) and ("POST", runs) in described
        validate_openapi(api.document)
        made = api.call("POST", runs, runs, content=runbook, headers=auth(OPERATOR))
        assert made.status_code == 201 and made.json() == {"run_id": 3, "name": "support-bot"}
        assert filed[0].spec.flag.key == "support-bot-model" and len(filed[0].spec.steps) == 5
        as_json = api.call("POST", runs, runs, json=RUNBOOK, headers=auth(OPERATOR))
        assert as_json.status_code == 201 and len(filed) == 2
        assert api.call("POST", runs, runs, content=runbook, headers=auth(VIEWER)
                        ).status_code == 403  # fmt: skip
        broken = yaml.safe_dump({**RUNBOOK, "spec": {**RUNBOOK["spec"], "slos": []}})
        refused = api.call("POST", runs, runs, content=broken, headers=auth(OPERATOR))
        assert refused.status_code == 422 and "spec.slos" in refused.json()["error"]
        held = yaml.safe_dump({**RUNBOOK, "metadata": {"name": "held"}})
        busy = api.call("POST", runs, runs, content=held, headers=auth(OPERATOR))
        assert busy.status_code == 409 and "still held by run 2" in busy.json()["error"]
        binary = api.call("POST", runs, runs, content=b"\xff\xfe", headers=auth(OPERATOR))
        assert binary.status_code == 400
    assert len(filed) == 2


def test_every_answer_matches_its_schema_and_every_operation_is_exercised(
    state: Path,
) -> None:
    with api_server(state) as server:
        api = Validated(server.url)
        runs = "/api/v1/runs"
        one, approve, abort = f"{runs}/{{run_id}}", f"{runs}/{{run_id}}/approve", \
            f"{runs}/{{run_id}}/abort"  # fmt: skip
        alerts = "/api/v1/alertmanager"
        api.call("GET", "/", "/")
        api.call("GET", "/openapi.json", "/openapi.json")
        listed = api.call("GET", runs, runs, headers=auth(VIEWER)).json()["runs"]
        assert [r["run_id"] for r in listed] == [2, 1]
        assert api.call("GET", runs + "?limit=1", runs, headers=auth(VIEWER)).json()["runs"][0][
            "run_id"] == 2  # fmt: skip
        for bad in ("0", "x", "1001", "9" * 400, "-1"):
            answer = api.call("GET", f"{runs}?limit={bad}", runs, headers=auth(VIEWER))
            assert answer.status_code == 400 and "limit" in answer.json()["error"]
        assert api.call("GET", runs, runs).status_code == 401
        detail = api.call("GET", f"{runs}/1", one, headers=auth(VIEWER)).json()
        assert detail["run"]["outcome"] == "rolled_back"
        assert detail["verdicts"][-1]["outcome"] == "fail"
        assert "error_rate = 0.05 is above the maximum 0.02" in detail["verdicts"][-1]["reason"]
        assert [e["type"] for e in detail["events"]].count("analysis") == len(detail["verdicts"])
        assert detail["chart_svg"].startswith("<svg") and 'class="ending rolled_back"' in \
            detail["chart_svg"]  # fmt: skip
        for bad, status in (("7", 404), ("0", 400), ("abc", 400), ("9" * 30, 400)):
            assert api.call("GET", f"{runs}/{bad}", one, headers=auth(VIEWER)).status_code == status
        # Approve and abort: operators only, through the request table.
        assert api.call("POST", f"{runs}/2/approve", approve).status_code == 401
        forbidden = api.call("POST", f"{runs}/2/approve", approve, headers=auth(VIEWER))
        assert forbidden.status_code == 403 and "grafana is a viewer" in forbidden.json()["error"]
        assert api.call("POST", f"{runs}/2/abort", abort, headers=auth(VIEWER)).status_code == 403
        filed = api.call("POST", f"{runs}/2/approve", approve, headers=auth(OPERATOR))
        assert filed.status_code == 202 and filed.json()["by"] == "ops (api)"
        ended = api.call("POST", f"{runs}/1/approve", approve, headers=auth(OPERATOR))
        assert ended.status_code == 409 and "already ended: rolled_back" in ended.json()["error"]
        assert api.call("POST", f"{runs}/1/abort", abort, headers=auth(OPERATOR)).status_code == 409
        assert api.call("POST", f"{runs}/9/abort", abort, headers=auth(OPERATOR)).status_code == 404
        assert api.call("POST", f"{runs}/x/abort", abort, headers=auth(OPERATOR)).status_code == 400
        aborted = api.call("POST", f"{runs}/2/abort", abort, headers=auth(OPERATOR))
        assert aborted.status_code == 202
        # The webhook: bad bodies are 400, big ones 413, a payload matching nothing 200.
        assert api.call("POST", alerts, alerts, json={"alerts": []}).status_code == 401
        for body in (b"{", b"\xff", b"[]", b'{"alerts": [{"status": "on"}]}'):
            answer = api.call("POST", alerts, alerts, content=body, headers=auth(OPERATOR))
            assert answer.status_code == 400, body
        big = b'{"alerts": [], "x": "' + b"a" * MAX_API_BODY_BYTES + b'"}'
        assert api.call("POST", alerts, alerts, content=big, headers=auth(OPERATOR)
                        ).status_code == 413  # fmt: skip
        nothing = api.call("POST", alerts, alerts, json={"version": "4", "alerts": []},
                           headers=auth(OPERATOR))  # fmt: skip
        assert nothing.json() == {"aborted": [], "repeats": [], "unmatched": [], "resolved": 0}
    with StateStore(state) as store:
        pending = store.pending_requests(2)
    assert [(r.kind, r.requested_by) for r in pending] == [
        ("approve", "ops (api)"), ("abort", "ops (api)")]  # fmt: skip
    # Every operation the document lists was called, and each answered at least one 2xx.
    document_ops = {(m.upper(), p) for p, ops in api.document["paths"].items() for m in ops}
    assert set(api.seen) == document_ops
    assert all(any(200 <= s < 300 for s in statuses) for statuses in api.seen.values())


def test_approve_is_refused_unless_the_run_awaits_approval(state: Path) -> None:
    with StateStore(state) as store:
        store.save_state(2, phase="paused", state={"weight": 10}, at=1.7e9)
    with api_server(state) as server:
        answer = httpx.post(f"{server.url}/api/v1/runs/2/approve", headers=auth(OPERATOR))
    assert answer.status_code == 409
    assert answer.json() == {"error": "run 2 is paused, not awaiting approval"}


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [(InvalidInput("cannot open the state database x: disk I/O error"), 503,
      "the state store failed: cannot open the state database x"),
     (sqlite3.OperationalError("database is locked"), 500, "unexpected error")],
)  # fmt: skip
def test_a_failing_store_is_a_json_answer_never_a_traceback(
    tmp_path: Path, failure: Exception, status: int, message: str
) -> None:
    def broken() -> StateStore:
        raise failure

    with BackgroundServer(create_app(broken, TOKENS)) as server:
        api = Validated(server.url)
        answer = api.call("GET", "/api/v1/runs", "/api/v1/runs", headers=auth(VIEWER))
    assert answer.status_code == status and message in answer.json()["error"]
    assert "Traceback" not in answer.text


def test_unknown_paths_and_methods_are_json_4xx(state: Path) -> None:
    with api_server(state) as server:
        missing = httpx.get(f"{server.url}/api/v2/nothing")
        method = httpx.delete(f"{server.url}/api/v1/runs", headers=auth(OPERATOR))
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert method.status_code == 405 and method.json() == {"error": "Method Not Allowed"}


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", f"Basic {OPERATOR}", f"Bearer {OPERATOR}x",
     f"Bearer {OPERATOR[:-1]}", "Bearer " + "x" * 10_000],
)  # fmt: skip
def test_a_missing_or_wrong_token_is_401_and_never_echoed(
    state: Path, header: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {} if header is None else {"Authorization": header}
    caplog.set_level(logging.DEBUG)
    with api_server(state) as server:
        answer = httpx.get(f"{server.url}/api/v1/runs", headers=headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert OPERATOR[:20] not in answer.text and OPERATOR[:20] not in caplog.text


def test_tokens_read_from_the_environment_and_bad_entries_named_not_quoted() -> None:
    text = f" a:viewer:{VIEWER} , b:operator:{OPERATOR}"
    tokens = ApiTokens.from_env({"CANARYCTL_API_TOKENS": text})
    viewer, operator = tokens.caller(f"Bearer {VIEWER}"), tokens.caller(f"bearer {OPERATOR}")
    assert viewer is not None and (viewer.name, viewer.role) == ("a", "viewer")
    assert operator is not None and (operator.name, operator.role) == ("b", "operator")
    secret = "s3cret-" + "z" * 20
    for text, message in (
        ("", "CANARYCTL_API_TOKENS is not set"),
        (f"a:viewer:{secret},{secret}", "entry 2 is not NAME:ROLE:TOKEN"),
        (f"a:admin:{secret}", "entry 1 (a): the role must be viewer or operator"),
        ("a:viewer:short", "entry 1 (a): the token is shorter than 16 characters"),
        (f"a b:viewer:{secret}", "entry 1: the name must be"),
        (f"a:viewer:{secret},b:operator:{secret}", "entry 2 (b): the same token as a"),
        (f"a:viewer:{secret},a:operator:{VIEWER}", "entry 2: the name a is given twice"),
    ):
        with pytest.raises(InvalidInput) as raised:
            ApiTokens.from_env({"CANARYCTL_API_TOKENS": text})
        assert message in str(raised.value) and secret not in str(raised.value)


def test_controller_serve_refuses_bad_tokens_before_it_says_it_is_up(tmp_path: Path) -> None:
    """A controller that announces its URL and then exits reads as one that started and died."""
    from click.testing import CliRunner

    from canaryctl.cli.main import main

    secret = "s3cret-" + "q" * 20
    result = CliRunner().invoke(
        main,
        ["controller", "serve", "--state", str(tmp_path / "state.db"), "--listen", "127.0.0.1:0"],
        env={"CANARYCTL_API_TOKENS": f"ops:admin:{secret}"},
    )
    assert result.exit_code == 2, result.output
    assert "entry 1 (ops): the role must be viewer or operator" in result.output
    assert "controller " not in result.output and secret not in result.output


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=20) | st.sampled_from(
    [10**400, -(10**4000), 2**64, 1e308, -1e308])  # fmt: skip


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


_ANY_JSON = st.recursive(_SCALARS, _containers, max_leaves=20)
_ALERT = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "pending"]) | _SCALARS,
        "labels": st.dictionaries(
            st.sampled_from(["alertname", "route", "x"]),
            st.sampled_from(["LLMHighErrorRate", "support-bot"]) | _SCALARS,
            max_size=3,
        )
        | _SCALARS,
        "fingerprint": st.text(max_size=200) | _SCALARS,
    },
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    st.just(b'{"alerts": [], "version": ' + b"9" * 5000 + b"}"),  # past int()'s digit limit
    _ANY_JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"alerts": st.lists(_ALERT, max_size=3) | _ANY_JSON,
                                        "version": _SCALARS}).map(lambda v: json.dumps(v).encode()),
)  # fmt: skip


def test_any_webhook_body_is_answered_200_or_400(state: Path) -> None:
    with api_server(state) as server, httpx.Client(base_url=server.url) as client:

        @settings(max_examples=150, deadline=None)
        @given(body=_BODIES)
        def post(body: bytes) -> None:
            answer = client.post("/api/v1/alertmanager", content=body, headers=auth(OPERATOR))
            assert answer.status_code in (200, 400), answer.text
            assert "error" in answer.json() or "aborted" in answer.json()

        post()


BOMB = (
    "apiVersion: canaryctl/v1\nkind: Rollout\nmetadata: {name: bomb}\n"
    + "".join(
        f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}" if i else "a"] * 10) + "]\n" for i in range(10)
    )
    + "spec: {steps: [{pause: *x9}]}\n"
)


def test_healthz_answers_while_a_hostile_submit_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse runs off the event loop: held at its start, /healthz still answers; let go,
    the bomb is a 422 naming the limit."""
    entered, release = threading.Event(), threading.Event()
    parse = canaryctl.api.app.parse_document

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(20)
        return parse(*args, **kwargs)

    monkeypatch.setattr(canaryctl.api.app, "parse_document", held)
    path = tmp_path / "state.db"
    routes = api_routes(lambda: StateStore(path), TOKENS, submit=lambda rollout: 1)
    with StateStore(path) as store:
        app = service_app(Controller(store), routes, json_errors)
        with BackgroundServer(app) as server, ThreadPoolExecutor(1) as pool:
            submitted = pool.submit(
                httpx.post, f"{server.url}/api/v1/runs", content=BOMB, headers=auth(OPERATOR),
                timeout=60,
            )  # fmt: skip
            assert entered.wait(30)
            health = httpx.get(f"{server.url}/healthz", timeout=10)
            assert health.status_code == 200 and not submitted.done()
            release.set()
            answer = submitted.result()
    assert answer.status_code == 422, answer.text
    assert "more than 10,000 keys and values" in answer.json()["error"]


@pytest.mark.parametrize(
    "value", ["!!bool x", '!!int ""', '!!int "+"', '!!float ""', '!!timestamp ""', "~nosuchuser/x"]
)
def test_hostile_submits_are_422_never_500(state: Path, value: str) -> None:
    runbook = yaml.safe_dump(RUNBOOK).replace("name: support-bot", f"name: {value}", 1)
    if value.startswith("~"):
        runbook = yaml.safe_dump(RUNBOOK).replace("path: ", f"path: {value}", 1)
    app = create_app(lambda: StateStore(state), TOKENS, submit=lambda rollout: 1)
    with BackgroundServer(app) as server:
        answer = httpx.post(f"{server.url}/api/v1/runs", content=runbook, headers=auth(OPERATOR))
    assert answer.status_code == 422, answer.text


def test_the_three_mismatches_schemathesis_found_stay_fixed(state: Path) -> None:
    app = create_app(lambda: StateStore(state), TOKENS, submit=lambda rollout: 1)
    with BackgroundServer(app) as server:
        document = httpx.get(f"{server.url}/openapi.json").json()
        # 1. OPTIONS names every method the path serves, POST included
        options = httpx.options(f"{server.url}/api/v1/runs", headers=auth(OPERATOR))
        assert options.status_code == 405
        assert set(options.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
        # 2. the webhook refuses the `fingerprint: null` its schema forbids
        payload = {"alerts": [{"status": "firing", "labels": {}, "fingerprint": None}]}
        schema = {**document["components"]["schemas"]["AlertmanagerPayload"],
                  "components": document["components"]}  # fmt: skip
        assert not Draft202012Validator(schema).is_valid(payload)
        hook = httpx.post(f"{server.url}/api/v1/alertmanager", json=payload,
                          headers=auth(OPERATOR))  # fmt: skip
        assert hook.status_code == 400, hook.text
        # 3. the schema forbids the `apiVersion: null` the server refuses with 422
        runbook = {**RUNBOOK, "apiVersion": None}
        schema = document["components"]["schemas"]["Runbook"]
        assert not Draft202012Validator(schema).is_valid(runbook)
        assert Draft202012Validator(schema).is_valid(RUNBOOK)
        refused = httpx.post(f"{server.url}/api/v1/runs", json=runbook, headers=auth(OPERATOR))
        assert refused.status_code == 422


def test_any_submitted_document_is_answered_without_a_server_error(state: Path) -> None:
    """The hostile documents the fuzz tests give `validate` (every kind; bombs, tags, huge
    numbers, ~user paths), posted to POST /api/v1/runs: a 4xx naming the problem, or 201."""
    app = create_app(lambda: StateStore(state), TOKENS, submit=lambda rollout: 3)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:

        @settings(max_examples=120, deadline=None, database=None)
        @given(body=hostile())
        def post(body: bytes) -> None:
            answer = client.post("/api/v1/runs", content=body, headers=auth(OPERATOR))
            assert answer.status_code in (201, 400, 413, 422), answer.text
            assert "error" in answer.json() or answer.json()["run_id"] == 3
            assert len(answer.content) < 20_000  # problems are clipped, never the body echoed

        post()
