"""What canaryctl writes to a flagd flag file is what the real OpenFeature SDK, with the real
flagd provider in in-process file mode, serves: directly, and through the gateway.

The share served to distinct targeting keys is checked against a binomial interval computed
with scipy; a rollback (restore) must be what the provider serves from its first reload after
the write, i.e. within one poll. Waits are on the provider's events or the gateway's
last-change gauge, bounded by a generous deadline, never on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from ldclient import Context
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binom

from canaryctl.cli import main
from canaryctl.flags.flagd import FlagdFlagStore
from canaryctl.gateway.flagd import FlagdFlags
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.lab import LabStack
from canaryctl.runbook.gateway import FlagdFlagSource
from canaryctl.runbook.lab import LabSpec
from tests.test_flagd_store import KEY, new_flag_file, write_flags

pytestmark = pytest.mark.e2e

BASELINE, CANARY = "gpt-4-turbo", "gpt-4o-mini"
SHARE = 0.30
CONFIDENCE = 1 - 1e-6
"""A split outside this binomial interval is a wrong split, not bad luck."""

_domains = itertools.count(1)


def bounds(n: int, share: float) -> tuple[float, float]:
    low, high = binom.interval(CONFIDENCE, n, share)
    return float(low), float(high)


class Reloads:
    """Counts the provider's PROVIDER_CONFIGURATION_CHANGED events: one per reload it applied."""

    def __init__(self, client: OpenFeatureClient) -> None:
        self.count = 0
        self._changed = threading.Condition()
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._seen)

    def _seen(self, details: EventDetails) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_past(self, count: int) -> int:
        """Block until a reload after the `count`-th has happened; the new count."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.count > count, timeout=30):
                pytest.fail("the flagd provider never reloaded the file")
            return self.count


@pytest.fixture
def flag_file(tmp_path: Path) -> Path:
    return new_flag_file(tmp_path)


@pytest.fixture
def client(flag_file: Path) -> Iterator[OpenFeatureClient]:
    domain = f"test-flagd-{next(_domains)}"
    provider = FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(flag_file), deadline_ms=100
    )
    api.set_provider_and_wait(provider, domain)
    yield api.get_client(domain)
    provider.shutdown()


def serve_all(client: OpenFeatureClient, users: int) -> list[str]:
    return [
        client.get_string_value(KEY, "default", EvaluationContext(targeting_key=f"user-{i}"))
        for i in range(users)
    ]


def test_the_provider_serves_the_split_written_and_the_rollback_from_its_next_reload(
    client: OpenFeatureClient, flag_file: Path
) -> None:
    reloads = Reloads(client)
    store = FlagdFlagStore(flag_file, KEY, BASELINE, CANARY)
    saved = store.snapshot()
    seen = reloads.count
    moved = store.set_canary_weight(SHARE * 100, expect_version=saved.version, comment="30%")
    seen = reloads.wait_past(seen)
    users = 4000
    answers = serve_all(client, users)
    low, high = bounds(users, SHARE)
    assert set(answers) == {BASELINE, CANARY}
    assert low <= answers.count(CANARY) <= high, (answers.count(CANARY), low, high)

    store.restore(saved, expect_version=moved.version, comment="rollback")
    reloads.wait_past(seen)  # the first reload after the restore
    assert set(serve_all(client, users)) == {BASELINE}


def lab(flag_file: Path, *, canary_errors: float = 0.0, traffic: bool = False) -> LabSpec:
    quick = {"median": 0.002, "p95": 0.01}
    providers = [
        {"name": BASELINE, "latency": quick},
        {"name": CANARY, "latency": quick, "errors": {"rate": canary_errors}},
    ]
    spec: dict[str, Any] = {
        "seed": 7,
        "providers": providers,
        "gateway": {
            "listen": "127.0.0.1:0",
            "flags": {"provider": "flagd", "path": str(flag_file), "poll_interval": "100ms"},
            "routes": [{"name": "support-bot", "flag": KEY, "default_model": BASELINE}],
            "models": [{"name": p["name"], "base_url": f"lab://{p['name']}"} for p in providers],
        },
    }
    if traffic:
        spec["traffic"] = {"route": "support-bot", "rate": 120, "users": 400, "concurrency": 32}
    return LabSpec.model_validate(spec)


def through_gateway(stack: LabStack, users: int, *, answered: bool = True) -> list[str]:
    """The variant the gateway served each of `users` distinct users (response header); with
    `answered`, every one must have been answered well (a failing canary's errors are not)."""

    async def ask() -> list[str]:
        gate = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:

            async def one(i: int) -> str:
                async with gate:
                    response = await http.post(
                        "/v1/chat/completions",
                        json={
                            "model": "support-bot",
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                        headers={"X-User": f"user-{i}"},
                    )
                assert response.status_code == 200 or not answered, response.text
                return response.headers["x-canaryctl-variant"]

            return list(await asyncio.gather(*(one(i) for i in range(users))))

    return asyncio.run(ask())


def gauge(stack: LabStack, name: str) -> float:
    text = httpx.get(stack.metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exported")


def wait_for_reload(stack: LabStack, after: float) -> float:
    """Block until the gateway's provider applied a reload after the one at `after`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        changed = gauge(stack, "llm_flag_data_last_change_timestamp_seconds")
        if changed > after:
            return changed
        time.sleep(0.02)
    pytest.fail("the gateway's flagd provider never reloaded the file")


def test_the_gateway_routes_by_the_flagd_split_canaryctl_writes_and_by_its_rollback(
    flag_file: Path,
) -> None:
    store = FlagdFlagStore(flag_file, KEY, "turbo", "mini")
    with LabStack(lab(flag_file), traffic=False) as stack:
        assert gauge(stack, "llm_flag_data_source_valid") == 1.0
        loaded = gauge(stack, "llm_flag_data_last_change_timestamp_seconds")
        assert loaded > 0
        saved = store.snapshot()
        moved = store.set_canary_weight(SHARE * 100, expect_version=saved.version, comment="30%")
        loaded = wait_for_reload(stack, loaded)
        users = 300
        answers = through_gateway(stack, users)
        low, high = bounds(users, SHARE)
        assert low <= answers.count(CANARY) <= high, (answers.count(CANARY), low, high)

        store.restore(saved, expect_version=moved.version, comment="rollback")
        wait_for_reload(stack, loaded)
        assert set(through_gateway(stack, 50)) == {BASELINE}


def test_a_regressing_canary_on_a_flagd_flag_is_rolled_back_to_the_exact_prior_file(
    flag_file: Path, tmp_path: Path
) -> None:
    """`canaryctl rollout run` on a flagd flag, judged on the gateway that evaluates that flag
    through OpenFeature: the canary fails 40% of its requests, so the run rolls back."""
    original = flag_file.read_text()
    with LabStack(lab(flag_file, canary_errors=0.4, traffic=True)) as stack:
        flag = {"provider": "flagd", "path": str(flag_file), "key": KEY}
        document = {
            "apiVersion": "canaryctl/v1",
            "kind": "Rollout",
            "metadata": {"name": "flagd-regression"},
            "spec": {
                "flag": {**flag, "baseline": "turbo", "canary": CANARY},
                "metrics": {"provider": "scrape", "targets": [stack.metrics_url]},
                "slos": [{"metric": "error_rate", "max": 0.05}],
                "analysis": {"interval": "1s", "min_requests": 40, "method": "threshold"},
                "steps": [{"set_weight": 30}, {"pause": "6s"}, {"set_weight": 100}],
            },
        }
        runbook = tmp_path / "rollout.yaml"
        runbook.write_text(yaml.safe_dump(document))
        state = str(tmp_path / "state.db")
        result = CliRunner().invoke(main, ["rollout", "run", str(runbook), "--state", state])
        assert result.exit_code == 1, result.output
        assert stack.traffic is not None
        assert CANARY in stack.traffic.snapshot().by_variant  # the 30% step was served
        version = json.loads(flag_file.read_text())["flags"][KEY]["metadata"]["canaryctlVersion"]
        assert version > 4  # the step, then the restore
        stamped = f'"canaryctlVersion": {version}'
        assert flag_file.read_text() == original.replace('"canaryctlVersion": 3', stamped)
        # Until the gateway reloads the restored file, some users still reach the canary, which
        # fails 40% of its requests: those answers count for the wait, not against it.
        deadline = time.monotonic() + 30
        while set(through_gateway(stack, 50, answered=False)) != {BASELINE}:
            assert time.monotonic() < deadline, "the gateway never served the restored flag"
            time.sleep(0.05)
        assert set(through_gateway(stack, 50)) == {BASELINE}


def test_a_gateway_started_on_a_broken_flagd_file_serves_defaults_then_follows_the_fix(
    flag_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flag_file.write_text(json.dumps({"flags": {KEY: {"state": "on", "variants": {}}}}))
    with LabStack(lab(flag_file), traffic=False) as stack:
        assert gauge(stack, "llm_flag_data_source_valid") == 0.0
        assert gauge(stack, "llm_flag_data_last_change_timestamp_seconds") == 0.0
        assert set(through_gateway(stack, 20)) == {BASELINE}  # the route's default_model
        assert gauge(stack, "llm_flag_evaluation_errors_total") == 20
        write_flags(flag_file)
        FlagdFlagStore(flag_file, KEY, "turbo", "mini").promote(expect_version=3, comment="")
        wait_for_reload(stack, 0.0)
        assert gauge(stack, "llm_flag_data_source_valid") == 1.0
        # The reload waited for may be of the fixed file before the promotion (two writes):
        # the promotion is served at the next one.
        deadline = time.monotonic() + 30
        while set(through_gateway(stack, 20)) != {CANARY}:
            assert time.monotonic() < deadline, "the gateway never served the promoted flag"
            time.sleep(0.05)
    provider_logs = [r for r in caplog.records if r.name.startswith("openfeature")]
    assert provider_logs  # the broken file was reported...
    assert not any(r.exc_info for r in provider_logs)  # ...without a traceback


def test_the_requester_s_key_tier_and_team_reach_flagd_targeting(flag_file: Path) -> None:
    """A rule a person wrote (not one canaryctl moves) sees what the gateway knows of the
    requester; a flag the file lacks is an error with its kind, and the caller's default."""
    rules = {
        "if": [
            {"==": [{"var": "team"}, "search"]},
            "mixtral",
            {"if": [{"==": [{"var": "tier"}, "paid"]}, "mini", "turbo"]},
        ]
    }
    write_flags(flag_file, targeting=rules)
    source = FlagdFlagSource(provider="flagd", path=flag_file, poll_interval=0.1)
    flags = FlagdFlags(source, GatewayMetrics())
    try:

        def ask(**attributes: str) -> object:
            builder = Context.builder("user-1").kind("user")
            for name, value in attributes.items():
                builder.set(name, value)
            return flags.variation_detail(KEY, builder.build(), "default").value

        assert ask(tier="free") == "gpt-4-turbo"
        assert ask(tier="paid") == "gpt-4o-mini"
        assert ask(tier="paid", team="search") == "mixtral-8x7b"
        missing = flags.variation_detail("no-such-flag", Context.create("u"), "default")
        assert (missing.value, missing.reason) == (
            "default",
            {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"},
        )
        assert flags.variation(KEY, Context.create("u"), None) == "gpt-4-turbo"
        assert flags.variation("no-such-flag", Context.create("u"), None) is None
    finally:
        flags.close()


def test_gateway_serve_without_the_flagd_file_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Gateway",
        "metadata": {"name": "flagd"},
        "spec": lab(tmp_path / "missing.flagd.json").model_dump(mode="json")["gateway"],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(main, ["gateway", "serve", str(path)])
    assert result.exit_code == 2, result.output
    assert "spec.flags.path: no flag file at" in result.output
    assert "Traceback" not in result.output
