"""A flag kept in LaunchDarkly itself, moved through its REST API with semantic patches.

Reads are `GET /api/v2/flags/{project}/{flag}?env={env}`; writes are
`PATCH /api/v2/flags/{project}/{flag}` with `domain-model=launchdarkly.semanticpatch`, so every
change is a small, named instruction (`updateFallthroughVariationOrRollout`,
`updateRuleVariationOrRollout`) that LaunchDarkly records in its audit log with our comment.

The version we compare is the *environment's* `_version`: it moves whenever anyone edits the
targeting of this flag in this environment, which is exactly the state we own during a run, while
an edit in another environment (which does not touch our traffic) does not stop us. Semantic patch
has no compare-and-swap, so without a claim the check is read-then-write: a human edit landing in
the milliseconds between our GET and our PATCH is not detected until the next step's read.

A store that claimed the flag (every run does) writes targeting as a JSON Patch instead, whose
`test` operations make the write a compare-and-swap: the flag's `_version` must still be the one
our read found, and the claim on the flag must still be ours at our lease epoch (see
canaryctl/flags/base.py). LaunchDarkly applies a JSON Patch all or nothing, so a driver that lost
its run to a newer one, or a human edit since our read, changes nothing: the failed `test` is
answered 409, retried after a fresh read, and that read tells which (ClaimFenced, FlagConflict).

Every accepted patch moves the environment's `_version` forward, a restore included: LaunchDarkly
numbers versions itself, so a restore is new targeting that serves what the saved one served.

The claim on the flag is a custom property, `canaryctl-claim-{environment}`, whose one value is the
run's FlagClaim as JSON, set and removed with the flag-settings instructions
`addCustomProperties`, `replaceCustomProperties` and `removeCustomProperties` (no
`environmentKey`; they do not touch targeting). With no compare-and-swap, the claim is read back
after it is written; two runs starting within the same second could both read it back as theirs,
and then the version check stops the second at its first write, without touching the flag.

The access token lives only in the client's `Authorization` header. It is never formatted into a
message, a repr, a log line or a snapshot, and any server text we quote is scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

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

__all__ = [
    "DEFAULT_BASE_URL",
    "LD_API_VERSION",
    "LaunchDarklyFlagStore",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://app.launchdarkly.com"
LD_API_VERSION = "20240415"
SEMANTIC_PATCH = "application/json; domain-model=launchdarkly.semanticpatch"
WEIGHT_SCALE = 100_000
"""Rollout weights are in thousandths of a percent: 100000 is everyone."""


# 429, 409, 5xx and network errors are retried (canaryctl/retry.py): reads and forward steps by
# FLAG_WRITE, which gives up early (the run then rolls back); a restore by the patient
# FLAG_RESTORE, because giving up there leaves canary traffic in place. A 429's Retry-After (or
# X-Ratelimit-Reset) is honoured up to the policy's max_wait.

_NO_RETRY_CAUSES = {
    400: "LaunchDarkly rejected the request",
    401: "the access token was refused (bad, expired or revoked token)",
    403: "the access token may not change this flag (missing role or permission)",
    405: "LaunchDarkly requires an approval for changes to this flag in this environment",
}


class LaunchDarklyFlagStore:
    """One flag in one LaunchDarkly environment; variations are picked by value or by name.

    With `rule` (a rule `_id` or description) the rollout moves that targeting rule only;
    without it, the default rule (fallthrough). `transport` and `sleep` are for tests.
    """

    def __init__(
        self,
        *,
        project: str,
        environment: str,
        key: str,
        baseline: str,
        canary: str,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        rule: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise InvalidInput("LaunchDarkly access token is empty")
        self.project, self.environment, self.key = project, environment, key
        self.baseline, self.canary, self.rule = baseline, canary, rule
        self._token = token
        self._sleep = sleep
        self._fence: FlagClaim | None = None
        """The claim this store wrote last: every write checks it is still on the flag."""
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": token, "LD-API-Version": LD_API_VERSION},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, *, token_env: str, **kwargs: Any) -> LaunchDarklyFlagStore:
        """Build a store whose token comes from the environment variable `token_env`."""
        holds = "a LaunchDarkly access token with write access to the flag"
        return cls(token=secret_from_env(token_env, holds), **kwargs)

    def __repr__(self) -> str:
        where = f"{self.project}/{self.environment}/{self.key}"
        return store_repr(type(self).__name__, where, self.baseline, self.canary, self.rule)

    # -- the FlagStore protocol ------------------------------------------------------------

    def snapshot(self) -> FlagSnapshot:
        snapshot = self._snapshot_of(self._read(FLAG_WRITE))
        if not json.loads(snapshot.raw)["on"]:
            raise FlagMismatch(
                f"{self._where()} is off, so every request gets its off variation and moving "
                "its targeting would change nothing; turn it on first"
            )
        return snapshot

    def split(self, snapshot: FlagSnapshot) -> Split:
        state = json.loads(snapshot.raw)
        ids = [v["_id"] for v in state["variations"]]
        baseline_id, canary_id = self._ids(state["variations"])
        target = state["rule"] if state.get("rule") is not None else state["fallthrough"]
        weights = _weights(target, ids)
        baseline, canary = weights.get(baseline_id, 0.0), weights.get(canary_id, 0.0)
        return Split(
            baseline=baseline, canary=canary, other=sum(weights.values()) - baseline - canary
        )

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        variations = json.loads(snapshot.raw)["variations"]
        by_id = {v["_id"]: str(v.get("value")) for v in variations}
        baseline_id, canary_id = self._ids(variations)
        return by_id[baseline_id], by_id[canary_id]

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        if not 0 <= percent <= 100:
            raise FlagMismatch(f"canary weight {percent} is outside 0..100")

        def instructions(state: dict[str, Any]) -> list[dict[str, Any]]:
            baseline_id, canary_id = self._ids(state["variations"])
            canary_weight = round(percent * WEIGHT_SCALE / 100)
            target = state["rule"] if state["rule"] is not None else state["fallthrough"]
            previous = target.get("rollout") or {}
            # Canary first, as the file backend does: its share is always the low buckets, so a
            # user who got the canary at 5% keeps it at 25% (when LaunchDarkly keeps the order).
            change: dict[str, Any] = {
                "rolloutWeights": {
                    canary_id: canary_weight,
                    baseline_id: WEIGHT_SCALE - canary_weight,
                },
                "rolloutBucketBy": previous.get("bucketBy", "key"),
                "rolloutContextKind": previous.get("contextKind", "user"),
            }
            return [self._target_instruction(state, change)]

        return self._write(instructions, expect_version, comment, FLAG_WRITE)

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        def instructions(state: dict[str, Any]) -> list[dict[str, Any]]:
            canary_id = self._ids(state["variations"])[1]
            return [self._target_instruction(state, {"variationId": canary_id})]

        return self._write(instructions, expect_version, comment, FLAG_WRITE)

    def values(self, snapshot: FlagSnapshot, variations: Sequence[str]) -> tuple[str, ...]:
        known = json.loads(snapshot.raw)["variations"]
        return tuple(str(self._variation(known, wanted).get("value")) for wanted in variations)

    def weights(self, snapshot: FlagSnapshot) -> dict[str, float]:
        state = json.loads(snapshot.raw)
        ids = [v["_id"] for v in state["variations"]]
        by_id = {v["_id"]: str(v.get("value")) for v in state["variations"]}
        target = state["rule"] if state.get("rule") is not None else state["fallthrough"]
        return {by_id[vid]: weight for vid, weight in _weights(target, ids).items()}

    def set_split(
        self, weights: Mapping[str, float], *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        try:
            integer = integer_weights(weights, WEIGHT_SCALE)
        except ValueError as exc:
            raise FlagMismatch(f"{self._where()}: {exc}") from None

        def instructions(state: dict[str, Any]) -> list[dict[str, Any]]:
            ids = {name: self._variation(state["variations"], name)["_id"] for name in integer}
            served = [name for name, weight in integer.items() if weight > 0]
            if len(served) == 1:
                return [self._target_instruction(state, {"variationId": ids[served[0]]})]
            target = state["rule"] if state["rule"] is not None else state["fallthrough"]
            previous = target.get("rollout") or {}
            change: dict[str, Any] = {
                "rolloutWeights": {ids[name]: weight for name, weight in integer.items()},
                "rolloutBucketBy": previous.get("bucketBy", "key"),
                "rolloutContextKind": previous.get("contextKind", "user"),
            }
            return [self._target_instruction(state, change)]

        return self._write(instructions, expect_version, comment, FLAG_WRITE)

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Write back the saved default rule (or scoped rule) and on/off state, retrying hard.

        LaunchDarkly versions only increase, so the result has a new version with the old
        targeting. Variations are matched by `_id`, which LaunchDarkly never reuses.
        """
        if saved.key != self.key:
            raise FlagMismatch(f"cannot restore flag '{saved.key}' into '{self.key}'")
        old = json.loads(saved.raw)
        ids = [v["_id"] for v in old["variations"]]

        def instructions(state: dict[str, Any]) -> list[dict[str, Any]]:
            steps: list[dict[str, Any]] = []
            if state["on"] != old["on"]:
                steps.append({"kind": "turnFlagOn" if old["on"] else "turnFlagOff"})
            target = old["rule"] if old.get("rule") is not None else old["fallthrough"]
            steps.append(self._target_instruction(state, _as_change(target, ids)))
            return steps

        return self._write(
            instructions, expect_version, comment, FLAG_RESTORE, check_variations=False
        )

    def claim(self, claim: FlagClaim, *, take_over: bool = False) -> FlagClaim | None:
        before: list[FlagClaim | None] = []

        def instruction(held: FlagClaim | None) -> dict[str, Any] | None:
            before[:] = [held]
            check_claim(held, claim, take_over=take_over, where=self._where())
            if held == claim:
                return None
            kind = "addCustomProperties" if held is None else "replaceCustomProperties"
            return {"kind": kind, **self._claim_property([claim.to_json()])}

        run = f"canaryctl run {claim.run_id or '(starting)'}"
        self._settings_patch(instruction, f"{run}: claim the flag", FLAG_WRITE)
        check_read_back(self._held(self._read(FLAG_WRITE)), claim, self._where())
        self._fence = claim
        return before[0] if before else None

    def release(self, claim: FlagClaim) -> None:
        self._fence = None

        def instruction(held: FlagClaim | None) -> dict[str, Any] | None:
            if releasable(held, claim):
                return {"kind": "removeCustomProperties", **self._claim_property([held.to_json()])}
            return None  # gone already, not ours, or a newer driver's: left alone

        comment = f"canaryctl run {claim.run_id}: release the flag"
        self._settings_patch(instruction, comment, FLAG_RESTORE)

    @property
    def _claim_key(self) -> str:
        return f"canaryctl-claim-{self.environment}"

    def _claim_property(self, values: list[str]) -> dict[str, Any]:
        name = f"canaryctl claim ({self.environment})"
        return {"key": self._claim_key, "name": name, "values": values}

    def _held(self, flag: dict[str, Any]) -> FlagClaim | None:
        """The claim on this environment, if a canaryctl run left one."""
        prop = (flag.get("customProperties") or {}).get(self._claim_key) or {}
        for value in prop.get("value") or []:
            try:
                return FlagClaim.from_json(value)
            except ValueError:
                log.warning("%s: %s holds %r", self._where(), self._claim_key, value)
        return None

    def _settings_patch(
        self,
        instruction: Callable[[FlagClaim | None], dict[str, Any] | None],
        comment: str,
        policy: RetryPolicy,
    ) -> None:
        """Read the claim, decide, send one flag-settings instruction (no environment); each
        retry reads and decides again, so a patch that landed unanswered is not repeated."""

        def attempt() -> None:
            step = instruction(self._held(self._read(policy)))
            if step is None:
                return
            body = {"comment": comment, "instructions": [step]}
            self._send("PATCH", json=body, headers={"Content-Type": SEMANTIC_PATCH})

        retried(attempt, policy, sleep=self._sleep, where=self._where(), what=comment)

    # -- reading ---------------------------------------------------------------------------

    @property
    def _path(self) -> str:
        return f"/api/v2/flags/{self.project}/{self.key}"

    def _where(self) -> str:
        return (
            f"LaunchDarkly flag '{self.key}' (project '{self.project}', environment "
            f"'{self.environment}')"
        )

    def _state(self, flag: dict[str, Any], *, check_variations: bool = True) -> dict[str, Any]:
        """The part of the flag we own, as persisted in snapshots: a secret-free JSON object."""
        env = (flag.get("environments") or {}).get(self.environment)
        if not isinstance(env, dict):
            raise FlagMismatch(f"{self._where()}: the flag has no such environment")
        variations = [
            {k: v[k] for k in ("_id", "value", "name") if k in v} for v in flag["variations"]
        ]
        state = {
            "_version": int(env["_version"]),
            "on": bool(env.get("on")),
            "variations": variations,
            "fallthrough": env.get("fallthrough") or {},
            "rule": self._find_rule(env) if self.rule else None,
        }
        if check_variations:
            self._ids(variations)
        return state

    def _snapshot_of(self, flag: dict[str, Any], *, check_variations: bool = True) -> FlagSnapshot:
        state = self._state(flag, check_variations=check_variations)
        return FlagSnapshot(self.key, state["_version"], json.dumps(state, sort_keys=True))

    def _find_rule(self, env: dict[str, Any]) -> dict[str, Any]:
        rules = env.get("rules") or []
        by_id = [r for r in rules if r.get("_id") == self.rule]
        found = by_id or [r for r in rules if r.get("description") == self.rule]
        if len(found) != 1:
            known = ", ".join(repr(r.get("description") or r.get("_id")) for r in rules) or "none"
            problem = "no" if not found else "more than one"
            raise FlagMismatch(
                f"{self._where()}: {problem} targeting rule with id or description "
                f"'{self.rule}' (rules: {known})"
            )
        return found[0]

    def _ids(self, variations: list[dict[str, Any]]) -> tuple[str, str]:
        """The `_id`s of the baseline and canary variations, matched by value, else by name."""
        baseline = self._variation(variations, self.baseline)
        return baseline["_id"], self._variation(variations, self.canary)["_id"]

    def _variation(self, variations: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
        """The one variation whose value, else whose name, is `wanted`."""
        by_value = [v for v in variations if v.get("value") == wanted]
        matches = by_value or [v for v in variations if v.get("name") == wanted]
        if len(matches) != 1:
            known = ", ".join(json.dumps(v.get("name") or v.get("value")) for v in variations)
            problem = "no" if not matches else "more than one"
            raise FlagMismatch(
                f"{self._where()}: {problem} variation with value or name '{wanted}' "
                f"(variations: {known or 'none'})"
            )
        return matches[0]

    # -- writing ---------------------------------------------------------------------------

    def _target_instruction(self, state: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
        if state["rule"] is not None:
            return {
                "kind": "updateRuleVariationOrRollout",
                "ruleId": state["rule"]["_id"],
                **change,
            }
        return {"kind": "updateFallthroughVariationOrRollout", **change}

    def _write(
        self,
        instructions: Callable[[dict[str, Any]], list[dict[str, Any]]],
        expect_version: int,
        comment: str,
        policy: RetryPolicy,
        *,
        check_variations: bool = True,
    ) -> FlagSnapshot:
        """Read, check the version is ours, patch; every retry reads and decides again.

        Retrying a PATCH blind could overwrite a human who edited during our wait (a 429 can
        ask for seconds). After a 5xx or a network error we cannot know whether our patch
        landed, so a re-read that finds the version moved to serve exactly what we asked for
        is taken as our own write rather than a conflict.
        """
        sent: dict[str, Any] | None = None

        def attempt() -> FlagSnapshot:
            nonlocal sent
            flag = self._read(policy)
            if self._fence is not None:
                check_fence(self._held(flag), self._fence, self._where())
            state = self._state(flag, check_variations=check_variations)
            if state["_version"] != expect_version:
                if sent is not None and self._serves(state, sent):
                    log.info("%s: our write landed despite the error: %s", self._where(), comment)
                    return self._snapshot_of(flag, check_variations=check_variations)
                raise FlagConflict(
                    f"{self._where()} moved from version {expect_version} to "
                    f"{state['_version']} behind our back: someone else changed it; not "
                    "overwriting"
                )
            steps = instructions(state)
            if self._fence is None:
                body: dict[str, Any] = {
                    "environmentKey": self.environment,
                    "comment": comment,
                    "instructions": steps,
                }
                content_type = SEMANTIC_PATCH
            else:
                body = {"comment": comment, "patch": self._fenced_patch(flag, state, steps)}
                content_type = "application/json"
            try:
                response = self._send("PATCH", json=body, headers={"Content-Type": content_type})
            except Retry as failure:
                sent = steps[-1] if failure.ambiguous else None
                raise
            log.info("%s: %s", self._where(), comment)
            return self._snapshot_of(
                fastjson.loads(response.content), check_variations=check_variations
            )

        return retried(attempt, policy, sleep=self._sleep, where=self._where(), what="PATCH")

    def _fenced_patch(
        self, flag: dict[str, Any], state: dict[str, Any], steps: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """`steps` (semantic instructions) as a JSON Patch that applies only to the flag as we
        read it (its `_version`) and only while our claim is on it."""
        assert self._fence is not None
        env = f"/environments/{_pointer(self.environment)}"
        ids = [v["_id"] for v in state["variations"]]
        claim = f"/customProperties/{_pointer(self._claim_key)}/value/0"
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/_version", "value": flag["_version"]},
            {"op": "test", "path": claim, "value": self._fence.to_json()},
        ]
        for step in steps:
            kind = step["kind"]
            if kind in ("turnFlagOn", "turnFlagOff"):
                ops.append({"op": "replace", "path": f"{env}/on", "value": kind == "turnFlagOn"})
            elif kind == "updateFallthroughVariationOrRollout":
                ops.append(
                    {"op": "replace", "path": f"{env}/fallthrough", "value": _served(step, ids)}
                )
            else:
                rules = flag["environments"][self.environment].get("rules") or []
                index = next(i for i, r in enumerate(rules) if r.get("_id") == step["ruleId"])
                rule = {k: v for k, v in rules[index].items() if k not in ("variation", "rollout")}
                value = {**rule, **_served(step, ids)}
                ops.append({"op": "replace", "path": f"{env}/rules/{index}", "value": value})
        return ops

    def _serves(self, state: dict[str, Any], instruction: dict[str, Any]) -> bool:
        """Does the scoped target serve what `instruction` (our last, maybe-applied) set?"""
        ids = [v["_id"] for v in state["variations"]]
        target = state["rule"] if state["rule"] is not None else state["fallthrough"]
        if "variationId" in instruction:
            wanted = {instruction["variationId"]: 100.0}
        else:
            wanted = {
                vid: w * 100.0 / WEIGHT_SCALE for vid, w in instruction["rolloutWeights"].items()
            }
        served = _weights(target, ids)
        return {k: v for k, v in served.items() if v} == {k: v for k, v in wanted.items() if v}

    # -- HTTP with retries -----------------------------------------------------------------

    def _read(self, policy: RetryPolicy) -> dict[str, Any]:
        """GET the flag with this environment, retried: reading twice never harms anyone."""

        def attempt() -> dict[str, Any]:
            return dict(fastjson.loads(self._send("GET", params={"env": self.environment}).content))

        return retried(attempt, policy, sleep=self._sleep, where=self._where(), what="GET")

    def _send(self, method: str, **kwargs: Any) -> httpx.Response:
        """One request; retryable outcomes (429, 409, 5xx, network) are raised as Retry, any
        other refusal as the error it means."""
        response = send(self._client, method, self._path, _rate_limit_delay, **kwargs)
        status = response.status_code
        if status < 300:
            return response
        message = self._scrub(_server_message(response))
        if status == 404:
            raise FlagMismatch(f"{self._where()}: no such flag or project ({message})")
        cause = _NO_RETRY_CAUSES.get(status, "LaunchDarkly refused the request")
        raise FlagBackendError(f"{self._where()}: HTTP {status}: {cause}: {message}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")


def _weights(target: dict[str, Any], ids: list[str]) -> dict[str, float]:
    """Percent of the target's traffic per variation `_id`; empty if it serves nothing known."""
    if "variation" in target:
        return {ids[int(target["variation"])]: 100.0}
    weights: dict[str, float] = {}
    for entry in (target.get("rollout") or {}).get("variations", []):
        vid = ids[int(entry["variation"])]
        weights[vid] = weights.get(vid, 0.0) + entry.get("weight", 0) * 100.0 / WEIGHT_SCALE
    return weights


def _pointer(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901): `~` and `/` escaped."""
    return token.replace("~", "~0").replace("/", "~1")


def _served(change: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The flag's own `variation` or `rollout` for a semantic change (`_as_change` reversed)."""
    if "variationId" in change:
        return {"variation": ids.index(change["variationId"])}
    rollout: dict[str, Any] = {
        "variations": [
            {"variation": ids.index(vid), "weight": weight}
            for vid, weight in change["rolloutWeights"].items()
        ]
    }
    if "rolloutBucketBy" in change:
        rollout["bucketBy"] = change["rolloutBucketBy"]
    if "rolloutContextKind" in change:
        rollout["contextKind"] = change["rolloutContextKind"]
    return {"rollout": rollout}


def _as_change(target: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The semantic-patch fields that make a rule or fallthrough serve what `target` served."""
    if "variation" in target:
        return {"variationId": ids[int(target["variation"])]}
    rollout = target.get("rollout") or {}
    weights: dict[str, int] = {}
    for entry in rollout.get("variations", []):
        vid = ids[int(entry["variation"])]
        weights[vid] = weights.get(vid, 0) + int(entry.get("weight", 0))
    change: dict[str, Any] = {"rolloutWeights": weights}
    if "bucketBy" in rollout:
        change["rolloutBucketBy"] = rollout["bucketBy"]
    if "contextKind" in rollout:
        change["rolloutContextKind"] = rollout["contextKind"]
    return change


def _rate_limit_delay(response: httpx.Response) -> float | None:
    """Seconds LaunchDarkly asks us to wait: Retry-After, else X-Ratelimit-Reset (epoch ms)."""
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = response.headers.get("X-Ratelimit-Reset")
    if reset:
        try:
            return max(0.0, int(reset) / 1000 - time.time())
        except ValueError:
            pass
    return None


def _server_message(response: httpx.Response) -> str:
    """LaunchDarkly's own error text (`{"code", "message"}`), or the start of the body."""
    try:
        body = fastjson.loads(response.content)
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        code = f"{body['code']}: " if body.get("code") else ""
        return f"{code}{body['message']}"
    return response.text[:200]
