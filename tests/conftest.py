"""Shared test set-up: a run that collects nothing fails; the run's workers and bytecode; a flag
file writer and a Lab builder."""

from __future__ import annotations

import compileall
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ldclient import LDClient
from ldclient.config import Config
from ldclient.integrations import Files
from postgres_server import PostgresServer, postgres_server

from canaryctl.flags import FileFlagStore
from canaryctl.runbook.lab import LabSpec

FLAG_KEY = "model-flag"
ROOT = Path(__file__).resolve().parent.parent

# Bytecode is written and read in a test run whatever PYTHONDONTWRITEBYTECODE says (CI sets it):
# without it every xdist worker rewrote the asserts of every test module, and every process a
# test starts (`python -m canaryctl ...`) compiled canaryctl's modules from source again.
sys.dont_write_bytecode = False

WORKERS_PER_CPU = 2
"""`-n auto` (pyproject.toml) starts this many workers a CPU: most end-to-end tests wait on
loopback I/O and on servers in other processes, not on the CPU."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """A run of one test file stays in one process (starting workers costs more than they
    save there); `-n N` still asks for N."""
    paths = [arg.split("::")[0] for arg in config.args]
    if len(paths) == 1 and paths[0].endswith(".py"):
        return 0
    return WORKERS_PER_CPU * (os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    """Once, in the process that starts the workers: canaryctl's bytecode for the processes the
    tests start, which read it but do not write it (their environment says not to)."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(ROOT / "canaryctl", quiet=1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected no test proved nothing: fail it instead of pytest's exit 5."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _flag_document(variations: list[str], fallthrough: dict[str, Any], version: int) -> str:
    flag = {
        "key": FLAG_KEY,
        "on": True,
        "variations": variations,
        "fallthrough": fallthrough,
        "offVariation": 0,
        "version": version,
        "salt": FLAG_KEY,
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "trackEvents": False,
    }
    return json.dumps({"flags": {FLAG_KEY: flag}, "segments": {}})


def _postgres_in_a_tempdir(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A real PostgreSQL whose directory is made here, not under pytest's tmp_path, which
    `nobody` (the server's user when we are root) may not enter."""
    workdir = Path(tempfile.mkdtemp(prefix="canaryctl-pg-"))
    try:
        with postgres_server(workdir, durable=durable) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (each test asks it for a fresh database)."""
    yield from _postgres_in_a_tempdir()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, which the test may stop."""
    yield from _postgres_in_a_tempdir()


@pytest.fixture
def durable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own that keeps every commit it acknowledged through a
    SIGKILL, as a real server does: the fast one loses the last ~50 of 200 commits made just
    before a kill, and a journal that forgets what it acknowledged sends any driver wrong."""
    yield from _postgres_in_a_tempdir(durable=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database of each kind: a SQLite path, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database()


@pytest.fixture
def write_flags(tmp_path: Path) -> Callable[..., Path]:
    """write_flags(variations, fallthrough={"variation": 0}, version=1) -> the flag file."""
    path = tmp_path / "flags.json"

    def write(
        variations: list[str], fallthrough: dict[str, Any] | None = None, version: int = 1
    ) -> Path:
        text = _flag_document(variations, fallthrough or {"variation": 0}, version)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic, as canaryctl's flag store writes it
        return path

    return write


@pytest.fixture
def make_lab(tmp_path: Path) -> Callable[..., LabSpec]:
    """make_lab(providers, models=None, flag=FLAG_KEY, **spec) -> LabSpec. Models default to one
    per provider, named after it; route "bot" evaluates `flag` and defaults to the first model."""

    def make(
        providers: list[dict[str, Any]],
        models: list[dict[str, Any]] | None = None,
        *,
        flag: str = FLAG_KEY,
        **spec: Any,
    ) -> LabSpec:
        models = models or [
            {"name": p["name"], "base_url": f"lab://{p['name']}"} for p in providers
        ]
        flags = {"provider": "file", "path": str(tmp_path / "flags.json"), "poll_interval": 0.1}
        gateway = {
            "listen": "127.0.0.1:0",
            "flags": flags,
            "routes": [{"name": "bot", "flag": flag, "default_model": models[0]["name"]}],
            "models": models,
        }
        return LabSpec.model_validate({"providers": providers, "gateway": gateway, **spec})

    return make


@pytest.fixture
def store(flag_file: Path) -> FileFlagStore:
    """The file store over the module's `flag_file` (key support-bot-model)."""
    return FileFlagStore(
        flag_file, "support-bot-model", baseline="gpt-4-turbo", canary="gpt-4o-mini"
    )


@pytest.fixture
def sdk(flag_file: Path) -> Iterator[LDClient]:
    """The real SDK watching the module's `flag_file`, as the gateway runs it (offline=True
    ignores file sources)."""
    source = Files.new_data_source(
        paths=[str(flag_file)], auto_update=True, force_polling=True, poll_interval=0.2
    )
    client = LDClient(Config(sdk_key="x", send_events=False, update_processor_class=source))
    yield client
    client.close()
