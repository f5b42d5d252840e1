"""Every model's key is there before the gateway serves: a missing one stops it at start.

A model whose key variable is unset would otherwise be sent no key and answer every request with
401, a canary that fails everything. So the gateway refuses to start (InvalidInput, exit 2) when
a model's `api_key_env` names an unset or empty variable (or one holding what no header may
hold: a line break would add headers of its own to every request), or when a model names no
key at all and is not plainly keyless: a server on this machine (127.0.0.1, ::1, localhost), an
Ollama model (which is sent no key) or a lab provider; anywhere else it must say
`keyless: true`.
Messages name the model and the variable, never a value.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from canaryctl.errors import InvalidInput
from canaryctl.runbook.gateway import GatewaySpec, ModelSpec

__all__ = ["api_key", "check_api_keys"]


def _on_this_machine(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keyless(model: ModelSpec) -> bool:
    if model.keyless or model.provider == "ollama" or model.base_url.startswith("lab://"):
        return True
    return model.api_key_env is None and _on_this_machine(model.base_url)


def check_api_keys(spec: GatewaySpec) -> None:
    """InvalidInput naming the first model whose key is missing; see the module's docstring."""
    for i, model in enumerate(spec.models):
        where = f"models[{i}] ({model.name})"
        if model.api_key_env is not None and model.provider != "ollama":
            key = os.environ.get(model.api_key_env)
            if not key:
                raise InvalidInput(
                    f"{where}: environment variable {model.api_key_env} (its api_key_env) is "
                    "not set or empty; export the key, or set keyless: true instead of "
                    "api_key_env for a server that needs none"
                )
            if not (key.isascii() and key.isprintable()):  # it goes into a header as it is
                raise InvalidInput(
                    f"{where}: environment variable {model.api_key_env} (its api_key_env) "
                    "holds a line break, a control character or a non-ASCII one; a key is "
                    "printable ASCII"
                )
        elif not _keyless(model):
            host = urlsplit(model.base_url).hostname
            raise InvalidInput(
                f"{where}: no api_key_env names its key, and {host} is not on this machine; "
                "set api_key_env to the variable holding the key, or keyless: true for a "
                "server that needs none"
            )


def api_key(model: ModelSpec) -> str | None:
    """The key to send the model, None for a keyless one (checked at start)."""
    if model.keyless or model.provider == "ollama" or model.api_key_env is None:
        return None
    return os.environ.get(model.api_key_env) or None
