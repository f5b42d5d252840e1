"""Route flags evaluated by the OpenFeature SDK with its flagd provider, in-process, from a file.

A team whose apps already ask OpenFeature (any language, each with a flagd provider reading the
same flag-definition file, or a flagd daemon serving it) wants the gateway to follow the same
definitions. The provider (`openfeature-provider-flagd`, resolver `file`) loads the file at
startup and re-reads it whole when its modification time moves, checking every `poll_interval`;
each reload it applies raises the provider's PROVIDER_CONFIGURATION_CHANGED event. Its
evaluator does flagd's `fractional` bucketing on the context's `targetingKey`, which is the
requester's user key here, as LaunchDarkly's context key is on the other sources.

`FlagdFlags` answers the two questions FlagRouter asks a LaunchDarkly client (a route's
variation with its reason, a shadow flag's value) in the LaunchDarkly SDK's own result type, so
the router's per-request path is the same whatever the source; it exports the same data-source
gauges. Each gateway gets its own OpenFeature domain: two gateways in one process (the tests,
the lab) never share a provider.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

from ldclient import Context
from ldclient.evaluation import EvaluationDetail
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.provider import ProviderStatus

from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.runbook.gateway import FlagdFlagSource

__all__ = ["FlagdFlags"]

log = logging.getLogger(__name__)

_domains = itertools.count(1)


class _NoTraceback(logging.Filter):
    """The provider logs a broken file with its traceback, again at every poll; the message
    says what is wrong, and a traceback in the gateway's log would read as a crash of ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("openfeature.contrib").addFilter(_NoTraceback())


def _context(context: Context) -> EvaluationContext:
    """The requester's LaunchDarkly context as OpenFeature's: the key is the targetingKey."""
    attributes = {name: context.get(name) for name in ("tier", "team")}
    return EvaluationContext(
        targeting_key=context.key,
        attributes={name: value for name, value in attributes.items() if value is not None},
    )


class FlagdFlags:
    """The OpenFeature client of one gateway, its flagd provider reading `source.path`."""

    def __init__(self, source: FlagdFlagSource, metrics: GatewayMetrics) -> None:
        self._domain = f"canaryctl-gateway-{next(_domains)}"
        self._metrics = metrics
        self._invalid_since: float | None = time.time()
        self._lock = threading.Lock()
        self._provider = FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=str(source.path),
            # In file mode the provider sleeps `deadline_ms` between checks of the file.
            deadline_ms=max(1, round(source.poll_interval * 1000)),
        )
        try:
            api.set_provider_and_wait(self._provider, self._domain)
        except Exception as exc:  # the provider keeps watching the file and recovers
            log.warning(
                "the flagd provider could not load %s (%s); serving default models until it can",
                source.path,
                exc,
            )
        # Added once the provider is set: a handler added earlier would see the default
        # provider of an unset domain, which is always ready, and record a load that never was.
        # A handler for the provider's present state runs at once.
        self._client = api.get_client(self._domain)
        self._client.add_handler(ProviderEvent.PROVIDER_READY, self._loaded)
        self._client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._loaded)
        self._client.add_handler(ProviderEvent.PROVIDER_ERROR, self._failed)
        metrics.flag_source_valid.set_function(self._valid)
        metrics.flag_data_stale.set_function(self._stale)

    def variation_detail(self, flag: str, context: Context, default: str) -> EvaluationDetail:
        """`flag`'s string value for the requester, with a LaunchDarkly-shaped reason."""
        details = self._client.get_string_details(flag, default, _context(context))
        if details.error_code is not None:
            reason = {"kind": "ERROR", "errorKind": details.error_code.value}
            return EvaluationDetail(default, None, reason)
        return EvaluationDetail(details.value, None, {"kind": str(details.reason)})

    def variation(self, flag: str, context: Context, default: Any) -> Any:
        """`flag`'s value for the requester when it is a string, else `default`."""
        details = self._client.get_string_details(flag, "", _context(context))
        return default if details.error_code is not None else details.value

    def close(self) -> None:
        self._provider.shutdown()

    def _loaded(self, details: EventDetails) -> None:
        with self._lock:
            self._invalid_since = None
        self._metrics.flag_last_change.set(time.time())

    def _failed(self, details: EventDetails) -> None:
        with self._lock:
            was_valid = self._invalid_since is None
            self._invalid_since = self._invalid_since or time.time()
        if was_valid:  # once per outage, not at every poll
            log.warning("flagd provider: %s; serving the flag data it had", details.message)

    def _valid(self) -> float:
        return 1.0 if self._client.get_provider_status() == ProviderStatus.READY else 0.0

    def _stale(self) -> float:
        with self._lock:
            since = self._invalid_since
        return 0.0 if since is None else max(0.0, time.time() - since)
