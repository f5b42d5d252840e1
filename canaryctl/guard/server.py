"""`guard run --listen`: the guard's own Alertmanager webhook, so an alert trips it as fast as
its next tick. Same payload, tokens and answers as the controller's /api/v1/alertmanager."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from canaryctl.api.alerts import BadPayload, read_alerts
from canaryctl.api.app import ClientError, json_errors, protected_route
from canaryctl.api.tokens import ApiTokens, Caller, Role
from canaryctl.guard.watch import GuardWatch
from canaryctl.request_limits import BadJSON, parse_json

__all__ = ["guard_app"]


def guard_app(watch: GuardWatch, tokens: ApiTokens) -> Starlette:
    async def alertmanager(request: Request, caller: Caller | None) -> Response:
        try:
            alerts = read_alerts(parse_json(await request.body()))
        except (BadJSON, BadPayload) as exc:
            raise ClientError(400, str(exc)) from None
        hits = watch.fire(alerts)
        firing = [a for a in alerts if a.status == "firing"]
        return JSONResponse(
            {
                "phase": None if watch.phase is None else watch.phase.value,
                "tripping": [{"alertname": a.name, "fingerprint": a.fingerprint} for a in hits],
                "unmatched": len(firing) - len(hits),
                "resolved": len(alerts) - len(firing),
            }
        )

    route = protected_route("POST", "/api/v1/alertmanager", Role.OPERATOR, tokens, alertmanager)
    return Starlette(routes=[route], exception_handlers=json_errors)
