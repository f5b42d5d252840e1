"""A local stand-in for Split's Admin API (the subset canaryctl uses), for tests.

Split's Admin API is a SaaS, so this follows its published reference (docs.split.io/reference:
"Get feature flag definition in environment", "Full update feature flag definition in
environment", "Update feature flag", "Rate Limiting", "Authentication"), serving on 127.0.0.1:

- `GET /internal/api/v2/splits/ws/{ws}/{flag}`: the flag (`name`, `description`,
  `trafficType`, `tags`, `creationTime`);
- `PATCH` on the same path: a JSON Patch (`replace` on `/description`, `/tags` or
  `/rolloutStatus`), the flag-level update; it leaves every environment's definition alone;
- `GET /internal/api/v2/splits/ws/{ws}/{flag}/environments/{env}`: the definition (`name`,
  `environment`, `killed`, `treatments`, `defaultTreatment`, `trafficAllocation`, `rules` of
  `{condition: {combiner, matchers}, buckets}`, `defaultRule`, `creationTime`,
  `lastUpdateTime`);
- `PUT` on that path: a full update (`treatments`, `defaultTreatment`, `rules`, `defaultRule`,
  `comment`), validated (bucket sizes are whole percents summing to 100, treatments known) and
  stamped with a newer `lastUpdateTime` (milliseconds, never going back); the comment is kept in
  `history`.

Auth is `Authorization: Bearer <admin api key>`, 401 otherwise; an unknown flag, workspace or
environment is 404; with `approvals_required` a write is 403 "Approvals are required", as Split
answers when change control is on. Errors have Split's shape (`{code, message, details,
transactionId}`). `faults` queues canned answers (429 with `X-RateLimit-Reset-Seconds-Org` /
`-IP`, 5xx bursts, a lost answer with `after`) served before the real handling, and `edit()` is a
human changing the definition in Split's UI.

And the SDK's side, which here stands in for Split's own delivery of definitions to SDKs: when
`localhost_file(path, ws, env)` is set, every change to that environment rewrites `path`
(atomically) as the Split SDK's localhost JSON file, the same format as the SDK's `splitChanges`
(`{"ff": {"d": [split], "s", "t"}, "rbs": ...}`), compiled from the definitions the way Split
compiles a definition for SDKs: each rule becomes a ROLLOUT condition whose matchers select the
attribute (`keySelector.attribute`) and whose partitions are the rule's buckets, then the default
rule on ALL_KEYS; `changeNumber` and `t` are `lastUpdateTime`, so the SDK takes each newer file.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canaryctl.chaos.server import BackgroundServer

__all__ = ["Fault", "SplitServer", "make_definition", "sdk_split", "serve", "tier_rule"]

_PREFIX = "/internal/api/v2/splits/ws/{ws}/{flag}"


@dataclass(frozen=True)
class Fault:
    """One canned response served instead of the real handling."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    """Only serve this fault to requests with this method; None for any."""
    after: bool = False
    """Handle the request for real first, then answer with the fault (a lost response)."""


def make_definition(
    treatments: list[str],
    default_rule: list[tuple[str, int]],
    rules: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A definition as a PUT would carry it; `default_rule` as (treatment, size) pairs."""
    return {
        "treatments": [{"name": name, "configurations": None} for name in treatments],
        "defaultTreatment": treatments[0],
        "trafficAllocation": 100,
        "rules": copy.deepcopy(rules or []),
        "defaultRule": [{"treatment": t, "size": s} for t, s in default_rule],
        "killed": False,
        **extra,
    }


def tier_rule(tier: str, buckets: list[tuple[str, int]], attribute: str = "tier") -> dict[str, Any]:
    """A rule for one value of an attribute, as Split's rule grammar writes it."""
    return {
        "condition": {
            "combiner": "AND",
            "matchers": [{"type": "IN_LIST_STRING", "attribute": attribute, "strings": [tier]}],
        },
        "buckets": [{"treatment": t, "size": s} for t, s in buckets],
    }


class _Invalid(Exception):
    """A body the server refuses with 400."""


class SplitServer:
    """The state and the Starlette app; `requests` records (method, path, headers, body)."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.flags: dict[tuple[str, str], dict[str, Any]] = {}
        self.definitions: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[tuple[str, str, str, str]] = []
        """(flag, environment, comment, body) of every accepted definition write."""
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.faults: list[Fault] = []
        self.approvals_required = False
        self.base_url = ""
        self._lock = threading.Lock()
        self._clock_ms = 0
        self._files: dict[tuple[str, str], Path] = {}
        self.app = Starlette(
            routes=[
                Route(_PREFIX, self._flag, methods=["GET", "PATCH"]),
                Route(_PREFIX + "/environments/{env}", self._definition, methods=["GET", "PUT"]),
            ]
        )

    # -- set-up and inspection -------------------------------------------------------------

    def add(
        self, ws: str, name: str, environments: dict[str, dict[str, Any]], description: str = ""
    ) -> None:
        self.flags[(ws, name)] = {
            "name": name,
            "description": description,
            "trafficType": {"id": "tt-user", "name": "user"},
            "tags": [],
            "creationTime": self._now(),
        }
        for env, definition in environments.items():
            self.definitions[(ws, name, env)] = self._stamped(ws, name, env, definition)

    def definition(self, ws: str, name: str, env: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.definitions[(ws, name, env)])

    def edit(self, ws: str, name: str, env: str, **changes: Any) -> None:
        """A human editing the definition in Split's UI: a newer `lastUpdateTime`."""
        with self._lock:
            current = self.definitions[(ws, name, env)]
            current.update(copy.deepcopy(changes))
            current["lastUpdateTime"] = self._now()
            self.history.append((name, env, "edited in the UI", ""))
        self._render(ws, env)

    def localhost_file(self, path: Path, ws: str, env: str) -> None:
        """From now on, keep `path` the SDK's localhost JSON file of `env`'s definitions."""
        self._files[(ws, env)] = path
        self._render(ws, env)

    # -- handlers ----------------------------------------------------------------------------

    async def _flag(self, request: Request) -> Response:
        body = (await request.body()).decode()
        early = self._gate(request, body)
        if early is not None:
            return early
        ws, name = request.path_params["ws"], request.path_params["flag"]
        with self._lock:
            flag = self.flags.get((ws, name))
            if flag is None:
                return _error(404, f"Feature flag {name} not found in workspace {ws}")
            if request.method == "PATCH":
                try:
                    _patch_flag(flag, json.loads(body))
                except (_Invalid, ValueError) as exc:
                    return _error(400, str(exc))
            answer = copy.deepcopy(flag)
        return self._late(request, JSONResponse(answer))

    async def _definition(self, request: Request) -> Response:
        body = (await request.body()).decode()
        early = self._gate(request, body)
        if early is not None:
            return early
        ws, name, env = (request.path_params[k] for k in ("ws", "flag", "env"))
        with self._lock:
            current = self.definitions.get((ws, name, env))
            if current is None:
                return _error(404, f"Feature flag {name} has no definition in environment {env}")
            if request.method == "PUT":
                if self.approvals_required:
                    return _error(403, "Approvals are required. orgId=org envId=" + env)
                try:
                    update = json.loads(body)
                    _validate(update)
                except (_Invalid, ValueError) as exc:
                    return _error(400, str(exc))
                for key in ("treatments", "defaultTreatment", "rules", "defaultRule"):
                    current[key] = update[key]
                for key in ("trafficAllocation", "baselineTreatment"):
                    if key in update:
                        current[key] = update[key]
                current["lastUpdateTime"] = self._now()
                self.history.append((name, env, str(update.get("comment", "")), body))
            answer = copy.deepcopy(current)
        if request.method == "PUT":
            self._render(ws, env)
        return self._late(request, JSONResponse(answer))

    def _gate(self, request: Request, body: str) -> Response | None:
        """Record the request; refuse a wrong key; serve a queued fault (unless `after`)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.method, request.url.path, headers, body))
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid or expired API key")
        fault = self._fault(request.method, after=False)
        if fault is not None:
            return _error(fault.status, f"injected {fault.status}", fault.headers)
        return None

    def _late(self, request: Request, response: Response) -> Response:
        fault = self._fault(request.method, after=True)
        if fault is not None:
            return _error(fault.status, f"injected {fault.status}", fault.headers)
        return response

    def _fault(self, method: str, *, after: bool) -> Fault | None:
        first = self.faults[0] if self.faults else None
        if first is not None and first.method in (None, method) and first.after == after:
            return self.faults.pop(0)
        return None

    # -- the SDK's side ----------------------------------------------------------------------

    def _render(self, ws: str, env: str) -> None:
        path = self._files.get((ws, env))
        if path is None:
            return
        with self._lock:
            splits = [
                sdk_split(name, definition)
                for (w, name, e), definition in self.definitions.items()
                if (w, e) == (ws, env)
            ]
        till = max((s["changeNumber"] for s in splits), default=-1)
        document = {"ff": {"d": splits, "s": -1, "t": till}, "rbs": {"d": [], "s": -1, "t": -1}}
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(document, indent=1))
        os.replace(partial, path)  # the SDK never reads half a file

    def _stamped(self, ws: str, name: str, env: str, definition: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        return {
            "name": name,
            "environment": {"id": f"env-{env}", "name": env},
            "trafficType": {"id": "tt-user", "name": "user"},
            **copy.deepcopy(definition),
            "creationTime": now,
            "lastUpdateTime": now,
        }

    def _now(self) -> int:
        """Milliseconds, strictly increasing: two writes in one millisecond still differ."""
        self._clock_ms = max(int(time.time() * 1000), self._clock_ms + 1)
        return self._clock_ms


def sdk_split(name: str, definition: dict[str, Any]) -> dict[str, Any]:
    """A definition compiled into the SDK's split (the `splitChanges` shape)."""
    conditions = [_sdk_condition(rule, index) for index, rule in enumerate(definition["rules"])]
    conditions.append(
        {
            "conditionType": "ROLLOUT",
            "matcherGroup": {
                "combiner": "AND",
                "matchers": [
                    {
                        "keySelector": {"trafficType": "user", "attribute": None},
                        "matcherType": "ALL_KEYS",
                        "negate": False,
                    }
                ],
            },
            "partitions": copy.deepcopy(definition["defaultRule"]),
            "label": "default rule",
        }
    )
    seed = zlib.crc32(name.encode()) & 0x7FFFFFFF
    return {
        "name": name,
        "trafficTypeName": "user",
        "trafficAllocation": definition.get("trafficAllocation", 100),
        "trafficAllocationSeed": seed + 1,
        "seed": seed,
        "status": "ACTIVE",
        "killed": bool(definition.get("killed")),
        "defaultTreatment": definition["defaultTreatment"],
        "changeNumber": definition["lastUpdateTime"],
        "algo": 2,
        "configurations": {},
        "conditions": conditions,
        "sets": [],
    }


def _sdk_condition(rule: dict[str, Any], index: int) -> dict[str, Any]:
    matchers = []
    for matcher in rule["condition"]["matchers"]:
        if matcher["type"] not in ("IN_LIST_STRING", "WHITELIST"):
            raise _Invalid(f"this stand-in compiles attribute list matchers only: {matcher}")
        matchers.append(
            {
                "keySelector": {"trafficType": "user", "attribute": matcher["attribute"]},
                "matcherType": "WHITELIST",
                "negate": bool(matcher.get("negate")),
                "whitelistMatcherData": {"whitelist": list(matcher["strings"])},
            }
        )
    return {
        "conditionType": "ROLLOUT",
        "matcherGroup": {"combiner": rule["condition"].get("combiner"), "matchers": matchers},
        "partitions": copy.deepcopy(rule["buckets"]),
        "label": f"rule {index}",
    }


def _validate(update: Any) -> None:
    if not isinstance(update, dict):
        raise _Invalid("the body must be a feature flag definition")
    for key in ("treatments", "defaultTreatment", "defaultRule"):
        if key not in update:
            raise _Invalid(f"{key} is mandatory")
    names = [t.get("name") for t in update["treatments"]]
    if not names or update["defaultTreatment"] not in names:
        raise _Invalid("defaultTreatment must be one of the treatments")
    targets = [update["defaultRule"]] + [r.get("buckets") for r in update.get("rules") or []]
    for buckets in targets:
        sizes = [b.get("size") for b in buckets or []]
        if not all(isinstance(s, int) and 0 <= s <= 100 for s in sizes) or sum(sizes) != 100:
            raise _Invalid(f"bucket sizes must be whole percents summing to 100: {buckets}")
        if any(b.get("treatment") not in names for b in buckets):
            raise _Invalid(f"a bucket names an unknown treatment: {buckets}")


def _patch_flag(flag: dict[str, Any], ops: Any) -> None:
    if not isinstance(ops, list):
        raise _Invalid("the body must be a JSON Patch (a list of operations)")
    for op in ops:
        path = op.get("path")
        if op.get("op") != "replace" or path not in ("/description", "/tags", "/rolloutStatus"):
            raise _Invalid(f"unsupported operation {op}")
        flag[path[1:]] = op["value"]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"code": status, "message": message, "details": "", "transactionId": "t-local"}
    return JSONResponse(body, status_code=status, headers=headers)


@contextmanager
def serve(server: SplitServer, port: int = 0) -> Iterator[SplitServer]:
    """Run `server` in a thread on 127.0.0.1 until the block ends; `port` 0 picks a free one."""
    background = BackgroundServer(server.app, port=port).start()
    server.base_url = background.url
    try:
        yield server
    finally:
        background.stop()
