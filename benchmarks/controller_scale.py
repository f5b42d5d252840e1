"""What one controller process costs per rollout, and how soon a dead controller is replaced.

Scale: `--rollouts` runs (default 100) submitted to one state database and driven at once by one
`Controller` in this process, each on a memory flag and a scripted metrics source (healthy, so
every run holds its pause), analysed every `--interval` seconds (default 30, the goal's). Once
every run is in its pause, a `--window` of wall time is measured: this process's CPU time per
rollout per analysis interval (and as a share of one core), the state database's statements per
analysis (every statement the controller sent, polls and heartbeats included), and the resident
memory per rollout. On PostgreSQL the server's own CPU (its processes, from /proc) is reported
beside ours. The goal: under 10% of one core for 100 rollouts at a 30 s interval.

Takeover: two `canaryctl controller serve`-like processes (this script with `--child`: the real
Controller and HTTP service, file flags, scripted metrics) share one database with a `--lease`
of 5 s. For each of `--kills` runs: submit, wait until its flag moved, SIGKILL the controller
driving it, and time until the other's lease on the run is journaled (and its `resumed` event:
the run continues); then abort the run and start a fresh controller in the victim's place. The
goal: under the lease time plus one scan interval (lease / 6).

Both run on SQLite and, when Debian's PostgreSQL is installed, on a PostgreSQL cluster started in
a temporary directory (tests/postgres_server.py).

    python benchmarks/controller_scale.py [--rollouts 100] [--interval 30] [--window 90]
        [--kills 20] [--lease 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import record
import yaml

from canaryctl.analysis import Verdict
from canaryctl.controller.events import RolloutObserver
from canaryctl.controller.runner import submit_rollout
from canaryctl.controller.service import Controller, ReleasingClock
from canaryctl.controller.store import StateStore
from canaryctl.flags import FileFlagStore, MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Rollout, parse_document

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def runbook(name: str, interval: float, pause: float, flags: Path) -> Rollout:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": name,
                     "baseline": "old", "canary": "new"},
            "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
            "slos": [{"metric": "error_rate", "max": 0.02},
                     {"metric": "latency_p95_seconds", "max": 2.0}],
            "analysis": {"interval": f"{interval:g}s", "min_requests": 50, "method": "threshold"},
            "steps": [{"set_weight": 10}, {"pause": f"{pause:g}s"}, {"set_weight": 100}],
        },
    }  # fmt: skip
    return parse_document(yaml.safe_dump(document), f"{name}.yaml", expect=Rollout)


def healthy(since: float, now: float) -> Observation:
    n = 50 * max(now - since, 1.0)
    buckets = ((0.5, n), (1.0, n), (2.0, n), (float("inf"), n))
    stats = VariantStats(requests=n, errors=0.0, latency_buckets=buckets)
    return Observation(since, now, {"old": stats, "new": stats})


def scripted(clock: ReleasingClock) -> ScriptedMetricsSource:
    return ScriptedMetricsSource(healthy, clock.now, recent={"old": 600.0})


class Analyses(RolloutObserver):
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        with self._lock:
            self.count += 1


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(postmaster: int | None) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster and every child of it."""
    if postmaster is None:
        return 0.0
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def scale(state: str, postmaster: int | None, args: argparse.Namespace, work: Path) -> dict:
    pause = args.window + 4 * args.interval + 60
    flags: dict[str, MemoryFlagStore] = {}

    def backends(rollout: Rollout, clock: ReleasingClock) -> tuple[Any, Any]:
        key = rollout.spec.flag.key
        return flags.setdefault(key, MemoryFlagStore(key, "old", "new")), scripted(clock)

    ids = [
        submit_rollout(runbook(f"route-{i}", args.interval, pause, work / "unused.json"),
                       state_path=state)[0]
        for i in range(args.rollouts)
    ]  # fmt: skip
    analyses = Analyses()
    with StateStore(state) as store:
        rss_before = rss_bytes()
        service = Controller(store, backends=backends, observers=[analyses]).start()
        try:
            deadline = time.monotonic() + 120 + args.interval
            while not all(store.run(i).phase == "paused" for i in ids):  # type: ignore[union-attr]
                if time.monotonic() > deadline:
                    raise SystemExit("not every run reached its pause in time")
                time.sleep(1.0)
            time.sleep(args.interval)  # every run past its first analysis
            cpu0, server0, queries0, count0 = (
                cpu_seconds(), server_cpu(postmaster), store.queries, analyses.count
            )  # fmt: skip
            wall0 = time.monotonic()
            time.sleep(args.window)
            wall = time.monotonic() - wall0
            cpu, server = cpu_seconds() - cpu0, server_cpu(postmaster) - server0
            queries, count = store.queries - queries0, analyses.count - count0
            rss_during = rss_bytes()
            driving = len(service.driving())
        finally:
            service.stop()
    intervals = wall / args.interval
    return {
        "rollouts": args.rollouts,
        "driving": driving,
        "interval_seconds": args.interval,
        "window_seconds": round(wall, 2),
        "analyses": count,
        "cpu_seconds": round(cpu, 3),
        "cpu_share_of_one_core": round(cpu / wall, 4),
        "cpu_ms_per_rollout_per_interval": round(1000 * cpu / args.rollouts / intervals, 3),
        "server_cpu_seconds": round(server, 3) if postmaster is not None else None,
        "server_cpu_share_of_one_core": round(server / wall, 4) if postmaster else None,
        "queries": queries,
        "queries_per_analysis": round(queries / count, 1) if count else None,
        "rss_mib_before": round(rss_before / 2**20, 1),
        "rss_mib_driving": round(rss_during / 2**20, 1),
        "rss_kib_per_rollout": round((rss_during - rss_before) / 1024 / args.rollouts, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


# -- takeover -----------------------------------------------------------------------------------


def child(state: str, lease: float) -> None:
    """A controller process: the real service, its runs' file flags, scripted metrics."""
    import socket

    from canaryctl.controller.service import serve

    def backends(rollout: Rollout, clock: ReleasingClock) -> tuple[Any, Any]:
        flag = rollout.spec.flag
        store = FileFlagStore(flag.path, flag.key, flag.baseline, flag.canary)  # type: ignore[union-attr]
        return store, scripted(clock)

    with StateStore(state) as store:
        service = Controller(store, lease_ttl=lease, poll_interval=0.2, backends=backends)
        listener = socket.create_server(("127.0.0.1", 0))
        print(f"listening http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
        serve(service, listener)


class Child:
    def __init__(self, state: str, lease: float, log: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", "--lease", str(lease)],
            env={**os.environ, "CANARYCTL_STATE": state},
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"(http://\S+)", line)
        if found is None:
            raise SystemExit(f"a controller did not start; see {log}")
        self.url = found.group(1)
        self.owner = httpx.get(f"{self.url}/healthz", timeout=10).json()["owner"]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def flag_file(path: Path, key: str) -> None:
    flag = {
        "key": key, "on": True, "variations": ["old", "new"], "fallthrough": {"variation": 0},
        "offVariation": 0, "version": 1, "salt": key, "targets": [], "contextTargets": [],
        "rules": [], "prerequisites": [], "trackEvents": False,
    }  # fmt: skip
    path.write_text(json.dumps({"flags": {key: flag}, "segments": {}}))


def wait_for(what: str, condition: Callable[[], bool], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.05)


def takeover(state: str, args: argparse.Namespace, work: Path) -> dict:
    log = work / "controllers.log"
    pair = [Child(state, args.lease, log), Child(state, args.lease, log)]
    lease_s, resumed_s, outcomes = [], [], []
    try:
        with StateStore(state) as store:
            for i in range(args.kills):
                path = work / f"flags-{i}.json"
                flag_file(path, f"route-{i}")
                rollout = runbook(f"route-{i}", 1.0, 600.0, path)
                run_id, _ = submit_rollout(rollout, state_path=state)

                def moved(run_id: int = run_id) -> bool:
                    done = store.events(run_id, "flag_changed")
                    return bool(done) and done[0].result is not None

                wait_for("the first weight", moved)
                owner = store.run(run_id).owner  # type: ignore[union-attr]
                victim = next(c for c in pair if c.owner == owner)
                killed_at = time.time()
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait()

                def resumed(run_id: int = run_id) -> bool:
                    return bool(store.events(run_id, "resumed"))

                wait_for("the takeover", resumed, limit=args.lease * 4 + 60)
                taken = [e for e in store.events(run_id, "lease") if e.data["previous"] == owner]
                lease_s.append(taken[0].at - killed_at)
                resumed_s.append(store.events(run_id, "resumed")[0].at - killed_at)
                store.request(run_id, "abort", by="benchmark", at=time.time())
                wait_for("the abort", lambda r=run_id: store.run(r).finished)  # type: ignore[union-attr]
                outcomes.append(store.run(run_id).outcome)  # type: ignore[union-attr]
                pair[pair.index(victim)] = Child(state, args.lease, log)
                print(f"kill {i + 1}: taken over after {lease_s[-1]:.2f}s", file=sys.stderr)
    finally:
        for process in pair:
            process.kill()
    return {
        "kills": args.kills,
        "lease_seconds": args.lease,
        "scan_interval_seconds": round(min(max(args.lease / 6, 0.2), 5.0), 3),
        "takeover_seconds": [round(s, 3) for s in lease_s],
        "takeover_median_seconds": round(statistics.median(lease_s), 3),
        "takeover_max_seconds": round(max(lease_s), 3),
        "resumed_median_seconds": round(statistics.median(resumed_s), 3),
        "resumed_max_seconds": round(max(resumed_s), 3),
        "outcomes": sorted(set(outcomes)),
    }


@contextmanager
def postgres() -> Iterator[Any]:
    """A PostgreSQL cluster in a temporary directory (tests/postgres_server.py), or None."""
    sys.path.insert(0, str(ROOT / "tests"))
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        yield None
        return
    from postgres_server import PostgresServer, postgres_bindir

    workdir = Path(tempfile.mkdtemp(prefix="canaryctl-pg-bench-"))
    server = PostgresServer(postgres_bindir(), workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=100)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=90.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    record.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        child(os.environ["CANARYCTL_STATE"], args.lease)
        return
    before = record.machine()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, postgres() as pg:
        work = Path(tmp)
        databases: dict[str, Callable[[str], str]] = {"sqlite": lambda n: str(work / f"{n}.db")}
        if pg is not None:
            databases["postgresql"] = lambda n: pg.database()
        for name, database in databases.items():
            postmaster = None if name == "sqlite" else pg._process.pid
            print(f"{name}: {args.rollouts} rollouts, {args.window:g}s window", file=sys.stderr)
            figures = scale(database("scale"), postmaster, args, work)
            print(json.dumps(figures), file=sys.stderr)
            (work / name).mkdir()
            results[name] = {
                "scale": figures,
                "takeover": takeover(database("takeover"), args, work / name),
            }
            print(json.dumps(results[name]["takeover"]), file=sys.stderr)
    record.write(
        "controller_scale", results, args, before=before, packages=("sqlalchemy", "psycopg")
    )


if __name__ == "__main__":
    main()
