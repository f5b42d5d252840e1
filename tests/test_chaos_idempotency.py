"""Adding a fault is idempotent: the client names the fault before it asks, so a retry after the
proxy accepted the first try (and its answer was lost on the way back) finds that fault instead
of adding a second, and removal by that name removes it.

The lost answer is real: a TCP relay between client and proxy forwards the first request, reads
the proxy's whole answer, and resets the client's connection instead of passing it on.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from canaryctl.chaos import BackgroundServer, ChaosClient, FaultTable
from canaryctl.chaos.faults import FaultIdTaken
from canaryctl.chaos.journal import Journal
from canaryctl.chaos.proxy import create_proxy_app
from canaryctl.chaos.scenario import run_scenario
from canaryctl.clock import FakeClock
from canaryctl.errors import ChaosBackendError, InvalidInput
from canaryctl.metrics.scripted import ScriptedMetricsSource
from canaryctl.retry import RetryPolicy
from canaryctl.runbook.scenario import FaultSpec
from tests.test_chaos_scenario import FakeInjector, fake_scenario, steady

TOKEN = "idempotency-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class LoseFirstAnswer:
    """A TCP relay to `target`. On its first connection it passes the request on, waits for the
    proxy's answer, then resets the client's connection without sending it; later connections
    are relayed both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.lost: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        first = True
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            if first:
                first = False
                threading.Thread(target=self._lose, args=(upstream, client), daemon=True).start()
            else:
                threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    def _lose(self, upstream: socket.socket, client: socket.socket) -> None:
        answer = b""  # the proxy's whole answer: it has handled the request
        while b"\r\n\r\n" not in answer:
            answer += upstream.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += upstream.recv(65536)
        self.lost.append(head + b"\r\n\r\n" + body)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # an RST: the client sees its connection reset, no answer
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy() -> Iterator[str]:
    app = create_proxy_app("http://127.0.0.1:9", token=TOKEN, rng=random.Random(1))
    with BackgroundServer(app) as server:
        yield server.url


def _faults(proxy: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{proxy}/_chaos/faults", headers=AUTH).json()["faults"])


def test_a_retry_after_a_lost_answer_adds_the_fault_once(proxy: str) -> None:
    host, port = proxy.removeprefix("http://").split(":")
    relay = LoseFirstAnswer((host, int(port)))
    client = ChaosClient(relay.url, TOKEN, retry=RetryPolicy(attempts=4, backoff=0.05, jitter=0))
    try:
        fault = client.add(FaultSpec.model_validate({"fault": "error", "status": 503}))
        [lost] = relay.lost
        assert lost.startswith(b"HTTP/1.1 201")  # the proxy took the first try...
        assert fault["id"].encode() in lost  # ...and the retry found the fault it made
        [listed] = _faults(proxy)
        assert listed["id"] == fault["id"] and listed["status"] == 503
        assert client.remove(fault["id"]) is True
        assert _faults(proxy) == []
    finally:
        client.close()
        relay.close()


def test_without_a_name_each_post_is_a_new_fault(proxy: str) -> None:
    """What the name prevents: two anonymous POSTs are two faults."""
    body = {"fault": "error"}
    for _ in range(2):
        assert httpx.post(f"{proxy}/_chaos/faults", json=body, headers=AUTH).status_code == 201
    assert len(_faults(proxy)) == 2


def test_the_proxy_answers_a_repeat_200_and_a_reused_name_409(proxy: str) -> None:
    named = {**AUTH, "Idempotency-Key": "drill-7"}
    first = httpx.post(f"{proxy}/_chaos/faults", json={"fault": "error"}, headers=named)
    again = httpx.post(f"{proxy}/_chaos/faults", json={"fault": "error"}, headers=named)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] == "drill-7"
    other = httpx.post(f"{proxy}/_chaos/faults", json={"fault": "reset"}, headers=named)
    assert other.status_code == 409
    assert other.json()["error"] == "Idempotency-Key: fault drill-7 is in force with another spec"
    bad = httpx.post(
        f"{proxy}/_chaos/faults",
        json={"fault": "error"},
        headers={**AUTH, "Idempotency-Key": "a/b"},
    )
    assert bad.status_code == 422 and "a fault id is 1 to 64" in bad.json()["error"]
    with pytest.raises(InvalidInput, match="in force with another spec"):
        ChaosClient(proxy, TOKEN).add(FaultSpec.model_validate({"fault": "reset"}), "drill-7")
    assert len(_faults(proxy)) == 1


def test_the_table_keeps_one_fault_per_name() -> None:
    clock = FakeClock()
    table = FaultTable(clock=clock.now)
    spec = FaultSpec.model_validate({"fault": "error", "ttl": "10s"})
    fault, added = table.put(spec, "x")
    assert added and table.put(spec, "x") == (fault, False)
    with pytest.raises(FaultIdTaken):
        table.put(FaultSpec.model_validate({"fault": "reset"}), "x")
    clock.sleep(10)
    again, added = table.put(spec, "x")  # the first one ended: the name is free again
    assert added and again.added_at == clock.now()
    with pytest.raises(ValueError, match="1 to 64"):
        table.put(spec, "x" * 65)


class LosesAnswers(FakeInjector):
    """Adds the fault, then fails as a lost answer does."""

    def add(self, spec: FaultSpec, fault_id: str | None = None) -> dict[str, Any]:
        super().add(spec, fault_id)
        raise ChaosBackendError("the proxy did not answer")


def test_a_scenario_removes_a_fault_whose_answer_never_came() -> None:
    clock, injector = FakeClock(), LosesAnswers()
    metrics = ScriptedMetricsSource(steady, clock.now)
    scenario = fake_scenario()
    journal = Journal(scenario)
    with pytest.raises(ChaosBackendError):
        run_scenario(scenario, injector=injector, metrics=metrics, journal=journal, clock=clock)
    assert injector.faults == {}  # removed by the name the run gave it
    [injection] = journal.data["injections"]
    [removal] = journal.data["removals"]
    assert removal["id"] == injection["id"] and removal["result"]["found"] is True
