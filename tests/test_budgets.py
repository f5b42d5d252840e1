"""Budgets: window math on a fake clock, the reserve/settle engine on the memory store, the 429
and the soft-limit downgrade over real HTTP, SQLite persistence, and two gateway processes
sharing a real Redis server without overspending together."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from binaries import require_binary
from click.testing import CliRunner
from loopback import free_port
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.cli import main
from canaryctl.gateway.budget_memory import MemoryStore
from canaryctl.gateway.budgets import Admission, Budgets, Refusal, slots
from canaryctl.gateway.routing import Choice
from canaryctl.lab import LabStack
from canaryctl.runbook.gateway import BudgetSpec, GatewaySpec
from canaryctl.runbook.lab import LabSpec
from tests.conftest import FLAG_KEY

FAST = {"median": 0.001, "p95": 0.003}
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]  # 7 prompt tokens, lab and estimate
T0 = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC).timestamp()


def budget(**fields: Any) -> BudgetSpec:
    return BudgetSpec.model_validate({"name": "b", "per": "team", "tokens": 100, **fields})


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# --- windows: pure functions of the clock ----------------------------------------------------


def test_calendar_windows_reset_at_the_next_hour_day_and_month() -> None:
    hour, day, month = (slots(budget(window=w), "ml", T0, "p")[0] for w in ("hour", "day", "month"))
    assert hour.resets_at == at("2026-03-14T16:00:00")
    assert day.resets_at == at("2026-03-15T00:00:00")
    assert month.resets_at == at("2026-04-01T00:00:00")
    assert len(day.buckets) == 1 and day.ttl > day.resets_at - T0
    december = slots(budget(window="month"), "ml", at("2026-12-31T23:59:00"), "p")[0]
    assert december.resets_at == at("2027-01-01T00:00:00")
    # a new period is a new bucket, so its usage starts at zero
    assert slots(budget(), "ml", at("2026-03-15T00:00:01"), "p")[0].buckets != day.buckets


def test_rolling_windows_span_sixty_slices_and_forget_the_oldest() -> None:
    now = slots(budget(window="hour", kind="rolling"), "ml", T0, "p")[0]
    later = slots(budget(window="hour", kind="rolling"), "ml", T0 + 60, "p")[0]
    assert len(now.buckets) == 60
    assert later.buckets[1:] == now.buckets[:-1]  # one slice on: the oldest one left
    assert now.resets_at == at("2026-03-14T15:10:00")


def test_usd_and_tokens_are_separate_counters_with_their_own_limit() -> None:
    both = slots(budget(usd=2.5), "a:b/c", T0, "p")
    assert [(s.unit, s.limit) for s in both] == [("tokens", 100), ("usd", 2_500_000)]
    assert all(":a%3Ab%2Fc:" in s.buckets[0] for s in both)  # the key cannot break the format


# --- the engine on the memory store, with a fake clock -----------------------------------------


def gateway_spec(budgets: dict[str, Any]) -> GatewaySpec:
    return GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": "flags.json"},
            "routes": [{"name": "bot", "flag": "f", "default_model": "big"}],
            "models": [
                {"name": "big", "base_url": "http://x", "price": {"prompt_per_1k": 0.01}},
                {"name": "small", "base_url": "http://x", "price": {"prompt_per_1k": 0.001}},
            ],
            "budgets": budgets,
        }
    )


class Engine:
    def __init__(self, budgets: dict[str, Any], store: MemoryStore, clock: list[float]) -> None:
        self.spec = gateway_spec(budgets)
        self.models = {m.name: m for m in self.spec.models}
        self.choice = Choice(self.spec.routes[0], "big", self.models["big"])
        assert self.spec.budgets is not None
        self.budgets = Budgets(
            self.spec.budgets,
            self.models,
            store,
            CollectorRegistry(),
            prefix="budget",
            clock=lambda: clock[0],
        )

    async def ask(self, team: str = "ml", max_tokens: int = 13) -> Admission | Refusal:
        chat = {"messages": QUESTION, "max_tokens": max_tokens}
        return await self.budgets.admit(self.choice, {"team": team}, chat)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_requests_are_refused_once_the_estimate_would_pass_the_limit() -> None:
    async def scenario() -> None:
        clock = [T0]
        engine = Engine(
            {"limits": [{"name": "t", "per": "team", "tokens": 50}]}, MemoryStore(), clock
        )
        first = await engine.ask()  # estimate 7 + 13 = 20
        second = await engine.ask()
        assert isinstance(first, Admission) and isinstance(second, Admission)
        third = await engine.ask()
        assert isinstance(third, Refusal)  # 40 reserved + 20 > 50
        assert third.used == 40
        error = third.body["error"]
        assert error["type"] == error["code"] == "budget_exceeded"
        assert error["budget"] == "t" and error["resets_at"] == "2026-03-15T00:00:00Z"
        assert "team 'ml'" in error["message"] and "40 tokens of 50 tokens" in error["message"]
        assert third.retry_after == at("2026-03-15T00:00:00") - T0
        assert isinstance(await engine.ask(team="other"), Admission)  # budgets are per key
        # settling replaces the estimate by the reported usage, freeing what was not used
        usage = {"prompt_tokens": 7, "completion_tokens": 3}
        await engine.budgets.settle(first, engine.models["big"], usage)
        await engine.budgets.settle(second, engine.models["big"], None)  # failed: refunded
        assert (await engine.budgets.store.add(first.slots, [0])) == [10]
        assert isinstance(await engine.ask(), Admission)
        clock[0] = at("2026-03-15T00:00:01")  # a new day
        today = slots(first.slots[0].budget, "ml", clock[0], "budget")
        assert (await engine.budgets.store.add(today, [0])) == [0]

    run(scenario())


def test_a_rolling_window_frees_usage_as_it_ages() -> None:
    async def scenario() -> None:
        clock = [T0]
        limits = [{"name": "r", "per": "team", "tokens": 45, "window": "hour", "kind": "rolling"}]
        engine = Engine({"limits": limits}, MemoryStore(), clock)
        assert isinstance(await engine.ask(), Admission)
        clock[0] += 1800
        assert isinstance(await engine.ask(), Admission)
        assert isinstance(await engine.ask(), Refusal)  # 40 in the last hour
        clock[0] += 1860  # the first request is now more than an hour old, the second is not
        assert isinstance(await engine.ask(), Admission)
        assert isinstance(await engine.ask(), Refusal)

    run(scenario())


def test_past_the_soft_limit_the_route_is_served_by_the_cheaper_model() -> None:
    async def scenario() -> None:
        limit = {
            "name": "spend",
            "per": "team",
            "usd": 0.001,  # an estimate: 7 prompt tokens at 0.01 USD per 1k, 70 micro-USD
            "soft_limit": 0.5,
            "downgrade": {"bot": "small"},
        }
        engine = Engine({"limits": [limit]}, MemoryStore(), [T0])
        served = []
        for _ in range(10):
            admitted = await engine.ask(max_tokens=1)
            assert isinstance(admitted, Admission)
            served.append(admitted.choice.model.name)
        assert served[:7] == ["big"] * 7  # 7 x 70 micro-USD = 490 < 500
        assert served[7:] == ["small"] * 3
        assert admitted.downgraded_by == "spend" and admitted.choice.variant == "big"

    run(scenario())


def test_the_memory_store_survives_a_restart_through_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "budgets.db"
    limits = {"limits": [{"name": "t", "per": "team", "tokens": 50}]}

    async def spend() -> None:
        store = MemoryStore(db, save_interval=60)
        engine = Engine(limits, store, [time.time()])
        assert isinstance(await engine.ask(), Admission)
        assert isinstance(await engine.ask(), Admission)
        await store.close()

    async def after_restart() -> None:
        store = MemoryStore(db, save_interval=60)
        engine = Engine(limits, store, [time.time()])
        assert isinstance(await engine.ask(), Refusal)  # the 40 tokens were kept
        await store.close()

    run(spend())
    run(after_restart())


# --- over HTTP: a gateway with budgets -----------------------------------------------------


def lab_spec(tmp_path: Path, budgets: dict[str, Any], models: list[dict[str, Any]]) -> LabSpec:
    flags = {"provider": "file", "path": str(tmp_path / "flags.json"), "poll_interval": 0.1}
    providers = [{"name": m["name"], "latency": FAST} for m in models]
    for model in models:
        model.setdefault("base_url", f"lab://{model['name']}")
    gateway = {
        "listen": "127.0.0.1:0",
        "flags": flags,
        "routes": [{"name": "bot", "flag": FLAG_KEY, "default_model": models[0]["name"]}],
        "models": models,
        "budgets": budgets,
    }
    return LabSpec.model_validate({"providers": providers, "gateway": gateway})


def chat(url: str, team: str, **body: Any) -> httpx.Response:
    payload = {"model": "bot", "messages": QUESTION, "max_tokens": 13, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, headers={"X-Team": team})


def samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_over_http_a_spent_budget_is_a_429_and_usage_is_kept_and_shown(
    tmp_path: Path, write_flags: Any
) -> None:
    write_flags(["big", "small"])
    limits = [
        {
            "name": "team-day",
            "per": "team",
            "tokens": 75,
            "soft_limit": 0.5,
            "downgrade": {"bot": "small"},
        },
    ]
    budgets = {"store": {"provider": "memory", "path": str(tmp_path / "b.db")}, "limits": limits}
    lab = lab_spec(tmp_path, budgets, [{"name": "big"}, {"name": "small"}])
    with LabStack(lab, traffic=False) as stack:
        first = chat(stack.gateway_url, "ml")
        assert first.status_code == 200 and first.headers["x-canaryctl-model"] == "big"
        spent = first.json()["usage"]["total_tokens"]
        second = chat(stack.gateway_url, "ml")  # past half of 75: the cheaper model
        assert second.status_code == 200 and second.headers["x-canaryctl-model"] == "small"
        assert second.headers["x-canaryctl-variant"] == "big"
        spent += second.json()["usage"]["total_tokens"]
        refused = [chat(stack.gateway_url, "ml") for _ in range(3)]
        over = [r for r in refused if r.status_code == 429]
        assert over, "the budget never refused"
        error = over[-1].json()["error"]
        assert error["type"] == "budget_exceeded" and error["budget"] == "team-day"
        assert int(over[-1].headers["retry-after"]) > 0
        spent += sum(r.json()["usage"]["total_tokens"] for r in refused if r.status_code == 200)
        assert spent <= 75 + 20  # never past the limit by more than one estimate
        remaining = samples(stack.gateway_url, "llm_budget_remaining")
        key = (("budget", "team-day"), ("key", "ml"), ("per", "team"), ("unit", "tokens"))
        assert remaining[key] == 75 - spent
        rejected = samples(stack.gateway_url, "llm_budget_rejections_total")
        assert rejected[(("budget", "team-day"), ("route", "bot"))] == len(over)
    document = tmp_path / "gateway.yaml"
    document.write_text(yaml.safe_dump(gateway_document(stack.gateway_spec())))
    shown = CliRunner().invoke(main, ["budgets", "show", str(document), "-o", "json"])
    assert shown.exit_code == 0, shown.output
    rows = [json.loads(line) for line in shown.output.splitlines()]
    assert [(r["budget"], r["key"], r["used"], r["limit"]) for r in rows] == [
        ("team-day", "ml", spent, 75)
    ]


def gateway_document(spec: GatewaySpec) -> dict[str, Any]:
    return {
        "apiVersion": "canaryctl/v1",
        "kind": "Gateway",
        "metadata": {"name": "replica"},
        "spec": spec.model_dump(mode="json", exclude_none=True),
    }


# --- two gateway processes sharing a real Redis ----------------------------------------------


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, with no persistence; stopped afterwards."""
    binary = require_binary("redis-server", package="redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            assert process.poll() is None, "redis-server exited"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def second_gateway(tmp_path: Path) -> Iterator[Any]:
    """start(spec) runs `canaryctl gateway serve` for `spec` in its own process."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(spec: GatewaySpec) -> str:
        document = tmp_path / f"replica-{len(processes)}.yaml"
        document.write_text(yaml.safe_dump(gateway_document(spec)))
        port = free_port()
        command = [sys.executable, "-m", "canaryctl", "gateway", "serve", str(document)]
        process = subprocess.Popen([*command, "--listen", f"127.0.0.1:{port}"])
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the second gateway exited"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the second gateway did not start"
            time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
        process.wait(15)


def test_two_gateways_sharing_redis_never_overspend_together(
    tmp_path: Path, write_flags: Any, redis_url: str, second_gateway: Any
) -> None:
    write_flags(["big"])
    limit = 1000
    # A store call that times out lets its request through (budgets never take the gateway
    # down), and on a loaded machine the event loop alone can pass the default 0.5 s: the
    # bound here is wide, and the test checks below that no call failed, so what it proves is
    # the script's atomicity, not the machine's speed.
    budgets = {
        "store": {"provider": "redis", "url": redis_url, "prefix": "test", "timeout": "30s"},
        "limits": [{"name": "shared", "per": "team", "tokens": limit, "window": "hour"}],
    }
    with LabStack(lab_spec(tmp_path, budgets, [{"name": "big"}]), traffic=False) as stack:
        replicas = [stack.gateway_url, second_gateway(stack.gateway_spec())]
        estimate = 7 + 40
        payload = {"model": "bot", "messages": QUESTION, "max_tokens": 40}

        async def send(url: str, client: httpx.AsyncClient) -> httpx.Response:
            path = f"{url}/v1/chat/completions"
            return await client.post(path, json=payload, headers={"X-Team": "ml"})

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                warm = [await send(replicas[1], client) for _ in range(5)]
                both = await asyncio.gather(*(send(replicas[i % 2], client) for i in range(60)))
                after = [await send(url, client) for url in replicas]
                return [*warm, *both, *after]

        responses = asyncio.run(burst())
        for url in replicas:
            assert not any(samples(url, "llm_budget_store_errors_total").values()), url
        assert [r.status_code for r in responses[:5]] == [200] * 5
        assert [r.status_code for r in responses[-2:]] == [429, 429]  # both see one budget
        assert {r.status_code for r in responses} == {200, 429}
        served = [r for r in responses if r.status_code == 200]
        spent = sum(r.json()["usage"]["total_tokens"] for r in served)
        assert spent <= limit + estimate
        assert len(served) >= limit // estimate - 1  # refusals did not start early either
        document = tmp_path / "gateway.yaml"
        document.write_text(yaml.safe_dump(gateway_document(stack.gateway_spec())))
        shown = CliRunner().invoke(main, ["budgets", "show", str(document), "-o", "json"])
        assert shown.exit_code == 0, shown.output
        (row,) = [json.loads(line) for line in shown.output.splitlines()]
        assert (row["budget"], row["key"], row["used"]) == ("shared", "ml", spent)


def test_streams_and_embeddings_are_settled_from_their_reported_usage(
    tmp_path: Path, write_flags: Any
) -> None:
    write_flags(["big"])
    budgets = {"limits": [{"name": "t", "per": "team", "tokens": 1000}]}
    with LabStack(lab_spec(tmp_path, budgets, [{"name": "big"}]), traffic=False) as stack:
        url = stack.gateway_url
        # no max_tokens: 256 completion tokens are reserved, about 120 used
        options = {"include_usage": True}
        streamed = chat(url, "ml", stream=True, stream_options=options, max_tokens=None)
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        spent = json.loads(events[-2])["usage"]["total_tokens"]
        embedded = httpx.post(
            f"{url}/v1/embeddings",
            json={"model": "bot", "input": ["a question about refunds"]},
            headers={"X-Team": "ml"},
        )
        spent += embedded.json()["usage"]["total_tokens"]
        key = (("budget", "t"), ("key", "ml"), ("per", "team"), ("unit", "tokens"))
        deadline = time.monotonic() + 5  # a stream is settled just after its last byte
        while samples(url, "llm_budget_remaining").get(key) != 1000 - spent:
            assert time.monotonic() < deadline, samples(url, "llm_budget_remaining")
            time.sleep(0.05)


def test_an_unreachable_redis_lets_requests_through_and_is_counted(
    tmp_path: Path, write_flags: Any
) -> None:
    write_flags(["big"])
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    budgets = {
        "store": {"provider": "redis", "url": nothing_there, "timeout": 0.2},
        "limits": [{"name": "t", "per": "team", "tokens": 10}],
    }
    with LabStack(lab_spec(tmp_path, budgets, [{"name": "big"}]), traffic=False) as stack:
        replies = [chat(stack.gateway_url, "ml") for _ in range(3)]
        assert [r.status_code for r in replies] == [200] * 3  # over the limit, but not refused
        errors = samples(stack.gateway_url, "llm_budget_store_errors_total")
        assert errors[()] == 3  # one failed reservation each; nothing reserved, nothing settled
