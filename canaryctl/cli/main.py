"""The root command group: turns canaryctl's errors into one clear line and their exit code."""

from __future__ import annotations

import sys
from typing import Any

import click

from canaryctl.errors import CanaryError

__all__ = ["main", "output_option", "wants_json"]


class CanaryGroup(click.Group):
    """Catches CanaryError once, prints it without a traceback, exits with the error's code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CanaryError as exc:
            click.echo(f"error: {exc}" if exc.exit_code != 2 else str(exc), err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=CanaryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="canaryctl")
def main() -> None:
    """Safe rollouts, chaos and CI gates for the models behind your LLM features."""


def output_option(func: Any) -> Any:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["text", "json"]),
        default=None,
        help="text (a live view at a terminal) or JSON lines; default: text at a terminal",
    )(func)


def wants_json(output: str | None) -> bool:
    """JSON lines unless asked for text or a person is watching the terminal."""
    if output is not None:
        return output == "json"
    return not sys.stdout.isatty()
