"""Screenshots of every page kind for docs/reports.md, drawn from runs, not by hand.

Each page is made the way a user makes it, from inputs made the way the tests make them:

- `rollout`: a rollout run by the controller on fakes (tests/api_world.py: 10% holds, at 50% the
  canary's errors climb and it is rolled back), drawn by `canaryctl report ID --html`;
- `live`: the same state file served by the controller API, its live page (`GET /`) loaded by
  Chromium with a viewer token, after its scripts have read the API;
- `shadow`: a rollout with a shadow step on fakes (tests/test_shadow_step.py), then 10% live;
- `backtest`: six hours of recorded counts (tests/recorded_series.py, an incident planted) swept
  by the backtest core, drawn by the backtest page;
- `cost`: `canaryctl cost report --html` on the cost lab (runbooks/cost/lab.yaml) after 20 s;
- `experiment`: `canaryctl experiment run` on a two-arm lab (quality 0.6 against 0.95, an
  interval a second) until decided, drawn by `canaryctl experiment report --html`.

Each is rendered by headless Chromium at 1100 px wide and written to docs/img/report-KIND.png.

    python benchmarks/report_screenshots.py [--only KIND ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.*
sys.path.insert(0, str(ROOT / "tests"))

from canaryctl.backtest.sweep import starts, sweep  # noqa: E402
from canaryctl.cli.main import main as canaryctl  # noqa: E402
from canaryctl.lab import LabStack  # noqa: E402
from canaryctl.report.backtest_page import backtest_html  # noqa: E402
from canaryctl.runbook import Lab, Rollout  # noqa: E402
from canaryctl.runbook.lab import LabSpec  # noqa: E402
from tests.api_world import VIEWER, api_server, rolled_back  # noqa: E402
from tests.conftest import FLAG_KEY, _flag_document  # noqa: E402
from tests.recorded_series import in_memory, record  # noqa: E402

IMAGES = ROOT / "docs" / "img"
KINDS = ("rollout", "live", "shadow", "backtest", "cost", "experiment")
WIDTH, HEIGHT = 1100, 1300


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    raise SystemExit("chromium is not installed (apt-get install chromium)")


def shoot(address: str, kind: str, work: Path, *, wait_ms: int = 0) -> Path:
    """`address` rendered by headless Chromium into docs/img/report-KIND.png."""
    shot = IMAGES / f"report-{kind}.png"
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}"]  # fmt: skip
    if wait_ms:
        args.append(f"--virtual-time-budget={wait_ms}")
    done = subprocess.run([*args, address], capture_output=True, text=True, timeout=180, cwd=work)
    if not shot.exists():
        raise SystemExit(f"{kind}: chromium wrote no screenshot: {done.stderr[-2000:]}")
    return shot


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(canaryctl, list(args))
    if result.exit_code not in (0, 1):  # 1: a negative verdict, still a page to draw
        raise SystemExit(f"canaryctl {' '.join(args)}: exit {result.exit_code}: {result.output}")
    return result.output


def rollout_and_live(work: Path) -> list[Path]:
    work.mkdir()
    world = rolled_back(work)
    page = work / "rollout.html"
    _invoke("report", "1", "--state", str(world.state), "--html", str(page))
    shots = [shoot(page.as_uri(), "rollout", work)]
    with api_server(world.state) as server:
        shots.append(shoot(f"{server.url}/#token={VIEWER}", "live", work, wait_ms=5000))
    return shots


def shadow(work: Path) -> Path:
    from tests.test_shadow_step import World, make_rollout

    world = World(work, make_rollout())
    result = world.run()
    page = work / "shadow.html"
    _invoke("report", str(result.run_id), "--state", str(world.store.path), "--html", str(page))
    return shoot(page.as_uri(), "shadow", work)


def backtest(work: Path) -> Path:
    begin = 1_800_000_000.0
    hours = 6
    incident = (begin + 3 * 3600 + 600, begin + 3 * 3600 + 1800)
    recording = record(3, begin, hours * 60, buckets=1, canary_share=0.2, incident=incident)
    history = in_memory(recording, begin, 60, aa=False)
    steps = [{"set_weight": 5}, {"pause": "10m"}, {"set_weight": 25}, {"pause": "10m"},
             {"set_weight": 50}, {"pause": "10m"}]  # fmt: skip
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": "six-hours"},
        "spec": {
            "flag": {
                "provider": "file",
                "path": "flags.json",
                "key": "bot-model",
                "baseline": "old",
                "canary": "new",
            },
            "metrics": {"provider": "prometheus", "url": "http://127.0.0.1:9", "route": "bot"},
            "slos": [
                {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.5},
                {"metric": "error_rate", "max": 0.05},
            ],
            "analysis": {"interval": "1m", "min_requests": 100},
            "steps": steps,
        },
    }
    spec = Rollout.model_validate(document).spec
    end = recording.end
    result = sweep(spec, history, starts(spec, begin, end, 1800), baseline="old", canary="new",
                   until=end, aa=False, incident=incident)  # fmt: skip
    data = {"kind": "backtest", "name": "six-hours", "from": begin, "to": end, **result.to_dict()}
    page = work / "backtest.html"
    page.write_text(backtest_html(data, name="six-hours", begin=begin, end=end), "utf-8")
    return shoot(page.as_uri(), "backtest", work)


def cost(work: Path) -> Path:
    lab_dir = ROOT / "runbooks" / "cost"
    shutil.copy(lab_dir / "flags.json", work / "flags.json")
    lab = yaml.safe_load((lab_dir / "lab.yaml").read_text())
    lab["spec"]["gateway"]["listen"] = "127.0.0.1:0"
    page = work / "cost.html"
    with LabStack(Lab.model_validate(lab), flags_path=work / "flags.json") as stack:
        time.sleep(20)
        _invoke("cost", "report", "--metrics", stack.metrics_url, "--html", str(page))
    return shoot(page.as_uri(), "cost", work)


def experiment(work: Path) -> Path:
    flags = work / "flags.json"
    flags.write_text(_flag_document(["base", "other"], {"variation": 0}, 1))
    fast = {"median": 0.005, "p95": 0.02}
    lab = LabSpec.model_validate(
        {
            "providers": [
                {"name": "base", "latency": fast, "quality": 0.6},
                {"name": "other", "latency": fast, "quality": 0.95},
            ],
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
                "routes": [{"name": "bot", "flag": FLAG_KEY, "default_model": "base"}],
                "models": [{"name": n, "base_url": f"lab://{n}"} for n in ("base", "other")],
            },
            "traffic": {
                "route": "bot",
                "rate": 150,
                "users": 600,
                "feedback": 1.0,
                "tiers": {"free": 0.6, "paid": 0.4},
            },
        }
    )
    state, page = work / "state.db", work / "experiment.html"
    with LabStack(lab) as stack:
        document: dict[str, Any] = {
            "apiVersion": "canaryctl/v1",
            "kind": "Experiment",
            "metadata": {"name": "support-bot-prompts"},
            "spec": {
                "flag": {"provider": "file", "path": str(flags), "key": FLAG_KEY},
                "variations": [
                    {"value": "base", "weight": 50, "control": True},
                    {"value": "other", "weight": 50},
                ],
                "metrics": {"provider": "scrape", "targets": [stack.metrics_url], "route": "bot"},
                "primary": {"metric": "quality_score"},
                "guards": [
                    {"metric": "error_rate", "max_increase": 0.05},
                    {"metric": "latency_p95_seconds", "max_increase": 0.5},
                ],
                "tiers": ["free", "paid"],
                "min_samples": 5,
                "interval": "1s",
                "until": "decided",
                "max": "3m",
            },
        }
        path = work / "experiment.yaml"
        path.write_text(yaml.safe_dump(document))
        _invoke("experiment", "run", str(path), "--state", str(state), "-o", "json")
    _invoke("experiment", "report", "--state", str(state), "--html", str(page))
    return shoot(page.as_uri(), "experiment", work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=KINDS, default=list(KINDS))
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    makers = {"shadow": shadow, "backtest": backtest, "cost": cost, "experiment": experiment}
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        if {"rollout", "live"} & set(args.only):  # one run, its page and the live page
            written += rollout_and_live(Path(tmp) / "rollout")
        for kind in (k for k in args.only if k in makers):
            (Path(tmp) / kind).mkdir()
            written.append(makers[kind](Path(tmp) / kind))
    print(json.dumps([str(p.relative_to(ROOT)) for p in written]))


if __name__ == "__main__":
    main()
