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

`--real` measures the same on real backends instead (benchmarks/results/controller_scale_real.json):
`canaryctl lab serve` (a real gateway, lab providers) with one route per rollout, requests on
every route at `--rate` a second from a process of its own, every route warmed up on both
variants so /metrics holds all its series; state in PostgreSQL; flags in the gateway's flag
file; the runbooks' own scrape source, shared by the controller's runs. Then the same rollouts
(on flags of their own) reading a real Prometheus that scrapes the gateway, when Debian's
prometheus is installed; the exposition parsed with prometheus_client's parser and with the
scrape cache's line filter; and the takeover, by controllers reading the real gateway, at the
default lease (30 s).

    python benchmarks/controller_scale.py [--rollouts 100] [--interval 30] [--window 90]
        [--kills 20] [--lease 5]
    python benchmarks/controller_scale.py --real [--rollouts 100] [--interval 30] [--window 90]
        [--kills 3] [--lease 30] [--rate 20]
"""

from __future__ import annotations

import argparse
import itertools
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
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import record
import yaml

from canaryctl.analysis import Verdict
from canaryctl.controller.defaults import DEFAULT_LEASE_TTL
from canaryctl.controller.events import RolloutObserver
from canaryctl.controller.runner import submit_rollout
from canaryctl.controller.service import Controller, ReleasingClock
from canaryctl.controller.store import StateStore
from canaryctl.flags import FileFlagStore, MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Rollout, parse_document

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def runbook(
    name: str,
    interval: float,
    pause: float,
    flags: Path,
    metrics: dict[str, Any] | None = None,
    key: str | None = None,
) -> Rollout:
    """`metrics`: the runbook's section (default: a scrape target a fake stands in for);
    `key`: the flag (default `name`)."""
    if metrics is None:
        metrics = {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]}
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": key or name,
                     "baseline": "old", "canary": "new"},
            "metrics": metrics,
            "slos": [{"metric": "error_rate", "max": 0.5},
                     {"metric": "latency_p95_seconds", "max": 10.0}],
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
    """The fake-backend figures: memory flags, scripted metrics."""
    pause = args.window + 4 * args.interval + 60
    flags: dict[str, MemoryFlagStore] = {}

    def backends(rollout: Rollout, clock: ReleasingClock) -> tuple[Any, Any]:
        key = rollout.spec.flag.key
        return flags.setdefault(key, MemoryFlagStore(key, "old", "new")), scripted(clock)

    rollouts = [runbook(f"route-{i}", args.interval, pause, work / "unused.json")
                for i in range(args.rollouts)]  # fmt: skip
    return measure(state, postmaster, rollouts, backends, args)


def settled(record: Any) -> bool:
    """In its pause, or ended (a run that could not start: its reason is reported)."""
    return record is not None and (record.phase == "paused" or record.finished)


def measure(
    state: str,
    postmaster: int | None,
    rollouts: list[Rollout],
    backends: Any,
    args: argparse.Namespace,
) -> dict:
    """Submit `rollouts`, drive them with one Controller in this process (`backends` as its
    own, None for the runbooks'), and measure a window of wall time once all hold their pause."""
    ids = [submit_rollout(rollout, state_path=state)[0] for rollout in rollouts]
    analyses = Analyses()
    with StateStore(state) as store:
        rss_before = rss_bytes()
        service = Controller(store, backends=backends, observers=[analyses]).start()
        try:
            deadline = time.monotonic() + 600 + args.interval  # a bound: the machine is shared
            while not all(settled(store.run(i)) for i in ids):
                if time.monotonic() > deadline:
                    phases = sorted({store.run(i).phase for i in ids})  # type: ignore[union-attr]
                    raise SystemExit(f"not every run reached its pause in time: {phases}")
                time.sleep(1.0)
            time.sleep(args.interval)  # every run past its first analysis
            ended = [r for r in map(store.run, ids) if r is not None and r.finished]
            cpu0, server0, queries0, count0, scrapes0 = (
                cpu_seconds(), server_cpu(postmaster), store.queries, analyses.count,
                service.scrapes.scrapes,
            )  # fmt: skip
            wall0 = time.monotonic()
            time.sleep(args.window)
            wall = time.monotonic() - wall0
            cpu, server = cpu_seconds() - cpu0, server_cpu(postmaster) - server0
            queries, count = store.queries - queries0, analyses.count - count0
            scrapes = service.scrapes.scrapes - scrapes0
            rss_during = rss_bytes()
            driving = len(service.driving())
        finally:
            service.stop()
    intervals = wall / args.interval
    return {
        "rollouts": len(rollouts),
        "driving": driving,
        "ended_before_the_window": len(ended),
        "why_ended": sorted({r.reason for r in ended}),
        "interval_seconds": args.interval,
        "window_seconds": round(wall, 2),
        "analyses": count,
        "analyses_due": round(driving * intervals),
        "scrapes": scrapes,
        "scrapes_per_interval": round(scrapes / intervals, 2),
        "cpu_seconds": round(cpu, 3),
        "cpu_share_of_one_core": round(cpu / wall, 4),
        "cpu_ms_per_rollout_per_interval": round(1000 * cpu / len(rollouts) / intervals, 3),
        "server_cpu_seconds": round(server, 3) if postmaster is not None else None,
        "server_cpu_share_of_one_core": round(server / wall, 4) if postmaster else None,
        "queries": queries,
        "queries_per_analysis": round(queries / count, 1) if count else None,
        "rss_mib_before": round(rss_before / 2**20, 1),
        "rss_mib_driving": round(rss_during / 2**20, 1),
        "rss_kib_per_rollout": round((rss_during - rss_before) / 1024 / len(rollouts), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


# -- takeover -----------------------------------------------------------------------------------


def child(state: str, lease: float, real: bool) -> None:
    """A controller process: the real service, its runs' file flags, scripted metrics (the
    runbooks' own, a real gateway's /metrics, if `real`)."""
    import socket

    from canaryctl.controller.service import serve

    def backends(rollout: Rollout, clock: ReleasingClock) -> tuple[Any, Any]:
        flag = rollout.spec.flag
        store = FileFlagStore(flag.path, flag.key, flag.baseline, flag.canary)  # type: ignore[union-attr]
        return store, scripted(clock)

    with StateStore(state) as store:
        service = Controller(
            store, lease_ttl=lease, poll_interval=0.2, backends=None if real else backends
        )
        listener = socket.create_server(("127.0.0.1", 0))
        print(f"listening http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
        serve(service, listener)


class Child:
    def __init__(self, state: str, lease: float, log: Path, real: bool) -> None:
        real_flag = ["--real"] if real else []
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", "--lease", str(lease), *real_flag],
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


def flag_file(path: Path, keys: list[str], serve: int = 0) -> None:
    """A LaunchDarkly file-data flag file: each flag serving variation `serve` (0: "old")."""
    flags = {
        key: {
            "key": key, "on": True, "variations": ["old", "new"],
            "fallthrough": {"variation": serve}, "offVariation": 0, "version": 1, "salt": key,
            "targets": [], "contextTargets": [], "rules": [], "prerequisites": [],
            "trackEvents": False,
        }
        for key in keys
    }  # fmt: skip
    path.write_text(json.dumps({"flags": flags, "segments": {}}))


def wait_for(what: str, condition: Callable[[], bool], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.05)


def takeover(
    state: str, args: argparse.Namespace, work: Path, metrics_url: str | None = None
) -> dict:
    """Kill the driver of a fresh run `args.kills` times; with `metrics_url` the controllers
    read a real gateway (its route-N, with traffic) instead of scripted metrics."""
    log = work / "controllers.log"
    real = metrics_url is not None
    pair = [Child(state, args.lease, log, real), Child(state, args.lease, log, real)]
    lease_s, resumed_s, outcomes = [], [], []
    try:
        with StateStore(state) as store:
            for i in range(args.kills):
                path = work / f"flags-{i}.json"
                flag_file(path, [f"route-{i}"])
                metrics = None
                if metrics_url is not None:
                    metrics = {"provider": "scrape", "targets": [metrics_url],
                               "route": f"route-{i % args.rollouts}"}  # fmt: skip
                rollout = runbook(f"route-{i}", 1.0, 600.0, path, metrics)
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
                pair[pair.index(victim)] = Child(state, args.lease, log, real)
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


# -- real backends ------------------------------------------------------------------------------

FAST = {"median": "20ms", "p95": "80ms"}


def lab_document(work: Path, routes: int, flags: Path) -> Path:
    """Two lab providers (1% errors each) behind a gateway with `routes` routes, route-N on
    flag route-N: a /metrics with every route's series for both variants once warmed up."""
    providers = [{"name": name, "latency": FAST, "errors": {"rate": 0.01}}
                 for name in ("old", "new")]  # fmt: skip
    lab = {
        "apiVersion": "canaryctl/v1",
        "kind": "Lab",
        "metadata": {"name": "controller-scale"},
        "spec": {
            "providers": providers,
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {"provider": "file", "path": str(flags)},
                "routes": [
                    {"name": f"route-{i}", "flag": f"route-{i}", "default_model": "old"}
                    for i in range(routes)
                ],
                "models": [{"name": n, "base_url": f"lab://{n}"} for n in ("old", "new")],
            },
        },
    }
    path = work / "lab.yaml"
    path.write_text(yaml.safe_dump(lab))
    return path


@contextmanager
def lab(document: Path, log: Path) -> Iterator[dict[str, str]]:
    """`canaryctl lab serve` (the real gateway, lab providers) in a process of its own."""
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryctl", "lab", "serve", str(document), "--no-traffic",
         "--output", "json"],
        stdout=subprocess.PIPE, stderr=log.open("ab"), text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"the lab did not start; see {log}")
        yield json.loads(line)
    finally:
        process.terminate()
        process.wait(30)


def ask(client: httpx.Client, gateway: str, route: str, user: int) -> None:
    body = {"model": route, "messages": [{"role": "user", "content": f"What is {user} + 2?"}]}
    client.post(f"{gateway}/v1/chat/completions", json=body, headers={"X-User": f"u{user}"})


def traffic(gateway: str, routes: int, rate: float, workers: int = 8) -> None:
    """Requests round the routes at `rate` a second from `workers` threads, until killed: each
    route's baseline has traffic, as preflight asks, and the exposition changes between scrapes.
    Several workers keep the rate on a loaded machine, where one request can take a second."""
    started = time.monotonic()

    def worker(w: int) -> None:
        with httpx.Client(timeout=10) as client:
            for n in itertools.count(w, workers):
                time.sleep(max(started + n / rate - time.monotonic(), 0.0))
                with suppress(httpx.HTTPError):
                    ask(client, gateway, f"route-{n % routes}", n)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def warm_up(gateway: str, flags: Path, keys: list[str], routes: int) -> None:
    """Every route served by both variants, so /metrics holds every series a run reads."""
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        for serve in (1, 0):
            flag_file(flags, keys, serve)
            time.sleep(2.0)  # the gateway re-reads its flag file every 0.5 s
            list(pool.map(lambda n: ask(client, gateway, f"route-{n % routes}", n),
                          range(4 * routes)))  # fmt: skip


def parsers(text: str, repeat: int = 5) -> dict[str, float]:
    """CPU ms to parse one exposition: prometheus_client's parser, and the line filter the
    scrape cache uses (first parse, then the next ones, which reuse the parsed label sets)."""
    from prometheus_client.parser import text_string_to_metric_families

    from canaryctl.metrics.scrape_cache import ExpositionFilter

    def cpu_ms(work: Callable[[], object], times: int) -> float:
        start = time.process_time()
        for _ in range(times):
            work()
        return round(1000 * (time.process_time() - start) / times, 2)

    line_filter = ExpositionFilter()
    return {
        "prometheus_client_ms": cpu_ms(lambda: list(text_string_to_metric_families(text)), repeat),
        "line_filter_first_ms": cpu_ms(lambda: line_filter.parse(text), 1),
        "line_filter_ms": cpu_ms(lambda: line_filter.parse(text), repeat),
    }


def real_backends(args: argparse.Namespace) -> dict[str, Any]:
    """The real gateway and lab, PostgreSQL, the scrape source and a Prometheus row, each row
    measured in a process of its own (`row`), so that its memory is its own."""
    with tempfile.TemporaryDirectory() as tmp, postgres() as pg:
        if pg is None:
            raise SystemExit("--real needs Debian's postgresql (initdb)")
        work = Path(tmp)
        flags = work / "flags.json"
        keys = [f"route-{i}" for i in range(args.rollouts)]
        flag_file(flags, keys)
        results: dict[str, Any] = {}
        with lab(lab_document(work, args.rollouts, flags), work / "lab.log") as urls:
            gateway, metrics_url = urls["gateway_url"], urls["metrics_url"]
            warm_up(gateway, flags, keys, args.rollouts)
            load = subprocess.Popen(
                [sys.executable, __file__, "--traffic", gateway, "--rollouts",
                 str(args.rollouts), "--rate", str(args.rate)]
            )  # fmt: skip
            try:
                text = httpx.get(metrics_url, timeout=10).text
                results["exposition"] = {
                    "bytes": len(text.encode()),
                    "lines": text.count("\n"),
                    **parsers(text),
                }
                print(json.dumps(results["exposition"]), file=sys.stderr)
                rows = {"scrape": (metrics_url, flags)}
                if shutil.which("prometheus") is not None:
                    rows["prometheus"] = (metrics_url, work / "prometheus-flags.json")
                for backend, (url, flag_path) in rows.items():
                    results[backend] = row_process(args, backend, pg, url, flag_path, work)
                    print(json.dumps(results[backend]), file=sys.stderr)
                (work / "takeover").mkdir()
                results["takeover"] = takeover(pg.database(), args, work / "takeover",
                                               metrics_url)  # fmt: skip
                print(json.dumps(results["takeover"]), file=sys.stderr)
            finally:
                load.kill()
                load.wait()
    return results


def row_process(
    args: argparse.Namespace, backend: str, pg: Any, metrics_url: str, flags: Path, work: Path
) -> dict[str, Any]:
    """One row, measured by `--row` in a fresh process: its figures as JSON on stdout."""
    command = [
        sys.executable, __file__, "--row", backend, "--state", pg.database(),
        "--postmaster", str(pg._process.pid), "--metrics-url", metrics_url,
        "--flags", str(flags), "--work", str(work), "--rollouts", str(args.rollouts),
        "--interval", str(args.interval), "--window", str(args.window),
    ]  # fmt: skip
    print(f"{backend}: {args.rollouts} rollouts, {args.window:g}s", file=sys.stderr)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(args: argparse.Namespace) -> None:
    """Measure one row (`--row scrape|prometheus`) in this process; print its figures.

    scrape: every run reads the gateway's /metrics for its route, on the gateway's own flags.
    prometheus: the same routes through a real Prometheus scraping the gateway every 15 s
    (Prometheus' default interval; the test server's 1 s is shorter than a loaded gateway takes
    to render 100 routes), on flags of their own in a file the gateway does not read (the
    scrape row's runs hold the gateway's flags at their first weight)."""
    sys.path.insert(0, str(ROOT / "tests"))
    pause = args.window + 4 * args.interval + 900
    metrics: Callable[[int], dict[str, Any]]
    prometheus = None
    if args.row == "scrape":
        prefix = ""

        def metrics(i: int) -> dict[str, Any]:
            return {"provider": "scrape", "targets": [args.metrics_url], "route": f"route-{i}"}

    else:
        from prometheus_server import PrometheusServer

        class EveryFifteenSeconds(PrometheusServer):
            def _write_config(self, urls: list[str]) -> None:
                super()._write_config(urls)
                config = yaml.safe_load(self._config.read_text())
                config["global"] = {"scrape_interval": "15s", "scrape_timeout": "10s"}
                self._config.write_text(yaml.safe_dump(config))

        prefix = "prom-"
        flag_file(args.flags, [f"prom-route-{i}" for i in range(args.rollouts)])
        (args.work / "prometheus").mkdir()
        binary = shutil.which("prometheus") or ""
        prometheus = EveryFifteenSeconds(binary, args.work / "prometheus")
        prometheus.scrape(args.metrics_url)
        time.sleep(35.0)  # two more scrapes: the baselines' traffic is there for preflight
        url = prometheus.url

        def metrics(i: int) -> dict[str, Any]:
            return {"provider": "prometheus", "url": url, "route": f"route-{i}"}

    try:
        rollouts = [runbook(f"{prefix}route-{i}", args.interval, pause, args.flags, metrics(i))
                    for i in range(args.rollouts)]  # fmt: skip
        print(json.dumps(measure(args.state, args.postmaster, rollouts, None, args)))
    finally:
        if prometheus is not None:
            prometheus.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=100)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=90.0)
    parser.add_argument("--kills", type=int, default=None, help="default 20, 3 with --real")
    parser.add_argument(
        "--lease", type=float, default=None, help=f"default 5, {DEFAULT_LEASE_TTL:g} with --real"
    )
    parser.add_argument("--real", action="store_true", help="a real gateway, lab, PostgreSQL")
    parser.add_argument("--rate", type=float, default=20.0, help="--real: requests a second")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--traffic", help=argparse.SUPPRESS)
    parser.add_argument("--row", choices=["scrape", "prometheus"], help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--postmaster", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metrics-url", help=argparse.SUPPRESS)
    parser.add_argument("--flags", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    record.add_arguments(parser)
    args = parser.parse_args()
    if args.kills is None:
        args.kills = 3 if args.real else 20
    if args.lease is None:
        args.lease = DEFAULT_LEASE_TTL if args.real else 5.0
    if args.traffic:
        traffic(args.traffic, args.rollouts, args.rate)
        return
    if args.row:
        row(args)
        return
    if args.child:
        child(os.environ["CANARYCTL_STATE"], args.lease, args.real)
        return
    before = record.machine()
    if args.real:
        results = real_backends(args)
        record.write("controller_scale_real", results, args, before=before,
                     packages=("sqlalchemy", "psycopg", "httpx"))  # fmt: skip
        return
    results = {}
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
