"""No configured secret leaves the gateway in what a provider sent back: the one place for it.

A provider may quote the key it was sent in an error ("Incorrect API key provided: sk-..."),
a misconfigured or hostile upstream may echo every header, and what it sends is relayed to
clients (error bodies, streamed chunks, answers), written to logs and, by way of failures,
read into messages. So every byte the gateway reads from a provider passes `Scrubber.scrub`
before it is parsed (upstream.py), and each configured secret in it becomes `***`.

"Configured" means every value the gateway reads from the environment because its document
names the variable (any `*_env` field: models' `api_key_env`, virtual keys' `key_env`, in the
document or the keys file, the feedback key, the Redis password, LaunchDarkly's SDK key) and
every password written in a URL of the document. A virtual key known only by its SHA-256 is
unknown to the gateway and cannot be looked for. Values shorter than MIN_SECRET_LENGTH are left
alone: scrubbing them would mangle ordinary text, and they protect nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from canaryctl.runbook.gateway import GatewaySpec

__all__ = ["MIN_SECRET_LENGTH", "Scrubber", "configured_secrets"]

MIN_SECRET_LENGTH = 6
"""Shorter values are not looked for (see the module's docstring)."""
_MASK = b"***"


class Scrubber:
    """Replaces each of `secrets` in bytes read from a provider, as written and as JSON escapes
    it (`/` as `\\/`, non-ASCII as `\\uXXXX`); the longest first, so none is left half-masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[bytes] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LENGTH:
                continue
            escaped = json.dumps(secret)[1:-1]
            forms.update(form.encode() for form in (secret, escaped, escaped.replace("/", "\\/")))
        self._forms = sorted(forms, key=len, reverse=True)

    def scrub(self, data: bytes) -> bytes:
        """`data` with every secret masked; the same object when it holds none (the usual case,
        which costs one substring search per secret)."""
        for form in self._forms:
            if form in data:
                data = data.replace(form, _MASK)
        return data

    def text(self, value: str | None) -> str | None:
        """A header or status phrase from a provider, scrubbed the same way."""
        if value is None or not self._forms:
            return value
        return self.scrub(value.encode()).decode(errors="replace")


def configured_secrets(
    spec: GatewaySpec, more_env: Iterable[str] = (), environ: Mapping[str, str] = os.environ
) -> list[str]:
    """The values of every environment variable `spec` names (and `more_env`: those a keys
    file names), and every password in a URL of `spec`."""
    names, found = set(more_env), []
    _walk(spec.model_dump(mode="json"), names, found)
    found += [environ[name] for name in sorted(names) if environ.get(name)]
    return found


def _walk(value: Any, names: set[str], found: list[str], key: str = "") -> None:
    if isinstance(value, dict):
        for child_key, child in value.items():
            _walk(child, names, found, str(child_key))
    elif isinstance(value, list):
        for child in value:
            _walk(child, names, found, key)
    elif isinstance(value, str):
        if key.endswith("_env"):
            names.add(value)
        elif "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append(password)
