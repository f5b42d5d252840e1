"""One attempt at one model: send in the model's dialect, classify how it failed, read streams.

Everything comes back in OpenAI shape. httpx's exceptions stop here: a failure is an
UpstreamFailure saying whether a fallback model could help (5xx, 429, timeout, connection) or not
(any other 4xx: the request itself is wrong, and another model would refuse it too).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx

from canaryctl.gateway.ollama import (
    chunks_from_ollama,
    completion_from_ollama,
    ollama_request,
)
from canaryctl.runbook.gateway import ModelSpec

__all__ = ["Upstream", "UpstreamFailure", "UpstreamStream", "error_body"]


def error_body(message: str, kind: str = "upstream_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class UpstreamFailure(Exception):
    """A model did not answer. `status` and `body` are what the client gets if nothing else does."""

    def __init__(
        self,
        reason: str,
        status: int,
        body: dict[str, Any],
        *,
        retryable: bool = True,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {body.get('error')}")
        self.reason = reason
        self.status = status
        self.body = body
        self.retryable = retryable
        self.retry_after = retry_after


def _failure_from_response(response: httpx.Response) -> UpstreamFailure:
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        body = {"error": error}
    else:
        body = error_body(str(error or response.reason_phrase or f"HTTP {status}"))
    retryable = status >= 500 or status == 429
    return UpstreamFailure(
        f"http_{status}",
        status,
        body,
        retryable=retryable,
        retry_after=response.headers.get("retry-after"),
    )


def _failure_from_exception(exc: httpx.HTTPError, model: ModelSpec) -> UpstreamFailure:
    if isinstance(exc, httpx.TimeoutException):
        message = f"model {model.name} did not answer within {model.timeout:g}s"
        return UpstreamFailure("timeout", 504, error_body(message, "timeout"))
    message = f"model {model.name} is unreachable ({type(exc).__name__})"
    return UpstreamFailure("connection_error", 502, error_body(message))


class UpstreamStream:
    """OpenAI chunks read from an open upstream stream; `aclose()` whether or not it was read."""

    def __init__(self, response: httpx.Response, model: ModelSpec) -> None:
        self._response = response
        self._model = model

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        completion_id = f"chatcmpl-{secrets.token_hex(8)}"
        try:
            async for line in self._response.aiter_lines():
                if self._model.provider == "ollama":
                    if line.strip():
                        for chunk in chunks_from_ollama(json.loads(line), completion_id):
                            yield chunk
                    continue
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                yield json.loads(data)
        except httpx.HTTPError as exc:
            raise _failure_from_exception(exc, self._model) from exc
        except json.JSONDecodeError as exc:
            message = f"model {self._model.name} sent a malformed stream"
            raise UpstreamFailure("bad_response", 502, error_body(message)) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class Upstream:
    """Sends to models over one shared httpx client, so connections are pooled across requests."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    def _request(self, model: ModelSpec, chat: dict[str, Any], *, stream: bool) -> httpx.Request:
        name = model.upstream_model or model.name
        base = model.base_url.rstrip("/")
        headers = {}
        if model.provider == "ollama":
            url = f"{base}/api/chat"
            body = ollama_request(chat, name, stream=stream)
        else:
            # OpenAI's own base URL is usually written with /v1, self-hosted ones without.
            path = "/chat/completions" if base.endswith("/v1") else "/v1/chat/completions"
            url = base + path
            body = {**chat, "model": name, "stream": stream}
            if stream:  # usage is how tokens and cost are metered; clients may not have asked
                options = chat.get("stream_options") or {}
                body["stream_options"] = {**options, "include_usage": True}
            key = os.environ.get(model.api_key_env) if model.api_key_env else None
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return self._client.build_request(
            "POST", url, json=body, headers=headers, timeout=httpx.Timeout(model.timeout)
        )

    async def complete(self, model: ModelSpec, chat: dict[str, Any]) -> dict[str, Any]:
        """The model's completion in OpenAI shape, or UpstreamFailure."""
        try:
            response = await self._client.send(self._request(model, chat, stream=False))
        except httpx.HTTPError as exc:
            raise _failure_from_exception(exc, model) from exc
        if response.status_code != 200:
            raise _failure_from_response(response)
        try:
            data = response.json()
        except ValueError as exc:
            message = f"model {model.name} sent a body that is not JSON"
            raise UpstreamFailure("bad_response", 502, error_body(message)) from exc
        if model.provider == "ollama":
            return completion_from_ollama(data, f"chatcmpl-{secrets.token_hex(8)}")
        return data

    async def open_stream(self, model: ModelSpec, chat: dict[str, Any]) -> UpstreamStream:
        """A stream whose status was 200: past this point no fallback is possible."""
        try:
            response = await self._client.send(self._request(model, chat, stream=True), stream=True)
        except httpx.HTTPError as exc:
            raise _failure_from_exception(exc, model) from exc
        if response.status_code != 200:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                raise _failure_from_exception(exc, model) from exc
            finally:
                await response.aclose()
            raise _failure_from_response(response)
        return UpstreamStream(response, model)
