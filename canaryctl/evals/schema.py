"""A small JSON Schema subset, enough to say "the reply is JSON of this shape".

Supported keywords: type (one or a list), properties, required, additionalProperties (bool),
items, enum, const, minimum, maximum, minLength, maxLength, minItems, maxItems. A benchmark that
uses any other keyword is rejected when it loads, so a schema never silently checks less than
its author thinks. Writing this beats a jsonschema dependency for one scorer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SUPPORTED_KEYWORDS", "schema_problems", "unsupported_keywords"]

SUPPORTED_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
        "title", "description", "$schema",
    }
)  # fmt: skip

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def unsupported_keywords(schema: Any, where: str = "schema") -> list[str]:
    """Paths of keywords this validator does not know, anywhere in `schema`."""
    if not isinstance(schema, dict):
        return [f"{where}: must be an object"]
    found = [f"{where}.{k}" for k in schema if k not in SUPPORTED_KEYWORDS]
    for name, sub in (schema.get("properties") or {}).items():
        found += unsupported_keywords(sub, f"{where}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        found += unsupported_keywords(schema["items"], f"{where}.items")
    return found


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False  # JSON's true is not 1
    return isinstance(value, _TYPES.get(kind, ()))


def schema_problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every way `value` breaks `schema`, as `path: message`; empty when it conforms."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}"]
    problems: list[str] = []
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: must be one of {schema['enum']!r}")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: above the maximum {schema['maximum']}")
    if isinstance(value, str | list):
        text = isinstance(value, str)
        low, high = ("minLength", "maxLength") if text else ("minItems", "maxItems")
        if low in schema and len(value) < schema[low]:
            problems.append(f"{where}: shorter than {schema[low]}")
        if high in schema and len(value) > schema[high]:
            problems.append(f"{where}: longer than {schema[high]}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        problems += [f"{where}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(item, properties[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}.{key}: not allowed")
    return problems
