"""Pieces every canaryctl document shares: strictness, finite numbers, durations, metadata,
relative paths, the range an SLO bound on a metric can take."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema

__all__ = [
    "API_VERSION",
    "MAX_DURATION",
    "NAME_PATTERN",
    "DocPath",
    "Duration",
    "Metadata",
    "NotADuration",
    "Strict",
    "built_on_use",
    "check_metric_bound",
    "document_path",
    "parse_duration",
]

API_VERSION = "canaryctl/v1"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = 30 * 86400.0
"""The longest wait, pause, window or timeout a document may ask for: `99999999999h` is a typo,
not a plan, and a run that sleeps for ever holds its flag for ever."""


class NotADuration(ValueError):
    """The value is not written as a duration at all (as opposed to one out of range)."""


def parse_duration(value: Any) -> float:
    """Accept `30s`, `5m`, `1h30m`, `250ms` or a bare number of seconds, up to 30 days;
    return seconds."""
    if isinstance(value, bool):
        raise NotADuration("must be a duration such as 30s, 5m or 1h30m")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}")
    if isinstance(value, int | float):
        # An int too large for a float (either sign) stays out of float().
        seconds = float(max(min(value, 2 * MAX_DURATION), -2 * MAX_DURATION))
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        # The length check comes first: on a long run of digits the regex backtracks
        # quadratically, and no duration anyone writes is longer than a few units.
        if not text or len(text) > 40 or _DURATION_PART.sub("", text):
            shown = value if len(value) <= 40 else value[:39] + "…"
            raise NotADuration(f"'{shown}' is not a duration such as 30s, 5m or 1h30m")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    else:
        raise NotADuration("must be a duration such as 30s, 5m or 1h30m")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_DURATION:
        raise ValueError("must be at most 30 days")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
            ],
            "description": "seconds, or a duration such as 30s, 5m, 1h30m; at most 30 days",
        }
    ),
]


def document_path(value: str | Path, base_dir: str | Path | None) -> Path:
    """A path as a document means it: `~` and `~user` expanded, and a relative path relative to
    the document's folder, not to the shell's cwd. ValueError when `~` cannot be expanded (no
    such user, no home directory): the document's mistake, not a crash."""
    path = Path(value)
    if str(value).startswith("~"):
        try:
            path = path.expanduser()
        except (RuntimeError, ValueError, KeyError, OSError):
            user = str(value)[1:].split("/", 1)[0]
            shown = user if len(user) <= 40 else user[:39] + "…"
            raise ValueError(
                f"cannot expand '~{shown}': no such user"
                if user
                else "cannot expand '~': no home directory"
            ) from None
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


def _resolve_against_document(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str | Path):
        return document_path(value, (info.context or {}).get("base_dir"))
    return value


DocPath = Annotated[Path, BeforeValidator(_resolve_against_document)]


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a runbook must never pass silently. Every number is
    finite: NaN compares false with everything, so a bound of `.nan` would pass any value, and
    `.inf` is a bound nobody meant."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False, defer_build=True
    )


def built_on_use(factory: Callable[[], BaseModel]) -> Any:
    """A field whose default is a model, built when a document first needs it rather than at
    import (building a model's validator is most of what `validate` spends); the JSON Schema
    still shows the default."""

    def show_default(schema: dict[str, Any]) -> None:
        schema["default"] = factory().model_dump(mode="json", by_alias=True)

    return Field(default_factory=factory, json_schema_extra=show_default)


def check_metric_bound(metric: str | None, field: str, value: float | None) -> None:
    """An absolute bound or margin must be a value the metric can take: no measure canaryctl
    computes is negative, and a rate (`*_rate`) or `quality_score` is a share, at most 1.
    A custom query's metric (None) may take any finite value."""
    if value is None or metric is None:
        return
    if value < 0:
        raise ValueError(f"{field}: must not be negative ({metric} never is)")
    if (metric.endswith("_rate") or metric == "quality_score") and value > 1:
        raise ValueError(f"{field}: must be at most 1 ({metric} is a share between 0 and 1)")


NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
"""A document's name: what a DNS label or a Kubernetes name may be, dots allowed."""


class Metadata(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
