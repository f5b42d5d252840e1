"""The root command group: turns canaryctl's errors into one clear line and their exit code, and
imports a command's module only when that command runs, so `canaryctl --help` and `validate` do
not pay for the controller, the gateway or the chaos proxy."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from canaryctl.errors import CanaryError, InvalidInput

__all__ = [
    "existing_state",
    "main",
    "output_option",
    "signals_as_ctrl_c",
    "state_option",
    "wants_json",
]


COMMANDS: dict[str, tuple[str, str]] = {
    "backtest": (
        "canaryctl.cli.backtest:backtest",
        "What a runbook would have decided on a past run's counts or on Prometheus' history.",
    ),
    "budgets": ("canaryctl.cli.budgets:budgets", "Inspect the gateway's token and USD budgets."),
    "chaos": (
        "canaryctl.cli.chaos:chaos",
        "Inject faults into a provider through the fault proxy; run chaos scenarios.",
    ),
    "controller": (
        "canaryctl.cli.controller:controller",
        "Drive every rollout submitted to a shared state database.",
    ),
    "cost": (
        "canaryctl.cli.cost:cost",
        "Find what drives the bill and the cheapest routing that meets each tier's floor.",
    ),
    "demo": (
        "canaryctl.cli.demo:demo",
        "Roll out a bad canary (rolled back) and a good one (promoted) against a simulated lab.",
    ),
    "drills": ("canaryctl.cli.drills:drills", "Run chaos scenarios on their schedule."),
    "experiment": (
        "canaryctl.cli.experiment:experiment",
        "Compare variations of a flag on a fixed split until a winner is decided.",
    ),
    "flags": ("canaryctl.cli.flags:flags", "Inspect routing flags."),
    "gate": (
        "canaryctl.cli.gate:gate",
        "Eval the canary against the baseline, check live SLOs and cost: exit 0 to promote.",
    ),
    "gateway": ("canaryctl.cli.gateway:gateway", "Run the reference gateway."),
    "guard": (
        "canaryctl.cli.guard:guard",
        "Watch a flag between rollouts; move it to its safe variation when an SLO fails.",
    ),
    "lab": ("canaryctl.cli.lab:lab", "Run simulated providers behind the gateway."),
    "plan": (
        "canaryctl.cli.plan:plan",
        "What a runbook will do at a given traffic: chances to promote, roll back, pause.",
    ),
    "report": (
        "canaryctl.cli.report:report",
        "Chart a rollout (SOURCE: its run id), a chaos run or drill (its journal JSON), a gate "
        "or a backtest (its JSON result): what happened, against which bounds, and the decision.",
    ),
    "rollout": (
        "canaryctl.cli.rollout:rollout",
        "Step a canary model's share of traffic up through its flag, watching SLOs.",
    ),
    "schema": (
        "canaryctl.cli.documents:schema",
        "Print the JSON Schema of a document kind, for editors and CI linters.",
    ),
    "validate": (
        "canaryctl.cli.documents:validate",
        "Validate documents of any kind; print every problem with its field path and line.",
    ),
}
"""Each command: where it lives ("module:attribute") and its line in `canaryctl --help` (the
command's own short help, which tests/test_cli_startup.py keeps in step)."""


class LazyGroup(click.Group):
    """click's documented lazy-loading group: a command's module is imported when the command is
    looked up to run. The root's `--help` lists the commands from COMMANDS without importing
    any of them."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        module, attribute = self.lazy[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module), attribute)
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click lays the list out, with the short help from COMMANDS."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            command = self.commands.get(name) or click.Command(name, help=self.lazy[name][1])
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class CanaryGroup(LazyGroup):
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
        except BrokenPipeError:
            # The reader left (`| head`): not a bug, and there is no one to tell. Python would
            # complain again while flushing stdout at exit unless it points somewhere else.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)  # as a shell reports a process ended by SIGPIPE
        except Exception as exc:
            from canaryctl.cli.crash import crash_report  # only on the way out of a bug

            click.echo(f"error: unexpected {type(exc).__name__}; {crash_report(exc)}", err=True)
            ctx.exit(3)


@click.group(
    cls=CanaryGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
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
    """`--state`: the rollout state database, shared by every command that reads or writes it:
    a SQLite path or a postgresql:// URL (its password best kept in the environment)."""
    from canaryctl.controller.defaults import DEFAULT_STATE_PATH  # only commands with a state

    return click.option(
        "--state",
        "state_path",
        default=str(DEFAULT_STATE_PATH),
        envvar="CANARYCTL_STATE",
        show_default=True,
        metavar="PATH|URL",
        help=f"{help}: a SQLite path or a postgresql:// URL; env CANARYCTL_STATE",
    )


def existing_state(state_path: str) -> None:
    """Reading commands refuse a missing SQLite file instead of creating an empty one (a
    PostgreSQL database says for itself whether it exists), and a path that cannot be one."""
    from canaryctl.controller.store import state_file

    path = state_file(state_path)
    if path is not None and not path.exists():
        raise InvalidInput(f"no state database at {path}: no rollout has run here (--state?)")


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
