"""The gateway never relays a configured secret: an upstream that quotes the gateway's provider
key (or any other secret the gateway holds) in what it sends back reaches no client, no log and
no metric with it.

The upstream (tests/misbehaving_upstream.py, `leak*` kinds) quotes the credentials it was sent
and a list of planted secrets (a virtual key, the feedback signing key) in error bodies of
400, 429, 500 and 503, in an error event inside a stream that began with a 200, and in a
well-formed answer, in each provider's API. Every model is asked through every front door
(OpenAI, Anthropic, Ollama chat and generate), plain and streamed. Before the scrubbing, 18 of
27 such error responses carried the OpenAI or Anthropic key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canaryctl.chaos import BackgroundServer
from canaryctl.gateway import create_app
from canaryctl.gateway.scrubbing import Scrubber, configured_secrets
from canaryctl.runbook.gateway import GatewaySpec
from tests.misbehaving_upstream import LEAK_KINDS, misbehaving_app

SECRETS = {
    "LEAK_OPENAI_KEY": "sk-proj-leak0penAIkey0123456789",
    "LEAK_ANTHROPIC_KEY": "sk-ant-api03-leakAnthropicKey987654",
    "LEAK_VIRTUAL_KEY": "vk-leak-virtual-key-5555",
    "LEAK_FEEDBACK_KEY": "leak-feedback-signing-key-4444",
}
PROVIDERS = {"openai": "LEAK_OPENAI_KEY", "anthropic": "LEAK_ANTHROPIC_KEY", "ollama": None}
DOORS = ["/v1/chat/completions", "/v1/messages", "/api/chat", "/api/generate"]


def _flags(path: Path, models: list[str]) -> Path:
    """One flag per model (its key is the model's name), serving only that model."""
    flags = {
        name: {
            "key": name,
            "on": True,
            "variations": [name],
            "fallthrough": {"variation": 0},
            "offVariation": 0,
            "version": 1,
            "salt": name,
            "targets": [],
            "contextTargets": [],
            "rules": [],
            "prerequisites": [],
            "trackEvents": False,
        }
        for name in models
    }
    path.write_text(json.dumps({"flags": flags, "segments": {}}))
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A gateway with a route (and model) per provider and leak kind; the route names."""
    monkeypatch = pytest.MonkeyPatch()
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    app = misbehaving_app()
    app.state.planted = [SECRETS["LEAK_VIRTUAL_KEY"], SECRETS["LEAK_FEEDBACK_KEY"]]
    with BackgroundServer(app) as upstream:
        models = [
            {
                "name": f"{provider}-{kind}",
                "provider": provider,
                "base_url": f"{upstream.url}/{kind}",
                **({"api_key_env": env} if env else {}),
            }
            for provider, env in PROVIDERS.items()
            for kind in LEAK_KINDS
        ]
        names = [m["name"] for m in models]
        flags = _flags(tmp_path_factory.mktemp("scrub") / "flags.json", names)
        spec = GatewaySpec.model_validate(
            {
                "flags": {"provider": "file", "path": str(flags)},
                "routes": [{"name": n, "flag": n, "default_model": n} for n in names],
                "models": models,
                "auth": {"keys": [{"id": "caller", "key_env": "LEAK_VIRTUAL_KEY"}]},
                "feedback": {"key_env": "LEAK_FEEDBACK_KEY"},
            }
        )
        with BackgroundServer(create_app(spec)) as server:
            yield server.url, names
    monkeypatch.undo()


def _body(door: str, route: str, stream: bool) -> dict[str, Any]:
    if door == "/api/generate":
        return {"model": route, "prompt": "What is 2 + 3?", "stream": stream}
    body = {"model": route, "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
    return {**body, "stream": stream, **({"max_tokens": 64} if door == "/v1/messages" else {})}


def _leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def test_no_relayed_body_carries_a_configured_secret(
    gateway: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    url, routes = gateway
    auth = {"Authorization": f"Bearer {SECRETS['LEAK_VIRTUAL_KEY']}"}
    leaked, statuses = [], set()
    with caplog.at_level(logging.DEBUG, logger="canaryctl"), httpx.Client(timeout=15) as client:
        for route in routes:
            for door in DOORS:
                for stream in (False, True):
                    response = client.post(
                        url + door, json=_body(door, route, stream), headers=auth
                    )
                    statuses.add(response.status_code)
                    if found := _leaks(response.text):
                        leaked.append((route, door, stream, response.status_code, found))
        metrics = client.get(f"{url}/metrics").text
    assert leaked == []
    assert {200, 400, 429, 500, 503} <= statuses  # the provider's own statuses were relayed
    assert _leaks(metrics) == []
    assert _leaks("\n".join(record.getMessage() for record in caplog.records)) == []


def test_the_scrubbed_bodies_still_say_what_went_wrong(gateway: tuple[str, list[str]]) -> None:
    url, _ = gateway
    auth = {"Authorization": f"Bearer {SECRETS['LEAK_VIRTUAL_KEY']}"}
    response = httpx.post(
        f"{url}/v1/chat/completions", json=_body("", "openai-leak429", False), headers=auth
    )
    assert response.status_code == 429
    assert response.json()["error"]["message"] == (
        "Your request with Bearer *** and  failed; we also know ***, ***"
    )
    answer = httpx.post(f"{url}/api/chat", json=_body("", "anthropic-leakok", False), headers=auth)
    assert answer.status_code == 200
    assert answer.json()["message"]["content"] == (
        "Your request with  and *** failed; we also know ***, ***"
    )


def test_every_configured_secret_is_looked_for() -> None:
    """Each `*_env` variable the document names, the keys file's, and URL passwords; values too
    short to be a secret are not (they would mangle ordinary text)."""
    spec = GatewaySpec.model_validate(
        {
            "flags": {"provider": "launchdarkly", "sdk_key_env": "LD_KEY"},
            "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
            "models": [{"name": "a", "base_url": "http://127.0.0.1:9", "api_key_env": "A_KEY"}],
            "budgets": {
                "store": {
                    "provider": "redis",
                    "url": "redis://:url-password-1@127.0.0.1:6379/0",
                    "password_env": "REDIS_PW",
                },
                "limits": [{"name": "b", "per": "user", "tokens": 10}],
            },
        }
    )
    environ = {
        "LD_KEY": "sdk-ld-key-123",
        "A_KEY": "sk-model-a-key",
        "REDIS_PW": "redis-env-password",
        "FILE_KEY": "vk-from-the-keys-file",
        "CANARYCTL_FEEDBACK_KEY": "short",
    }
    found = configured_secrets(spec, ["FILE_KEY"], environ)
    assert sorted(found) == sorted(
        ["sdk-ld-key-123", "sk-model-a-key", "redis-env-password", "vk-from-the-keys-file",
         "url-password-1", "short"]
    )  # fmt: skip
    scrubber = Scrubber(found)
    text = json.dumps({"m": " ".join(found) + " a/key", "short": "shortly"}).encode()
    scrubbed = json.loads(scrubber.scrub(text))
    masked = " ".join("short" if secret == "short" else "***" for secret in found)
    assert scrubbed == {"m": masked + " a/key", "short": "shortly"}
    escaped = Scrubber(["sk/slash/key-1"]).scrub(b'{"m": "sk\\/slash\\/key-1"}')
    assert json.loads(escaped) == {"m": "***"}
