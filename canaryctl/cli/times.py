"""Times and durations given on the command line (`--from`, `--to`, `--window`), read one way by
every command that takes them, with the option named in the error."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from canaryctl.errors import InvalidInput

__all__ = ["parse_time", "positive_duration"]


def parse_time(value: str, option: str) -> float:
    """Epoch seconds from an RFC 3339 time (`2026-11-24T09:00:00Z`) or epoch seconds."""
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise InvalidInput(f"{option}: '{value}' is not a time")
        return seconds
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{option}: '{value}' is neither an RFC 3339 time (2026-11-24T09:00:00Z) nor "
            "epoch seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def positive_duration(value: str, option: str) -> float:
    """Seconds from a duration such as `1h` or `90s`; zero is refused."""
    from canaryctl.runbook.common import NotADuration, parse_duration  # pydantic: when used

    try:
        seconds = parse_duration(value)
    except NotADuration:
        raise InvalidInput(f"{option}: '{value}' is not a duration such as 1h or 90s") from None
    if seconds <= 0:
        raise InvalidInput(f"{option}: must be longer than 0s")
    return seconds
