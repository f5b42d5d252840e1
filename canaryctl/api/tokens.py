"""Who may call the controller's API: bearer tokens from the environment, each with a name and
a role.

`CANARYCTL_API_TOKENS` holds comma-separated `NAME:ROLE:TOKEN` entries, e.g.
`alice:operator:9f3c...,grafana:viewer:41ab...`. A viewer reads runs; an operator also approves
and aborts them and posts alerts. The name is what the journal records as the requester, so a
token itself is never stored, logged or echoed: only its SHA-256 digest is kept in memory, and a
presented token is compared with every digest by `hmac.compare_digest`, so neither the answer
nor its timing says how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from canaryctl.errors import InvalidInput

__all__ = ["MIN_TOKEN_LENGTH", "TOKENS_ENV", "ApiTokens", "Caller", "Role"]

TOKENS_ENV = "CANARYCTL_API_TOKENS"
MIN_TOKEN_LENGTH = 16
"""Shorter tokens can be guessed; `openssl rand -hex 24` gives 48 characters."""
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"

    def allows(self, needed: Role) -> bool:
        """An operator may do what a viewer may."""
        return self is Role.OPERATOR or needed is Role.VIEWER


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ApiTokens:
    """The tokens the API accepts, by digest."""

    def __init__(self, entries: Mapping[str, tuple[str, Role]]) -> None:
        """`entries`: token -> (name, role)."""
        self._by_digest = [(_digest(token), Caller(name, role)) for token, (name, role) in
                           entries.items()]  # fmt: skip

    @classmethod
    def parse(cls, text: str, source: str = TOKENS_ENV) -> ApiTokens:
        """Read `NAME:ROLE:TOKEN,...`; a bad entry is named by its position, never quoted."""
        entries: dict[str, tuple[str, Role]] = {}
        names: set[str] = set()
        for index, entry in enumerate(text.split(","), 1):
            entry = entry.strip()
            parts = entry.split(":", 2)
            where = f"{source}: entry {index}"
            if len(parts) != 3:
                raise InvalidInput(f"{where} is not NAME:ROLE:TOKEN")
            name, role, token = parts
            if not _NAME.match(name):
                raise InvalidInput(f"{where}: the name must be 1-64 of A-Z a-z 0-9 _ . @ -")
            if role not in Role.__members__.values():
                raise InvalidInput(f"{where} ({name}): the role must be viewer or operator")
            if len(token) < MIN_TOKEN_LENGTH:
                raise InvalidInput(
                    f"{where} ({name}): the token is shorter than {MIN_TOKEN_LENGTH} characters"
                )
            if name in names:
                raise InvalidInput(f"{where}: the name {name} is given twice")
            if token in entries:
                raise InvalidInput(f"{where} ({name}): the same token as {entries[token][0]}")
            names.add(name)
            entries[token] = (name, Role(role))
        return cls(entries)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiTokens:
        """The tokens in CANARYCTL_API_TOKENS; without any the API could only answer 401."""
        text = (os.environ if environ is None else environ).get(TOKENS_ENV, "").strip()
        if not text:
            raise InvalidInput(
                f"{TOKENS_ENV} is not set: the API needs at least one NAME:ROLE:TOKEN entry "
                "(roles viewer, operator), e.g. ci:operator:$(openssl rand -hex 24)"
            )
        return cls.parse(text)

    def caller(self, authorization: str | None) -> Caller | None:
        """Who an `Authorization: Bearer TOKEN` header belongs to, or None."""
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = _digest(token.strip())
        found: Caller | None = None
        for digest, caller in self._by_digest:  # every digest is compared: constant work
            if hmac.compare_digest(digest, presented):
                found = caller
        return found
