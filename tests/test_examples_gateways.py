"""The shipped Gateway examples start with `canaryctl gateway serve` (its own process) and answer
chat requests routed by their flag.

Each config runs as shipped but for what differs on this machine: its models' `base_url`s point
at the lab's simulated providers (one per model the config names; nothing here reaches OpenAI or
a vLLM server), it listens on a free port given in CANARYCTL_GATEWAY (the file's `listen`
names it, as every example's gateway address does), its flag file is a copy and LaunchDarkly is
tests/ld_server.py, which speaks LaunchDarkly's SDK protocol to the real
`launchdarkly-server-sdk`. A flag change must then reach the running gateway: the test waits
for the served variant to change, bounded, never for a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from loopback import free_port
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec
from tests.ld_server import LDServer, make_flag, serve

pytestmark = pytest.mark.e2e

RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"
KEY = "support-bot-model"
QUICK = {"median": 0.005, "p95": 0.02}
BOUND = 60.0
"""Seconds before a test gives up waiting on a start or a flag change: a loaded machine's bound."""
SDK_KEY = "sdk-9f8e7d6c-SECRET-SDK-KEY"


def providers_for(config: dict[str, Any]) -> LabStack:
    """A lab serving one quick simulated provider per model the config names, no traffic."""
    names = [m["name"] for m in config["spec"]["models"]]
    spec = {
        "seed": 3,
        "providers": [{"name": n, "latency": QUICK} for n in names],
        "gateway": {  # the lab's own gateway, unused here: the example's runs in its own process
            "listen": "127.0.0.1:0",
            "flags": {"provider": "file", "path": str(RUNBOOKS / "flags.json")},
            "routes": [{"name": "support-bot", "flag": KEY, "default_model": names[0]}],
            "models": [{"name": n, "base_url": f"lab://{n}"} for n in names],
        },
    }
    return LabStack(LabSpec.model_validate(spec), traffic=False)


def local_copy(example: Path, tmp_path: Path, stack: LabStack, flags: dict[str, Any]) -> Path:
    """The example with its upstreams on the lab and `flags` merged into its flag source;
    everything else (its listen, routes, context headers, prices, fallbacks, budgets) kept."""
    config = yaml.safe_load(example.read_text())
    spec = config["spec"]
    for model in spec["models"]:
        model["base_url"] = stack.provider_urls[model["name"]]
    spec["flags"].update(flags)
    path = tmp_path / example.name
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def gateway_process(config: Path, tmp_path: Path, **env: str) -> Iterator[str]:
    """`canaryctl gateway serve CONFIG` on a free port (CANARYCTL_GATEWAY) until the block
    ends; yields its URL once its flag data is loaded. The process is stopped (SIGTERM, then
    SIGKILL) whatever happens."""
    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}"
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryctl", "gateway", "serve", str(config)],
        env={**os.environ, **env, "CANARYCTL_GATEWAY": address},
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + BOUND
        while True:
            if process.poll() is not None:
                pytest.fail(f"gateway exited {process.returncode}: {_tail(tmp_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if _flags_valid(url):
                    break
            assert time.monotonic() < deadline, _tail(tmp_path)
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _flags_valid(url: str) -> bool:
    """The gateway answers and its flag source has its data (the SDK's state is VALID), so a
    request is routed by the flag, not by the route's default model."""
    exposition = httpx.get(f"{url}/metrics", timeout=2).text
    return any(
        sample.value == 1.0
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "llm_flag_data_source_valid"
    )


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "gateway.log").read_text(errors="replace")[-2000:]


def ask(url: str, tier: str | None = None, user: str = "user-1") -> tuple[str, str]:
    """One chat request to the route, as a client sends it: (variant served, model that
    answered), from the gateway's response headers; the answer must be a completion."""
    headers = {"X-User": user, **({"X-Tier": tier} if tier else {})}
    body = {"model": "support-bot", "messages": [{"role": "user", "content": "2+2"}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    return response.headers["x-canaryctl-variant"], response.headers["x-canaryctl-model"]


def until_served(url: str, model: str, tier: str | None = None) -> None:
    deadline = time.monotonic() + BOUND
    while (seen := ask(url, tier)) != (model, model):
        assert time.monotonic() < deadline, f"still {seen}, not {model}"
        time.sleep(0.1)


def serve_everyone(flags: Path, variation: int) -> None:
    """A person editing the flag file: the default rule serves one variation, version up."""
    document = json.loads(flags.read_text())
    flag = document["flags"][KEY]
    flag["fallthrough"] = {"variation": variation}
    flag["version"] = flag.get("version", 1) + 1
    tmp = flags.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(flags)


@pytest.mark.parametrize("example", ["gateway.yaml", "tiered/gateway.yaml"])
def test_a_file_flag_gateway_example_serves_and_follows_its_flag(
    tmp_path: Path, example: str
) -> None:
    shipped = RUNBOOKS / example
    flags = tmp_path / "flags.json"
    shutil.copy(shipped.parent / "flags.json", flags)
    config = yaml.safe_load(shipped.read_text())
    variations = json.loads(flags.read_text())["flags"][KEY]["variations"]
    with providers_for(config) as stack:
        local = local_copy(shipped, tmp_path, stack, {"path": str(flags)})
        with gateway_process(local, tmp_path, OPENAI_API_KEY="sk-test-not-a-real-key") as url:
            if example == "gateway.yaml":  # everyone on GPT-4-turbo, as shipped
                assert ask(url) == ("gpt-4-turbo", "gpt-4-turbo")
            else:  # paid and enterprise by rule, everyone else Mixtral
                assert ask(url, "paid") == ("gpt-4-turbo", "gpt-4-turbo")
                assert ask(url, "enterprise") == ("support-ft", "support-ft")
                assert ask(url, "free") == ("mixtral-8x7b", "mixtral-8x7b")
                assert ask(url) == ("mixtral-8x7b", "mixtral-8x7b")  # default_tier: free
            serve_everyone(flags, variations.index("gpt-4o-mini"))
            until_served(url, "gpt-4o-mini", "free")


@pytest.fixture
def ld() -> Iterator[LDServer]:
    server = LDServer("api-unused-here")
    variations = [("v0", "gpt-4-turbo", "GPT-4 Turbo"), ("v1", "gpt-4o-mini", "GPT-4o mini"),
                  ("v2", "mixtral-8x7b", "Mixtral")]  # fmt: skip
    server.add(
        "default", make_flag(KEY, variations, {"production": {"fallthrough": {"variation": 0}}})
    )
    server.sdk_key(SDK_KEY, "default", "production")
    with serve(server):
        yield server


def test_the_launchdarkly_gateway_example_serves_and_follows_the_sdk_stream(
    tmp_path: Path, ld: LDServer
) -> None:
    shipped = RUNBOOKS / "gateway-launchdarkly.yaml"
    config = yaml.safe_load(shipped.read_text())
    uris = {"base_uri": ld.base_url, "stream_uri": ld.base_url, "events_uri": ld.base_url}
    with providers_for(config) as stack:
        local = local_copy(shipped, tmp_path, stack, uris)
        env = {"LAUNCHDARKLY_SDK_KEY": SDK_KEY, "OPENAI_API_KEY": "sk-test-not-a-real-key"}
        with gateway_process(local, tmp_path, **env) as url:
            assert ask(url) == ("gpt-4-turbo", "gpt-4-turbo")
            ld.edit("default", KEY, "production", fallthrough={"variation": 1})
            until_served(url, "gpt-4o-mini")
    assert SDK_KEY not in _tail(tmp_path)
