"""No planted secret escapes: every place a user can put one gets a unique marker, real commands
run as a user runs them (a subprocess each, over loopback), and stdout, stderr, every file they
wrote (state and drill databases read table by table and byte by byte, journals, reports, JUnit,
summaries, logs) are searched for the markers.

The markers sit in environment variables (LaunchDarkly's access token and SDK key, Prometheus'
bearer token and basic auth, the chaos admin token, an eval API key, a Redis password, a webhook
URL), in URLs' userinfo and queries (scrape targets, Prometheus, Redis, eval endpoints, webhooks),
in webhook paths (the secret of a Slack webhook) and headers. Where the secret is needed to
deliver (a webhook's path, the chaos token), the test also checks it was used: hiding a secret
by not using it would prove nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.chaos_world import chaos_world
from tests.ld_server import LDServer, make_flag, serve
from tests.test_metrics_scrape import FakeGateway

pytestmark = pytest.mark.e2e

PLACES = (
    "ld-token", "sdk-key", "prom-bearer", "prom-user", "prom-password", "chaos-token",
    "eval-key", "redis-password", "scrape-user", "scrape-password", "scrape-query",
    "prom-url-user", "prom-url-password", "prom-url-query", "hook-user", "hook-password",
    "hook-path", "hook-query", "hook-header", "slack-path", "slack-query", "promote-path",
    "eval-url-password", "eval-url-query", "redis-url-password", "bad-target-password",
    "bad-hook-path",
)  # fmt: skip
MARK = {place: f"zz{place.replace('-', '')}{uuid.uuid4().hex[:10]}" for place in PLACES}
"""One unique, greppable marker per place a secret can be put."""

TIMEOUT = 120.0
"""A bound on one command, never an assertion about speed."""


class Gateway(ThreadingHTTPServer):
    """A gateway's /metrics on loopback: 100 more requests per variant at every scrape, a share
    of the canary's failing (`canary_errors`)."""

    def __init__(self) -> None:
        self.fake = FakeGateway()
        self.canary_errors = 0.0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                bad = round(100 * gateway.canary_errors)
                gateway.fake.serve("old", 100, seconds=0.05)
                gateway.fake.serve("new", 100 - bad, seconds=0.05)
                if bad:
                    gateway.fake.serve("new", bad, outcome="error", seconds=0.05)
                body = gateway.fake.text().encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        self.port = self.server_address[1]


class Echo(ThreadingHTTPServer):
    """Answers every request with `status` and a body quoting the request (path, query and
    headers), as a hostile or careless proxy's error page would; records what it got."""

    def __init__(self, status: int) -> None:
        self.got: list[str] = []
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                echo.got.append(self.path)
                body = f"{self.command} {self.path} {dict(self.headers)}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        self.port = self.server_address[1]


@pytest.fixture
def servers() -> Iterator[dict[str, Any]]:
    running = {"gateway": Gateway(), "hooks": Echo(200), "prometheus": Echo(503)}
    for server in running.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield running
    for server in running.values():
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_document(flags: dict[str, Any], redis_url: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "canaryctl/v1", "kind": "Gateway", "metadata": {"name": "gw"},
        "spec": {
            "flags": {"provider": "launchdarkly", "sdk_key_env": "LAUNCHDARKLY_SDK_KEY", **flags},
            "routes": [{"name": "bot", "flag": "model-flag", "default_model": "old"}],
            "models": [{"name": "old", "base_url": f"http://127.0.0.1:{closed_port()}/v1"},
                       {"name": "new", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}],
            "budgets": {
                "store": {"provider": "redis", "password_env": "REDIS_PASSWORD",
                          "url": redis_url, "timeout": "200ms"},
                "limits": [{"name": "daily", "per": "user", "tokens": 1000}],
            },
        },
    })  # fmt: skip


class User:
    """Runs canaryctl as a user would, in `out` (so relative state lands there), and keeps
    everything it printed."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env, self.printed = out, env, []

    def serve_gateway(self, document: Path) -> None:
        """`gateway serve` until it answered a chat (through a failing budget store, to a model
        that is down), then SIGTERM; what it printed is kept like a command's."""
        port = closed_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "canaryctl", "gateway", "serve", str(document),
             "--listen", f"127.0.0.1:{port}"],
            cwd=self.out, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            answer = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-User": "alice"},
                timeout=30.0,
            )
            assert answer.status_code == 502, answer.text  # every model is down
            self.printed.append(answer.text)
        finally:
            gateway.terminate()
            stdout, stderr = gateway.communicate(timeout=TIMEOUT)
        self.printed.append(f"{stdout}\n{stderr}")
        assert "Traceback" not in stderr, stderr
        assert "redis at redis://127.0.0.1:" in stderr, stderr  # the store was tried, and failed

    def run(self, *args: str, expect: int) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "canaryctl", *args],
            cwd=self.out,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.printed.append(f"{done.stdout}\n{done.stderr}")  # not the arguments: ours
        assert done.returncode == expect, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout + done.stderr


def rollout(name: str, flag: dict[str, Any], metrics: dict[str, Any], **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "canaryctl/v1",
            "kind": "Rollout",
            "metadata": {"name": name},
            "spec": {
                "flag": flag,
                "metrics": metrics,
                "slos": [{"metric": "error_rate", "max": 0.05}],
                "analysis": {"interval": "300ms", "min_requests": 50},
                "steps": [{"set_weight": 50}, {"set_weight": 100}],
                **spec,
            },
        }
    )


def leaks(text: str) -> list[str]:
    """Each marker found, with what surrounds it (to show where it came from)."""
    found = []
    for place, marker in MARK.items():
        at = text.find(marker)
        if at >= 0:
            found.append(f"{place}: ...{text[max(0, at - 120) : at + 40]}...")
    return found


def stored_text(path: Path) -> str:
    """A file as text; a SQLite database also as every column of every row of every table."""
    raw = path.read_bytes().decode("utf-8", "replace")
    if not raw.startswith("SQLite format 3"):
        return raw
    rows = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            rows += [repr(row) for row in db.execute(f'SELECT * FROM "{table}"')]
    return raw + "\n".join(rows)


def test_no_planted_secret_reaches_output_logs_state_journals_or_reports(
    tmp_path: Path, servers: dict[str, Any], write_flags: Any
) -> None:
    out, docs = tmp_path / "out", tmp_path / "docs"
    out.mkdir()
    docs.mkdir()
    gateway, hooks, prometheus = servers["gateway"], servers["hooks"], servers["prometheus"]
    m = MARK
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CANARYCTL_")},
        "LAUNCHDARKLY_API_TOKEN": m["ld-token"],
        "LAUNCHDARKLY_SDK_KEY": m["sdk-key"],
        "PROM_TOKEN": m["prom-bearer"],
        "PROM_USER": m["prom-user"],
        "PROM_PASSWORD": m["prom-password"],
        "CANARYCTL_CHAOS_TOKEN": m["chaos-token"],
        "EVAL_API_KEY": m["eval-key"],
        "REDIS_PASSWORD": m["redis-password"],
        "SLACK_WEBHOOK_URL": (
            f"http://127.0.0.1:{hooks.port}/services/{m['slack-path']}?token={m['slack-query']}"
        ),
        "PROMOTE_HOOK_URL": f"http://127.0.0.1:{hooks.port}/promoted/{m['promote-path']}",
        "PYTHONUNBUFFERED": "1",
    }
    user = User(out, env)
    flags = write_flags(["old", "new"])
    flag = {"provider": "file", "path": str(flags), "key": "model-flag",
            "baseline": "old", "canary": "new"}  # fmt: skip
    scrape = {
        "provider": "scrape",
        "targets": [
            f"http://{m['scrape-user']}:{m['scrape-password']}@127.0.0.1:{gateway.port}/metrics"
            f"?token={m['scrape-query']}"
        ],
    }
    on_rollback = [{"webhook": {
        "url": f"http://{m['hook-user']}:{m['hook-password']}@127.0.0.1:{hooks.port}"
               f"/hooks/{m['hook-path']}?sig={m['hook-query']}",
        "headers": {"Authorization": f"Bearer {m['hook-header']}"},
    }}]  # fmt: skip
    notify = [{"webhook": {"url_env": "SLACK_WEBHOOK_URL", "format": "slack"}}]
    on_promote = [{"webhook": {"url_env": "PROMOTE_HOOK_URL"}}]
    hooked = {"on_rollback": on_rollback, "on_promote": on_promote, "notify": notify}
    redis_url = f"redis://:{m['redis-url-password']}@127.0.0.1:{closed_port()}/0"
    prom_url = (
        f"http://{m['prom-url-user']}:{m['prom-url-password']}@127.0.0.1:{prometheus.port}"
        f"/?token={m['prom-url-query']}"
    )

    documents = {
        "bad-canary.yaml": rollout("bad-canary", flag, scrape, **hooked),
        "good-canary.yaml": rollout("good-canary", flag, scrape, **hooked),
        "prometheus-echo.yaml": rollout(
            "prometheus-echo",
            flag,
            {"provider": "prometheus", "url": prom_url, "bearer_token_env": "PROM_TOKEN"},
            **hooked,
        ),
        "prometheus-down.yaml": rollout(
            "prometheus-down",
            flag,
            {
                "provider": "prometheus",
                "url": f"http://127.0.0.1:{closed_port()}/?token={m['prom-url-query']}",
                "basic_auth_username_env": "PROM_USER",
                "basic_auth_password_env": "PROM_PASSWORD",
            },
        ),
        "hook-unset.yaml": rollout(
            "hook-unset", flag, scrape, on_rollback=[{"webhook": {"url_env": "NO_SUCH_HOOK_URL"}}]
        ),
        "gate-live.yaml": rollout("gate-live", flag, scrape, gate={"live": {"window": "500ms"}}),
        "gate-eval.yaml": rollout(
            "gate-eval",
            flag,
            scrape,
            gate={
                "eval": {
                    "builtin": "arithmetic",
                    "retries": 1,
                    "min_items": 1,
                    "baseline": {
                        "base_url": f"http://x:{m['eval-url-password']}@127.0.0.1:"
                        f"{closed_port()}/v1?key={m['eval-url-query']}",
                        "api_key_env": "EVAL_API_KEY",
                    },
                    "canary": {
                        "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                        "api_key_env": "EVAL_API_KEY",
                    },
                }
            },
        ),
        "gateway.yaml": gateway_document({}, redis_url),
    }
    for name, text in documents.items():
        (docs / name).write_text(text)
    bad_document = docs / "broken.yaml"
    bad_document.write_text(
        rollout("broken", flag, {"provider": "scrape", "targets": [
            f"u:{m['bad-target-password']}@127.0.0.1:{gateway.port}/metrics"
        ]}, on_rollback=[{"webhook": {"url": f"hooks.example/services/{m['bad-hook-path']}"}}])
    )  # fmt: skip

    # validate: every document, then one whose bad fields hold secrets
    user.run("validate", *(str(docs / name) for name in documents), expect=0)
    user.run("validate", str(bad_document), "-o", "text", expect=2)

    # rollouts: rolled back (hooks and notifications delivered), promoted, failing backends
    gateway.canary_errors = 0.5
    user.run("rollout", "run", str(docs / "bad-canary.yaml"), "-o", "text", expect=1)
    gateway.canary_errors = 0.0
    user.run("rollout", "run", str(docs / "good-canary.yaml"), "-o", "json", expect=0)
    promoted = json.loads(flags.read_text())["flags"]["model-flag"]["version"]
    write_flags(["old", "new"], version=promoted + 1)  # serve old again: preflight wants it
    user.run("rollout", "run", str(docs / "good-canary.yaml"), "-o", "text", "--dry-run",
             expect=0)  # fmt: skip
    echoed = user.run("rollout", "run", str(docs / "prometheus-echo.yaml"), expect=3)
    assert "Prometheus at http://127.0.0.1" in echoed
    user.run("rollout", "run", str(docs / "prometheus-down.yaml"), expect=3)
    unset = user.run("rollout", "run", str(docs / "hook-unset.yaml"), expect=2)
    assert "NO_SUCH_HOOK_URL" in unset
    delivered = " ".join(hooks.got)
    assert m["hook-path"] in delivered and m["hook-query"] in delivered  # on_rollback
    assert m["slack-path"] in delivered  # notify, from SLACK_WEBHOOK_URL
    assert m["promote-path"] in delivered  # on_promote, from PROMOTE_HOOK_URL
    assert any(m["prom-url-query"] in got for got in prometheus.got)  # the echo was provoked

    # LaunchDarkly: a rollout through its REST API with the token from the environment
    ld = LDServer(m["ld-token"])
    ld.add("default", make_flag("model-flag", [("a", "old", "Old"), ("b", "new", "New")],
                                {"production": {"fallthrough": {"variation": 0}}}))  # fmt: skip
    with serve(ld):
        (docs / "ld.yaml").write_text(rollout("ld", {
            "provider": "launchdarkly", "project": "default", "environment": "production",
            "key": "model-flag", "baseline": "old", "canary": "new", "base_url": ld.base_url,
        }, scrape))  # fmt: skip
        user.run("rollout", "run", str(docs / "ld.yaml"), "-o", "json", expect=0)
        # the gateway on the SDK key, its budgets in a Redis that is down
        ld.sdk_key(m["sdk-key"], "default", "production")
        uris = {"base_uri": ld.base_url, "stream_uri": ld.base_url, "events_uri": ld.base_url}
        (docs / "gateway-ld.yaml").write_text(gateway_document(uris, redis_url))
        user.serve_gateway(docs / "gateway-ld.yaml")
    assert ld.env("default", "model-flag", "production")["fallthrough"] == {"variation": 1}
    assert ld.stream_connections >= 1  # the gateway did use the SDK key

    # what the state database says, as people read it
    user.run("rollout", "list", "-o", "json", expect=0)
    user.run("rollout", "status", "1", "-o", "json", expect=0)
    for run_id in ("1", "2"):
        user.run("report", run_id, "--html", str(out / f"run-{run_id}.html"), expect=0)
    user.run("report", "1", "-o", "json", expect=0)

    # the gate: live SLOs through a target with credentials; evals against endpoints that fail
    user.run("gate", str(docs / "gate-live.yaml"), "--json-file", str(out / "gate.json"),
             "--junit", str(out / "gate.xml"), "--summary", str(out / "gate.md"),
             expect=0)  # fmt: skip
    user.run("report", str(out / "gate.json"), "--html", str(out / "gate.html"), expect=0)
    user.run("gate", str(docs / "gate-eval.yaml"), "-o", "json", expect=3)

    # budgets in a Redis that is down, its password in the URL and in the environment
    user.run("budgets", "show", str(docs / "gateway.yaml"), expect=3)

    # chaos: a proxy URL with credentials is refused (the token comes from the environment),
    # then a real run whose metrics target has credentials
    user.run("chaos", "list", "--proxy",
             f"http://u:{m['hook-password']}@127.0.0.1:{closed_port()}", expect=2)  # fmt: skip
    with chaos_world(tmp_path, token=m["chaos-token"]) as world:
        world.serve("primary")
        scenario = yaml.safe_load(world.scenario().read_text())
        scenario["spec"]["hypothesis"]["metrics"]["targets"] = [
            world.stack.metrics_url.replace("http://", f"http://u:{m['scrape-password']}@")
            + f"?token={m['scrape-query']}"
        ]
        drills = docs / "drills"
        drills.mkdir()
        (drills / "scenario.yaml").write_text(yaml.safe_dump(scenario))
        user.run("chaos", "run", str(drills / "scenario.yaml"), "--journal",
                 str(out / "chaos.json"), "--junit", str(out / "chaos.xml"), "-o", "json",
                 expect=0)  # fmt: skip
        user.run("chaos", "list", "--proxy", world.proxy_url, "-o", "json", expect=0)
    user.run("report", str(out / "chaos.json"), "--html", str(out / "chaos.html"), expect=0)
    user.run("drills", "list", str(drills), "--home", str(out / "drills"), expect=0)

    written = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in written}
    assert {"state.db", "chaos.json", "run-1.html", "gate.json", "chaos.html"} <= names, names
    found = {f"output of command {i}": leaks(text) for i, text in enumerate(user.printed)}
    found |= {str(path.relative_to(out)): leaks(stored_text(path)) for path in written}
    assert {where: places for where, places in found.items() if places} == {}
    assert json.loads((out / "chaos.json").read_text())["outcome"] == "held"
