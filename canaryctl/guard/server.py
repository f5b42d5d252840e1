"""`guard run --listen`: the guard's own Alertmanager webhook, so an alert trips it as fast as
its next tick (same payload, tokens and answers as the controller's /api/v1/alertmanager), and
its state for Prometheus at /metrics:

    canaryctl_guard_tripped{guard}        1 once it tripped, until re-armed; else 0
    canaryctl_guard_phase{guard, phase}   1 for the current phase (watching, standing_aside,
                                          tripped), else 0

which the shipped alert rule CanaryctlGuardTripped (deploy/prometheus) pages on."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from canaryctl.api.alerts import BadPayload, read_alerts
from canaryctl.api.app import ClientError, json_errors, protected_route
from canaryctl.api.tokens import ApiTokens, Caller, Role
from canaryctl.guard.watch import GuardPhase, GuardWatch
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
        shown = [{"alertname": a.name, "fingerprint": a.fingerprint} for a in hits]
        aside = watch.phase is GuardPhase.STANDING_ASIDE
        return JSONResponse(
            {
                "phase": None if watch.phase is None else watch.phase.value,
                # Standing aside, a matching alert is held until the rollout ends, not acted on.
                "tripping": [] if aside else shown,
                "held": shown if aside else [],
                "unmatched": len(firing) - len(hits),
                "resolved": len(alerts) - len(firing),
            }
        )

    async def metrics(request: Request, caller: Caller | None) -> Response:
        return Response(guard_exposition(watch), media_type=CONTENT_TYPE_LATEST)

    routes = [
        protected_route("POST", "/api/v1/alertmanager", Role.OPERATOR, tokens, alertmanager),
        protected_route("GET", "/metrics", None, tokens, metrics),
    ]
    return Starlette(routes=routes, exception_handlers=json_errors)


def guard_exposition(watch: GuardWatch) -> bytes:
    """The guard's gauges, read from the watch at scrape time."""
    registry = CollectorRegistry()
    name = watch.guard.metadata.name
    tripped = Gauge("canaryctl_guard_tripped", "1 once the guard tripped, until re-armed",
                    ["guard"], registry=registry)  # fmt: skip
    phase = Gauge("canaryctl_guard_phase", "1 for the guard's current phase", ["guard", "phase"],
                  registry=registry)  # fmt: skip
    tripped.labels(name).set(1 if watch.phase is GuardPhase.TRIPPED else 0)
    for each in GuardPhase:
        phase.labels(name, each.value).set(1 if watch.phase is each else 0)
    return generate_latest(registry)
