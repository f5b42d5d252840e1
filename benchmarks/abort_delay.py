"""How long an abort takes to reach a running rollout: from the request to the flag restored.

A rollout runs on the system clock in a thread, as a controller runs it, and waits for approval
at 10% (tests/api_world.py's LiveRollout: an in-memory flag, scripted counts); the controller
API serves its state file on a loopback port. Each run posts one of two aborts and times, from
just before the POST to the moment the flag serves the baseline to everyone again (the flag is
read every 5 ms):

- `alert`: Alertmanager's webhook with a firing alert matching the runbook's `abort_on`;
- `api`: `POST /api/v1/runs/{id}/abort` with an operator's token.

Both file a request that the run reads at its next poll (once a second), then restore the flag.
On a loaded machine the poll and the restore wait for a core: the figure says how loaded it was.

    python benchmarks/abort_delay.py [--runs 5]   # writes benchmarks/results/abort_delay.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import record

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.api_world
sys.path.insert(0, str(ROOT / "tests"))

from tests.api_world import OPERATOR, LiveRollout, api_server, auth  # noqa: E402

ABORT_ON = [{"alertname": "LLMHighErrorRate", "route": "support-bot"}]


def _alert(fingerprint: str) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) with one firing alert matching ABORT_ON."""
    labels = {"alertname": "LLMHighErrorRate", "route": "support-bot", "severity": "page"}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="LLMHighErrorRate"}',
        "status": "firing",
        "receiver": "canaryctl",
        "groupLabels": {"alertname": "LLMHighErrorRate"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {},
                "startsAt": "2026-12-02T01:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": fingerprint,
            }
        ],
    }


def run_once(kind: str, index: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveRollout(Path(tmp), abort_on=ABORT_ON)
        with api_server(live.world.state) as server:
            run_id = live.start(server)
            if live.world.canary() != 10:
                raise SystemExit(f"run {index}: the canary serves {live.world.canary()}%, not 10%")
            started = time.perf_counter()
            if kind == "alert":
                answer = httpx.post(
                    f"{server.url}/api/v1/alertmanager",
                    json=_alert(f"{index:016x}"),
                    headers=auth(OPERATOR),
                )
            else:
                answer = httpx.post(
                    f"{server.url}/api/v1/runs/{run_id}/abort", headers=auth(OPERATOR)
                )
            answered = time.perf_counter() - started
            if answer.status_code not in (200, 202):
                raise SystemExit(f"run {index}: {kind} answered {answer.status_code}")
            while live.world.canary() != 0:
                if time.perf_counter() - started > 60:
                    raise SystemExit(f"run {index}: the flag was not restored within 60 s")
                time.sleep(0.005)
            restored = time.perf_counter() - started
            result = live.finish()
    return {
        "kind": kind,
        "answered_seconds": answered,
        "restored_seconds": restored,
        "outcome": result.outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="aborts of each kind")
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    runs = []
    for index in range(args.runs):
        for kind in ("alert", "api"):
            run = run_once(kind, index)
            print(run, flush=True)
            runs.append(run)
    delays = [run["restored_seconds"] for run in runs]
    results = {
        "runs": runs,
        "poll_seconds": 1.0,
        "median_seconds": statistics.median(delays),
        "max_seconds": max(delays),
    }
    record.write("abort_delay", results, args, before=before)


if __name__ == "__main__":
    main()
