"""The limits a YAML document is held to before anything is built from it.

YAML lets a small file describe a huge value: ten anchors, each a list of ten aliases of the one
before, are 1.2 KB of text and ten billion values once expanded, and any walk over the result
(validation, an error message quoting it) never ends. Explicit tags ask the loader to build a
value its own way, and `!!int ""` or `!!bool x` make PyYAML's constructors raise errors of their
own. So before the node tree is composed, one pass over the parser's events (streamed, nothing
kept but a counter per anchor) checks:

- the bytes: at most MAX_DOCUMENT_BYTES;
- the size: at most MAX_NODES keys and values, each alias counted at the full size of what it
  names, so the expansion is bounded whatever the aliases do; an alias inside the value it names
  (a cycle) is refused;
- the tags: `!!str`, or a tag saying what the value already is (`!!int 5`); any other is
  refused, so the constructors only ever see values their own patterns matched;
- the root: a mapping (a document is `apiVersion`, `kind`, ...).

The pass stops at the first limit passed, so its cost is bounded by MAX_NODES events, not by
the size of what the document would expand to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from canaryctl.errors import InvalidDocument, Problem

__all__ = ["MAX_DOCUMENT_BYTES", "MAX_NODES", "check_events", "clip", "format_loc"]

MAX_DOCUMENT_BYTES = 1024 * 1024
"""A document's size at most: the largest shipped one is under 8 KB."""
MAX_NODES = 10_000
"""Keys and values a document may hold once its aliases are expanded: the largest shipped
document has about 250, and validating and reporting on 10,000 stays well under a second."""

_STR, _SEQ, _MAP = (f"tag:yaml.org,2002:{name}" for name in ("str", "seq", "map"))
_STANDARD = "tag:yaml.org,2002:"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class _Open:
    """A collection whose end event has not come yet."""

    mapping: bool
    anchor: str | None
    start: int
    """Nodes counted before it began: its expanded size is the count at its end minus this."""
    children: int = 0
    key: Any = None
    """In a mapping, the last key seen (the name of the value that follows)."""


def check_events(loader: Any, text: str, source: str) -> None:
    """Raise InvalidDocument if `text` breaks a limit; `loader` is a fresh PyYAML loader on
    `text` (its events are consumed: compose from a new one). YAML syntax errors propagate
    as yaml.YAMLError for the caller to report."""
    if len(text) > MAX_DOCUMENT_BYTES or len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise _refused(source, "", f"larger than {MAX_DOCUMENT_BYTES // 2**20} MiB", None)
    sizes: dict[str, int] = {}
    stack: list[_Open] = []
    problems: list[Problem] = []
    count = 0
    while loader.check_event():
        event = loader.get_event()
        if isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                sizes[done.anchor] = count - done.start
            _completed(stack, None)
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue  # stream and document boundaries
        line = event.start_mark.line + 1
        if not stack and not isinstance(event, yaml.MappingStartEvent):
            raise _refused(source, "", "must be a mapping with apiVersion and kind", None)
        if isinstance(event, yaml.AliasEvent):
            if any(o.anchor == event.anchor for o in stack):
                message = f"the alias *{event.anchor} is inside the value it names (a loop)"
                raise _refused(source, format_loc(_path(stack)), message, line)
            count += sizes.get(event.anchor, 1)  # an undefined one is the composer's to report
        else:
            count += 1
            refused = _tag_problem(loader, event)
            if refused is not None:
                problems.append(Problem(source, format_loc(_path(stack)), refused, line))
        if count > MAX_NODES:
            message = (
                f"more than {MAX_NODES:,} keys and values (an alias counts as many as the "
                "value it names)"
            )
            raise _refused(source, format_loc(_path(stack)), message, line)
        if isinstance(event, yaml.CollectionStartEvent):
            mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append(_Open(mapping, event.anchor, count - 1))
            continue
        if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            sizes[event.anchor] = 1
        _completed(stack, event.value if isinstance(event, yaml.ScalarEvent) else "?")
    if problems:
        raise InvalidDocument(problems)


def _completed(stack: list[_Open], scalar: Any) -> None:
    """A node ended inside the innermost open collection: one more child, and in a mapping a
    key to name the value that follows (a collection or alias as a key is `?`)."""
    if not stack:
        return
    parent = stack[-1]
    if parent.mapping and parent.children % 2 == 0:
        parent.key = "?" if scalar is None else scalar
    parent.children += 1


def _path(stack: list[_Open]) -> tuple[Any, ...]:
    """Where the next node sits: each open collection's current key or index."""
    path: list[Any] = []
    for item in stack:
        if not item.mapping:
            path.append(item.children)
        elif item.children % 2 == 1:  # at a value: name its key
            path.append(item.key)
    return tuple(path)


def _tag_problem(loader: Any, event: yaml.NodeEvent) -> str | None:
    """Why an explicit tag is refused, or None: `!!str`, `!` and a tag saying what the value
    would be without it pass; `!!bool x`, `!!binary`, `!!set`, `!local` do not."""
    tag = getattr(event, "tag", None)
    if tag is None or tag in ("!", _STR):
        return None
    if isinstance(event, yaml.ScalarEvent):
        if loader.resolve(yaml.ScalarNode, event.value, (True, False)) == tag:
            return None
        shown = event.value if len(event.value) <= 40 else event.value[:39] + "…"
        what = f"on '{shown}'"
    elif tag == (_MAP if isinstance(event, yaml.MappingStartEvent) else _SEQ):
        return None
    else:
        what = "on a mapping" if isinstance(event, yaml.MappingStartEvent) else "on a list"
    name = "!!" + tag.removeprefix(_STANDARD) if tag.startswith(_STANDARD) else tag
    name = name if len(name) <= 40 else name[:39] + "…"
    return f"tag {name} {what} is refused: a tag may only be !!str or name what the value is"


def _refused(source: str, location: str, message: str, line: int | None) -> InvalidDocument:
    return InvalidDocument([Problem(source, location, message, line)])


def format_loc(loc: tuple[Any, ...]) -> str:
    """A field path as the user writes it: `spec.steps[2].pause`; odd keys quoted, long ones
    clipped."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            name = clip(str(part), 60)
            if not _PLAIN_KEY.match(name):  # a key with spaces, dots or nothing in it
                name = repr(name)
            out += f".{name}" if out else name
    return clip(out)


def clip(text: str, limit: int = 200) -> str:
    """Messages quote the user's input; a 5 MB string must not come back as a 5 MB line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
