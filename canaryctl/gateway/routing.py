"""Pick the model for a request: build its LaunchDarkly context, evaluate the route's flag.

The real LaunchDarkly SDK does the evaluation, reading the flag file through its file data source
(`offline=True` would ignore that source, hence a dummy SDK key with events off). The same
targeting, percentage bucketing and stickiness therefore hold here as in production, and a
rewritten flag file is picked up within `poll_interval`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldclient import Context
from ldclient.client import LDClient
from ldclient.config import Config
from ldclient.integrations import Files

from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.runbook.gateway import ContextSpec, GatewaySpec, ModelSpec, RouteSpec

__all__ = ["Choice", "FlagRouter", "request_context"]

log = logging.getLogger(__name__)

_START_WAIT = 5.0
"""Seconds the SDK may take to load the flag file before serving starts on defaults."""


@dataclass(frozen=True)
class Choice:
    """The variation served (`variant`, a model name) and the model it selects."""

    route: RouteSpec
    variant: str
    model: ModelSpec
    tier: str = ""
    """The requester's tier as given to the flag (not yet bounded for metric labels)."""


def request_context(
    headers: Mapping[str, str], body: Mapping[str, Any], spec: ContextSpec
) -> Context:
    """Key from the user header, else the OpenAI `user` field, else one shared anonymous key;
    `tier` and, when the request names one, `team` as attributes that flag rules can target."""
    key = headers.get(spec.user_header) or body.get("user") or "anonymous"
    tier = headers.get(spec.tier_header) or spec.default_tier
    builder = Context.builder(str(key)).kind("user").set("tier", tier)
    team = headers.get(spec.team_header)
    if team:
        builder.set("team", team)
    return builder.build()


class FlagRouter:
    """Owns the LDClient: construct at startup, `close()` at shutdown to stop its file watcher."""

    def __init__(self, spec: GatewaySpec, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._routes = {r.name: r for r in spec.routes}
        self._models = {m.name: m for m in spec.models}
        source = Files.new_data_source(
            paths=[str(Path(spec.flags.path))],
            auto_update=True,
            poll_interval=spec.flags.poll_interval,
            force_polling=True,
        )
        config = Config(sdk_key="canaryctl-file", send_events=False, update_processor_class=source)
        self._client = LDClient(config=config, start_wait=_START_WAIT)

    def route(self, name: str) -> RouteSpec | None:
        return self._routes.get(name)

    def choose(self, route: RouteSpec, context: Context) -> Choice:
        """The flag's variation; the route's default_model when the flag cannot say."""
        detail = self._client.variation_detail(route.flag, context, route.default_model)
        value = detail.value
        reason = detail.reason or {}
        if reason.get("kind") == "ERROR" or not isinstance(value, str) or value not in self._models:
            log.warning(
                "route %s: flag %s gave %r (%s); serving %s",
                route.name,
                route.flag,
                value,
                reason.get("errorKind", "not a model"),
                route.default_model,
            )
            self._metrics.flag_errors.labels(route=route.name).inc()
            value = route.default_model
        return Choice(route, value, self._models[value], str(context.get("tier") or ""))

    def close(self) -> None:
        self._client.close()
