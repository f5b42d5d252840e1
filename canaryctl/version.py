"""The installed canaryctl's version: what journals, reports, crash logs and the API stamp on
what they write, so a record says which release made it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["installed_version"]


def installed_version() -> str:
    """The version pip installed; `unknown` when canaryctl runs from a tree it never installed."""
    try:
        return version("canaryctl")
    except PackageNotFoundError:
        return "unknown"
