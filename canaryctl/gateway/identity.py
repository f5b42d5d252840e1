"""Who is calling: a virtual key, identity headers, or (with neither) nobody in particular.

Budgets, tiers and the flag's targeting all hang on the requester, so a client that may name
itself may choose its own tier and spend someone else's budget. With virtual keys configured
(`spec.auth`), each request must carry one (`Authorization: Bearer KEY` or `x-api-key: KEY`) and
the key says who the caller is; `X-User`, `X-Tier` and `X-Team` are believed only when
`trust_identity_headers` says a proxy in front sets them (they then override the key). Without
keys there is nothing else to go by, and the headers are trusted, as the start-up line says.

A key also names what it may charge: the jobs in its `jobs` and, when identity headers are
trusted, the teams in `team` and `teams`. A job or team header outside them is a 403, so one
caller cannot drain another's per-job or per-team budget by naming it.

Keys are known by their SHA-256 only: a presented key is hashed and looked up, so neither the
document, nor memory past that lookup, nor any message holds one. The job header names a batch
job for per-job budgets and is taken from the request either way: omitting it escapes no limit
that naming it would impose.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from canaryctl.errors import InvalidInput
from canaryctl.request_limits import clip
from canaryctl.runbook.gateway import AuthSpec, ContextSpec, VirtualKey

__all__ = ["UNTRUSTED_BANNER", "Callers", "Identity", "Refused", "hash_key"]

log = logging.getLogger(__name__)

UNTRUSTED_BANNER = "no virtual keys configured: identity headers are trusted"
_KEY_LIST = TypeAdapter(list[VirtualKey])


def hash_key(key: str) -> str:
    """The hex SHA-256 a document holds for `key` (`printf %s "$KEY" | sha256sum`)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """The requester as routing and budgets see it; None where the request names nobody."""

    user: str | None
    tier: str
    team: str | None = None
    job: str | None = None
    key_id: str | None = None
    """The virtual key's id, when the caller presented one."""

    def budget_keys(self) -> dict[str, str]:
        """Who the request is for, per budget kind (`user`, `team`, `job`, `key`)."""
        found = {"user": self.user, "team": self.team, "job": self.job, "key": self.key_id}
        return {per: who for per, who in found.items() if who}


@dataclass(frozen=True)
class Refused:
    """The request names no one the gateway will serve: the status and the message to send."""

    status: int
    message: str
    code: str


class Callers:
    """Identifies each request from its headers and body, by the document's `auth` and
    `context` sections; `max_id_length` bounds every id a client may send."""

    def __init__(
        self,
        auth: AuthSpec,
        context: ContextSpec,
        max_id_length: int,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._context = context
        self._max = max_id_length
        self._by_hash = _key_table(auth, environ)
        self._trust_headers = auth.trust_identity_headers or not self._by_hash
        self.key_envs = tuple(k.key_env for k in self._by_hash.values() if k.key_env)
        """The variables holding keys (the document's and the keys file's): secrets to scrub."""
        self.banner = None if self._by_hash else UNTRUSTED_BANNER
        """Said once at start when anyone may claim any identity; None with keys."""

    def identify(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Identity | Refused:
        key: VirtualKey | None = None
        if self._by_hash:
            presented = _presented_key(headers)
            if presented is None:
                return Refused(
                    401,
                    "this gateway wants an API key: send `Authorization: Bearer <key>` "
                    "or `x-api-key: <key>`",
                    "missing_api_key",
                )
            key = self._by_hash.get(hash_key(presented))
            if key is None:
                return Refused(401, "the API key is not valid for this gateway", "invalid_api_key")
        spec = self._context
        user = team = tier = None
        user_from = spec.user_header
        if self._trust_headers:
            user = headers.get(spec.user_header)
            if not user and body.get("user"):
                user, user_from = body["user"], "user"
            team, tier = headers.get(spec.team_header), headers.get(spec.tier_header)
        job = headers.get(spec.job_header)
        for where, value in (
            (user_from, user),
            (spec.team_header, team),
            (spec.tier_header, tier),
            (spec.job_header, job),
        ):
            if value is not None and len(str(value)) > self._max:
                size = f"{len(str(value))} characters, more than the {self._max} allowed"
                status = 413 if where == "user" else 431  # the body's field, or a header
                return Refused(status, f"{where}: {size}", "id_too_long")
        if key is not None:
            if refused := _outside_key(key, spec, team, job):
                return refused
            user, team, tier = user or key.user or key.id, team or key.team, tier or key.tier
        return Identity(
            str(user) if user else None,
            tier or spec.default_tier,
            team or None,
            job or None,
            key.id if key else None,
        )


def _outside_key(
    key: VirtualKey, spec: ContextSpec, team: str | None, job: str | None
) -> Refused | None:
    """A 403 when the request charges a job or team its key does not name: a header is not
    enough to spend another caller's budget."""
    if job and job not in key.jobs:
        message = f"{spec.job_header}: this API key may not charge job {clip(job)}"
        return Refused(403, message, "job_not_allowed")
    if team and team != key.team and team not in key.teams:
        message = f"{spec.team_header}: this API key may not charge team {clip(team)}"
        return Refused(403, message, "team_not_allowed")
    return None


def _presented_key(headers: Mapping[str, str]) -> str | None:
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    return headers.get("x-api-key") or None


def _key_table(auth: AuthSpec, environ: Mapping[str, str]) -> dict[str, VirtualKey]:
    """SHA-256 -> key, from the document and the keys file; InvalidInput naming the field."""
    listed = [(f"spec.auth.keys[{i}]", key) for i, key in enumerate(auth.keys)]
    if auth.keys_file is not None:
        listed += [
            (f"{auth.keys_file}: [{i}]", key) for i, key in enumerate(_read_keys(auth.keys_file))
        ]
    table: dict[str, VirtualKey] = {}
    ids: set[str] = set()
    for where, key in listed:
        if key.key_env is not None:
            material = environ.get(key.key_env)
            if not material:
                raise InvalidInput(
                    f"{where}.key_env: environment variable {key.key_env} is not set: it must "
                    f"hold the API key of '{key.id}'"
                )
            digest = hash_key(material)
        else:
            assert key.sha256 is not None  # the model holds one or the other
            digest = key.sha256
        if key.id in ids:
            raise InvalidInput(f"{where}.id: '{key.id}' is listed twice")
        if digest in table:
            raise InvalidInput(f"{where}: the same key as '{table[digest].id}'")
        ids.add(key.id)
        table[digest] = key
    return table


def _read_keys(path: Path) -> list[VirtualKey]:
    try:
        text = path.read_bytes().decode("utf-8")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise InvalidInput(f"spec.auth.keys_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and set(data) == {"keys"}:
        data = data["keys"]
    try:
        return _KEY_LIST.validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: [{where}]: {first['msg']}") from None
