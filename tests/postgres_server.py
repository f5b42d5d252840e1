"""A real PostgreSQL server for tests (Debian's `postgresql` package), on a free loopback port.

It runs in its own temporary directory with its own cluster; `database()` creates an empty
database and returns its URL, so each test gets a clean schema. `initdb` refuses to run as root,
so as root (CI) the cluster belongs to `nobody`. Without the binaries, tests using it skip
locally and FAIL in CI (env CI set), where .ci/run installs them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from binaries import require_binary
from loopback import free_port

WAIT = 60.0
"""Seconds to wait for the server to accept connections before a test fails: a bound."""

PASSWORD = "pg-test-secret"
"""The superuser's password: tests check that it appears in no output."""


class PostgresServer:
    """A running cluster; `database()` creates one fresh database and returns its URL."""

    def __init__(self, bindir: Path, workdir: Path, *, durable: bool = False) -> None:
        self._bindir = bindir
        self._durable = durable
        """Keep fsync and synchronous commits on: a commit acknowledged survives SIGKILL, as on
        a real server (the fault suite needs that; other tests trade it for speed)."""
        self.port = free_port()
        self._data = workdir / "data"
        self._socket = workdir / "socket"
        self._socket.mkdir()
        self._log = workdir / "postgres.log"
        password_file = workdir / "password"
        password_file.write_text(PASSWORD + "\n")
        self._as_owner = _unprivileged(workdir)
        self._run(
            "initdb",
            "-D",
            str(self._data),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            f"--pwfile={password_file}",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._names = itertools.count(1)
        self.start()

    def start(self) -> None:
        """Start the server on its cluster (again, after `kill`) and wait until it answers."""
        bindir = self._bindir
        self._process = subprocess.Popen(
            [
                *self._as_owner,
                str(bindir / "postgres"),
                "-D",
                str(self._data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self._socket),
                *(
                    []
                    if self._durable
                    else [
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ]
                ),
                "-c",
                "max_connections=300",
            ],
            stdout=self._log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + WAIT
        while not self._ready():
            if self._process.poll() is not None:
                pytest.fail(f"postgres exited with {self._process.returncode}; see {self._log}")
            if time.monotonic() > deadline:
                pytest.fail(f"postgres did not start within {WAIT:g}s; see {self._log}")
            time.sleep(0.2)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self._as_owner, str(self._bindir / program), *args],
            check=True,
            capture_output=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
        )

    def _ready(self) -> bool:
        probe = subprocess.run(
            [str(self._bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return probe.returncode == 0

    def database(self) -> str:
        """A new, empty database: its URL (password included, as a user would write it)."""
        name = f"t{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def pids(self) -> list[int]:
        """The postmaster and every process it forked (backends, checkpointer, WAL writer...)."""
        root = self._process.pid
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def signal_all(self, sig: int) -> None:
        """Send `sig` to every server process (SIGSTOP freezes the whole server, SIGCONT thaws
        it); with `setpriv` as root the postmaster is the direct child."""
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL every server process, as a crash would; `start()` brings it back."""
        self.signal_all(signal.SIGKILL)
        self._process.wait()

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended, as when a database server goes away."""
        self.signal_all(signal.SIGCONT)
        if self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _unprivileged(workdir: Path) -> list[str]:
    """The command prefix that runs the server's programs as `nobody` when we are root."""
    if os.geteuid() != 0:
        return []
    shutil.chown(workdir, "nobody")
    for path in workdir.iterdir():
        shutil.chown(path, "nobody")
    return [
        require_binary("setpriv", package="util-linux"),
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--",
    ]


def postgres_bindir() -> Path:
    """Where Debian keeps the server's programs (not on PATH); skips or fails as the rule says."""
    initdb = require_binary(
        "initdb",
        package="postgresql",
        search=sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True),
    )
    return Path(initdb).resolve().parent  # a symlink on PATH points into the real one


@contextmanager
def postgres_server(workdir: Path, *, durable: bool = False) -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_bindir(), workdir, durable=durable)
    try:
        yield server
    finally:
        server.stop()
