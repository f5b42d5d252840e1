"""A command imports only what it needs: `--help` and `validate` stay clear of the controller,
the servers and the backends, and the gateway process never loads the controller. Checked
structurally, in fresh interpreters (how fast they start is benchmarks/startup.py's job)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from canaryctl.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "canaryctl.controller",
    "canaryctl.gateway",
    "canaryctl.chaos",
    "canaryctl.flags",
    "starlette",
    "uvicorn",
    "ldclient",
    "httpx",
    "aiohttp",
    "rich",
    "prometheus_client",
    "prometheus_api_client",
    "sqlalchemy",
    "apscheduler",
    "redis",
)

RUN_CLI = """
import json, sys
out = sys.argv.pop(1)
sys.argv[0] = "canaryctl"
from canaryctl.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", RUN_CLI, str(out), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), result["code"]
    return set(result["modules"])


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


@pytest.mark.parametrize(
    "args", [("--help",), ("validate", "runbooks/support-bot-gpt4o-mini.yaml")], ids=str
)
def test_help_and_validate_import_no_heavy_module(tmp_path: Path, args: tuple[str, ...]) -> None:
    modules = imported_by(tmp_path, *args)
    assert [p for p in HEAVY if loaded(modules, p)] == []


def test_validate_loads_only_the_kinds_a_rollout_holds(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "validate", "runbooks/support-bot-gpt4o-mini.yaml")
    assert "canaryctl.runbook.rollout" in modules
    assert "canaryctl.runbook.lab" not in modules
    assert "canaryctl.runbook.scenario" not in modules


def test_validate_builds_no_metric_profile_model_for_a_runbook_that_reads_none(
    tmp_path: Path,
) -> None:
    """The support bot's runbook scrapes its metrics: no MetricProfile is read, none is built."""
    modules = imported_by(tmp_path, "validate", "runbooks/support-bot-gpt4o-mini.yaml")
    assert "canaryctl.runbook.profile" not in modules
    assert "canaryctl.metrics.measures" not in modules


def test_validate_of_a_runbook_naming_a_shipped_profile_builds_that_profile(
    tmp_path: Path,
) -> None:
    """The positive control: a Prometheus runbook's profile is read and checked."""
    modules = imported_by(tmp_path, "validate", "runbooks/litellm-gpt4o-mini.yaml")
    assert "canaryctl.runbook.profile" in modules
    assert "canaryctl.metrics.measures" in modules


PLUGIN_SCAN = """
import sys
from canaryctl.cli import main
try:
    main.main(["validate", "runbooks/support-bot-gpt4o-mini.yaml"], prog_name="canaryctl")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
import os
from pydantic.plugin import _loader
print(_loader._plugins is not None, os.environ.get("PYDANTIC_DISABLE_PLUGINS"))
"""


@pytest.mark.parametrize(
    ("user_value", "scanned"), [(None, "False None"), ("", "True "), ("x", "True x")]
)
def test_validate_skips_pydantic_plugins_unless_the_user_set_the_switch(
    user_value: str | None, scanned: str
) -> None:
    """pydantic's entry-point scan is skipped while validate runs and the variable is restored;
    a value the user set (empty: every plugin on) is theirs, and pydantic scans."""
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if user_value is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = user_value
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN_SCAN],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.splitlines()[-1] == scanned


def test_the_chaos_admin_commands_load_no_server(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "chaos", "list", "--help")
    assert "canaryctl.chaos.admin" in modules
    servers = ("canaryctl.chaos.proxy", "canaryctl.chaos.server", "starlette", "uvicorn")
    assert [p for p in servers if loaded(modules, p)] == []


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "--help")
    assert sorted(m for m in modules if m.startswith("canaryctl.")) == [
        "canaryctl.cli",
        "canaryctl.cli.main",
        "canaryctl.errors",
    ]


def test_a_rollout_command_that_runs_does_load_the_controller(tmp_path: Path) -> None:
    """The positive control: the checks here would see the controller if it were loaded."""
    from canaryctl.controller import StateStore

    state = tmp_path / "state.db"
    with StateStore(state):
        pass
    modules = imported_by(tmp_path, "rollout", "list", "--state", str(state))
    assert "canaryctl.controller.store" in modules
    assert loaded(modules, "sqlalchemy")


HELP_LIGHT = {"canaryctl.controller": "defaults", "canaryctl.chaos": "admin"}
"""The one module of these packages a `--help` may load: the controller's defaults (of `--state`
and `--lease`) and the fault kinds `chaos inject` offers; never the rest of the package."""

RUN_HELPS = """
import json, sys
out, paths = sys.argv[1], json.loads(sys.argv[2])
from canaryctl.cli import main
for path in paths:
    try:
        main.main([*path, "--help"], prog_name="canaryctl")
    except SystemExit as exc:
        assert exc.code in (0, None), (path, exc.code)
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def command_paths(command: click.Command, path: tuple[str, ...]) -> list[list[str]]:
    paths = [list(path)]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            paths += command_paths(sub, (*path, name))
    return paths


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_of_a_command_loads_no_heavy_module(tmp_path: Path, name: str) -> None:
    """`NAME --help` and the help of each of its subcommands, in one fresh interpreter per
    command: the command's module is imported, what it runs with is not."""
    command = main.get_command(click.Context(main), name)
    assert command is not None
    paths = command_paths(command, (name,))
    out = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", RUN_HELPS, str(out), json.dumps(paths)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    modules = set(json.loads(out.read_text()))
    assert [p for p in HEAVY if p not in HELP_LIGHT and loaded(modules, p)] == []
    for package, light in HELP_LIGHT.items():
        assert {m for m in modules if loaded({m}, package)} <= {package, f"{package}.{light}"}
    # documents are read (and their models built) by the commands that run
    assert not loaded(modules, "pydantic") and not loaded(modules, "yaml")


def test_the_gateway_process_does_not_load_the_controller() -> None:
    code = """
import sys
import canaryctl.cli.gateway
from canaryctl.gateway import create_app
from canaryctl.runbook import Gateway, load_document
create_app(load_document("runbooks/gateway.yaml", expect=Gateway).spec)
print(",".join(sorted(sys.modules)))
"""
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}  # the shipped config's cloud models need one
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    modules = set(done.stdout.strip().split(","))
    assert loaded(modules, "canaryctl.gateway.app")
    for package in ("canaryctl.controller", "canaryctl.chaos", "sqlalchemy", "apscheduler", "rich"):
        assert not loaded(modules, package), package


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_loads_and_its_help_line_is_its_own(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command)
    assert command.get_short_help_str(1000) == COMMANDS[name][1]


@pytest.mark.parametrize(
    "package",
    [
        "canaryctl",
        "canaryctl.analysis",
        "canaryctl.chaos",
        "canaryctl.controller",
        "canaryctl.flags",
        "canaryctl.gateway",
        "canaryctl.metrics",
        "canaryctl.runbook",
    ],
)
def test_every_public_name_of_a_lazy_package_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name
