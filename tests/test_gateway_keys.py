"""A model whose key is missing stops the gateway at start (exit 2, before binding), naming the
model and the variable; keyless servers say so, or are on this machine."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from loopback import free_port
from pydantic import ValidationError

from canaryctl.cli import main
from canaryctl.errors import InvalidInput
from canaryctl.gateway.keys import api_key, check_api_keys
from canaryctl.runbook.gateway import GatewaySpec, ModelSpec


def spec(*models: dict[str, Any]) -> GatewaySpec:
    return GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": "flags.json"},
            "routes": [{"name": "bot", "flag": "f", "default_model": models[0]["name"]}],
            "models": list(models),
        }
    )


REMOTE = {"name": "gpt-4o-mini", "base_url": "https://api.openai.com/v1"}


def test_an_unset_key_variable_names_the_model_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CANARYCTL_TEST_OPENAI_KEY", raising=False)
    gateway = spec(
        {"name": "local", "base_url": "http://127.0.0.1:9"},
        {**REMOTE, "api_key_env": "CANARYCTL_TEST_OPENAI_KEY"},
    )
    with pytest.raises(
        InvalidInput,
        match=r"models\[1\] \(gpt-4o-mini\): environment variable "
        r"CANARYCTL_TEST_OPENAI_KEY \(its api_key_env\) is not set or empty",
    ):
        check_api_keys(gateway)
    monkeypatch.setenv("CANARYCTL_TEST_OPENAI_KEY", "")
    with pytest.raises(InvalidInput, match="CANARYCTL_TEST_OPENAI_KEY"):
        check_api_keys(gateway)
    monkeypatch.setenv("CANARYCTL_TEST_OPENAI_KEY", "sk-secret-value")
    check_api_keys(gateway)
    assert api_key(gateway.models[1]) == "sk-secret-value"


@pytest.mark.parametrize("bad", ["sk-one\r\nx-injected: yes", "sk-tab\there", "sk-clé"])
def test_a_key_that_no_header_may_hold_stops_the_gateway(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("CANARYCTL_TEST_OPENAI_KEY", bad)
    gateway = spec({**REMOTE, "api_key_env": "CANARYCTL_TEST_OPENAI_KEY"})
    with pytest.raises(InvalidInput, match=r"models\[0\] \(gpt-4o-mini\): .* printable ASCII") as e:
        check_api_keys(gateway)
    assert bad not in str(e.value)


def test_a_remote_model_without_a_key_must_say_it_is_keyless() -> None:
    with pytest.raises(
        InvalidInput,
        match=r"models\[0\] \(gpt-4o-mini\): no api_key_env names "
        r"its key, and api.openai.com is not on this machine.*keyless: true",
    ):
        check_api_keys(spec(REMOTE))
    keyless = spec({**REMOTE, "name": "vllm", "base_url": "http://10.0.0.7:8000", "keyless": True})
    check_api_keys(keyless)
    assert api_key(keyless.models[0]) is None


@pytest.mark.parametrize(
    "model",
    [
        {"name": "vllm", "base_url": "http://127.0.0.1:8000"},
        {"name": "vllm6", "base_url": "http://[::1]:8000"},
        {"name": "local", "base_url": "http://localhost:8000"},
        {"name": "llama", "provider": "ollama", "base_url": "http://gpu-box:11434"},
        {"name": "lab", "base_url": "lab://gpt-4o-mini"},
    ],
)
def test_servers_on_this_machine_ollama_and_the_lab_need_no_key(model: dict[str, Any]) -> None:
    check_api_keys(spec(model))
    assert api_key(spec(model).models[0]) is None


def test_keyless_and_a_key_variable_contradict_each_other() -> None:
    with pytest.raises(ValidationError, match="keyless: true and api_key_env contradict"):
        ModelSpec.model_validate({**REMOTE, "api_key_env": "OPENAI_API_KEY", "keyless": True})


def test_gateway_serve_exits_2_before_binding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CANARYCTL_TEST_OPENAI_KEY", raising=False)
    (tmp_path / "flags.json").write_text('{"flags": {}, "segments": {}}')
    port = free_port()
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw"},
        "spec": {
            "listen": f"127.0.0.1:{port}",
            "flags": {"provider": "file", "path": "flags.json"},
            "routes": [{"name": "bot", "flag": "f", "default_model": "gpt-4o-mini"}],
            "models": [{**REMOTE, "api_key_env": "CANARYCTL_TEST_OPENAI_KEY"}],
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(main, ["gateway", "serve", str(path)])
    assert result.exit_code == 2, result.output
    assert "gpt-4o-mini" in result.output and "CANARYCTL_TEST_OPENAI_KEY" in result.output
    assert "Traceback" not in result.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nothing was left listening on it
