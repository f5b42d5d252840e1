"""The gateway evaluating flags streamed by the real LaunchDarkly SDK from a local server that
speaks LaunchDarkly's SDK protocol, while rollouts write through the real REST client.

Everything runs over loopback HTTP: `tests/ld_server.py` serves the REST API, the SDK's polling
and streaming endpoints and its event endpoints; LabStack runs simulated providers and the real
gateway; `canaryctl rollout run` drives the flag through the `launchdarkly` backend.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from gateway_probe import served
from ldclient.config import Config
from ldclient.impl.datasource.feature_requester import FeatureRequesterImpl
from ldclient.impl.util import UnsuccessfulResponseException
from ldclient.versioned_data_kind import FEATURES

from canaryctl.cli import main
from canaryctl.flags import LaunchDarklyFlagStore
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec
from tests.ld_server import Fault, LDServer, make_flag, sdk_flag, serve

pytestmark = pytest.mark.e2e

API_TOKEN = "api-5e6f7a8b-SECRET-API-TOKEN"
SDK_KEY = "sdk-1a2b3c4d-SECRET-SDK-KEY"
PROJECT, ENV, KEY = "default", "production", "support-bot-model"
BASELINE, CANARY, OTHER = "gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b"
PROPAGATION = 30.0
"""Seconds to wait for a change to reach the gateway before a test fails: a bound for a loaded
machine, not a pace. That changes are pushed, not polled, is shown by counts: one stream
connection, no poll, one pushed patch per change."""

RULES = [
    {
        "_id": "rule-free",
        "description": "free tier",
        "clauses": [{"_id": "c1", "attribute": "tier", "op": "in", "values": ["free"]}],
        "variation": 0,
    },
    {
        "_id": "rule-paid",
        "description": "paid tier",
        "clauses": [{"_id": "c2", "attribute": "tier", "op": "in", "values": ["paid"]}],
        "variation": 0,
    },
]


@pytest.fixture
def ld() -> Iterator[LDServer]:
    server = LDServer(API_TOKEN)
    server.add(
        PROJECT,
        make_flag(
            KEY,
            [
                ("id-gpt4", BASELINE, "GPT-4 Turbo"),
                ("id-mini", CANARY, "GPT-4o mini"),
                ("id-mixtral", OTHER, "Mixtral"),
            ],
            {ENV: {"fallthrough": {"variation": 0}, "rules": RULES}},
        ),
    )
    server.sdk_key(SDK_KEY, PROJECT, ENV)
    with serve(server):
        yield server


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCHDARKLY_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("LAUNCHDARKLY_SDK_KEY", SDK_KEY)


def lab(
    ld: LDServer, *, canary_errors: float = 0.0, traffic: bool = False, **flags: Any
) -> LabSpec:
    """Three quick providers behind a gateway whose flags come from `ld` over the SDK stream."""
    quick = {"median": 0.005, "p95": 0.02}
    providers = [
        {"name": BASELINE, "latency": quick},
        {"name": CANARY, "latency": quick, "errors": {"rate": canary_errors}},
        {"name": OTHER, "latency": quick},
    ]
    source = {
        "provider": "launchdarkly",
        "base_uri": ld.base_url,
        "stream_uri": ld.base_url,
        "events_uri": ld.base_url,
        **flags,
    }
    spec: dict[str, Any] = {
        "seed": 7,
        "providers": providers,
        "gateway": {
            "listen": "127.0.0.1:0",
            "flags": source,
            "routes": [{"name": "support-bot", "flag": KEY, "default_model": BASELINE}],
            "models": [{"name": p["name"], "base_url": f"lab://{p['name']}"} for p in providers],
        },
    }
    if traffic:
        spec["traffic"] = {"route": "support-bot", "rate": 120, "users": 400, "concurrency": 64}
    return LabSpec.model_validate(spec)


def within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether `condition` holds at some check before `seconds` have passed (checked at least
    once)."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def rest_store(ld: LDServer, **overrides: Any) -> LaunchDarklyFlagStore:
    options: dict[str, Any] = {
        "project": PROJECT,
        "environment": ENV,
        "key": KEY,
        "baseline": BASELINE,
        "canary": CANARY,
        "token": API_TOKEN,
        "base_url": ld.base_url,
        **overrides,
    }
    return LaunchDarklyFlagStore(**options)


def gauges(stack: LabStack) -> dict[str, float]:
    text = httpx.get(stack.metrics_url, timeout=5).text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("llm_flag_data")
    }


# -- the SDK protocol subset ---------------------------------------------------------------------


def test_the_sdk_polls_with_an_etag_and_is_answered_304_until_a_patch(ld: LDServer) -> None:
    """The SDK's own polling requester against the server: data, then 304, then new data."""
    config = Config(sdk_key=SDK_KEY, base_uri=ld.base_url, send_events=False)
    requester = FeatureRequesterImpl(config)
    first = requester.get_all_data()[FEATURES][KEY]
    assert first == sdk_flag(ld.flags[(PROJECT, KEY)], ENV)
    assert (first["variations"], first["fallthrough"], first["version"]) == (
        [BASELINE, CANARY, OTHER],
        {"variation": 0},
        1,
    )
    assert first["rules"][0]["id"] == "rule-free"
    assert first["rules"][0]["clauses"] == [{"attribute": "tier", "op": "in", "values": ["free"]}]

    assert requester.get_all_data()[FEATURES][KEY] == first
    assert (ld.polls, ld.not_modified) == (2, 1)

    store = rest_store(ld)
    step = store.set_canary_weight(30, expect_version=store.snapshot().version, comment="c")
    again = requester.get_all_data()[FEATURES][KEY]
    assert (ld.polls, ld.not_modified) == (3, 1)
    assert again["version"] == step.version == 2
    assert again["fallthrough"] == {
        "rollout": {
            "variations": [{"variation": 1, "weight": 30_000}, {"variation": 0, "weight": 70_000}],
            "bucketBy": "key",
            "contextKind": "user",
        }
    }
    wrong = FeatureRequesterImpl(Config(sdk_key="sdk-wrong", base_uri=ld.base_url))
    with pytest.raises(UnsuccessfulResponseException) as refused:
        wrong.get_all_data()
    assert refused.value.status == 401


# -- the gateway following LaunchDarkly ---------------------------------------------------------


def test_rest_changes_reach_the_gateway_through_the_stream(ld: LDServer, keys: None) -> None:
    store = rest_store(ld)
    with LabStack(lab(ld)) as stack:
        assert served(stack) == {BASELINE}
        assert gauges(stack)["llm_flag_data_source_valid"] == 1.0
        assert gauges(stack)["llm_flag_data_stale_seconds"] == 0.0
        saved = store.snapshot()
        step = store.set_canary_weight(50, expect_version=saved.version, comment="run t step 1")
        assert within(PROPAGATION, lambda: served(stack) == {BASELINE, CANARY})
        promoted = store.promote(expect_version=step.version, comment="run t promote")
        assert within(PROPAGATION, lambda: served(stack) == {CANARY})
        restored_at = time.time()
        store.restore(saved, expect_version=promoted.version, comment="run t rollback")
        assert within(PROPAGATION, lambda: served(stack) == {BASELINE})
        changed = gauges(stack)["llm_flag_data_last_change_timestamp_seconds"]
        assert restored_at - 0.001 <= changed <= time.time()  # the restore's, not an older one
    # Streaming: one connection carried every change; the polling endpoint was never asked.
    assert (ld.stream_connections, ld.polls) == (1, 0)
    assert ld.patches_pushed == 3
    assert ld.events == []  # events are off unless the gateway config turns them on


def test_polling_works_and_events_are_sent_only_when_asked(ld: LDServer, keys: None) -> None:
    with LabStack(lab(ld, stream=False, send_events=True)) as stack:
        assert served(stack, users=5) == {BASELINE}
        assert gauges(stack)["llm_flag_data_source_valid"] == 1.0
    assert (ld.stream_connections, ld.polls) == (0, 1)
    posted = [path for path, _ in ld.events]
    assert {"/bulk", "/diagnostic"} <= set(posted)  # diagnostics at start, a summary at close
    summary = next(body for path, body in ld.events if path == "/bulk")
    assert any(event.get("kind") == "summary" for event in summary)


def test_a_refused_sdk_key_shows_as_an_invalid_data_source_and_defaults_are_served(
    ld: LDServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GATEWAY_LD_KEY", "sdk-revoked-SECRET-KEY")
    with LabStack(lab(ld, sdk_key_env="GATEWAY_LD_KEY", start_wait="0.5s")) as stack:
        store = rest_store(ld)
        store.promote(expect_version=store.snapshot().version, comment="run t promote")
        assert served(stack, users=5) == {BASELINE}  # the route's default_model
        first = gauges(stack)
        time.sleep(0.3)
        second = gauges(stack)
        metrics = httpx.get(stack.metrics_url, timeout=5).text
    assert first["llm_flag_data_source_valid"] == 0.0
    assert 0 < first["llm_flag_data_stale_seconds"] < second["llm_flag_data_stale_seconds"]
    assert first["llm_flag_data_last_change_timestamp_seconds"] == 0.0
    assert 'llm_flag_evaluation_errors_total{route="support-bot"} 5.0' in metrics
    assert "SECRET" not in metrics + caplog.text


def test_when_launchdarkly_goes_away_the_gateway_keeps_its_data_says_it_is_stale_then_catches_up(
    keys: None,
) -> None:
    server = LDServer(API_TOKEN)
    variations = [("id-gpt4", BASELINE, "b"), ("id-mini", CANARY, "c")]
    server.add(PROJECT, make_flag(KEY, variations, {ENV: {"fallthrough": {"variation": 0}}}))
    server.sdk_key(SDK_KEY, PROJECT, ENV)
    with ExitStack() as cleanup:
        launchdarkly = ExitStack()
        cleanup.callback(launchdarkly.close)
        ld = launchdarkly.enter_context(serve(server))
        stack = cleanup.enter_context(LabStack(lab(ld)))
        store = rest_store(ld)
        store.promote(expect_version=store.snapshot().version, comment="run t promote")
        assert within(PROPAGATION, lambda: served(stack, users=5) == {CANARY})
        assert gauges(stack)["llm_flag_data_source_valid"] == 1.0

        launchdarkly.close()  # its stream ends, its port refuses; the gateway stays up
        assert within(10, lambda: gauges(stack)["llm_flag_data_source_valid"] == 0.0)
        first = gauges(stack)["llm_flag_data_stale_seconds"]
        time.sleep(0.3)
        assert 0 < first < gauges(stack)["llm_flag_data_stale_seconds"]
        assert served(stack, users=5) == {CANARY}  # the last data it had, not the default

        # A change made while the gateway was cut off arrives with the reconnection's `put`.
        server.edit(PROJECT, KEY, ENV, fallthrough={"variation": 0})
        port = int(ld.base_url.rsplit(":", 1)[1])
        cleanup.enter_context(serve(server, port))
        assert within(30, lambda: gauges(stack)["llm_flag_data_source_valid"] == 1.0)
        assert gauges(stack)["llm_flag_data_stale_seconds"] == 0.0
        assert within(PROPAGATION, lambda: served(stack, users=5) == {BASELINE})
        assert (server.stream_connections, server.polls) == (2, 0)


# -- rollouts end to end ------------------------------------------------------------------------


def runbook(
    tmp_path: Path,
    stack: LabStack,
    ld: LDServer,
    name: str,
    steps: list[dict[str, Any]],
    **flag: Any,
) -> Path:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "flag": {
                "provider": "launchdarkly",
                "project": PROJECT,
                "environment": ENV,
                "key": KEY,
                "baseline": "GPT-4 Turbo",  # by name
                "canary": CANARY,  # by value
                "base_url": ld.base_url,
                **flag,
            },
            "metrics": {
                "provider": "scrape",
                "targets": [stack.metrics_url],
                "route": "support-bot",
            },
            "slos": [
                {"metric": "error_rate", "max": 0.05},
                {"metric": "error_rate", "compare": "baseline", "max_increase": 0.03},
            ],
            "analysis": {
                "interval": "1s",
                "min_requests": 40,
                "inconclusive_limit": 60,  # a bound, not a pace (a loaded lab serves slowly)
                "method": "threshold",
            },
            "steps": steps,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_regression_rolls_back_to_the_exact_prior_state_and_the_gateway_follows(
    ld: LDServer, keys: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = ld.env(PROJECT, KEY, ENV)
    state = tmp_path / "state.db"
    steps = [{"set_weight": 30}, {"pause": "8s"}, {"set_weight": 100}]
    with LabStack(lab(ld, canary_errors=0.4, traffic=True)) as stack:
        path = runbook(tmp_path, stack, ld, "to-mini", steps)
        result = CliRunner().invoke(
            main, ["rollout", "run", str(path), "--state", str(state), "-o", "json"]
        )
        assert result.exit_code == 1, result.output
        assert json.loads(result.output.splitlines()[-1])["outcome"] == "rolled_back"
        assert within(PROPAGATION, lambda: served(stack) == {BASELINE})
        by_variant = stack.traffic.snapshot().by_variant if stack.traffic else {}
    after = ld.env(PROJECT, KEY, ENV)
    assert (after["fallthrough"], after["rules"], after["on"]) == (
        before["fallthrough"],
        before["rules"],
        before["on"],
    )
    assert CANARY in by_variant  # the 30% step reached live traffic...
    assert (ld.stream_connections, ld.polls) == (1, 0)  # ...through the stream
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"id-mini" in stored
    for secret in (API_TOKEN, SDK_KEY):
        assert secret not in result.output + caplog.text
        assert secret.encode() not in stored


def test_an_outside_edit_mid_rollout_stops_the_run_without_overwriting(
    ld: LDServer, keys: None, tmp_path: Path
) -> None:
    steps = [{"set_weight": 20}, {"pause": "4s"}, {"set_weight": 100}]
    human = {"rollout": {"variations": [{"variation": 2, "weight": 100_000}]}}

    def edit_after_first_step() -> None:
        if within(20, lambda: ld.env(PROJECT, KEY, ENV)["_version"] > 1):
            ld.edit(PROJECT, KEY, ENV, fallthrough=human)

    with LabStack(lab(ld, traffic=True)) as stack:
        path = runbook(tmp_path, stack, ld, "edited", steps)
        editor = threading.Thread(target=edit_after_first_step)
        editor.start()
        result = CliRunner().invoke(
            main, ["rollout", "run", str(path), "--state", str(tmp_path / "state.db"), "-o", "json"]
        )
        editor.join()
        assert result.exit_code == 3, result.output
        assert "someone else changed it" in result.output
        assert within(PROPAGATION, lambda: served(stack) == {OTHER})  # the human's choice
    assert ld.env(PROJECT, KEY, ENV)["fallthrough"] == human
    bodies = [json.loads(body) for method, *_, body in ld.requests if method == "PATCH"]
    patches = [b["comment"] for b in bodies if _targets(b)]  # targeting, not the claim
    assert len(patches) == 1 and patches[0].endswith("canary to 20%")


def _targets(body: dict[str, Any]) -> bool:
    """Does a PATCH body write targeting: a semantic patch naming the environment, or a fenced
    JSON Patch (a claimed flag's write) replacing something under /environments?"""
    if "environmentKey" in body:
        return True
    ops = body.get("patch") if isinstance(body.get("patch"), list) else []
    return any(op.get("op") == "replace" and op["path"].startswith("/environments/") for op in ops)


def test_a_rule_scoped_rollout_moves_only_the_free_tier_through_a_429_storm_and_a_503_burst(
    ld: LDServer, keys: None, tmp_path: Path
) -> None:
    steps = [{"set_weight": 50}, {"pause": "3s"}, {"set_weight": 100}, {"pause": "1s"}]
    store = rest_store(ld, rule="free tier")
    with LabStack(lab(ld, traffic=True)) as stack:
        path = runbook(tmp_path, stack, ld, "free-first", steps, rule="free tier")
        half: list[tuple[set[str], set[str]]] = []

        def watch() -> None:
            if within(20, lambda: store.split(store.snapshot()).canary == 50):
                within(PROPAGATION, lambda: served(stack, "free") == {BASELINE, CANARY})
                half.append((served(stack, "free"), served(stack, "paid")))

        watcher = threading.Thread(target=watch)
        watcher.start()
        ld.faults = [Fault(429, {"Retry-After": "1"}, "PATCH")] * 2 + [
            Fault(503, method="PATCH")
        ] * 2
        result = CliRunner().invoke(
            main, ["rollout", "run", str(path), "--state", str(tmp_path / "state.db"), "-o", "json"]
        )
        watcher.join()
        assert result.exit_code == 0, result.output
        assert ld.faults == []  # every injected refusal was met, and outlasted
        assert half == [({BASELINE, CANARY}, {BASELINE})]
        assert within(PROPAGATION, lambda: served(stack, "free") == {CANARY})
        assert served(stack, "paid") == {BASELINE}
        assert served(stack, "enterprise") == {BASELINE}  # the fallthrough
    free, paid = ld.env(PROJECT, KEY, ENV)["rules"]
    assert free["variation"] == 1 and paid == RULES[1]
    assert ld.env(PROJECT, KEY, ENV)["fallthrough"] == {"variation": 0}


def test_gateway_and_lab_serve_need_the_sdk_key_in_the_environment(
    ld: LDServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shipped = Path(__file__).parent.parent / "runbooks" / "gateway-launchdarkly.yaml"
    monkeypatch.delenv("LAUNCHDARKLY_SDK_KEY", raising=False)
    result = CliRunner().invoke(main, ["gateway", "serve", str(shipped)])
    assert result.exit_code == 2, result.output
    assert "spec.flags.sdk_key_env: environment variable LAUNCHDARKLY_SDK_KEY is not set" in (
        result.output
    )
    assert "Traceback" not in result.output
    lab_file = tmp_path / "lab.yaml"
    document = {"apiVersion": "canaryctl/v1", "kind": "Lab", "metadata": {"name": "ld-lab"}}
    lab_file.write_text(yaml.safe_dump({**document, "spec": lab(ld).model_dump(mode="json")}))
    served = CliRunner().invoke(main, ["lab", "serve", str(lab_file), "--duration", "1s"])
    assert served.exit_code == 2, served.output
    assert "spec.gateway.flags.sdk_key_env: environment variable LAUNCHDARKLY_SDK_KEY" in (
        served.output
    )
    assert "Traceback" not in served.output
