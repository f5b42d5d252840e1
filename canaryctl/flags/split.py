"""A feature flag kept in Split (Harness FME), moved through Split's Admin API.

The flag's targeting in one environment is its *definition*:
`GET /internal/api/v2/splits/ws/{workspace}/{flag}/environments/{environment}` reads it (its
`treatments`, `defaultTreatment`, `trafficAllocation`, `rules` of a condition and `buckets`, and
`defaultRule`, a list of `{treatment, size}` buckets in whole percents), and
`PUT` on the same path replaces it, with our `comment`, which Split keeps in the flag's change
history. (`title` belongs only to change requests, which canaryctl does not open: an environment
that requires approvals answers a direct write with 403, reported as such.)

The version we compare is the definition's `lastUpdateTime` (milliseconds): Split moves it on
every change to this flag in this environment, a restore included, and never back. The Admin API
has no compare-and-swap: no ETag, no `If-Match`, no version in the write, and JSON Patch `test`
is not in its reference. So a write is read-then-write: we GET, check the version is still the
one we expect, and PUT; a human edit landing in the milliseconds between our GET and our PUT is
overwritten and only seen at the next step's read. The PUT carries the whole definition as we
read it with only our target (the default rule, or the one rule for an attribute or segment)
changed, so everything else a human set stays as it was at our read.

The claim on the flag (canaryctl/flags/base.py) is one line of the flag's `description`,
`canaryctl-claim[{environment}]: {claim JSON}`, read with `GET .../splits/ws/{workspace}/{flag}`
and written with a JSON Patch on `/description` through `PATCH` on that path; the rest of the
description is left as a human wrote it. The description is the flag's, not the environment's,
so editing it does not move the definition's `lastUpdateTime`. With no compare-and-swap, the
claim is read back after it is written, and every targeting write first reads the claim and
checks it is still ours at our lease epoch (check_fence): a stalled driver writes nothing once a
newer one has claimed, except within the same read-then-write window as above.

429 (with `X-RateLimit-Reset-Seconds-Org` / `-IP`, of which the longer is honoured), 409, 5xx and
network errors are retried by the project's one retry policy (canaryctl/retry.py): FLAG_WRITE
for reads and forward steps, the patient FLAG_RESTORE for a restore and a release. Each retry
reads again and decides again, so a write whose answer was lost is recognised, not repeated.

The Admin API key lives only in the client's `Authorization: Bearer` header: it is never
formatted into a message, a repr, a log line or a snapshot, and any server text we quote is
scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from canaryctl import fastjson
from canaryctl.errors import FlagBackendError, FlagConflict, FlagMismatch, InvalidInput
from canaryctl.flags.admin_api import Retry, retried, secret_from_env, send, store_repr
from canaryctl.flags.base import (
    FlagClaim,
    FlagSnapshot,
    Split,
    check_claim,
    check_fence,
    check_read_back,
    integer_weights,
    releasable,
)
from canaryctl.retry import FLAG_RESTORE, FLAG_WRITE, RetryPolicy

__all__ = ["DEFAULT_BASE_URL", "SplitFlagStore", "parse_rule"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.split.io"
SCALE = 100
"""Bucket sizes are whole percents."""

_NO_RETRY_CAUSES = {
    400: "Split rejected the definition",
    401: "the Admin API key was refused (bad, expired or revoked key)",
    403: "the Admin API key may not change this flag, or this environment requires approvals "
    "(change requests) for it",
}

_LIST_MATCHERS = ("IN_LIST_STRING", "WHITELIST", "EQUAL_TO_SET", "PART_OF_SET")
"""Matcher types whose `strings` list an attribute's values: what a tier rule is made of."""


def parse_rule(text: str) -> tuple[str, str]:
    """`attribute=value` (a rule matching that attribute against that value, e.g. `tier=free`)
    or `segment:name` (a rule on that segment) as ("attribute" | "segment", ...); ValueError
    otherwise."""
    if text.startswith("segment:") and text[len("segment:") :].strip():
        return "segment", text[len("segment:") :].strip()
    attribute, sep, value = text.partition("=")
    if sep and attribute.strip() and value.strip():
        return attribute.strip(), value.strip()
    raise ValueError(f"'{text}' is neither attribute=value (e.g. tier=free) nor segment:NAME")


class SplitFlagStore:
    """One Split feature flag in one environment; baseline and canary name treatments.

    With `rule` (`tier=free`, `segment:beta`) the rollout moves the buckets of the one rule on
    that attribute value or segment; without it, the default rule. `transport` and `sleep` are
    for tests.
    """

    def __init__(
        self,
        *,
        workspace: str,
        environment: str,
        key: str,
        baseline: str,
        canary: str,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        rule: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise InvalidInput("Split Admin API key is empty")
        self.workspace, self.environment, self.key = workspace, environment, key
        self.baseline, self.canary, self.rule = baseline, canary, rule
        try:
            self._rule = parse_rule(rule) if rule else None
        except ValueError as exc:
            raise InvalidInput(f"flag.rule: {exc}") from None
        self._api_key = api_key
        self._sleep = sleep
        self._fence: FlagClaim | None = None
        """The claim this store wrote last: every write checks it is still on the flag."""
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, *, api_key_env: str, **kwargs: Any) -> SplitFlagStore:
        """Build a store whose Admin API key comes from the environment variable `api_key_env`."""
        holds = "a Split Admin API key with the feature flag editor role for this environment"
        return cls(api_key=secret_from_env(api_key_env, holds), **kwargs)

    def __repr__(self) -> str:
        where = f"{self.workspace}/{self.environment}/{self.key}"
        return store_repr(type(self).__name__, where, self.baseline, self.canary, self.rule)

    # -- the FlagStore protocol ------------------------------------------------------------

    def snapshot(self) -> FlagSnapshot:
        definition = self._read(FLAG_WRITE)
        if definition.get("killed"):
            raise FlagMismatch(
                f"{self._where()} is killed, so every request gets its default treatment and "
                "moving its rules would change nothing; restore it first"
            )
        allocation = definition.get("trafficAllocation", 100)
        if allocation != 100:
            raise FlagMismatch(
                f"{self._where()} allocates {allocation}% of traffic, so a rule's percents are "
                "not the share each treatment gets; set trafficAllocation to 100"
            )
        return self._snapshot_of(definition)

    def split(self, snapshot: FlagSnapshot) -> Split:
        state = json.loads(snapshot.raw)
        self._check(state["treatments"], (self.baseline, self.canary))
        weights = _weights(state["target"])
        baseline, canary = weights.get(self.baseline, 0.0), weights.get(self.canary, 0.0)
        return Split(
            baseline=baseline, canary=canary, other=sum(weights.values()) - baseline - canary
        )

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        self._check(json.loads(snapshot.raw)["treatments"], (self.baseline, self.canary))
        return self.baseline, self.canary

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        if not 0 <= percent <= 100 or percent != int(percent):
            raise FlagMismatch(
                f"{self._where()}: canary weight {percent:g} is not a whole percent in 0..100 "
                "(Split's buckets are whole percents)"
            )
        canary = int(percent)
        # Canary first, as the other backends do: the SDK walks buckets in order, so a user
        # who got the canary at 5% keeps it at 25%.
        buckets = [
            {"treatment": self.canary, "size": canary},
            {"treatment": self.baseline, "size": SCALE - canary},
        ]
        return self._write(buckets, expect_version, comment, FLAG_WRITE)

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        buckets = [{"treatment": self.canary, "size": SCALE}]
        return self._write(buckets, expect_version, comment, FLAG_WRITE)

    def values(self, snapshot: FlagSnapshot, variations: Sequence[str]) -> tuple[str, ...]:
        self._check(json.loads(snapshot.raw)["treatments"], tuple(variations))
        return tuple(variations)

    def weights(self, snapshot: FlagSnapshot) -> dict[str, float]:
        return _weights(json.loads(snapshot.raw)["target"])

    def set_split(
        self, weights: Mapping[str, float], *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        try:
            sizes = integer_weights(weights, SCALE)
        except ValueError as exc:
            raise FlagMismatch(f"{self._where()}: {exc}") from None
        buckets = [{"treatment": name, "size": size} for name, size in sizes.items() if size]
        return self._write(buckets, expect_version, comment, FLAG_WRITE, names=tuple(sizes))

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Write back the saved target's buckets, retrying hard; Split stamps a newer
        `lastUpdateTime`, so the version moves forward with the old targeting."""
        if saved.key != self.key:
            raise FlagMismatch(f"cannot restore flag '{saved.key}' into '{self.key}'")
        buckets = json.loads(saved.raw)["target"]
        return self._write(buckets, expect_version, comment, FLAG_RESTORE, names=())

    def claim(self, claim: FlagClaim, *, take_over: bool = False) -> FlagClaim | None:
        before: list[FlagClaim | None] = []

        def decide(held: FlagClaim | None) -> str | None:
            before[:] = [held]
            check_claim(held, claim, take_over=take_over, where=self._where())
            return None if held == claim else claim.to_json()

        self._describe(decide, FLAG_WRITE, "claim the flag")
        check_read_back(self._held(self._read_flag(FLAG_WRITE)), claim, self._where())
        self._fence = claim
        return before[0] if before else None

    def release(self, claim: FlagClaim) -> None:
        self._fence = None

        def decide(held: FlagClaim | None) -> str | None:
            return "" if releasable(held, claim) else None

        self._describe(decide, FLAG_RESTORE, "release the flag")

    # -- the claim, in the flag's description ------------------------------------------------

    @property
    def _claim_prefix(self) -> str:
        return f"canaryctl-claim[{self.environment}]: "

    def _held(self, flag: dict[str, Any]) -> FlagClaim | None:
        """The claim on this environment, if a canaryctl run left one."""
        for line in str(flag.get("description") or "").splitlines():
            if line.startswith(self._claim_prefix):
                try:
                    return FlagClaim.from_json(line[len(self._claim_prefix) :])
                except ValueError:
                    log.warning("%s: unreadable claim line in the description", self._where())
        return None

    def _describe(
        self, decide: Callable[[FlagClaim | None], str | None], policy: RetryPolicy, what: str
    ) -> None:
        """Read the description, decide the claim line (None: leave it; "": remove it), and
        write the description back with every other line as it was; each retry reads again."""

        def attempt() -> None:
            flag = self._read_flag(policy)
            line = decide(self._held(flag))
            if line is None:
                return
            kept = [
                text
                for text in str(flag.get("description") or "").splitlines()
                if not text.startswith(self._claim_prefix)
            ]
            if line:
                kept.append(self._claim_prefix + line)
            patch = [{"op": "replace", "path": "/description", "value": "\n".join(kept)}]
            self._send("PATCH", self._flag_path, json=patch)
            log.info("%s: %s", self._where(), what)

        retried(attempt, policy, sleep=self._sleep, where=self._where(), what=what)

    # -- reading ---------------------------------------------------------------------------

    @property
    def _flag_path(self) -> str:
        workspace, key = quote(self.workspace, safe=""), quote(self.key, safe="")
        return f"/internal/api/v2/splits/ws/{workspace}/{key}"

    @property
    def _path(self) -> str:
        return f"{self._flag_path}/environments/{quote(self.environment, safe='')}"

    def _where(self) -> str:
        scope = f", rule '{self.rule}'" if self.rule else ""
        return (
            f"Split flag '{self.key}' (workspace '{self.workspace}', environment "
            f"'{self.environment}'{scope})"
        )

    def _target_index(self, definition: dict[str, Any]) -> int | None:
        """Which rule we move (its index), or None for the default rule."""
        if self._rule is None:
            return None
        kind, wanted = self._rule
        found = [
            index
            for index, rule in enumerate(definition.get("rules") or [])
            if _rule_matches(rule, kind, wanted)
        ]
        if len(found) != 1:
            problem = "no" if not found else "more than one"
            raise FlagMismatch(f"{self._where()}: {problem} rule for '{self.rule}'")
        return found[0]

    def _state(self, definition: dict[str, Any]) -> dict[str, Any]:
        """The part of the definition we own, as persisted in snapshots: secret-free JSON."""
        try:
            version = int(definition["lastUpdateTime"])
            treatments = [str(t["name"]) for t in definition["treatments"]]
        except (KeyError, TypeError, ValueError):
            raise FlagBackendError(
                f"{self._where()}: the answer is not a feature flag definition"
            ) from None
        index = self._target_index(definition)
        rules = definition.get("rules") or []
        target = definition.get("defaultRule") if index is None else rules[index].get("buckets")
        return {
            "version": version,
            "treatments": treatments,
            "rule": index,
            "target": [{"treatment": b["treatment"], "size": b["size"]} for b in target or []],
        }

    def _snapshot_of(self, definition: dict[str, Any]) -> FlagSnapshot:
        state = self._state(definition)
        self._check(state["treatments"], (self.baseline, self.canary))
        return FlagSnapshot(self.key, state["version"], json.dumps(state, sort_keys=True))

    def _check(self, treatments: Sequence[str], wanted: Sequence[str]) -> None:
        for name in wanted:
            if name not in treatments:
                known = ", ".join(json.dumps(t) for t in treatments) or "none"
                raise FlagMismatch(f"{self._where()}: no treatment '{name}' (treatments: {known})")

    # -- writing ---------------------------------------------------------------------------

    def _write(
        self,
        buckets: list[dict[str, Any]],
        expect_version: int,
        comment: str,
        policy: RetryPolicy,
        *,
        names: Sequence[str] | None = None,
    ) -> FlagSnapshot:
        """Read, check the version (and our claim) is as expected, PUT the definition with
        our target's buckets; every retry reads and decides again.

        Retrying a PUT blind could overwrite a human who edited during our wait (a 429 can ask
        for seconds). After a 5xx or a network error we cannot know whether our PUT landed, so
        a re-read that finds the version moved to serve exactly our buckets is taken as our own
        write rather than a conflict.
        """
        wanted = names if names is not None else (self.baseline, self.canary)
        sent = False

        def attempt() -> FlagSnapshot:
            nonlocal sent
            definition = self._read(policy)
            if self._fence is not None:
                check_fence(self._held(self._read_flag(policy)), self._fence, self._where())
            state = self._state(definition)
            self._check(state["treatments"], wanted)
            if state["version"] != expect_version:
                if sent and _same(_weights(state["target"]), _weights(buckets)):
                    log.info("%s: our write landed despite the error: %s", self._where(), comment)
                    return self._snapshot_of(definition)
                raise FlagConflict(
                    f"{self._where()} moved from version {expect_version} to "
                    f"{state['version']} behind our back: someone else changed it; not "
                    "overwriting"
                )
            body = _full_definition(definition, state["rule"], buckets, comment)
            try:
                response = self._send("PUT", self._path, json=body)
            except Retry as failure:
                sent = sent or failure.ambiguous
                raise
            log.info("%s: %s", self._where(), comment)
            return self._snapshot_of(dict(fastjson.loads(response.content)))

        return retried(attempt, policy, sleep=self._sleep, where=self._where(), what="PUT")

    # -- HTTP with retries -----------------------------------------------------------------

    def _read(self, policy: RetryPolicy) -> dict[str, Any]:
        """GET the definition in our environment, retried."""
        return self._get(self._path, policy)

    def _read_flag(self, policy: RetryPolicy) -> dict[str, Any]:
        """GET the flag itself (its description holds the claim), retried."""
        return self._get(self._flag_path, policy)

    def _get(self, path: str, policy: RetryPolicy) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            body = fastjson.loads(self._send("GET", path).content)
            if not isinstance(body, dict):
                raise FlagBackendError(f"{self._where()}: GET answered {type(body).__name__}")
            return body

        return retried(attempt, policy, sleep=self._sleep, where=self._where(), what="GET")

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; retryable outcomes (429, 409, 5xx, network) are raised as Retry, any
        other refusal as the error it means."""
        response = send(self._client, method, path, _rate_limit_delay, **kwargs)
        status = response.status_code
        if status < 300:
            return response
        message = self._scrub(_server_message(response))
        if status == 404:
            raise FlagMismatch(
                f"{self._where()}: no such flag, workspace or environment ({message})"
            )
        cause = _NO_RETRY_CAUSES.get(status, "Split refused the request")
        raise FlagBackendError(f"{self._where()}: HTTP {status}: {cause}: {message}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***")


def _rule_matches(rule: dict[str, Any], kind: str, wanted: str) -> bool:
    """Does `rule`'s condition target attribute `kind` = `wanted` (or segment `wanted`)?"""
    for matcher in (rule.get("condition") or {}).get("matchers") or []:
        if matcher.get("negate"):
            continue
        if kind == "segment":
            if matcher.get("type") == "IN_SEGMENT" and matcher.get("string") == wanted:
                return True
        elif (
            matcher.get("type") in _LIST_MATCHERS
            and matcher.get("attribute") == kind
            and wanted in (matcher.get("strings") or [])
        ):
            return True
    return False


def _weights(buckets: list[dict[str, Any]]) -> dict[str, float]:
    """Percent per treatment in a list of buckets."""
    weights: dict[str, float] = {}
    for bucket in buckets:
        weights[bucket["treatment"]] = weights.get(bucket["treatment"], 0.0) + bucket["size"]
    return weights


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return {k: v for k, v in a.items() if v} == {k: v for k, v in b.items() if v}


def _full_definition(
    definition: dict[str, Any], rule: int | None, buckets: list[dict[str, Any]], comment: str
) -> dict[str, Any]:
    """The PUT body: the definition as read, with only our target's buckets replaced."""
    rules = json.loads(json.dumps(definition.get("rules") or []))
    default_rule = definition.get("defaultRule") or []
    if rule is None:
        default_rule = buckets
    else:
        rules[rule]["buckets"] = buckets
    body: dict[str, Any] = {
        "treatments": definition["treatments"],
        "defaultTreatment": definition.get("defaultTreatment"),
        "rules": rules,
        "defaultRule": default_rule,
        "comment": comment,
    }
    for optional in ("baselineTreatment", "trafficAllocation"):
        if optional in definition:
            body[optional] = definition[optional]
    return body


def _rate_limit_delay(response: httpx.Response) -> float | None:
    """Seconds Split asks us to wait: the longer of its two windows' resets (organisation and
    IP), as its reference says; Retry-After when neither is there."""
    waits = [
        _seconds(response.headers.get(header))
        for header in ("X-RateLimit-Reset-Seconds-Org", "X-RateLimit-Reset-Seconds-IP")
    ]
    known = [w for w in waits if w is not None]
    return max(known) if known else _seconds(response.headers.get("Retry-After"))


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _server_message(response: httpx.Response) -> str:
    """Split's own error text (`{"code", "message", "details"}`), or the start of the body."""
    try:
        body = fastjson.loads(response.content)
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:300]
    return response.text[:200]
