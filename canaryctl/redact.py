"""What of a URL or a header canaryctl may show or keep: the one redaction policy.

Runbooks are committed, stored with each run and quoted in errors, so a URL written in one may
carry a secret in three places: its userinfo (`https://user:password@prometheus`), its query or
fragment (`?token=...`), and, for webhooks, its path (a Slack incoming webhook's secret *is* its
path). Everything that reaches output, logs, the state database, journals, reports or an error
message goes through here first:

- any URL: scheme, host and port, then its path; never userinfo, query or fragment;
- a webhook URL: scheme, host and port only;
- headers: their names, never their values;
- free text (a third party's exception message): every URL in it redacted as above, and any
  credential the caller holds (a token it sent, which a server may echo) replaced.

Secrets themselves belong in environment variables (`*_env` fields), which are never shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "REDACTED",
    "redact_document",
    "redact_headers",
    "redact_text",
    "redact_url",
    "redact_webhook_url",
    "scrub",
]

REDACTED = "<redacted>"
"""What a header value or an unreadable URL is replaced by."""

_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,;:)\]}]")
"""A URL inside prose: punctuation that ends a sentence or a parenthesis is not part of it."""
_WHOLE_URL = re.compile(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://\S*\s*$")
"""A document's string that is a URL and nothing else."""
_WEBHOOK_KEYS = frozenset({"webhook"})
"""Document sections whose `url` is a webhook's (on_rollback, on_promote, notify)."""


def _origin(url: str) -> tuple[str, str, str] | None:
    """(scheme, host[:port], path) of `url`, or None when it does not parse as a URL."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or "://" not in url:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    return parts.scheme, host, parts.path


def redact_url(url: str) -> str:
    """`url` without userinfo, query or fragment; REDACTED if it does not parse as a URL (it may
    be a secret pasted in the wrong field)."""
    origin = _origin(url)
    if origin is None:
        return REDACTED
    scheme, host, path = origin
    return f"{scheme}://{host}{path}"


def redact_webhook_url(url: str) -> str:
    """A webhook's URL as shown: scheme, host and port; its path and query may be the secret."""
    origin = _origin(url)
    if origin is None:
        return REDACTED
    scheme, host, _ = origin
    return f"{scheme}://{host}"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names kept (they say what is configured), values replaced: they carry tokens."""
    return dict.fromkeys(headers, REDACTED)


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted: for messages written by libraries, which may quote
    the URL they were given, credentials and all."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`redact_text`, and every one of `secrets` (the credentials a client sent) replaced: a
    server's error page may quote the request it got, Authorization header and all."""
    text = redact_text(text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact_document(document: Any) -> Any:
    """A copy of a dumped document (plain dicts, lists and strings) that is safe to store or
    show: every URL redacted, webhook URLs to their origin, every `headers` map's values
    replaced. Strings that are not URLs are kept as they are."""
    return _redact(document, webhook=False)


def _redact(value: Any, *, webhook: bool) -> Any:
    if isinstance(value, Mapping):
        copy: dict[Any, Any] = {}
        for key, item in value.items():
            if key == "headers" and isinstance(item, Mapping):
                copy[key] = redact_headers(item)
            elif webhook and key == "url" and isinstance(item, str):
                copy[key] = redact_webhook_url(item)
            else:
                copy[key] = _redact(item, webhook=key in _WEBHOOK_KEYS)
        return copy
    if isinstance(value, list | tuple):
        return [_redact(item, webhook=False) for item in value]
    if isinstance(value, str) and _WHOLE_URL.match(value):
        return redact_url(value)
    return value
