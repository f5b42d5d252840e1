"""Pieces every canaryctl document shares: strictness, durations, metadata, relative paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema

__all__ = [
    "API_VERSION",
    "DocPath",
    "Duration",
    "Metadata",
    "Strict",
    "parse_duration",
]

API_VERSION = "canaryctl/v1"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Accept `30s`, `5m`, `1h30m`, `250ms` or a bare number of seconds; return seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if not text or _DURATION_PART.sub("", text):
            raise ValueError(f"'{value}' is not a duration such as 30s, 5m or 1h30m")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    else:
        raise ValueError("must be a duration such as 30s, 5m or 1h30m")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "seconds, or a duration such as 30s, 5m, 1h30m",
        }
    ),
]


def _resolve_against_document(value: Any, info: ValidationInfo) -> Any:
    """Relative paths in a document mean relative to that document, not to the shell's cwd."""
    if isinstance(value, str | Path):
        path = Path(value).expanduser()
        base = (info.context or {}).get("base_dir")
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        return path
    return value


DocPath = Annotated[Path, BeforeValidator(_resolve_against_document)]


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a runbook must never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class Metadata(Strict):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
    labels: dict[str, str] = Field(default_factory=dict)
