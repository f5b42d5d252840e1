"""Addresses taken from the environment: `${NAME}` and `${NAME:-default}` in a document's
address fields (a gateway's `listen`, a model's `base_url`, scrape `targets`, a Prometheus or
fault proxy `url`, a lab provider's `port`).

Why: the examples must run where their ports are taken (two labs side by side, tests on free
ports) without editing each file, and a newcomer should read one familiar form: the shell's own.
`CANARYCTL_GATEWAY=127.0.0.1:8081` moves the example lab and every example runbook that
watches it.

Why addresses only: a document is stored with each run (redacted) and quoted in errors, and an
address is neither a secret nor hidden, so a value read from the environment is stored as if it
had been written there, through the one redaction policy (canaryctl/redact.py). Storing the
address as expanded, not as written, is what a resumed run needs: it watches the gateway its run
started on, whatever the resuming process's environment says. Secrets keep their own mechanism,
`*_env` fields read when used and never stored or shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = ["Address", "Port", "expand"]

_REFERENCE = r"\$\{[^}]*\}"
"""A reference, for the JSON Schema; `expand` scans with str.find, in linear time whatever the
text (a regular expression over a run of `${${${...` backtracks quadratically)."""
_BODY = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?$", re.S)
_SHOWN = 40


def expand(text: str, environ: Mapping[str, str]) -> str:
    """`text` with each `${NAME}` replaced by NAME's value, and each `${NAME:-default}` by its
    value or, when NAME is unset or empty, by `default` (as in the shell). ValueError naming the
    variable when one is unset with no default, or a reference is not written as one: the
    document's mistake, reported with its field. A message names the variable, never a value
    or a default (an address may carry a password)."""
    if "${" not in text:
        return text
    out: list[str] = []
    at = 0
    while (start := text.find("${", at)) != -1:
        end = text.find("}", start + 2)
        if end == -1:
            raise ValueError("a '${' is not closed by '}': write ${NAME} or ${NAME:-default}")
        out += (text[at:start], _value(text[start : end + 1], environ))
        at = end + 1
    out.append(text[at:])
    return "".join(out)


def _value(reference: str, environ: Mapping[str, str]) -> str:
    body = _BODY.match(reference[2:-1])
    if body is None:
        shown = _clip(reference[2:-1].split(":-", 1)[0])
        raise ValueError(f"'{shown}' is not a variable name: write ${{NAME}} or ${{NAME:-default}}")
    if "${" in (body["default"] or ""):
        raise ValueError(f"${{{body['name']}:-...}}: a default cannot name a variable")
    found = environ.get(body["name"], "")
    if found:
        return found
    if body["default"] is not None:
        return body["default"]
    name = body["name"]
    raise ValueError(f"${{{name}}} is not set (and has no default: ${{{name}:-VALUE}} gives one)")


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _expand_field(value: Any, info: ValidationInfo) -> Any:
    """Expanded in the environment the loader gives (canaryctl/runbook/loader.py: this
    process's, or none for a document a client sent a server). Without one, the value is taken
    as it is: a run's stored copy holds the addresses it used, already expanded."""
    environ: Mapping[str, str] | None = (info.context or {}).get("environ")
    if environ is None or not isinstance(value, str):
        return value
    return expand(value, environ)


class _OrAReference:
    """The JSON Schema says what a document may hold: the field's own value, or a string that
    names a variable (`${...}`), checked once expanded."""

    @staticmethod
    def __get_pydantic_json_schema__(
        core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        own = handler(core_schema)
        return {"anyOf": [own, {"type": "string", "pattern": _REFERENCE}]}


Address = Annotated[str, BeforeValidator(_expand_field), _OrAReference()]
"""A URL or HOST:PORT that may name environment variables; the field's own checks (a scheme, a
pattern) apply to the expanded value."""

Port = Annotated[int, BeforeValidator(_expand_field), _OrAReference()]
"""A port number, or a string naming environment variables that expands to one."""
