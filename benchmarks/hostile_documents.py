"""The long fuzz: tens of thousands of hostile documents of every kind through `validate`, and a
share of them through the controller API's `POST /api/v1/runs`, counting what must never
happen. The CI fuzz (tests/test_documents_fuzz.py) runs the same strategies for a few hundred
examples each; this is the long run, whose counts docs/benchmarks.md publishes.

Every document comes from tests/hostile_documents.py (random structures, shipped documents of
each kind mutated or damaged, deep nesting, huge values, alias bombs, explicit tags, numbers
past every range, `~user` paths). `validate` runs in-process, as the tests run it. Counted:

- crashes: an exit code other than 0 (valid) or 2 (refused), or any 5xx from the API;
- tracebacks: "Traceback" anywhere in what a user sees;
- unnamed lines: a line of output that does not start with the file's folder;
- hangs: a document taking more than 1 s of CPU in `validate` (its thread's own time: on a
  shared machine the wall clock also counts the time others had the cores, so the documents
  over 1 s of wall clock are counted apart, with the worst of each).

The goal for each is 0.

    python benchmarks/hostile_documents.py [--documents 20000] [--api-every 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import record

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.hostile_documents and tests.api_world
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from canaryctl.api import create_app  # noqa: E402
from canaryctl.chaos.server import BackgroundServer  # noqa: E402
from canaryctl.cli import main as cli  # noqa: E402
from canaryctl.controller import StateStore  # noqa: E402
from tests.api_world import OPERATOR, TOKENS, auth  # noqa: E402
from tests.hostile_documents import HOSTILE  # noqa: E402

HANG_SECONDS = 1.0


class Tally:
    """What happened to every document, by family."""

    def __init__(self) -> None:
        self.documents: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.bad: Counter[str] = Counter()
        self.api: Counter[str] = Counter()
        self.worst_seconds = 0.0
        self.worst_family = ""
        self.worst_cpu_seconds = 0.0
        self.worst_cpu_family = ""
        self.examples: dict[str, str] = {}

    def fail(self, what: str, family: str, output: str) -> None:
        self.bad[what] += 1
        self.examples.setdefault(what, f"{family}: {output[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--api-every", type=int, default=10, help="every Nth also to the API")
    parser.add_argument("--seed", type=int, default=25)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    tally = Tally()
    folder = Path(tempfile.mkdtemp(prefix="canaryctl-fuzz-"))
    path = folder / "doc.yaml"
    state = folder / "state.db"
    StateStore(state).close()
    app = create_app(lambda: StateStore(state), TOKENS, submit=lambda rollout: 1)
    names = sorted(HOSTILE)
    started = time.perf_counter()
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as api:

        @seed(args.seed)
        @settings(
            max_examples=args.documents,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(family=st.sampled_from(names), data=st.data())
        def one(family: str, data: Any) -> None:
            document = data.draw(HOSTILE[family])
            path.write_bytes(document)
            count = sum(tally.documents.values())
            tally.documents[family] += 1
            clock, cpu = time.perf_counter(), time.thread_time()
            result = CliRunner().invoke(cli, ["validate", str(path), "-o", "text"])
            seconds, cpu = time.perf_counter() - clock, time.thread_time() - cpu
            output = result.output
            tally.outcomes[{0: "valid", 2: "refused"}.get(result.exit_code, "other")] += 1
            if seconds > tally.worst_seconds:
                tally.worst_seconds, tally.worst_family = seconds, family
            if cpu > tally.worst_cpu_seconds:
                tally.worst_cpu_seconds, tally.worst_cpu_family = cpu, family
            if result.exit_code not in (0, 2):
                tally.fail("crashes", family, output)
            if "Traceback" in output:
                tally.fail("tracebacks", family, output)
            if cpu > HANG_SECONDS:
                tally.fail("hangs", family, f"{cpu:.2f} s of CPU")
            if seconds > HANG_SECONDS:
                tally.fail("slow_wall", family, f"{seconds:.2f} s, {cpu:.2f} s of CPU")
            if any(not line.startswith(str(folder)) for line in output.splitlines()):
                tally.fail("unnamed_lines", family, output)
            if count % args.api_every == 0:
                answer = api.post("/api/v1/runs", content=document, headers=auth(OPERATOR))
                tally.api[str(answer.status_code)] += 1
                if answer.status_code >= 500:
                    tally.fail("api_server_errors", family, answer.text)
                if "Traceback" in answer.text:
                    tally.fail("tracebacks", family, answer.text)

        one()
    elapsed = time.perf_counter() - started
    results = {
        "documents": sum(tally.documents.values()),
        "by_family": dict(sorted(tally.documents.items())),
        "outcomes": dict(tally.outcomes),
        "api_posts": sum(tally.api.values()),
        "api_statuses": dict(sorted(tally.api.items())),
        "crashes": tally.bad["crashes"] + tally.bad["api_server_errors"],
        "tracebacks": tally.bad["tracebacks"],
        "hangs_over_1s": tally.bad["hangs"],
        "over_1s_wall_clock": tally.bad["slow_wall"],
        "unnamed_lines": tally.bad["unnamed_lines"],
        "worst_seconds": round(tally.worst_seconds, 3),
        "worst_family": tally.worst_family,
        "worst_cpu_seconds": round(tally.worst_cpu_seconds, 3),
        "worst_cpu_family": tally.worst_cpu_family,
        "seconds": round(elapsed, 1),
        "examples": tally.examples,
        "seed": args.seed,
    }
    print({k: v for k, v in results.items() if k != "examples"}, file=sys.stderr)
    record.write("hostile_documents", results, args, before=before, packages=("hypothesis",))


if __name__ == "__main__":
    main()
