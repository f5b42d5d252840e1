"""Pick the model for a request with the Split SDK (`splitio-client`) in localhost mode.

The gateway's `flags: {provider: split, path: FILE.json}` makes the real Split SDK evaluate each
route's feature flag from a JSON file in the format Split delivers to SDKs (`splitChanges`),
re-read every `poll_interval` seconds, so Split's own bucketing (murmur3 on the key and the
flag's seed), rule matching and treatment order decide what each requester gets. The key is the
requester's user (one shared anonymous key when the request names none); `tier` and, when known,
`team` are attributes for rules to match, as the LaunchDarkly context carries them.

The Split SDK is imported only when a gateway chooses this source, so a gateway on LaunchDarkly
flags never loads it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.routing import Choice, FlagRouter
from canaryctl.runbook.gateway import GatewaySpec, RouteSpec, SplitFlagSource

__all__ = ["CONTROL", "SplitFlagRouter", "split_attributes"]

log = logging.getLogger(__name__)

CONTROL = "control"
"""The treatment the SDK answers when it cannot evaluate (unknown flag, not ready yet)."""


def split_attributes(identity: Identity) -> dict[str, str]:
    """The attributes a Split rule can match: `tier`, and `team` when the request names one."""
    if identity.team:
        return {"tier": identity.tier, "team": identity.team}
    return {"tier": identity.tier}


class SplitFlagRouter(FlagRouter):
    """Owns the Split factory: construct at startup, `close()` at shutdown to stop its reader.

    A FlagRouter to the pipeline (same `route`, `choose`, `variation`, `close`), with the Split
    SDK in place of the LaunchDarkly client: FlagRouter's own constructor, which starts that
    client, is deliberately not run.
    """

    def __init__(self, spec: GatewaySpec, metrics: GatewayMetrics) -> None:
        from splitio import get_factory  # the SDK's cost is paid only by gateways that use it
        from splitio.engine.impressions import ImpressionsMode
        from splitio.exceptions import TimeoutException

        source = spec.flags
        assert isinstance(source, SplitFlagSource)
        self._metrics = metrics
        self._routes = {r.name: r for r in spec.routes}
        self._models = {m.name: m for m in spec.models}
        self._started = time.time()
        self._factory = get_factory(
            "localhost",
            config={
                "splitFile": str(source.path),
                "localhostRefreshEnabled": True,
                "featuresRefreshRate": source.poll_interval,
                # The enum itself: the SDK's string default fails its own check and warns.
                "impressionsMode": ImpressionsMode.NONE,
            },
        )
        try:
            self._factory.block_until_ready(source.start_wait)
        except TimeoutException:
            log.warning(
                "no flag data after %.1fs from the split flag source; serving default models "
                "until it arrives",
                source.start_wait,
            )
        self._client = self._factory.client()
        self._manager = self._factory.manager()
        flags = sorted({r.flag for r in spec.routes})
        metrics.flag_source_valid.set_function(lambda: 1.0 if self._factory.ready else 0.0)
        metrics.flag_data_stale.set_function(
            lambda: 0.0 if self._factory.ready else time.time() - self._started
        )
        metrics.flag_last_change.set_function(lambda: self._last_change(flags))

    def choose(self, route: RouteSpec, identity: Identity) -> Choice:
        """The flag's treatment for the requester; the route's default_model when the SDK
        answers `control` or a treatment that names no model."""
        value = self._client.get_treatment(
            identity.user or "anonymous", route.flag, split_attributes(identity)
        )
        if value not in self._models:
            log.warning(
                "route %s: split %s gave %r; serving %s",
                route.name,
                route.flag,
                value,
                route.default_model,
            )
            self._metrics.flag_errors.labels(route=route.name).inc()
            value = route.default_model
        return Choice(route, value, self._models[value], identity.tier, identity.key_id)

    def variation(self, flag: str, identity: Identity, default: object) -> object:
        """`flag`'s treatment for the requester (how a shadow flag is asked); `default` when
        the SDK answers `control`."""
        value = self._client.get_treatment(
            identity.user or "anonymous", flag, split_attributes(identity)
        )
        return default if value == CONTROL else value

    def close(self) -> None:
        self._factory.destroy()

    def _last_change(self, flags: list[str]) -> float:
        """Seconds since the epoch of the newest change to a route's flag: Split numbers a
        definition's changes by their time in milliseconds (`changeNumber`)."""
        numbers: list[Any] = [getattr(self._manager.split(f), "change_number", 0) for f in flags]
        newest = max((int(n) for n in numbers if n), default=0)
        return newest / 1000.0
