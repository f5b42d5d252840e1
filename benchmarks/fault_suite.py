"""The fault suite: controllers, PostgreSQL and the lab under random faults, and the invariants
that must hold whatever the faults (issue 24).

Two or three `canaryctl controller serve` processes share a real PostgreSQL (tests/
postgres_server.py) and drive rollouts, one after another, of the lab's flag (a file flag the
lab's gateway serves from, real traffic, real `/metrics`). At random moments the suite injects
one fault at a time: SIGKILL of a controller (restarted), SIGSTOP of a controller longer or
shorter than the lease (then SIGCONT), SIGTERM of a controller (restarted once it exited), and
SIGSTOP (then SIGCONT) or SIGKILL (then a restart) of every PostgreSQL process. It records the
history: the flag file (version, served split, claim and its epoch) sampled every 20 ms, and
every journal event of every run, each flag write with the lease epoch it was made under.

Then it checks, over the whole history:

- one driver at a time: no event written under a lease epoch after a newer lease of its run
  was journaled (the journal refuses a stale epoch);
- the flag's version only grows, and the claim's epoch only grows for one run;
- every run ends promoted (the canary served to everyone) or with its flag exactly restored
  (the flag's entry as the run found it, byte for byte but for its version), none stranded;
- no weight held unjudged past the bound: while the flag splits traffic, the time since the
  last analysis (or the write that set the split) never exceeds `analysis.interval` times
  `consecutive_error_limit` plus the lease;
- no traceback, no crash log, in any controller's output.

`python benchmarks/fault_suite.py --faults 200` writes benchmarks/results/fault_suite.json;
tests/test_fault_suite.py runs the same script with a few faults in CI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import record
import yaml

from canaryctl.controller.runner import submit_rollout
from canaryctl.controller.store import StateStore
from canaryctl.errors import CanaryError
from canaryctl.flags import FileFlagStore
from canaryctl.lab import LabStack
from canaryctl.runbook import Lab, Rollout, parse_document

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = resources.files("canaryctl") / "defaults"
KEY, BASELINE, CANARY = "support-bot-model", "gpt-4-turbo", "gpt-4o-mini"
INTERVAL, ERROR_LIMIT = 1.0, 4
"""The runbook's analysis interval (seconds) and consecutive_error_limit: the bound's terms."""
WAIT = 180.0
"""Seconds the suite waits for the last run to end, or a controller to start: a bound."""
KINDS = (
    "controller_sigkill",
    "controller_sigstop_long",
    "controller_sigstop_short",
    "controller_sigterm",
    "postgres_sigstop",
    "postgres_restart",
)


def runbook(flags: Path, metrics_url: str) -> Rollout:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": "fault-suite"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": KEY,
                     "baseline": BASELINE, "canary": CANARY},
            "metrics": {"provider": "scrape", "targets": [metrics_url], "route": "support-bot"},
            "slos": [{"metric": "error_rate", "max": 0.03}],
            "analysis": {"interval": f"{INTERVAL:g}s", "min_requests": 20,
                         "inconclusive_limit": 30, "consecutive_error_limit": ERROR_LIMIT,
                         "method": "threshold"},
            "steps": [{"set_weight": 20}, {"pause": "3s"}, {"set_weight": 50},
                      {"pause": "3s"}, {"set_weight": 100}, {"pause": "1s"}],
        },
    }  # fmt: skip
    return parse_document(yaml.safe_dump(document), "fault-suite.yaml", expect=Rollout)


class Controllers:
    """K `controller serve` processes; each (re)start gets its own log file."""

    def __init__(self, url: str, workdir: Path, count: int, lease: float) -> None:
        self.url, self.workdir, self.lease = url, workdir, lease
        self.logs: list[Path] = []
        self.processes: list[subprocess.Popen[bytes]] = [self._start(i) for i in range(count)]

    def _start(self, slot: int) -> subprocess.Popen[bytes]:
        log = self.workdir / f"controller-{slot}-{len(self.logs)}.log"
        self.logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "canaryctl", "controller", "serve", "--listen",
             "127.0.0.1:0", "--lease", f"{self.lease:g}"],
            env={**os.environ, "CANARYCTL_STATE": self.url, "CANARYCTL_API_TOKENS": ""},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )  # fmt: skip
        deadline = time.monotonic() + WAIT
        while not re.search(r"on http://127\.0\.0\.1:\d+", log.read_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"controller did not start: {log.read_text()}")
            time.sleep(0.1)
        return process

    def restart(self, slot: int) -> None:
        self.processes[slot].wait()
        self.processes[slot] = self._start(slot)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Sample:
    at: float
    version: int
    rollout: bool
    """The default rule splits traffic (a weight a run holds), not one variation."""
    canary: float
    claim_token: str | None
    claim_epoch: int | None


@dataclass
class History:
    samples: list[Sample] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    restores: list[tuple[int, bool]] = field(default_factory=list)
    """(run id, whether the flag's entry was exactly the prior one) for each run that moved
    the flag and did not promote, checked the moment it ended."""


def read_flag(flags: Path, claim: Path) -> Sample | None:
    """The flag as it is now, timed by when its file was written (its mtime), not by when this
    watcher, which a loaded machine may delay, got round to reading it."""
    try:
        written = flags.stat().st_mtime_ns
        flag = json.loads(flags.read_text())["flags"][KEY]
        if flags.stat().st_mtime_ns != written:
            return None  # replaced while read: the next sample sees the new one
    except (OSError, ValueError, KeyError):
        return None  # caught mid-rename: the next sample sees it
    try:
        held = json.loads(claim.read_text())
    except (OSError, ValueError):
        held = None
    rule = flag["fallthrough"]
    canary = flag["variations"].index(CANARY)
    if "variation" in rule:
        share = 100.0 if rule["variation"] == canary else 0.0
    else:
        weights = {v["variation"]: v["weight"] for v in rule["rollout"]["variations"]}
        share = weights.get(canary, 0) / 1000
    return Sample(
        written / 1e9,
        int(flag.get("version", 1)),
        "rollout" in rule,
        share,
        None if held is None else held["token"],
        None if held is None else int(held.get("epoch", 0)),
    )


def watch(flags: Path, claim: Path, history: History, stop: threading.Event) -> None:
    last: tuple[Any, ...] | None = None
    while not stop.wait(0.02):
        sample = read_flag(flags, claim)
        if sample is None:
            continue
        key = (sample.version, sample.rollout, sample.canary, sample.claim_token,
               sample.claim_epoch)  # fmt: skip
        if key != last:
            history.samples.append(sample)
            last = key


def without_version(entry: str) -> dict[str, Any]:
    flag = json.loads(entry)
    flag.pop("version", None)
    return dict(flag)


def submitter(
    url: str, rollout: Rollout, flags: Path, history: History, stop: threading.Event
) -> None:
    """One run at a time: submit, wait for its end, check its flag, put the baseline back."""
    store_flags = FileFlagStore(flags, KEY, BASELINE, CANARY)
    original = store_flags.snapshot()
    current: int | None = None
    while not stop.is_set():
        try:
            with StateStore(url) as store:
                if current is None:
                    current = submit_rollout(rollout, state_path=url)[0]
                record_ = store.run(current)
                if record_ is None or not record_.finished:
                    stop.wait(0.2)
                    continue
                moved = any(e.result for e in store.events(current, "flag_changed"))
                if moved and record_.outcome != "promoted":
                    assert record_.prior_flag is not None
                    entry = store_flags.snapshot().raw
                    exact = without_version(entry) == without_version(record_.prior_flag.raw)
                    history.restores.append((current, exact))
            # A promoted flag serves the canary to everyone: the next run needs the baseline.
            now = store_flags.snapshot()
            if now.raw != original.raw:
                store_flags.restore(original, expect_version=now.version, comment="suite reset")
            current = None
        except CanaryError:
            stop.wait(0.5)  # the database is away (a fault): try again


def inject(kind: str, rng: random.Random, controllers: Controllers, pg: Any) -> dict[str, Any]:
    lease = controllers.lease
    slot = rng.randrange(len(controllers.processes))
    process = controllers.processes[slot]
    fault: dict[str, Any] = {"kind": kind, "at": time.time()}
    if kind == "controller_sigkill":
        process.kill()
        controllers.restart(slot)
    elif kind == "controller_sigterm":
        process.send_signal(signal.SIGTERM)
        controllers.restart(slot)
    elif kind.startswith("controller_sigstop"):
        long = kind.endswith("long")
        seconds = lease * (rng.uniform(1.3, 2.5) if long else rng.uniform(0.2, 0.6))
        process.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        process.send_signal(signal.SIGCONT)
        fault["seconds"] = round(seconds, 2)
    elif kind == "postgres_sigstop":
        seconds = lease * rng.uniform(0.3, 2.5)
        pg.signal_all(signal.SIGSTOP)
        time.sleep(seconds)
        pg.signal_all(signal.SIGCONT)
        fault["seconds"] = round(seconds, 2)
    else:
        pg.kill()
        seconds = lease * rng.uniform(0.0, 1.5)
        time.sleep(seconds)
        pg.start()
        fault["seconds"] = round(seconds, 2)
    if kind.startswith("controller"):
        fault["controller"] = slot
    return fault


def check(url: str, history: History, logs: list[Path], lease: float) -> dict[str, Any]:
    """Every invariant of the module docstring, counted; the first few violations described."""
    bound = INTERVAL * ERROR_LIMIT + lease
    found: Counter[str] = Counter()
    details: list[str] = []

    def violated(name: str, detail: str) -> None:
        found[name] += 1
        if len(details) < 20:
            details.append(f"{name}: {detail}")

    samples = history.samples
    for before, after in itertools.pairwise(samples):
        if after.version < before.version:
            violated("flag_version_went_back", f"{before.version} -> {after.version}")
        same_run = before.claim_token is not None and before.claim_token == after.claim_token
        if same_run and (after.claim_epoch or 0) < (before.claim_epoch or 0):
            violated("claim_epoch_went_back", f"{before.claim_epoch} -> {after.claim_epoch}")
    judged: list[float] = []
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    with StateStore(url) as store:
        runs = store.runs(limit=100_000)
        for run in runs:
            events = store.events(run.id)
            leases = [(e.id, int(e.data.get("epoch", 0))) for e in events if e.type == "lease"]
            for event in events:
                epoch = event.data.get("epoch") if event.type != "lease" else None
                newer = [i for i, e in leases if epoch is not None and e > epoch and i < event.id]
                if newer:
                    violated("stale_epoch_wrote", f"run {run.id} event {event.id} ({event.type})")
                if event.type == "analysis" or (event.type == "flag_changed" and event.result):
                    judged.append(event.ended_at or event.at)
            if not run.finished:
                violated("run_stranded", f"run {run.id} in phase {run.phase}")
                continue
            outcomes[run.outcome or "none"] += 1
            if run.outcome == "error":
                errors[_kind_of_error(run.reason)] += 1
            moved = any(e.type == "flag_changed" and e.result for e in events)
            if moved and run.outcome == "promoted" and (run.final_split or {}).get("canary") != 100:
                violated("promoted_but_not_served", f"run {run.id}: {run.final_split}")
    for run_id, exact in history.restores:
        if not exact:
            violated("not_exactly_restored", f"run {run_id}")
    judged.sort()
    longest = 0.0
    for start, end in _held(samples):
        marks = [start, *(t for t in judged if start < t < end), end]
        gap = max(b - a for a, b in itertools.pairwise(marks))
        longest = max(longest, gap)
        if gap > bound:
            at = marks[[b - a for a, b in itertools.pairwise(marks)].index(gap) + 1]
            # Every fault from a bound before the gap to its end, timed from the gap's start.
            near = [f"{f['kind']} at {f['at'] - (at - gap):+.1f}s"
                    for f in history.faults if at - gap - bound <= f["at"] <= at]  # fmt: skip
            violated(
                "held_unjudged_past_bound",
                f"{gap:.1f}s > {bound:g}s (faults: {', '.join(near) or 'none'})",
            )
    for log in logs:
        text = log.read_text(errors="replace")
        if "Traceback" in text or "please report this bug" in text:
            violated("traceback", log.name)
    return {
        "runs": len(runs),
        "outcomes": dict(outcomes),
        "errors": dict(errors),
        "bound_seconds": bound,
        "longest_unjudged_seconds": round(longest, 2),
        "violations": dict(found),
        "violations_total": sum(found.values()),
        "details": details,
    }


def _kind_of_error(reason: str) -> str:
    """What ended a run with `error`, in a few words (for the counts, not the invariants)."""
    kinds = {
        "this run restored the flag": "database failed: restored, journaled later",
        "state database": "database failed",
        "someone else changed it": "flag changed by someone else",
        "metrics backend": "metrics backend failed",
        "claimed by": "flag claimed",
        "no traffic": "preflight: no baseline traffic",
    }
    return next((kind for text, kind in kinds.items() if text in reason), reason[:80])


def _held(samples: list[Sample]) -> Iterator[tuple[float, float]]:
    """The spans during which the flag split traffic (a weight held by a run)."""
    start: float | None = None
    for sample in samples:
        if sample.rollout and start is None:
            start = sample.at
        elif not sample.rollout and start is not None:
            yield start, sample.at
            start = None
    if start is not None:
        yield start, time.time()


@contextmanager
def postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of its own (tests/postgres_server.py), in a directory its server's
    user can reach, durable: a commit it acknowledged survives its SIGKILL, as on a real
    server (without that, a journal write acknowledged just before a kill could vanish)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres_server import postgres_server

    workdir = Path(tempfile.mkdtemp(prefix="canaryctl-pg-faults-"))
    try:
        with postgres_server(workdir, durable=True) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def suite(faults: int, controllers: int, lease: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    history = History()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="canaryctl-faults-") as tmp:
        workdir = Path(tmp)
        flags = workdir / "flags.json"
        flags.write_text((DEFAULTS / "flags.json").read_text())
        lab = parse_document((DEFAULTS / "lab.yaml").read_text(), "lab.yaml", expect=Lab)
        with postgres() as pg, LabStack(lab, flags_path=flags) as stack:
            url = pg.database()
            fleet = Controllers(url, workdir, controllers, lease)
            claim = FileFlagStore(flags, KEY, BASELINE, CANARY).claim_path
            stop_watch, stop_submit = threading.Event(), threading.Event()
            threads = [
                threading.Thread(target=watch, args=(flags, claim, history, stop_watch)),
                threading.Thread(
                    target=submitter,
                    args=(url, runbook(flags, stack.metrics_url), flags, history, stop_submit),
                ),
            ]
            for thread in threads:
                thread.start()
            try:
                for _ in range(faults):
                    time.sleep(rng.uniform(0.5, 1.5 * lease))
                    history.faults.append(inject(rng.choice(KINDS), rng, fleet, pg))
                stop_submit.set()
                threads[1].join(WAIT)
                deadline = time.monotonic() + WAIT
                while time.monotonic() < deadline:  # the last run ends with every part well
                    with StateStore(url) as store:
                        if not store.unfinished_runs():
                            break
                    time.sleep(0.5)
            finally:
                stop_submit.set()
                fleet.stop()
                stop_watch.set()
                for thread in threads:
                    thread.join(WAIT)
            checked = check(url, history, fleet.logs, lease)
    return {
        "faults_injected": len(history.faults),
        "faults_by_kind": dict(Counter(f["kind"] for f in history.faults)),
        "controllers": controllers,
        "lease_seconds": lease,
        "seed": seed,
        "flag_changes_seen": len(history.samples),
        "seconds": round(time.monotonic() - started, 1),
        **checked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=200)
    parser.add_argument("--controllers", type=int, default=3)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=24)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    results = suite(args.faults, args.controllers, args.lease, args.seed)
    print(json.dumps({k: v for k, v in results.items() if k != "details"}), file=sys.stderr)
    for line in results["details"]:
        print(line, file=sys.stderr)
    record.write("fault_suite", results, args, before=before, packages=("sqlalchemy", "psycopg"))
    if results["violations_total"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
