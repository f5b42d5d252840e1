"""PromQL templates in documents: `{{name}}` placeholders, checked at load time, filled per query.

PromQL uses braces itself (`llm_requests_total{route="x"}`), so only a double-braced *known*
name is a placeholder; everything else is left as written. Values that go inside a PromQL string
(`{{variant}}`, `{{route}}`) are escaped by the renderer, so a variation named `a"b` cannot break
out of its quotes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["PLACEHOLDER", "placeholders", "promql_string", "render", "unknown_placeholders"]

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholders(template: str) -> set[str]:
    """The names a template uses."""
    return set(PLACEHOLDER.findall(template))


def unknown_placeholders(template: str, known: frozenset[str]) -> str | None:
    """A sentence naming the placeholders outside `known`, or None when there are none."""
    unknown = sorted(placeholders(template) - known)
    if not unknown:
        return None
    names = ", ".join("{{" + name + "}}" for name in unknown)
    allowed = ", ".join("{{" + name + "}}" for name in sorted(known))
    return f"unknown template variable {names}; known: {allowed}"


def promql_string(value: str) -> str:
    """`value` escaped to sit inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every placeholder; values are inserted as given (escape string values first)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
