"""A local stand-in for LaunchDarkly's REST API (the subset canaryctl writes through), for tests.

LaunchDarkly's service cannot run here, so this serves, on 127.0.0.1 and a free port:

- `GET /api/v2/flags/{project}/{key}?env={env}`: the flag with its variations (`_id`, `value`,
  `name`) and that environment's `on`, `fallthrough`, `offVariation`, `rules` and `_version`;
- `PATCH /api/v2/flags/{project}/{key}` with `domain-model=launchdarkly.semanticpatch`:
  `turnFlagOn`, `turnFlagOff`, `updateFallthroughVariationOrRollout` and
  `updateRuleVariationOrRollout`, applied all or nothing; each accepted patch bumps the
  environment's and the flag's `_version` by one. Without `environmentKey`, the flag-settings
  instructions `addCustomProperties`, `replaceCustomProperties` and `removeCustomProperties`
  change the flag's `customProperties` (`{key: {"name", "value": [...]}}`, as GET returns them)
  and bump only the flag's `_version`: targeting and the SDK's view are untouched.

- `PATCH` with a JSON Patch (`Content-Type: application/json`, `{"patch": [...], "comment"}`):
  `test` and `replace` operations on the flag as GET returns it, applied all or nothing; a
  failed `test` answers 409 and changes nothing. An accepted patch bumps the flag's `_version`,
  and an environment's `_version` (and its SDK view) when it touched that environment.

Errors look like LaunchDarkly's (`{"code", "message"}`): 401 for a wrong token, 404 for an unknown
flag, 400 for a bad instruction or content type, 405 when `approval_required` is set. `faults`
queues responses (429 with `Retry-After`, 503 bursts, 409) served before the real handling.

And the SDK's side, so the real `launchdarkly-server-sdk` follows what the REST client writes
(one base URL serves as the SDK's `base_uri`, `stream_uri` and `events_uri`):

- `GET /sdk/latest-all` (polling): `{"flags": {KEY: flag}, "segments": {}}` for the environment
  of the SDK key in `Authorization`, with an `ETag`; a matching `If-None-Match` gets a 304;
- `GET /all` (streaming, server-sent events): a `put` event with the whole data set
  (`{"path": "/", "data": {"flags", "segments"}}`) on connect, then a `patch` event
  (`{"path": "/flags/KEY", "data": flag}`) whenever a semantic patch or `edit()` changes that
  environment's targeting, and a comment line as heartbeat;
- `POST /bulk` and `POST /diagnostic`: analytics and diagnostic events, recorded and dropped.

An SDK key is bound to one (project, environment) with `sdk_key()`; an unknown key gets a 401, as
LaunchDarkly answers. Flags are translated from the REST shape into the SDK's (`variations` as
bare values, `on`, `offVariation`, `fallthrough`, `rules` with `id` and clauses, `version` = the
environment's `_version`, `salt`, `key`), as LaunchDarkly's own flag delivery does.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from canaryctl.chaos.server import BackgroundServer

__all__ = ["Fault", "LDServer", "make_flag", "sdk_flag", "serve"]

SEMANTIC_PATCH = "domain-model=launchdarkly.semanticpatch"
HEARTBEAT = 1.0
"""Seconds between comment lines on an idle stream: how a closed client is noticed."""


@dataclass(frozen=True)
class Fault:
    """One canned response served instead of the real handling."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    """Only serve this fault to requests with this method (GET or PATCH); None for any."""
    after: bool = False
    """Handle the request for real first, then answer with the fault (a lost response)."""


def make_flag(
    key: str,
    variations: list[tuple[str, str, str]],
    environments: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """A flag in the REST shape; `variations` are (_id, value, name) triples."""
    envs = {}
    for name, targeting in environments.items():
        envs[name] = {
            "on": True,
            "offVariation": 0,
            "rules": [],
            "_version": 1,
            **copy.deepcopy(targeting),
        }
    return {
        "key": key,
        "_version": 1,
        "variations": [{"_id": i, "value": v, "name": n} for i, v, n in variations],
        "environments": envs,
    }


class _Invalid(Exception):
    """An instruction the server refuses; the whole patch is dropped."""


@dataclass
class _Subscriber:
    """One open `/all` stream: where its events go, and which environment it serves."""

    project: str
    environment: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str]


class LDServer:
    """The state and the Starlette app; `requests` records (method, path, headers, body).

    SDK traffic is counted apart: `stream_connections` (`GET /all`), `polls` (`GET
    /sdk/latest-all`, of which `not_modified` got a 304), `patches_pushed` (patch events sent)
    and `events` (bodies posted to `/bulk` and `/diagnostic`, with their path).
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.flags: dict[tuple[str, str], dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.approval_required = False
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.sdk_keys: dict[str, tuple[str, str]] = {}
        self.stream_connections = 0
        self.polls = 0
        self.not_modified = 0
        self.patches_pushed = 0
        self.events: list[tuple[str, Any]] = []
        self._subscribers: list[_Subscriber] = []
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/api/v2/flags/{project}/{key}", self._flag, methods=["GET", "PATCH"]),
                Route("/sdk/latest-all", self._poll, methods=["GET"]),
                Route("/all", self._stream, methods=["GET"]),
                Route("/bulk", self._event, methods=["POST"]),
                Route("/diagnostic", self._event, methods=["POST"]),
            ]
        )
        self.base_url = ""

    def add(self, project: str, flag: dict[str, Any]) -> None:
        self.flags[(project, flag["key"])] = flag

    def sdk_key(self, key: str, project: str, environment: str) -> None:
        """Accept `key` on the SDK endpoints as the SDK key of `environment` in `project`."""
        self.sdk_keys[key] = (project, environment)

    def env(self, project: str, key: str, env: str) -> dict[str, Any]:
        """The live environment targeting (a copy), for assertions."""
        with self._lock:
            return copy.deepcopy(self.flags[(project, key)]["environments"][env])

    def edit(self, project: str, key: str, env: str, **changes: Any) -> None:
        """A human editing targeting in the UI: the versions move, no patch involved."""
        with self._lock:
            flag = self.flags[(project, key)]
            flag["environments"][env].update(copy.deepcopy(changes))
            flag["environments"][env]["_version"] += 1
            flag["_version"] += 1
            self._publish(project, flag, env)

    async def _flag(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(
            (request.method, request.url.path, dict(request.headers), body.decode() or None)
        )
        if request.headers.get("authorization") != self.token:
            return _error(401, "unauthorized", "Invalid access token")
        with self._lock:
            fault = next((f for f in self.faults if f.method in (None, request.method)), None)
            if fault is not None:
                self.faults.remove(fault)
                if not fault.after:
                    return _error(fault.status, "fault", "injected", fault.headers)
            flag = self.flags.get((request.path_params["project"], request.path_params["key"]))
            if flag is None:
                return _error(404, "not_found", "Unknown resource")
            response = self._handle(flag, request, body)
            if request.method == "PATCH" and response.status_code == 200:
                environment = _environment_of(json.loads(body))
                if environment is not None:
                    self._publish(request.path_params["project"], flag, environment)
            if fault is not None:
                return _error(fault.status, "fault", "injected after applying", fault.headers)
            return response

    # -- the SDK's endpoints -------------------------------------------------------------------

    def _sdk_environment(self, request: Request) -> tuple[str, str] | None:
        return self.sdk_keys.get(request.headers.get("authorization", ""))

    def _data_set(self, project: str, environment: str) -> dict[str, Any]:
        flags = {
            key: sdk_flag(flag, environment)
            for (owner, key), flag in self.flags.items()
            if owner == project and environment in flag["environments"]
        }
        return {"flags": flags, "segments": {}}

    async def _poll(self, request: Request) -> Response:
        where = self._sdk_environment(request)
        if where is None:
            return _error(401, "unauthorized", "Invalid SDK key")
        with self._lock:
            self.polls += 1
            data = self._data_set(*where)
        body = json.dumps(data, sort_keys=True)
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == etag:
            self.not_modified += 1
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    async def _stream(self, request: Request) -> Response:
        where = self._sdk_environment(request)
        if where is None:
            return _error(401, "unauthorized", "Invalid SDK key")
        queue: asyncio.Queue[str] = asyncio.Queue()
        subscriber = _Subscriber(*where, asyncio.get_running_loop(), queue)
        with self._lock:
            # Registered under the lock with the data set, so no patch falls between the two.
            self.stream_connections += 1
            put = {"path": "/", "data": self._data_set(*where)}
            self._subscribers.append(subscriber)
        queue.put_nowait(f"event: put\ndata: {json.dumps(put)}\n\n")

        async def events() -> AsyncIterator[str]:
            try:
                while not self._closing.is_set():
                    try:
                        yield await asyncio.wait_for(queue.get(), HEARTBEAT)
                    except TimeoutError:
                        yield ":\n\n"
            finally:
                with self._lock:
                    self._subscribers.remove(subscriber)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def _event(self, request: Request) -> Response:
        if self._sdk_environment(request) is None:
            return _error(401, "unauthorized", "Invalid SDK key")
        self.events.append((request.url.path, json.loads(await request.body() or b"null")))
        return Response(status_code=202)

    def _publish(self, project: str, flag: dict[str, Any], environment: str) -> None:
        """Push the flag's new SDK form to every stream of that environment (lock held)."""
        patch = {"path": f"/flags/{flag['key']}", "data": sdk_flag(flag, environment)}
        event = f"event: patch\ndata: {json.dumps(patch)}\n\n"
        for subscriber in self._subscribers:
            if (subscriber.project, subscriber.environment) == (project, environment):
                subscriber.loop.call_soon_threadsafe(subscriber.queue.put_nowait, event)
                self.patches_pushed += 1

    # -- REST ------------------------------------------------------------------------------------

    def _handle(self, flag: dict[str, Any], request: Request, body: bytes) -> Response:
        if request.method == "GET":
            return JSONResponse(_view(flag, request.query_params.get("env")))
        content_type = request.headers.get("content-type", "")
        json_patch = content_type.strip() == "application/json"
        if SEMANTIC_PATCH not in content_type and not json_patch:
            return _error(400, "invalid_request", "expected a semantic patch or a JSON patch")
        if self.approval_required:
            return _error(405, "method_not_allowed", "approval is required to make changes")
        if json_patch:
            return self._json_patch(flag, json.loads(body))
        return self._patch(flag, json.loads(body))

    def _json_patch(self, flag: dict[str, Any], body: dict[str, Any]) -> Response:
        """RFC 6902 `test` and `replace` on the flag's REST shape, all or nothing."""
        patched = copy.deepcopy(flag)
        touched: set[str] = set()
        for op in body.get("patch") or []:
            parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
            try:
                parent = patched
                for part in parts[:-1]:
                    parent = parent[int(part)] if isinstance(parent, list) else parent[part]
                last: Any = int(parts[-1]) if isinstance(parent, list) else parts[-1]
                if op["op"] == "test":
                    if parent[last] != op["value"]:
                        return _error(409, "conflict", f"test failed at {op['path']}")
                elif op["op"] == "replace":
                    parent[last] = copy.deepcopy(op["value"])
                else:
                    return _error(400, "invalid_request", f"unsupported op {op['op']!r}")
            except (KeyError, IndexError, ValueError, TypeError):
                if op["op"] == "test":
                    return _error(409, "conflict", f"test failed at {op['path']}: no such value")
                return _error(400, "invalid_request", f"no such path {op['path']}")
            if op["op"] == "replace" and parts[0] == "environments":
                touched.add(parts[1])
        for env_key in touched:
            patched["environments"][env_key]["_version"] += 1
        patched["_version"] += 1
        flag.clear()
        flag.update(patched)
        env = next(iter(touched), None)
        return JSONResponse(_view(flag, env))

    def _patch(self, flag: dict[str, Any], body: dict[str, Any]) -> Response:
        env_key = body.get("environmentKey")
        if env_key is None:
            return self._settings(flag, body.get("instructions") or [])
        if env_key not in flag["environments"]:
            return _error(400, "invalid_request", "unknown environmentKey")
        env = copy.deepcopy(flag["environments"][env_key])
        ids = [v["_id"] for v in flag["variations"]]
        try:
            for instruction in body.get("instructions") or []:
                _apply(env, ids, instruction)
        except _Invalid as exc:
            return _error(400, "invalid_request", str(exc))
        env["_version"] += 1
        flag["environments"][env_key] = env
        flag["_version"] += 1
        return JSONResponse(_view(flag, env_key))

    def _settings(self, flag: dict[str, Any], instructions: list[dict[str, Any]]) -> Response:
        """Flag-level instructions: custom properties, all or nothing."""
        properties = copy.deepcopy(flag.get("customProperties") or {})
        for instruction in instructions:
            kind, key = instruction.get("kind"), instruction.get("key")
            values = instruction.get("values")
            if not isinstance(key, str) or not isinstance(values, list):
                return _error(400, "invalid_request", f"{kind}: needs key and values")
            if kind == "addCustomProperties":
                if key in properties:
                    return _error(400, "invalid_request", f"custom property {key} exists")
                properties[key] = {"name": instruction.get("name", key), "value": values}
            elif kind == "replaceCustomProperties" and key in properties:
                properties[key] = {"name": instruction.get("name", key), "value": values}
            elif kind == "removeCustomProperties" and key in properties:
                left = [v for v in properties[key]["value"] if v not in values]
                if left:
                    properties[key]["value"] = left
                else:
                    del properties[key]
            else:
                return _error(400, "invalid_request", f"unsupported instruction {kind!r} on {key}")
        flag["customProperties"] = properties
        flag["_version"] += 1
        return JSONResponse(_view(flag, None))


def sdk_flag(flag: dict[str, Any], environment: str) -> dict[str, Any]:
    """The REST flag as the SDK receives it for one environment (`/sdk/latest-all`, `/all`)."""
    env = flag["environments"][environment]
    rules = []
    for rule in env.get("rules") or []:
        served = {k: copy.deepcopy(rule[k]) for k in ("variation", "rollout") if k in rule}
        clauses = [{k: v for k, v in c.items() if k != "_id"} for c in rule.get("clauses", [])]
        rules.append({"id": rule["_id"], "clauses": clauses, "trackEvents": False, **served})
    return {
        "key": flag["key"],
        "version": env["_version"],
        "on": env.get("on", False),
        "variations": [v["value"] for v in flag["variations"]],
        "offVariation": env.get("offVariation"),
        "fallthrough": copy.deepcopy(env.get("fallthrough") or {}),
        "rules": rules,
        "targets": [],
        "contextTargets": [],
        "prerequisites": [],
        "salt": env.get("salt", flag["key"]),
        "trackEvents": False,
        "trackEventsFallthrough": False,
        "clientSide": False,
        "deleted": False,
    }


def _environment_of(body: dict[str, Any]) -> str | None:
    """The environment a patch changed: a semantic patch names it, a JSON patch's paths do."""
    if body.get("environmentKey") is not None:
        return str(body["environmentKey"])
    for op in body.get("patch") or []:
        parts = op.get("path", "").split("/")
        if op.get("op") == "replace" and len(parts) > 2 and parts[1] == "environments":
            return parts[2]
    return None


def _view(flag: dict[str, Any], env: str | None) -> dict[str, Any]:
    out = copy.deepcopy(flag)
    out["environments"] = {k: v for k, v in out["environments"].items() if k == env}
    return out


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _served(ids: list[str], instruction: dict[str, Any]) -> dict[str, Any]:
    """The `variation` or `rollout` an update instruction asks for, in the flag's own shape."""
    if "variationId" in instruction:
        if instruction["variationId"] not in ids:
            raise _Invalid(f"unknown variation {instruction['variationId']}")
        return {"variation": ids.index(instruction["variationId"])}
    weights = instruction.get("rolloutWeights")
    if not isinstance(weights, dict) or sum(weights.values()) != 100_000:
        raise _Invalid("rolloutWeights must sum to 100000")
    if any(vid not in ids for vid in weights):
        raise _Invalid("rolloutWeights names an unknown variation")
    rollout: dict[str, Any] = {
        "variations": [{"variation": ids.index(vid), "weight": w} for vid, w in weights.items()]
    }
    if "rolloutBucketBy" in instruction:
        rollout["bucketBy"] = instruction["rolloutBucketBy"]
    if "rolloutContextKind" in instruction:
        rollout["contextKind"] = instruction["rolloutContextKind"]
    return {"rollout": rollout}


def _apply(env: dict[str, Any], ids: list[str], instruction: dict[str, Any]) -> None:
    kind = instruction.get("kind")
    if kind == "turnFlagOn":
        env["on"] = True
    elif kind == "turnFlagOff":
        env["on"] = False
    elif kind == "updateFallthroughVariationOrRollout":
        env["fallthrough"] = _served(ids, instruction)
    elif kind == "updateRuleVariationOrRollout":
        rule = next((r for r in env["rules"] if r["_id"] == instruction.get("ruleId")), None)
        if rule is None:
            raise _Invalid(f"unknown rule {instruction.get('ruleId')}")
        rule.pop("variation", None)
        rule.pop("rollout", None)
        rule.update(_served(ids, instruction))
    else:
        raise _Invalid(f"unsupported instruction kind {kind!r}")


@contextmanager
def serve(server: LDServer, port: int = 0) -> Iterator[LDServer]:
    """Run `server` in a thread on 127.0.0.1 until the block ends; `port` 0 picks a free one.
    Serving the same server again on its old port is LaunchDarkly coming back."""
    server._closing.clear()
    background = BackgroundServer(server.app, port=port).start()
    server.base_url = background.url
    try:
        yield server
    finally:
        server._closing.set()  # ends the SDK streams, so the server can stop
        background.stop()
