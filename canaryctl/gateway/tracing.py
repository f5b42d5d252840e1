"""OpenTelemetry spans for each request and each provider attempt, when a Gateway turns them on.

One SERVER span per routed request, `chat {route}`, from the flag's choice to the last byte
(for streams, the end of the relay): route, variant, tier, the model that answered, outcome,
tokens and cost. Under it, one CLIENT span per attempt at a model, `chat {model}`, named and
attributed after the GenAI semantic conventions (gen_ai.operation.name, gen_ai.provider.name,
gen_ai.request.model, gen_ai.response.model, gen_ai.usage.*, server.address, error.type); a failed
attempt carries the reason it failed, which is the reason the next model in the chain was tried.
For a stream the attempt ends once the model's answer starts; the request span covers the rest.

Off by default and free when off: the app keeps no Tracing object and never imports
opentelemetry. Turning it on needs the `otel` extra (pip install 'canaryctl[otel]').
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import urlsplit

from canaryctl.errors import InvalidInput
from canaryctl.gateway.routing import Choice
from canaryctl.gateway.upstream import UpstreamFailure
from canaryctl.runbook.gateway import ModelSpec, TracingSpec

__all__ = ["Tracing"]

T = TypeVar("T")

_REQUEST_SPAN: ContextVar[Any] = ContextVar("canaryctl_request_span", default=None)
"""The request's span, for the attempts under it and for ending it wherever the request ends
(a stream ends in a task Starlette spawns, which inherits this context)."""


def _tracer_provider(spec: TracingSpec) -> tuple[Any, bool]:
    """(the provider, whether this gateway owns it and must shut it down)."""
    from opentelemetry import trace

    if spec.exporter == "global":
        return trace.get_tracer_provider(), False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": spec.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=spec.endpoint)))
    return provider, True


class Tracing:
    """Spans for one gateway; construct only when its document turns tracing on."""

    def __init__(self, spec: TracingSpec) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace import SpanKind, Status, StatusCode
        except ImportError as exc:
            raise InvalidInput(
                "spec.tracing: needs OpenTelemetry, which is optional: "
                "pip install 'canaryctl[otel]'"
            ) from exc
        self._trace = trace
        self._kind = SpanKind
        self._error = Status(StatusCode.ERROR)
        self._provider, self._owned = _tracer_provider(spec)
        self._tracer = self._provider.get_tracer("canaryctl.gateway")

    def begin(self, choice: Choice, chat: Mapping[str, Any]) -> None:
        span = self._tracer.start_span(f"chat {choice.route.name}", kind=self._kind.SERVER)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "canaryctl.route": choice.route.name,
            "canaryctl.variant": choice.variant,
            "canaryctl.tier": choice.tier,
        }
        for key in ("temperature", "max_tokens", "top_p", "seed"):
            value = chat.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[f"gen_ai.request.{key}"] = value
        span.set_attributes(attributes)
        _REQUEST_SPAN.set(span)

    async def attempt(self, model: ModelSpec, call: Awaitable[T]) -> T:
        parent = _REQUEST_SPAN.get()
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        requested = model.upstream_model or model.name
        url = urlsplit(model.base_url)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": requested,
            "canaryctl.model": model.name,
            "server.address": url.hostname or "",
        }
        if url.port:
            attributes["server.port"] = url.port
        with self._tracer.start_as_current_span(
            f"chat {requested}",
            context=context,
            kind=self._kind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call
            except UpstreamFailure as failure:
                span.set_attribute("error.type", failure.reason)
                span.set_status(self._error)
                raise
            if isinstance(result, dict):
                span.set_attributes(_usage_attributes(result.get("usage")))
                if isinstance(result.get("model"), str):
                    span.set_attribute("gen_ai.response.model", result["model"])
            return result

    def finish(
        self,
        choice: Choice,
        model: str,
        outcome: str,
        usage: Mapping[str, Any] | None,
        cost: float | None,
    ) -> None:
        span = _REQUEST_SPAN.get()
        if span is None:
            return
        _REQUEST_SPAN.set(None)
        span.set_attributes(
            {
                "canaryctl.model": model,
                "canaryctl.outcome": outcome,
                "canaryctl.fallback": outcome == "fallback_ok",
                **({} if cost is None else {"canaryctl.cost_usd": cost}),  # None: no price
                **_usage_attributes(usage),
            }
        )
        if outcome == "error":
            span.set_status(self._error)
        span.end()

    def close(self) -> None:
        if self._owned:
            self._provider.shutdown()


def _usage_attributes(usage: Any) -> dict[str, int]:
    if not isinstance(usage, Mapping):
        return {}
    return {
        "gen_ai.usage.input_tokens": int(usage.get("prompt_tokens") or 0),
        "gen_ai.usage.output_tokens": int(usage.get("completion_tokens") or 0),
    }
