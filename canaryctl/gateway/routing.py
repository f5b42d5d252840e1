"""Pick the model for a request: build its LaunchDarkly context, evaluate the route's flag.

The real LaunchDarkly SDK does the evaluation, with its flag data from one of two sources:

- `file`: the SDK's file data source (`offline=True` would ignore that source, hence a dummy SDK
  key with events off); a rewritten flag file is picked up within `poll_interval`;
- `launchdarkly`: LaunchDarkly itself or a Relay Proxy, over the SDK's streaming connection (or
  polling), so a change made in LaunchDarkly reaches the gateway as soon as it is pushed.

A third source, `flagd`, evaluates through the OpenFeature SDK and its flagd provider instead
(gateway/flagd.py), which answers the router in the LaunchDarkly SDK's result type.

The same targeting, percentage bucketing and stickiness hold either way. Whether the data source
is healthy and how stale its data may be are exported as gauges read at scrape time.

A flag's value for a requester depends only on the flag data and the requester's context, so
when no evaluation events are sent (the file source always, LaunchDarkly unless `send_events`)
each route's value is kept per requester and forgotten whenever the SDK reports any flag change:
evaluating a flag was a tenth of the gateway's CPU per request. An evaluation that raced a
change is not kept, and one that fell back to the default (an error) never is.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ldclient import Context
from ldclient.client import LDClient
from ldclient.config import Config
from ldclient.integrations import Files
from ldclient.interfaces import DataSourceState, DataSourceStatusProvider, FlagChange

from canaryctl.errors import InvalidInput
from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.runbook.gateway import (
    FileFlagSource,
    FlagdFlagSource,
    FlagSource,
    GatewaySpec,
    LaunchDarklyFlagSource,
    ModelSpec,
    RouteSpec,
    SplitFlagSource,
)

__all__ = ["Choice", "FlagRouter", "check_flag_source", "request_context"]

log = logging.getLogger(__name__)

_CONTEXTS = 10_000
"""LaunchDarkly contexts kept built, for the requesters seen most recently."""
_START_WAIT = 5.0
"""Seconds the SDK may take to load the flag file before serving starts on defaults."""


def check_flag_source(source: FlagSource, where: str = "spec.flags") -> None:
    """InvalidInput naming the field when the source cannot work: no flag file, no SDK key."""
    if (
        isinstance(source, FileFlagSource | FlagdFlagSource | SplitFlagSource)
        and not Path(source.path).is_file()
    ):
        raise InvalidInput(f"{where}.path: no flag file at {source.path}")
    if isinstance(source, LaunchDarklyFlagSource) and not os.environ.get(source.sdk_key_env):
        raise InvalidInput(
            f"{where}.sdk_key_env: environment variable {source.sdk_key_env} is not set: it "
            "must hold the SDK key of the LaunchDarkly environment the gateway serves"
        )


def _sdk_config(source: FlagSource) -> tuple[Config, float]:
    """The SDK's Config for `source`, and how long startup waits for its first data."""
    if isinstance(source, FileFlagSource):
        files = Files.new_data_source(
            paths=[str(Path(source.path))],
            auto_update=True,
            poll_interval=source.poll_interval,
            force_polling=True,
        )
        config = Config(sdk_key="canaryctl-file", send_events=False, update_processor_class=files)
        return config, _START_WAIT
    check_flag_source(source)
    config = Config(
        sdk_key=os.environ[source.sdk_key_env],
        base_uri=source.base_uri,
        stream_uri=source.stream_uri,
        events_uri=source.events_uri,
        stream=source.stream,
        poll_interval=source.poll_interval,
        send_events=source.send_events,
        diagnostic_opt_out=not source.send_events,
    )
    return config, source.start_wait


@dataclass(frozen=True)
class Choice:
    """The variation served (`variant`, a model name) and the model it selects."""

    route: RouteSpec
    variant: str
    model: ModelSpec
    tier: str = ""
    """The requester's tier as given to the flag (not yet bounded for metric labels)."""
    key_id: str | None = None
    """The virtual key the request came with: only it may score the answer."""


def request_context(identity: Identity) -> Context:
    """The requester's LaunchDarkly context: keyed by the user (one shared anonymous key when
    the request names none), with `tier` and, when known, `team` for flag rules to target
    (`FlagRouter.choose` keys what it keeps by the same three)."""
    return _context(identity.user or "anonymous", identity.tier, identity.team or None)


@functools.lru_cache(maxsize=_CONTEXTS)
def _context(user: str, tier: str, team: str | None) -> Context:
    """Contexts are immutable, and most requests come from a requester seen recently: built
    once per requester, not once per request."""
    builder = Context.builder(user).kind("user").set("tier", tier)
    if team:
        builder.set("team", team)
    return builder.build()


class FlagRouter:
    """Owns the LDClient: construct at startup, `close()` at shutdown to stop its data source."""

    _known: dict[tuple[str, str, str, str | None], str] | None = None
    """Each flag's value by (flag, user, tier, team), while no flag has changed; None when every
    request must be evaluated (events are sent, or the source is flagd)."""
    _generation = 0
    """Flag changes seen: an evaluation begun before one is not kept."""

    def __init__(self, spec: GatewaySpec, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._routes = {r.name: r for r in spec.routes}
        self._models = {m.name: m for m in spec.models}
        if isinstance(spec.flags, FlagdFlagSource):
            # Imported here: OpenFeature's flagd provider loads gRPC, which no other source needs.
            from canaryctl.gateway.flagd import FlagdFlags

            self._client: LDClient | FlagdFlags = FlagdFlags(spec.flags, metrics)
            return
        config, start_wait = _sdk_config(spec.flags)
        self._client = LDClient(config=config, start_wait=start_wait)
        if not getattr(spec.flags, "send_events", False):
            self._known = {}
            self._client.flag_tracker.add_listener(self._forget)
        if self._client.is_initialized():
            metrics.flag_last_change.set(time.time())
        else:
            log.warning(
                "no flag data after %.1fs from the %s flag source; serving default models until "
                "it arrives",
                start_wait,
                spec.flags.provider,
            )
        _export_status(self._client.data_source_status_provider, metrics)
        self._client.flag_tracker.add_listener(_on_change(metrics))

    def route(self, name: str) -> RouteSpec | None:
        return self._routes.get(name)

    def choose(self, route: RouteSpec, identity: Identity) -> Choice:
        """The flag's variation for the requester; the route's default_model when the flag
        cannot say."""
        requester = (route.flag, identity.user or "anonymous", identity.tier, identity.team or None)
        known = self._known
        value = None if known is None else known.get(requester)
        if value is None:
            value = self._evaluate(route, requester)
        return Choice(route, value, self._models[value], identity.tier, identity.key_id)

    def _evaluate(self, route: RouteSpec, requester: tuple[str, str, str, str | None]) -> str:
        known, generation = self._known, self._generation
        context = _context(*requester[1:])
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
            return route.default_model
        if known is not None and generation == self._generation:
            if len(known) >= _CONTEXTS:
                known.clear()
            known[requester] = value
        return value

    def _forget(self, change: FlagChange) -> None:
        """On the SDK's thread, after its store changed: what was kept may be stale. The count
        moves first, so an evaluation on the event loop that read the old data is not kept."""
        self._generation += 1
        self._known = {}

    def variation(self, flag: str, identity: Identity, default: object) -> object:
        """`flag`'s value for the requester, in the same context as the route flags: how a
        route's shadow flag is asked (gateway/shadow.py); `default` when it cannot say."""
        return self._client.variation(flag, request_context(identity), default)

    def close(self) -> None:
        self._client.close()


def _export_status(status: DataSourceStatusProvider, metrics: GatewayMetrics) -> None:
    """Gauges computed at scrape time from the SDK's data-source status."""

    def valid() -> float:
        return 1.0 if status.status.state == DataSourceState.VALID else 0.0

    def stale() -> float:
        now = status.status
        return 0.0 if now.state == DataSourceState.VALID else max(0.0, time.time() - now.since)

    metrics.flag_source_valid.set_function(valid)
    metrics.flag_data_stale.set_function(stale)


def _on_change(metrics: GatewayMetrics) -> Callable[[FlagChange], None]:
    def record(change: FlagChange) -> None:
        metrics.flag_last_change.set(time.time())

    return record
