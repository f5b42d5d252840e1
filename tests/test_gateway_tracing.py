"""OpenTelemetry spans from the gateway, caught by the SDK's in-memory exporter: one server span
per request and one client span per provider attempt, GenAI attribute names, the fallback's
reason on the failed attempt; and none at all when the document does not turn tracing on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec
from tests.conftest import FLAG_KEY

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process-wide TracerProvider (set once: OpenTelemetry refuses to replace it)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def lab(tmp_path: Path, **gateway: Any) -> LabSpec:
    models = [
        {
            "name": "primary",
            "base_url": "lab://primary",
            "upstream_model": "gpt-4o-2024-08-06",
            "fallback": ["backup"],
        },
        {"name": "backup", "base_url": "lab://backup", "price": {"completion_per_1k": 10.0}},
    ]
    fast = {"median": 0.001, "p95": 0.003}
    providers = [
        {"name": "primary", "latency": fast, "errors": {"rate": 1, "kinds": {"503": 1}}},
        {"name": "backup", "latency": fast},
    ]
    spec = {
        "listen": "127.0.0.1:0",
        "flags": {"provider": "file", "path": str(tmp_path / "flags.json"), "poll_interval": 0.1},
        "routes": [{"name": "bot", "flag": FLAG_KEY, "default_model": "primary"}],
        "models": models,
        **gateway,
    }
    return LabSpec.model_validate({"providers": providers, "gateway": spec})


def ask(stack: LabStack, **body: Any) -> httpx.Response:
    payload = {"model": "bot", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
    headers = {"X-User": "u1", "X-Tier": "paid"}
    return httpx.post(
        f"{stack.gateway_url}/v1/chat/completions", json={**payload, **body}, headers=headers
    )


def by_kind(finished: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in finished if s.kind == kind]


def test_a_request_is_a_server_span_with_one_client_span_per_attempt(
    tmp_path: Path, write_flags: Any, spans: InMemorySpanExporter
) -> None:
    write_flags(["primary", "backup"])
    with LabStack(lab(tmp_path, tracing={"exporter": "global"}), traffic=False) as stack:
        reply = ask(stack, temperature=0, max_tokens=30)
        assert reply.status_code == 200
        usage = reply.json()["usage"]
    finished = spans.get_finished_spans()
    (server,) = by_kind(finished, SpanKind.SERVER)
    failed, answered = sorted(by_kind(finished, SpanKind.CLIENT), key=lambda s: s.start_time)
    assert server.name == "chat bot"
    attributes = dict(server.attributes or {})
    assert attributes["canaryctl.route"] == "bot"
    assert attributes["canaryctl.variant"] == "primary"
    assert attributes["canaryctl.tier"] == "paid"
    assert attributes["canaryctl.model"] == "backup"
    assert attributes["canaryctl.outcome"] == "fallback_ok"
    assert attributes["gen_ai.request.temperature"] == 0
    assert attributes["gen_ai.request.max_tokens"] == 30
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attributes["canaryctl.cost_usd"] == pytest.approx(usage["completion_tokens"] / 100)
    for attempt in (failed, answered):
        assert attempt.parent is not None
        assert attempt.parent.span_id == server.context.span_id
        assert attempt.context.trace_id == server.context.trace_id
    assert failed.name == "chat gpt-4o-2024-08-06"
    assert failed.attributes is not None and answered.attributes is not None
    assert failed.attributes["gen_ai.operation.name"] == "chat"
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert failed.attributes["gen_ai.request.model"] == "gpt-4o-2024-08-06"
    assert failed.attributes["server.address"] == "127.0.0.1"
    assert failed.attributes["error.type"] == "http_503"  # why the chain moved on
    assert failed.status.status_code == StatusCode.ERROR
    assert answered.name == "chat backup"
    assert "error.type" not in answered.attributes
    assert answered.attributes["gen_ai.response.model"] == "backup"
    assert answered.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]


def test_a_streamed_request_span_ends_with_the_stream_and_its_usage(
    tmp_path: Path, write_flags: Any, spans: InMemorySpanExporter
) -> None:
    write_flags(["backup"])
    with LabStack(lab(tmp_path, tracing={"exporter": "global"}), traffic=False) as stack:
        reply = ask(stack, stream=True, stream_options={"include_usage": True})
        events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
        usage = json.loads(events[-2])["usage"]
    (server,) = by_kind(spans.get_finished_spans(), SpanKind.SERVER)
    (client,) = by_kind(spans.get_finished_spans(), SpanKind.CLIENT)
    assert server.attributes is not None
    assert server.attributes["canaryctl.outcome"] == "ok"
    assert server.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert client.end_time is not None and server.end_time is not None
    assert client.end_time <= server.end_time


def test_without_tracing_in_the_document_no_span_is_made(
    tmp_path: Path, write_flags: Any, spans: InMemorySpanExporter
) -> None:
    write_flags(["primary", "backup"])
    with LabStack(lab(tmp_path), traffic=False) as stack:
        assert ask(stack).status_code == 200
    assert spans.get_finished_spans() == ()
