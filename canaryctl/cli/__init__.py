"""Command line: thin click commands that parse, call the library, and print."""

import canaryctl.cli.flags  # noqa: F401  (registers commands on main)
from canaryctl.cli import budgets as budgets_commands  # noqa: F401  (registers commands)
from canaryctl.cli import chaos as chaos_commands  # noqa: F401  (registers commands)
from canaryctl.cli import demo as demo_commands  # noqa: F401  (registers commands)
from canaryctl.cli import documents  # noqa: F401  (registers commands on main)
from canaryctl.cli import drills as drills_commands  # noqa: F401  (registers commands)
from canaryctl.cli import gate as gate_commands  # noqa: F401  (registers commands)
from canaryctl.cli import gateway as gateway_commands  # noqa: F401  (registers commands)
from canaryctl.cli import lab as lab_commands  # noqa: F401  (registers commands)
from canaryctl.cli import report as report_commands  # noqa: F401  (registers commands)
from canaryctl.cli import rollout as rollout_commands  # noqa: F401  (registers commands)
from canaryctl.cli.main import main

__all__ = ["main"]
