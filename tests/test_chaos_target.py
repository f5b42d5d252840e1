"""The fault client talks to the proxy's admin API on the target's origin and believes only a
fault proxy's answers: a target with a path or query is refused (exit 2, the URL redacted), and
an upstream's 200 is never read as "injected", so a fault that was not injected is never held."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from canaryctl.chaos import BackgroundServer, ChaosClient, create_proxy_app
from canaryctl.chaos.journal import Journal
from canaryctl.chaos.scenario import run_scenario
from canaryctl.cli import main
from canaryctl.clock import FakeClock
from canaryctl.errors import ChaosBackendError, InvalidInput
from canaryctl.metrics.scripted import ScriptedMetricsSource
from canaryctl.retry import RetryPolicy
from canaryctl.runbook.scenario import FaultSpec
from tests.chaos_world import EXAMPLE, TOKEN
from tests.test_chaos_scenario import fake_scenario, steady

SECRET = "s3cret-in-the-query"
FAULT = FaultSpec.model_validate({"fault": "error", "status": 503, "ttl": "1m"})
ONCE = RetryPolicy(attempts=1)


def anything_200() -> Starlette:
    """An upstream that answers 200 `{"ok": true}` to every path and method, as many do."""

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "path": str(request.url)})

    methods = ["GET", "POST", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", ok, methods=methods)])


@pytest.mark.parametrize("suffix", ["/x", f"/?token={SECRET}", f"/x?token={SECRET}", "#frag"])
def test_a_target_with_a_path_or_query_is_refused_naming_the_origin(suffix: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        ChaosClient(f"http://127.0.0.1:9{suffix}", TOKEN)
    assert "takes no path or query" in str(refused.value) and SECRET not in str(refused.value)


def test_the_admin_api_is_reached_on_the_origin() -> None:
    with BackgroundServer(anything_200()) as upstream:
        proxy = BackgroundServer(create_proxy_app(upstream.url, token=TOKEN))
        with proxy:
            client = ChaosClient(proxy.url + "/", TOKEN)
            fault = client.add(FAULT, "f-origin")
            assert fault["id"] == "f-origin"
            assert [f["id"] for f in client.faults()] == ["f-origin"]
            assert client.clear() == 1


def test_an_upstream_that_answers_200_is_never_taken_for_the_proxy() -> None:
    with BackgroundServer(anything_200()) as upstream:
        client = ChaosClient(upstream.url, TOKEN, retry=ONCE)
        for call in (lambda: client.add(FAULT, "f-1"), client.faults, client.clear):
            with pytest.raises(ChaosBackendError) as failed:
                call()
            assert "not a fault proxy's answer" in str(failed.value)
        scenario = fake_scenario()
        clock = FakeClock()
        journal = Journal(scenario)
        with pytest.raises(ChaosBackendError):
            run_scenario(
                scenario,
                injector=client,
                metrics=ScriptedMetricsSource(steady, clock.now),
                journal=journal,
                clock=clock,
            )
    assert journal.data["outcome"] == "error" and journal.data["exit_code"] == 3
    assert journal.data["injections"][0].get("result") is None


@pytest.mark.parametrize("suffix", ["/x", f"/x?token={SECRET}", f"?token={SECRET}"])
def test_chaos_run_refuses_such_a_target_with_exit_2_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["target"]["url"] = "http://127.0.0.1:9" + suffix
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(document))
    for args in (["chaos", "run", str(path), "-o", "json"], ["validate", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "spec.target.url" in result.output and SECRET not in result.output
    assert not (tmp_path / ".canaryctl").exists()
    assert not any(SECRET in p.read_text() for p in tmp_path.rglob("*.json"))


def test_inject_against_a_plain_upstream_is_exit_3_never_a_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)
    with BackgroundServer(anything_200()) as upstream:
        args = ["chaos", "inject", "--proxy", upstream.url, "--fault", "error", "--status", "503"]
        for output in ("text", "json"):
            result = CliRunner().invoke(main, [*args, "-o", output])
            assert result.exit_code == 3, result.output
            assert "Traceback" not in result.output and "KeyError" not in result.output
            lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
            assert lines == []
