"""Every number, time, duration and URL a command takes is range-checked before it is used:
exit 2 with the option named, never a traceback or exit 3; `--state` is read as SQLite or
PostgreSQL, and a path that cannot be a database is refused at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from postgres_server import PostgresServer
from sqlalchemy.engine import make_url

from canaryctl.cli import main
from canaryctl.controller import StateStore
from tests.test_documents import GOOD

HUGE = "99999999999999999999"


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    StateStore(path).close()
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["backtest", "RUNBOOK", "--run", HUGE, "--state", "STATE"], "'--run'"),
        (["report", HUGE, "--state", "STATE"], f"run id {HUGE}"),
        (["rollout", "status", HUGE, "--state", "STATE"], "'[RUN_ID]'"),
        (["rollout", "list", "--limit", HUGE, "--state", "STATE"], "'--limit'"),
        (["experiment", "status", HUGE, "--state", "STATE"], "'[ID]'"),
        (
            ["backtest", "RUNBOOK", "--prometheus", "http://127.0.0.1:9", "--from", "0", "--to",
             "86400", "--every", "99999999999h"],
            "--every: must be at most 30 days",
        ),
        (
            ["backtest", "RUNBOOK", "--prometheus", "http://127.0.0.1:9", "--from", "1e300",
             "--to", "86400"],
            "--from: '1e300' is not a time",
        ),
        (
            ["backtest", "RUNBOOK", "--prometheus", "http://[::1", "--from", "0", "--to", "1"],
            "--prometheus: not a valid URL",
        ),
        (["cost", "report", "--metrics", "http://127.0.0.1:9/m", "--window", "99999999999h"],
         "--window: must be at most 30 days"),
        (["cost", "report", "--metrics", "http://[::1"], "--metrics: not a valid URL"),
        (["cost", "report", "--metrics", "http://h:99999/m"], "--metrics: port 99999"),
        (["cost", "report", "--metrics", "ftp://h/m"], "--metrics: 'ftp://h/m' is not an http"),
        (["cost", "report", "--metrics", "http://h/m", "--min-share", "nan"], "'--min-share'"),
        (["chaos", "list", "--proxy", "http://[::1"], "--proxy: not a valid URL"),
        (["chaos", "inject", "--proxy", "http://h", "--fault", "error", "--rate", "nan"],
         "'--rate'"),
        (["chaos", "proxy", "--upstream", "http://h", "--max-body-bytes", HUGE],
         "'--max-body-bytes'"),
        (["controller", "serve", "--state", "STATE", "--lease", "inf"], "'--lease'"),
        (["chaos", "proxy", "--upstream", "http://h", "--listen", "127.0.0.1:" + "9" * 5000],
         "--listen"),
    ],
)  # fmt: skip
def test_numbers_and_urls_out_of_range_are_exit_2_naming_the_option(
    runbook: Path, state: Path, args: list[str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", "t" * 32)
    args = [str(runbook) if a == "RUNBOOK" else str(state) if a == "STATE" else a for a in args]
    code, output = run(*args)
    assert code == 2, output
    assert named in output, output


def test_a_password_in_a_bad_url_is_never_echoed() -> None:
    code, output = run("cost", "report", "--metrics", "ftp://ops:s3cret-pw@h/m")
    assert code == 2 and "s3cret-pw" not in output, output


@pytest.mark.timeout(30)
def test_a_state_that_cannot_be_a_database_is_exit_2_at_once(tmp_path: Path, runbook: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    long_name = tmp_path / ("s" * 300)
    for path, reason in [
        (folder, "is a directory, not a SQLite database"),
        (fifo, "not a regular file (a FIFO, socket or device)"),
        (text, "not a SQLite database"),
        (long_name, "File name too long"),
    ]:
        for command in (["rollout", "list"], ["rollout", "run", "--detach", str(runbook)]):
            code, output = run(*command, "--state", str(path))
            assert code == 2, (command, output)
            assert reason in output and "attempts" not in output, output


def test_a_keyword_postgres_string_is_postgres_and_its_password_never_shown() -> None:
    conninfo = "host=127.0.0.1 port=9 dbname=canary user=ops password=s3cret-pw connect_timeout=1"
    code, output = run("rollout", "list", "--state", conninfo)
    assert code == 3, output  # nothing listens on port 9: a backend failure, after retries
    assert "host=127.0.0.1 port=9 dbname=canary user=ops" in output, output
    assert "s3cret-pw" not in output and "no state database" not in output, output
    code, output = run("rollout", "list", "--state", "host=127.0.0.1 password='unterminated")
    assert code == 2 and "unterminated" not in output, output


def test_validate_names_every_file_with_a_cap_per_file(tmp_path: Path) -> None:
    steps = "".join("    - set_weight: 500\n" for _ in range(100))
    bad = GOOD.replace("  steps:\n", "  steps:\n" + steps)
    paths = [tmp_path / f"{name}.yaml" for name in "abc"]
    for path in paths:
        path.write_text(bad)
    code, output = run("validate", *map(str, paths))
    assert code == 2
    lines = output.splitlines()
    for path in paths:
        mine = [line for line in lines if line.startswith(f"{path}:")]
        assert len(mine) == 51 and mine[-1] == f"{path}: and 50 more problems", mine[-3:]


def test_a_keyword_postgres_string_reaches_a_real_server(postgres: PostgresServer) -> None:
    url = make_url(postgres.database())
    conninfo = (
        f"host={url.host} port={url.port} dbname={url.database} user={url.username} "
        f"password={url.password}"
    )
    with StateStore(conninfo) as store:
        assert store.postgres and store.runs() == []
        assert str(url.password) not in store.where
    code, output = run("rollout", "list", "--state", conninfo, "-o", "json")
    assert code == 0 and output == "", output
