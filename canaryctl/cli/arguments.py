"""Numbers, times, durations and URLs given on the command line, read one way by every command
that takes them: each checked for its range before anything uses it (an id past what the
database holds, a duration of 99999999999h, a URL that does not parse), refused with exit 2 and
the option named in the error."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import click

from canaryctl.errors import InvalidInput
from canaryctl.ids import MAX_ID
from canaryctl.redact import redact_url

__all__ = [
    "ID",
    "FiniteRange",
    "http_url",
    "parse_time",
    "positive_duration",
    "run_id_of",
]

ID = click.IntRange(1, MAX_ID)
"""A run's or an experiment's id, as an argument or option type."""
MAX_URL_LENGTH = 2048
_LATEST = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
"""The latest time a command takes (as epoch seconds, either side of 1970)."""


class FiniteRange(click.FloatRange):
    """click's FloatRange that also refuses `nan` (it passes every comparison) and `inf`."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


def run_id_of(text: str) -> int | None:
    """`text` as a run id if it is written as one (digits only), else None; InvalidInput when
    the digits are more than any run id (never int() of a 5,000-digit string)."""
    if not text.isascii() or not text.isdigit():
        return None
    if len(text) > len(str(MAX_ID)) or not 1 <= int(text) <= MAX_ID:
        raise InvalidInput(f"run id {text[:30]}{'…' if len(text) > 30 else ''}: not from 1 to "
                           f"{MAX_ID}")  # fmt: skip
    return int(text)


def http_url(value: str, option: str) -> str:
    """`value` if it is an http(s) URL with a host (and a port in range); InvalidInput naming
    `option` otherwise, quoting the URL only as redacted (it may carry a password)."""
    import httpx

    if len(value) > MAX_URL_LENGTH:
        raise InvalidInput(f"{option}: a URL of more than {MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise InvalidInput(f"{option}: not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host or any(c.isspace() for c in value):
        raise InvalidInput(f"{option}: '{redact_url(value)}' is not an http(s) URL with a host")
    if url.port is not None and not 0 < url.port < 65536:
        raise InvalidInput(f"{option}: port {url.port} is not from 1 to 65535")
    return value


def parse_time(value: str, option: str) -> float:
    """Epoch seconds from an RFC 3339 time (`2026-11-24T09:00:00Z`) or epoch seconds."""
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or abs(seconds) > _LATEST:
            raise InvalidInput(f"{option}: '{value[:40]}' is not a time before the year 10000")
        return seconds
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{option}: '{value[:40]}' is neither an RFC 3339 time (2026-11-24T09:00:00Z) nor "
            "epoch seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):  # year 1 in a zone west of UTC
        raise InvalidInput(f"{option}: '{value[:40]}' is out of range") from None


def positive_duration(value: str, option: str) -> float:
    """Seconds from a duration such as `1h` or `90s`; zero is refused."""
    from canaryctl.runbook.common import NotADuration, parse_duration  # pydantic: when used

    try:
        seconds = parse_duration(value)
    except NotADuration:
        shown = value if len(value) <= 40 else value[:39] + "…"
        raise InvalidInput(f"{option}: '{shown}' is not a duration such as 1h or 90s") from None
    except ValueError as exc:  # out of range: longer than 30 days
        raise InvalidInput(f"{option}: {exc}") from None
    if seconds <= 0:
        raise InvalidInput(f"{option}: must be longer than 0s")
    return seconds
