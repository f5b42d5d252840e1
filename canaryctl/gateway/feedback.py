"""Quality feedback: a caller scores an answer it got, and the score is metered per variant.

Only the caller (or its grader) knows whether an answer was good, and it knows that after the
response, on whichever replica its next request lands. So the gateway remembers nothing per
answer: the completion id it returns says what served the answer (route, variant, model,
provider, tier), to which virtual key (a hash of the key's id), until when it may be scored, and
carries an HMAC of all that under a key every replica shares (`spec.feedback.key_env`). Any
replica with the key reads any replica's ids; an id that was altered, forged or is past its
expiry reads as nothing (404).

Two rules need memory, and keep it bounded: an id is scored once (a second score would count the
same answer twice), so each replica remembers the ids it has scored until they expire, at most
`remember` of them (the oldest forgotten first); and with virtual keys, an id is scored only with
the key that received the answer (403 otherwise): anyone else's score would move the quality SLO
of a variant they were never served. Scoring once holds per replica: the same id sent to two
replicas is counted by each (a shared store would be needed to refuse that).

Ids look like `chatcmpl-<payload>.<mac>` (base64url), about 120 characters for usual names, and
never longer than the longest this configuration's names make (`max_length`): a feedback id may
be that long, or `limits.max_id_length` if that is more.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from canaryctl.errors import InvalidInput
from canaryctl.gateway.identity import Refused
from canaryctl.request_limits import clip
from canaryctl.runbook.gateway import GatewaySpec

__all__ = [
    "MIN_KEY_LENGTH",
    "OTHER_KEY",
    "AnswerIds",
    "OtherKey",
    "open_answer_ids",
    "parse_feedback",
]

PREFIX = "chatcmpl-"
MESSAGE_PREFIX = "msg_"
"""The same id as /v1/messages answers it (anthropic.message_id): one signature, scored once."""
MIN_KEY_LENGTH = 16
"""Characters a shared signing key must have at least."""
_CONTEXT = b"canaryctl completion id v1\x00"
_MAC_BYTES = 16
_KEY_HASH_BYTES = 8
_NONCE_BYTES = 8
_FIELDS = ("route", "variant", "model", "provider", "tier")


class OtherKey:
    """What `take` answers for an id served to another virtual key."""


OTHER_KEY = OtherKey()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_hash(key_id: str | None) -> str:
    """Which virtual key an answer went to, without naming it; empty without keys."""
    if key_id is None:
        return ""
    return _b64(hashlib.sha256(key_id.encode()).digest()[:_KEY_HASH_BYTES])


@functools.lru_cache(maxsize=4096)
def _head(
    route: str, variant: str, model: str, provider: str, tier: str, key_id: str | None
) -> str:
    """The payload's JSON up to the expiry: the same for every answer served alike, so made
    once (a gateway serves few label sets and keys)."""
    model = "" if model == variant else model  # the model is the variant unless a fallback answered
    fields = [route, variant, model, provider, tier, _key_hash(key_id)]
    return json.dumps(fields, separators=(",", ":"))[:-1]


class AnswerIds:
    """Issues signed completion ids and takes each one's score once (see the module docstring).

    `clock` is wall time, not monotonic: expiries are compared on other replicas.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        ttl: float = 3600.0,
        remember: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if remember < 1 or ttl <= 0:
            raise ValueError("AnswerIds needs remember >= 1 and ttl > 0")
        self._ttl, self._remember, self._clock = ttl, remember, clock
        self._keyed = hmac.new(secret, _CONTEXT, hashlib.sha256)
        self._scored: OrderedDict[str, float] = OrderedDict()
        self.max_length = 256
        """The longest id a caller may send back (open_answer_ids sets it from the names)."""

    def __len__(self) -> int:
        """How many scored ids are remembered."""
        return len(self._scored)

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()[:_MAC_BYTES]

    def issue(self, labels: Mapping[str, str], key_id: str | None = None) -> str:
        """The id to return for an answer served with these metric labels, to this key."""
        head = _head(*(labels[name] for name in _FIELDS), key_id)
        expires = math.ceil(self._clock() + self._ttl)
        payload = f'{head},{expires},"{_b64(secrets.token_bytes(_NONCE_BYTES))}"]'.encode()
        return f"{PREFIX}{_b64(payload)}.{_b64(self._mac(payload))}"

    def read(self, completion_id: str) -> tuple[dict[str, str], str, float] | None:
        """(labels, key hash, expiry) of an id this gateway's key signed and that has not
        expired; None for anything else."""
        prefix = next((p for p in (PREFIX, MESSAGE_PREFIX) if completion_id.startswith(p)), None)
        body, _, mac = completion_id.removeprefix(prefix or "").rpartition(".")
        if prefix is None or not body:
            return None
        try:
            payload = _unb64(body)
        except (binascii.Error, ValueError):
            return None
        # The signature is compared as text, not decoded: base64 lets several spellings decode
        # to the same bytes, and each spelling would be scored once more than the answer.
        if not hmac.compare_digest(mac.encode(), _b64(self._mac(payload)).encode()):
            return None
        data = json.loads(payload)  # signed by us, so ours in shape
        route, variant, model, provider, tier, key_hash, expires, _ = data
        if self._clock() >= expires:
            return None
        values = (route, variant, model or variant, provider, tier)
        return dict(zip(_FIELDS, values, strict=True)), key_hash, float(expires)

    def take(
        self, completion_id: str, key_id: str | None = None
    ) -> dict[str, str] | OtherKey | None:
        """The labels `completion_id` was served with, the first time it is scored here; None
        when it is forged, expired or already scored; OTHER_KEY when `key_id` is not the key it
        was served to (the answer stays scorable by its own key)."""
        self._forget_expired()
        read = self.read(completion_id)
        if read is None:
            return None
        labels, key_hash, expires = read
        if key_hash != _key_hash(key_id):
            return OTHER_KEY
        mac = completion_id.rpartition(".")[2]
        if not self._first(mac, expires):
            return None
        return labels

    def burn(self, completion_id: str) -> None:
        """Make an id this replica issued unscorable here (an answer that failed after its id
        was sent: a stream cut midway)."""
        read = self.read(completion_id)
        if read is not None:
            self._first(completion_id.rpartition(".")[2], read[2])

    def _forget_expired(self) -> None:
        """Scored ids past their expiry, oldest first (ids expire about in the order scored)."""
        now = self._clock()
        while self._scored and next(iter(self._scored.values())) <= now:
            self._scored.popitem(last=False)

    def _first(self, mac: str, expires: float) -> bool:
        """Whether `mac` is scored for the first time here; remembered until it expires."""
        if mac in self._scored:
            return False
        self._scored[mac] = expires
        while len(self._scored) > self._remember:
            self._scored.popitem(last=False)
        return True


def open_answer_ids(
    spec: GatewaySpec, environ: Mapping[str, str] = os.environ
) -> tuple[AnswerIds, str | None]:
    """The gateway's AnswerIds, and the warning to log at start when ids are signed with a key
    of this process only; InvalidInput when the key is too short."""
    settings = spec.feedback
    secret = environ.get(settings.key_env, "")
    warning = None
    if not secret:
        warning = (
            f"{settings.key_env} is not set: completion ids are signed with a key of this "
            "process, so only this replica takes feedback for its answers, and not after a "
            "restart; set it to the same secret on every replica"
        )
        key = secrets.token_bytes(32)
    elif len(secret) < MIN_KEY_LENGTH:
        raise InvalidInput(
            f"feedback.key_env: {settings.key_env} holds fewer than {MIN_KEY_LENGTH} "
            "characters; use a long random secret (`openssl rand -hex 32`)"
        )
    else:
        key = secret.encode()
    ids = AnswerIds(key, ttl=settings.ttl, remember=settings.remember)
    longest = len(ids.issue(_longest_labels(spec), "key"))
    ids.max_length = max(spec.limits.max_id_length, longest)
    return ids, warning


def _longest_labels(spec: GatewaySpec) -> dict[str, str]:
    """The labels whose id is longest: each label's longest value, as JSON writes it."""

    def longest(values: list[str]) -> str:
        return max(values, key=lambda v: len(json.dumps(v)))

    models = [m.name for m in spec.models]
    return {
        "route": longest([r.name for r in spec.routes]),
        "variant": longest(models),
        "model": longest(models) + " ",  # never shortened away as the variant
        "provider": longest([m.provider for m in spec.models]),
        "tier": longest([*spec.context.tiers, "other"]),
    }


def parse_feedback(body: Any, max_id_length: int) -> tuple[str, float] | Refused:
    """(completion id, score) from a feedback body, or the 400 (413 for a long id) to answer."""
    if not isinstance(body, dict):
        return _bad("the body must be a JSON object")
    completion_id, score = body.get("id"), body.get("score")
    if not isinstance(completion_id, str) or not completion_id:
        return _bad("id: must be the completion id the gateway returned (a non-empty string)")
    if len(completion_id) > max_id_length:
        size = f"{len(completion_id)} characters, more than the {max_id_length} allowed"
        return Refused(413, f"id: {size}", "id_too_long")
    if isinstance(score, bool) or not isinstance(score, int | float):
        return _bad("score: must be a number from 0 to 1")
    if not 0.0 <= score <= 1.0 or not math.isfinite(score):  # 10**400 is no float: range first
        return _bad(f"score: must be from 0 to 1, got {clip(score)}")
    return completion_id, float(score)


def _bad(message: str) -> Refused:
    return Refused(400, message, "invalid_request_error")
