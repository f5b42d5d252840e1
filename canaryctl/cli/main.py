"""The root command group: turns canaryctl's errors into one clear line and their exit code."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from canaryctl.cli.crash import crash_report
from canaryctl.controller.store import DEFAULT_STATE_PATH
from canaryctl.errors import CanaryError, InvalidInput

__all__ = [
    "existing_state",
    "main",
    "output_option",
    "signals_as_ctrl_c",
    "state_option",
    "wants_json",
]


class CanaryGroup(click.Group):
    """Catches CanaryError once, prints it without a traceback, exits with the error's code.

    Anything else is a bug: one line naming a file that holds the traceback, exit 3. It is
    caught here, outside every command, so a rollout's restore (on the runner's own exit path)
    has already put the flag back by the time we get it.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CanaryError as exc:
            click.echo(f"error: {exc}" if exc.exit_code != 2 else str(exc), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            click.echo(f"error: unexpected {type(exc).__name__}; {crash_report(exc)}", err=True)
            ctx.exit(3)


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


def state_option(help: str) -> Callable[[Any], Any]:
    """`--state`: the rollout state database, shared by every command that reads or writes it."""
    return click.option(
        "--state",
        "state_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_STATE_PATH,
        envvar="CANARYCTL_STATE",
        show_default=True,
        help=f"{help}; env CANARYCTL_STATE",
    )


def existing_state(state_path: Path) -> None:
    """Reading commands refuse a missing database instead of creating an empty one."""
    if not state_path.exists():
        raise InvalidInput(f"no state database at {state_path}: no rollout has run here (--state?)")


def wants_json(output: str | None) -> bool:
    """JSON lines unless asked for text or a person is watching the terminal."""
    if output is not None:
        return output == "json"
    return not sys.stdout.isatty()


@contextmanager
def signals_as_ctrl_c() -> Iterator[None]:
    """SIGTERM takes Ctrl-C's path (restore, exit 130); later signals are ignored so that the
    restore they would interrupt can finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
