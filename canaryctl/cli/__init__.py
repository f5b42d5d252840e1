"""Command line: thin click commands that parse, call the library, and print. Each command's
module is imported when the command runs (see `canaryctl.cli.main.COMMANDS`)."""

from canaryctl.cli.main import main

__all__ = ["main"]
