"""Which alerts stop a rollout or trip a guard: label matchers, as Alertmanager routes use them.

A matcher is a map of label name to value; an alert matches when every label named has exactly
that value (`{alertname: LLMHighErrorRate, route: support-bot}`). A list of matchers matches
when any of them does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = ["AlertMatchers", "matches"]

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _label_matcher(matcher: dict[str, str]) -> dict[str, str]:
    if not matcher:
        raise ValueError("an empty matcher would match every alert")
    for name in matcher:
        if not _LABEL_NAME.match(name):
            shown = name if len(name) <= 40 else name[:39] + "…"
            raise ValueError(f"'{shown}' is not a Prometheus label name")
    return matcher


AlertMatchers = Annotated[
    list[Annotated[dict[str, str], AfterValidator(_label_matcher)]],
    Field(
        default_factory=list,
        description="label matchers, e.g. [{alertname: LLMHighErrorRate, route: support-bot}]: "
        "a firing alert whose labels have every value of one of them",
    ),
]


def matches(matchers: Sequence[Mapping[str, str]], labels: Mapping[str, str]) -> bool:
    return any(all(labels.get(k) == v for k, v in m.items()) for m in matchers)
