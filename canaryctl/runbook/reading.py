"""Reading a user's file, whatever is at the path: one function, so every document gets the same
answers to the same hostile inputs.

A path may name a FIFO (reading it would block for ever), a device (`/dev/zero` never ends), a
directory, a name the OS refuses (longer than NAME_MAX), a file we may not read, or bytes that
are not UTF-8 (a UTF-16 editor, a binary). Each is an InvalidDocument naming the file, never a
hang, a MemoryError or a traceback. The file is opened without blocking and checked to be a
regular file before a byte is read, and at most MAX_BYTES are read.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from canaryctl.errors import InvalidDocument, Problem

__all__ = ["MAX_BYTES", "MAX_DEPTH", "document_files", "parse_json", "read_text"]

MAX_BYTES = 16 * 1024 * 1024
"""Larger than any runbook or benchmark set a person writes; bounds memory on a hostile path."""

MAX_DEPTH = 64
"""Nesting levels a document may have: real ones use under ten, and a bound here keeps every
recursive walk after parsing (validation, JSON Schema checks) far from Python's stack limit."""

_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_REASONS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "is a directory, not a file",
}


def _refused(source: str, message: str, line: int | None = None) -> InvalidDocument:
    return InvalidDocument([Problem(source, "", message, line)])


def _os_reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0) or f"cannot read: {exc.strerror or exc}"


def read_text(path: str | Path, *, source: str | None = None, max_bytes: int = MAX_BYTES) -> str:
    """The file's text, exactly (line endings kept), or InvalidDocument saying why not."""
    where = source or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        reason = _os_reason(exc) if isinstance(exc, OSError) else "not a valid file name"
        raise _refused(where, reason) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _refused(where, "is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise _refused(where, "not a regular file (a FIFO, socket or device)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as file:
            fd = -1
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise _refused(where, _os_reason(exc)) from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise _refused(where, f"larger than {max_bytes // (1024 * 1024)} MiB")
    return decode(data, where)


def decode(data: bytes, source: str) -> str:
    """UTF-8 text, or InvalidDocument naming the line of the first byte that is not."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise _refused(source, f"not UTF-8 text ({name} byte order mark); save it as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise _refused(source, f"not UTF-8 text (byte 0x{bad})", line) from None


def document_files(
    directory: str | Path, suffixes: tuple[str, ...] = (".yaml", ".yml")
) -> list[Path]:
    """The files in `directory` ending in `suffixes`, sorted; InvalidDocument if it cannot be
    listed. Entries are not opened here: read_text refuses the ones that are not files."""
    where = str(directory)
    try:
        with os.scandir(directory) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(suffixes))
    except NotADirectoryError:
        raise _refused(where, "not a directory") from None
    except (OSError, ValueError) as exc:
        reason = _os_reason(exc) if isinstance(exc, OSError) else "not a valid directory name"
        raise _refused(where, reason) from None
    return [Path(directory) / name for name in names]


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, source: str, *, line: int | None = None) -> Any:
    """Strict JSON: no duplicate keys, no NaN or Infinity, at most MAX_DEPTH levels; every
    problem an InvalidDocument naming the line (`line` for one line of a JSON-lines file)."""

    def at(lineno: int) -> int:
        return line if line is not None else lineno

    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise _refused(source, "nested too deep", line) from None
    except json.JSONDecodeError as exc:
        raise _refused(
            source, f"not JSON: {exc.msg} (column {exc.colno})", at(exc.lineno)
        ) from None
    except _DuplicateKey as exc:
        lines = _key_lines(text, exc.key)
        if lines is None:
            raise _refused(source, f"duplicate key '{exc.key}'", line) from None
        raise _refused(
            source, f"duplicate key '{exc.key}' (first at line {at(lines[0])})", at(lines[1])
        ) from None
    except ValueError as exc:  # NaN, Infinity, an integer of more than 4300 digits
        raise _refused(source, f"not JSON: {exc}", line) from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise _refused(source, f"nested too deep (more than {MAX_DEPTH} levels)", line)
    return value


def _key_lines(text: str, key: str) -> tuple[int, int] | None:
    """Lines of the first two occurrences of `key` as a key in the one object that repeats it.

    Only runs once a duplicate is known: re-parse with the pure-Python scanner, whose object
    parser we wrap to see each object's span, then walk that object's keys with their offsets.
    """
    found: list[tuple[int, int]] = []
    decoder = json.JSONDecoder(object_pairs_hook=lambda pairs: pairs)
    original = json.decoder.JSONObject

    def parse_object(s_and_end: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        s, start = s_and_end
        pairs, end = original(s_and_end, *args, **kwargs)
        if not found and [k for k, _ in pairs].count(key) > 1:
            found.extend(_keys_with_offsets(s, start, end, decoder))
        return pairs, end

    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        decoder.decode(text)
    except RecursionError:  # the Python scanner nests deeper per level than the C one
        return None
    offsets = [offset for name, offset in found if name == key][:2]
    if len(offsets) < 2:
        return None
    first, again = (text.count("\n", 0, o) + 1 for o in offsets)
    return first, again


def _keys_with_offsets(
    s: str, start: int, end: int, decoder: json.JSONDecoder
) -> Iterator[tuple[str, int]]:
    """(key, offset) for each key of the object whose body runs from `start` to `end`."""
    ws = json.decoder.WHITESPACE
    pos = ws.match(s, start).end()
    while pos < end and s[pos] == '"':
        name, after = json.decoder.scanstring(s, pos + 1)
        yield name, pos
        after = ws.match(s, after).end() + 1  # past the colon
        after = ws.match(s, after).end()
        _, after = decoder.scan_once(s, after)  # type: ignore[attr-defined]
        pos = ws.match(s, after).end()
        if pos < end and s[pos] == ",":
            pos = ws.match(s, pos + 1).end()


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and objects nest deeper than `limit`, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False
