"""`--listen HOST:PORT`, parsed one way for every server command (gateway, chaos proxy)."""

from __future__ import annotations

import click

__all__ = ["split_listen"]


def split_listen(value: str) -> tuple[str, int]:
    """HOST:PORT as a pair; BadParameter (exit 2) otherwise."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise click.BadParameter(f"'{value}' is not HOST:PORT", param_hint="--listen")
    return host, int(port)
