"""One scrape of a gateway's /metrics per target per interval, shared by every run reading it.

A controller drives many runs on one gateway; each used to fetch and parse the whole exposition
(hundreds of KB) for itself at every analysis, so the cost grew as runs times its size. Here
one `ScrapeCache` per process holds each target's latest snapshot, stamped with the moment its
fetch began (the counters it holds were read after that). A reader names the oldest snapshot it
takes (`not_before`): an analysis takes one up to an interval old but newer than its own last,
so a run alone still scrapes at each analysis while many runs share one scrape per interval (an
analysis then reads counters at most one interval old, as it would from Prometheus scraping that
often); a window's first sample takes only a scrape begun after the weight was set, and every
run waiting for one at that moment shares the next.

The parse keeps only the families the analyses read (`WANTED`), grouped by `route` label so a
run's history holds its route's slice alone, and it skips every other line before splitting it:
a line filter measured against prometheus_client's parser in benchmarks/controller_scale.py.
Label sets are parsed once per target and reused while the series lasts.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from canaryctl import retry
from canaryctl.errors import MetricsBackendError
from canaryctl.metrics.series import PAIRWISE, REQUESTS, SERIES, SHADOW_SERIES
from canaryctl.redact import redact_text, redact_url
from canaryctl.retry import Retryable, RetryPolicy

__all__ = ["WANTED", "ExpositionFilter", "Labels", "ScrapeCache", "Series", "Snapshot"]

WANTED = frozenset({*SERIES, *SHADOW_SERIES, PAIRWISE})
"""Sample names an analysis reads: the user-facing series and a shadow step's."""

NOTHING_LISTENS = (
    "; nothing answers at that address: start the gateway it names, or correct the address "
    "(to try canaryctl, `canaryctl lab serve runbooks/lab.yaml` serves one on "
    "${CANARYCTL_GATEWAY:-127.0.0.1:8080}, where the example runbooks look)"
)
"""What a refused connection most often means on a first run: the lab is not started, or it
listens where the runbook does not look (CANARYCTL_GATEWAY set in one shell, not the other)."""

Labels = tuple[tuple[str, str], ...]
Series = tuple[str, Labels]
"""(sample name, sorted labels): one counter on one gateway."""

_DECLARES_REQUESTS = tuple(
    f"# {kind} {name} " for kind in ("TYPE", "HELP") for name in (REQUESTS, "llm_requests")
)
"""How a gateway that has served nothing yet still shows it is one: it declares the family."""
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


@dataclass(frozen=True)
class Snapshot:
    """One scrape of one target: when its fetch began, and the wanted series per `route` label
    (None: none)."""

    at: float
    routes: Mapping[str | None, Mapping[Series, float]]


class ExpositionFilter:
    """Prometheus text exposition to the wanted series, for one target.

    Deterministic in the text; it remembers each series line's parsed labels from the previous
    parse (the same series come back at every scrape) and forgets the ones that went away.
    """

    def __init__(self, wanted: frozenset[str] = WANTED) -> None:
        self._wanted = wanted
        self._known: dict[str, tuple[Series, str | None]] = {}

    def parse(self, text: str) -> tuple[bool, dict[str | None, dict[Series, float]]]:
        """(whether the text is a canaryctl gateway's, the wanted series per route label);
        ValueError on a line that is not exposition text."""
        is_gateway = False
        routes: dict[str | None, dict[Series, float]] = {}
        known, seen = self._known, {}
        for line in text.splitlines():
            if not line or line[0] == "#":
                is_gateway = is_gateway or line.startswith(_DECLARES_REQUESTS)
                continue
            space, brace = line.find(" "), line.find("{")
            if 0 <= brace < space or (brace >= 0 and space < 0):
                name, close = line[:brace], line.rfind("}")
                if close < brace:
                    raise ValueError(f"unclosed label set: {line[:80]!r}")
                key, rest = line[: close + 1], line[close + 1 :]
            elif space > 0:
                name = key = line[:space]
                rest = line[space:]
            else:
                raise ValueError(f"no value: {line[:80]!r}")
            is_gateway = is_gateway or name == REQUESTS
            if name not in self._wanted:
                continue
            parsed = known.get(key)
            if parsed is None:
                pairs = ((k, _unescape(v)) for k, v in _LABEL.findall(key[len(name) :]))
                labels = tuple(sorted(pairs))
                parsed = ((name, labels), dict(labels).get("route"))
            seen[key] = parsed
            series, route = parsed
            routes.setdefault(route, {})[series] = float(rest.split(None, 1)[0])
        self._known = seen
        return is_gateway, routes


class _Target:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.parser = ExpositionFilter()
        self.latest: Snapshot | None = None


class ScrapeCache:
    """Each target's latest snapshot, shared by the sources given this cache (one per process).

    Scrapes of one target happen one at a time: readers arriving while it is fetched wait for
    it and take it when it is fresh enough for them. `client` is shared by every reader (one
    connection pool, one TLS context); by default one is made.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, client: httpx.Client | None = None
    ) -> None:
        self._clock = clock
        self._client = client if client is not None else httpx.Client()
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        self.scrapes = 0
        """Scrapes made: what benchmarks/controller_scale.py counts per interval."""

    def latest(self, url: str) -> Snapshot | None:
        """The target's last snapshot, None before its first scrape."""
        target = self._targets.get(url)
        return target.latest if target is not None else None

    def sample(
        self,
        url: str,
        *,
        not_before: float,
        newer_than: float,
        timeout: float,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
    ) -> Snapshot:
        """The target's latest snapshot if its fetch began at or after `not_before` and after
        `newer_than`, else a new scrape (retried by `policy`); MetricsBackendError if it fails
        or the target is not a canaryctl gateway. A reader waiting while another scrapes takes
        that scrape if it began late enough for it."""
        with self._lock:
            target = self._targets.setdefault(url, _Target())
        with target.lock:
            latest = target.latest
            if latest is not None and latest.at >= not_before and latest.at > newer_than:
                return latest
            began = self._clock()
            is_gateway, routes = self._scrape(url, target.parser, timeout, policy, sleep)
            if not is_gateway:
                raise MetricsBackendError(
                    f"{redact_url(url)} answers but exposes no {REQUESTS} metric: is this a "
                    "canaryctl gateway's /metrics endpoint?"
                )
            target.latest = Snapshot(began, routes)
            self.scrapes += 1
            return target.latest

    def _scrape(
        self,
        url: str,
        parser: ExpositionFilter,
        timeout: float,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
    ) -> tuple[bool, dict[str | None, dict[Series, float]]]:
        """The target's wanted series, retrying anything that could be transient."""

        def attempt() -> tuple[bool, dict[str | None, dict[Series, float]]]:
            try:
                response = self._client.get(url, timeout=timeout)
            except httpx.HTTPError as exc:
                name = type(exc).__name__
                raise Retryable(f"{name}: {redact_text(str(exc))}" if str(exc) else name) from exc
            if response.status_code != 200:
                phrase = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
                raise Retryable(phrase)
            try:
                return parser.parse(response.text)
            except ValueError as exc:
                raise Retryable(f"not Prometheus exposition text ({exc})") from exc

        try:
            return retry.call(attempt, policy, sleep=sleep)
        except Retryable as failure:
            hint = NOTHING_LISTENS if isinstance(failure.__cause__, httpx.ConnectError) else ""
            raise MetricsBackendError(
                f"cannot read metrics from {redact_url(url)} after {policy.attempts} "
                f"attempt(s): {failure.reason}{hint}"
            ) from failure.__cause__
