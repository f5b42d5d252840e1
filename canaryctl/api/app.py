"""The controller's HTTP API over the state store: runs, their events and verdicts, approve and
abort, Alertmanager's webhook, the OpenAPI document and the live page.

Approve and abort go through the store's request table, exactly as `canaryctl rollout approve`
and `abort` do from another terminal: whichever process drives the run acts on the request at
its next poll (about a second), so the API never touches a flag itself.

Every answer to a client's mistake is a 4xx with `{"error": ...}`: a body past the size limit,
JSON that is not JSON, a run id that is not one, a missing or unknown token (401), a viewer
asking for an operator's action (403). A state store that fails is a 503 naming it; anything
unexpected is logged and answered as a JSON 500. Store calls
run on Starlette's thread pool, each opening its own store handle (SQLite handles belong to one
thread), so a slow database never blocks the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from canaryctl.api.alerts import BadPayload, Watched, decide, read_alerts, requester
from canaryctl.api.openapi import MAX_RUN_ID, Operation, openapi_document
from canaryctl.api.page import live_page
from canaryctl.api.tokens import ApiTokens, Caller, Role
from canaryctl.controller.phases import Phase
from canaryctl.controller.store import RunRecord, StateStore
from canaryctl.errors import CanaryError, InvalidDocument, InvalidInput
from canaryctl.request_limits import BadJSON, LimitBody, parse_json
from canaryctl.runbook import Rollout, parse_document
from canaryctl.version import installed_version

__all__ = [
    "MAX_API_BODY_BYTES",
    "ClientError",
    "api_routes",
    "create_app",
    "json_errors",
    "protected_app",
    "protected_route",
]

log = logging.getLogger(__name__)

MAX_API_BODY_BYTES = 1024 * 1024
"""An Alertmanager group of a thousand alerts with annotations fits; nothing else here is big."""
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
PARSERS = 2
"""Submitted runbooks parsed at once; more wait their turn (the machine has few cores)."""

OpenStore = Callable[[], AbstractContextManager[StateStore]]
"""A new handle on the state store, closed by the caller (StateStore is its own context)."""
Submit = Callable[[Rollout], int]
"""Files a validated rollout for a controller to drive and returns its run id; InvalidInput
when it cannot be (its flag is held by another run). The store's own submit, given by
`controller serve`; without one, POST /api/v1/runs is neither served nor described."""


class _Handler(Protocol):
    def __call__(self, request: Request, caller: Caller | None) -> Awaitable[Response]: ...


class ClientError(Exception):
    """A request the API will not carry out; the message is safe to send back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _render_error(scope: Scope, status: int, message: str) -> dict[str, Any]:
    return {"error": message}


_RUN_ID = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RUN_ID},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
}
_BAD = (400, ("a malformed run id, query or body", "Error"))
_MISSING = (404, ("no such run", "Error"))
_TOO_BIG = (413, ("the body is larger than the limit", "Error"))
_STORE = (503, ("the state store failed", "Error"))

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/", "livePage", "the live page of the runs (reads the JSON API)", None,
              {200: ("HTML; give the token as #token=... in the address", None)},
              content_type="text/html", tags=("page",)),
    Operation("GET", "/openapi.json", "openapi", "this document", None,
              {200: ("the OpenAPI 3.1 document", "OpenAPI")}, tags=("meta",)),
    Operation("GET", "/api/v1/runs", "listRuns", "recent runs, newest first", Role.VIEWER,
              {200: ("the runs", "RunList"), 400: _BAD[1], 503: _STORE[1]},
              parameters=(_LIMIT,)),
    Operation("GET", "/api/v1/runs/{run_id}", "getRun",
              "one run with its journal, its verdicts and its chart", Role.VIEWER,
              {200: ("the run", "RunDetail"), 400: _BAD[1], 404: _MISSING[1], 503: _STORE[1]},
              parameters=(_RUN_ID,)),
    Operation("POST", "/api/v1/runs/{run_id}/approve", "approveRun",
              "let a run waiting at a `pause: approval` step go on", Role.OPERATOR,
              {202: ("filed; the run's driver acts on it within about a second", "RequestFiled"),
               400: _BAD[1], 404: _MISSING[1], 409: ("the run ended, or is not awaiting "
               "approval", "Error"), 413: _TOO_BIG[1], 503: _STORE[1]},
              parameters=(_RUN_ID,)),
    Operation("POST", "/api/v1/runs/{run_id}/abort", "abortRun",
              "ask a run to restore its flag and stop", Role.OPERATOR,
              {202: ("filed; the run's driver acts on it within about a second", "RequestFiled"),
               400: _BAD[1], 404: _MISSING[1], 409: ("the run already ended", "Error"),
               413: _TOO_BIG[1], 503: _STORE[1]},
              parameters=(_RUN_ID,)),
    Operation("POST", "/api/v1/alertmanager", "alertmanagerWebhook",
              "Alertmanager's (or Grafana's) webhook: firing alerts matching a running "
              "rollout's abort_on abort it", Role.OPERATOR,
              {200: ("what the alerts did", "AlertOutcome"),
               400: ("not JSON, or not a webhook payload", "Error"), 413: _TOO_BIG[1],
               503: _STORE[1]},
              request_schema="AlertmanagerPayload", tags=("alerts",)),
)  # fmt: skip
"""Every route the API serves, and all the OpenAPI document says (one table for both)."""
SUBMIT = Operation(
    "POST", "/api/v1/runs", "submitRun",
    "submit a Rollout runbook (YAML or JSON) for a controller to drive", Role.OPERATOR,
    {201: ("submitted; a controller drives it", "RunSubmitted"),
     400: ("the body is not UTF-8 text", "Error"),
     409: ("refused: its flag is held by another run", "Error"), 413: _TOO_BIG[1],
     422: ("not a valid Rollout: every problem with its field path", "Error"), 503: _STORE[1]},
    request_schema="Runbook",
)  # fmt: skip
"""Served only when `api_routes` is given the store's submit."""


def _whole(text: str, highest: int) -> int | None:
    """`text` as a whole number from 1 to `highest`, or None; never int() of a huge string."""
    if not text.isascii() or not text.isdigit() or len(text) > len(str(highest)):
        return None
    value = int(text)
    return value if 1 <= value <= highest else None


def _run_id(request: Request) -> int:
    value = _whole(request.path_params["run_id"], MAX_RUN_ID)
    if value is None:
        raise ClientError(400, "the run id must be a whole number from 1")
    return value


def _limit(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    value = _whole(text, MAX_LIMIT)
    if value is None:
        raise ClientError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return value


def _verdicts(events: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"at": e.at, **e.data} for e in events if e.type == "analysis"]


def _detail(record: RunRecord, events: Sequence[Any]) -> dict[str, Any]:
    from canaryctl.report import chart_svg, timeline

    return {
        "run": record.to_dict(),
        "events": [e.to_dict() for e in events],
        "verdicts": _verdicts(events),
        "chart_svg": chart_svg(timeline(record, events)),
    }


class _Api:
    def __init__(
        self,
        open_store: OpenStore,
        tokens: ApiTokens,
        *,
        now: Callable[[], float],
        max_body_bytes: int,
        submit: Submit | None,
    ) -> None:
        self.open_store, self.tokens, self.now = open_store, tokens, now
        self.max_body_bytes, self.submit = max_body_bytes, submit
        self.operations = OPERATIONS if submit is None else (*OPERATIONS, SUBMIT)
        self._parsers: anyio.CapacityLimiter | None = None
        """Documents parsed at once (made on the event loop, at the first submit)."""
        self._alerts_lock = threading.Lock()
        """One webhook at a time, so two copies of one notification file one abort."""
        self.document = openapi_document(self.operations, installed_version())

    def routes(self) -> list[BaseRoute]:
        handlers: dict[str, _Handler] = {
            "livePage": self.page,
            "openapi": self.openapi,
            "listRuns": self.list_runs,
            "getRun": self.get_run,
            "approveRun": self.approve,
            "abortRun": self.abort,
            "alertmanagerWebhook": self.alertmanager,
            "submitRun": self.submit_run,
        }
        apps: dict[str, dict[str, ASGIApp]] = {}
        for op in self.operations:
            handler = handlers[op.operation_id]
            apps.setdefault(op.path, {})[op.method] = protected_app(
                op.method, op.path, op.role, self.tokens, handler,
                max_body_bytes=self.max_body_bytes,
            )  # fmt: skip
        return [_path_route(path, by_method) for path, by_method in apps.items()]

    # -- handlers --

    async def page(self, request: Request, caller: Caller | None) -> Response:
        return HTMLResponse(live_page())

    async def openapi(self, request: Request, caller: Caller | None) -> Response:
        return JSONResponse(self.document)

    async def list_runs(self, request: Request, caller: Caller | None) -> Response:
        limit = _limit(request)

        def read() -> list[dict[str, Any]]:
            with self.open_store() as store:
                return [record.to_dict() for record in store.runs(limit)]

        return JSONResponse({"runs": await run_in_threadpool(read)})

    async def get_run(self, request: Request, caller: Caller | None) -> Response:
        run_id = _run_id(request)

        def read() -> dict[str, Any]:
            with self.open_store() as store:
                record = store.run(run_id)
                if record is None:
                    raise ClientError(404, f"no run {run_id}")
                events = store.events(run_id)
            return _detail(record, events)

        return JSONResponse(await run_in_threadpool(read))

    async def approve(self, request: Request, caller: Caller | None) -> Response:
        return await self._request(request, caller, "approve")

    async def abort(self, request: Request, caller: Caller | None) -> Response:
        return await self._request(request, caller, "abort")

    async def _request(self, request: Request, caller: Caller | None, kind: str) -> Response:
        run_id = _run_id(request)
        assert caller is not None
        by = f"{caller.name} (api)"

        def file() -> int:
            with self.open_store() as store:
                record = store.run(run_id)
                if record is None:
                    raise ClientError(404, f"no run {run_id}")
                if record.finished:
                    raise ClientError(409, f"run {run_id} already ended: {record.outcome}")
                if kind == "approve" and record.phase != Phase.AWAITING_APPROVAL.value:
                    raise ClientError(409, f"run {run_id} is {record.phase}, not awaiting approval")
                return store.request(run_id, kind, by=by, at=self.now())

        request_id = await run_in_threadpool(file)
        log.info("%s requested for run %d by %s", kind, run_id, by)
        return JSONResponse(
            {"request_id": request_id, "run_id": run_id, "kind": kind, "by": by}, status_code=202
        )

    async def submit_run(self, request: Request, caller: Caller | None) -> Response:
        submit = self.submit
        assert submit is not None
        body = await request.body()

        def parse() -> Rollout:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ClientError(400, f"the body is not UTF-8 text (byte {exc.start})") from None
            try:
                # The controller's environment holds its secrets: a client's document never
                # reads it (`${NAME:-default}` takes its default, `${NAME}` is refused).
                return parse_document(text, "the request body", expect=Rollout, environ={})
            except InvalidDocument as exc:
                raise ClientError(422, str(exc)) from None

        # Off the event loop (/healthz and every other caller keep their answers), a few at a
        # time: each parse is bounded by the document limits, and so are they all together.
        if self._parsers is None:
            self._parsers = anyio.CapacityLimiter(PARSERS)
        rollout = await anyio.to_thread.run_sync(parse, limiter=self._parsers)

        def file() -> int:
            try:
                return submit(rollout)
            except InvalidInput as exc:
                raise ClientError(409, str(exc)) from None

        run_id = await run_in_threadpool(file)
        assert caller is not None
        log.info("run %d (%s) submitted by %s", run_id, rollout.metadata.name, caller.name)
        return JSONResponse({"run_id": run_id, "name": rollout.metadata.name}, status_code=201)

    async def alertmanager(self, request: Request, caller: Caller | None) -> Response:
        try:
            alerts = read_alerts(parse_json(await request.body()))
        except (BadJSON, BadPayload) as exc:
            raise ClientError(400, str(exc)) from None

        def act() -> dict[str, Any]:
            with self._alerts_lock, self.open_store() as store:
                watched = []
                for record in store.unfinished_runs():
                    abort_on = record.runbook.get("spec", {}).get("abort_on") or []
                    if not abort_on:
                        continue
                    asked = [r.requested_by for r in store.pending_requests(record.id)]
                    asked += [str(e.data.get("by")) for e in store.events(record.id, "request")]
                    watched.append(Watched(record.id, abort_on, asked))
                decisions, unmatched = decide(alerts, watched)
                for decision in decisions:
                    if decision.action == "abort":
                        by = requester(decision.alert)
                        store.request(decision.run_id, "abort", by=by, at=self.now())
                        log.warning("run %d: abort requested by %s", decision.run_id, by)
            for alert in unmatched:
                log.info("alert %s (fingerprint %s) matches no running rollout's abort_on",
                         alert.name, alert.fingerprint)  # fmt: skip
            return {
                "aborted": [_action(d) for d in decisions if d.action == "abort"],
                "repeats": [_action(d) for d in decisions if d.action == "repeat"],
                "unmatched": [{"alertname": a.name, "fingerprint": a.fingerprint}
                              for a in unmatched],
                "resolved": sum(a.status == "resolved" for a in alerts),
            }  # fmt: skip

        return JSONResponse(await run_in_threadpool(act))


def protected_app(
    method: str,
    path: str,
    role: Role | None,
    tokens: ApiTokens,
    handler: _Handler,
    *,
    max_body_bytes: int = MAX_API_BODY_BYTES,
) -> ASGIApp:
    """An endpoint whose caller must hold a token of `role` (None: anyone), whose body is
    limited, and whose ClientError is its 4xx and CanaryError its 503."""

    async def endpoint(request: Request) -> Response:
        caller = None
        if role is not None:
            caller = tokens.caller(request.headers.get("authorization"))
            if caller is None:
                return _error(401, "a bearer token is needed (Authorization: Bearer TOKEN)",
                              {"WWW-Authenticate": "Bearer"})  # fmt: skip
            if not caller.role.allows(role):
                return _error(403, f"{caller.name} is a {caller.role}; this needs an {role}")
        try:
            return await handler(request, caller)
        except ClientError as exc:
            return _error(exc.status, str(exc))
        except CanaryError as exc:
            log.warning("state store error on %s %s: %s", method, path, exc)
            return _error(503, f"the state store failed: {exc}")
        except Exception:  # a bug, or a store driver's own error: logged, answered in JSON
            log.exception("unexpected error on %s %s", method, path)
            return _error(500, "unexpected error; the controller's log has the details")

    return LimitBody(request_response(endpoint), max_body_bytes, _render_error)


def protected_route(
    method: str,
    path: str,
    role: Role | None,
    tokens: ApiTokens,
    handler: _Handler,
    *,
    max_body_bytes: int = MAX_API_BODY_BYTES,
) -> Route:
    """`protected_app` as the one route of its path."""
    app = protected_app(method, path, role, tokens, handler, max_body_bytes=max_body_bytes)
    return _path_route(path, {method: app})


def _path_route(path: str, by_method: dict[str, ASGIApp]) -> Route:
    """One route for a path and all its methods. Starlette answers a method that a path does
    not serve with a 405 whose Allow header names the methods of the first route on that path,
    so a route per method would leave the others out of it (`OPTIONS /api/v1/runs` would not
    name POST)."""
    return Route(path, _ByMethod(by_method), methods=list(by_method))


class _ByMethod:
    """An ASGI app handing each request to the app of its method (HEAD to GET's). A class, not
    a function: Starlette takes a function given to Route for a request handler."""

    def __init__(self, by_method: dict[str, ASGIApp]) -> None:
        self.by_method = by_method

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        app = self.by_method[method if method in self.by_method else "GET"]
        await app(scope, receive, send)


def _action(decision: Any) -> dict[str, Any]:
    return {
        "run_id": decision.run_id,
        "alertname": decision.alert.name,
        "fingerprint": decision.alert.fingerprint,
    }


def api_routes(
    open_store: OpenStore,
    tokens: ApiTokens,
    *,
    now: Callable[[], float] = time.time,
    max_body_bytes: int = MAX_API_BODY_BYTES,
    submit: Submit | None = None,
) -> list[BaseRoute]:
    """The API's routes (OPERATIONS, and SUBMIT when `submit` is given), each with its own body
    limit, for the controller's app.

    `open_store` gives a new store handle per call, used and closed on one worker thread. Mount
    the routes at the root of the app, with `json_errors` as its exception handlers so that an
    unknown path or method is a JSON 404/405 like every other answer.
    """
    api = _Api(open_store, tokens, now=now, max_body_bytes=max_body_bytes, submit=submit)
    return api.routes()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, dict(exc.headers or {}))


json_errors: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    HTTPException: _http_error
}
"""Starlette exception handlers: routing's own 404 and 405 answered as `{"error": ...}`."""


def create_app(
    open_store: OpenStore,
    tokens: ApiTokens,
    *,
    now: Callable[[], float] = time.time,
    submit: Submit | None = None,
) -> Starlette:
    """The API alone, as an app: for tests and for serving it without a controller."""
    routes = api_routes(open_store, tokens, now=now, submit=submit)
    return Starlette(routes=routes, exception_handlers=json_errors)
