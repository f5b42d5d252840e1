"""One attempt at one model: send in the model's dialect, classify how it failed, read streams.

Models speak OpenAI's API, Ollama's (ollama.py) or Anthropic's Messages API (anthropic.py); the
translation is pure and lives in those modules, the sending and reading here.

Everything comes back in OpenAI shape, checked (answers.py): a 200 that is no answer is a failure
like any other. aiohttp's exceptions stop here: a failure is an UpstreamFailure (failures.py)
that is the model's (a fallback may answer) unless the request itself is wrong (400, 413, 422).

Every byte read from a provider (bodies, stream lines, the status phrase, Retry-After) passes the
gateway's Scrubber (scrubbing.py) before anything parses, relays or logs it.

aiohttp rather than httpx on this path: the gateway's added latency is mostly its HTTP client,
and aiohttp's C parser and connection pool cost a fraction of httpx's per request (see
docs/gateway.md for the measured figures).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from canaryctl import fastjson
from canaryctl.gateway import anthropic
from canaryctl.gateway.answers import (
    StreamWatch,
    checked_completion,
    checked_embeddings,
    checked_ollama,
    malformed,
)
from canaryctl.gateway.failures import UpstreamFailure, error_body, failure_for_status
from canaryctl.gateway.keys import api_key
from canaryctl.gateway.ollama import (
    chunks_from_ollama,
    completion_from_ollama,
    embeddings_from_ollama,
    ollama_request,
)
from canaryctl.gateway.scrubbing import Scrubber
from canaryctl.runbook.gateway import ModelSpec

__all__ = ["Upstream", "UpstreamFailure", "UpstreamStream", "error_body"]

_POOL_SIZE = 1000
_UpstreamError = (aiohttp.ClientError, TimeoutError)


async def _failure_from_response(
    response: aiohttp.ClientResponse, model: ModelSpec, scrubber: Scrubber
) -> UpstreamFailure:
    try:
        data = fastjson.loads(scrubber.scrub(await response.read()))
    except ValueError:
        data = None
    except _UpstreamError as exc:
        return _failure_from_exception(exc, model)
    error = data.get("error") if isinstance(data, dict) else None
    phrase, retry_after = response.reason, response.headers.get("retry-after")
    return failure_for_status(
        model, response.status, error, scrubber.text(phrase), scrubber.text(retry_after)
    )


def _failure_from_exception(exc: BaseException, model: ModelSpec) -> UpstreamFailure:
    if isinstance(exc, TimeoutError):
        message = f"model {model.name} did not answer within {model.timeout:g}s"
        return UpstreamFailure("timeout", 504, error_body(message, "timeout"))
    message = f"model {model.name} is unreachable ({type(exc).__name__})"
    return UpstreamFailure("connection_error", 502, error_body(message))


@functools.cache
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """Per connect and per read, as httpx's timeout was: a long stream that keeps sending is
    not cut, a silent model is. One object per distinct timeout, not one per request."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


class UpstreamStream:
    """OpenAI chunks read from an open upstream stream; `aclose()` whether or not it was read.

    Chunks come in batches: every whole line that one network read brought. The relay then
    writes to its client once per batch, not once per chunk: a write is most of what relaying a
    chunk costs, and when a model sends faster than the client reads, chunks bunch up. Every
    chunk passes `watch` (answers.StreamWatch), which knows at the end how the stream counts.
    """

    def __init__(
        self, response: aiohttp.ClientResponse, model: ModelSpec, scrubber: Scrubber
    ) -> None:
        self._response = response
        self._model = model
        self._scrubber = scrubber
        self._completion_id = f"chatcmpl-{secrets.token_hex(8)}"
        self._claude = anthropic.ChunkTranslator() if model.provider == "anthropic" else None
        self.watch = StreamWatch(model)
        self._source = self._batches()
        self._held: list[list[dict[str, Any]]] = []
        self._ended = False

    def _parse(self, raw: bytes, batch: list[dict[str, Any]]) -> bool:
        """Add the chunks of one line to `batch`; False once the stream says it is done."""
        line = self._scrubber.scrub(raw).decode()
        if self._model.provider == "ollama":
            if line.strip():
                data = checked_ollama(self._model, fastjson.loads(line.encode()))
                batch.extend(chunks_from_ollama(data, self._completion_id))
            return True
        if not line.startswith("data:"):
            return True
        data = line[5:].strip()
        if self._claude is not None:
            try:
                batch.extend(self._claude.see(fastjson.loads(data.encode())))
            except anthropic.StreamError as error:
                raise failure_for_status(
                    self._model, error.status, error.error, None, None
                ) from error
            return not self._claude.done
        if data == "[DONE]":
            return False
        batch.append(fastjson.loads(data.encode()))
        return True

    async def _batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        pending = b""
        try:
            async for data in self._response.content.iter_any():
                *lines, pending = (pending + data).split(b"\n")
                batch: list[dict[str, Any]] = []
                going = all(self._parse(line, batch) for line in lines)
                if batch:
                    yield self._watched(batch)
                if not going:
                    return
            batch = []
            self._parse(pending, batch)  # a last line without its newline
            if batch:
                yield self._watched(batch)
        except _UpstreamError as exc:
            raise _failure_from_exception(exc, self._model) from exc
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise malformed(self._model, "a stream line is not JSON") from exc

    def _watched(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for chunk in batch:
            self.watch.see(chunk)
        return batch

    async def hold_until_decided(self) -> None:
        """Read (and keep) chunks until the model has said something or been filtered, so a
        stream that says nothing, or breaks first, is a failure a fallback can still answer."""
        async for batch in self._source:
            self._held.append(batch)
            if self.watch.decided:
                return
        self._ended = True
        self.watch.ended()

    async def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        held, self._held = self._held, []
        for batch in held:
            yield batch
        if not self._ended:
            async for batch in self._source:
                yield batch

    async def aclose(self) -> None:
        """Back to the pool when read to the end; a half-read connection is closed instead."""
        await self._source.aclose()
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class Upstream:
    """Sends to models over one shared aiohttp session, so connections are pooled across
    requests. `async with Upstream.open(scrubber) as upstream:` owns the session; what the
    models send back is scrubbed of the gateway's secrets by `scrubber`."""

    def __init__(self, session: aiohttp.ClientSession, scrubber: Scrubber) -> None:
        self._session = session
        self._scrubber = scrubber

    @classmethod
    @asynccontextmanager
    async def open(cls, scrubber: Scrubber | None = None) -> AsyncIterator[Upstream]:
        connector = aiohttp.TCPConnector(limit=_POOL_SIZE, ttl_dns_cache=300)
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=True, trust_env=False
        ) as session:
            yield cls(session, scrubber or Scrubber())

    def _openai_url(self, model: ModelSpec, path: str) -> str:
        # OpenAI's and Anthropic's base URLs are written with /v1 or without.
        base = model.base_url.rstrip("/")
        return base + (path if base.endswith("/v1") else f"/v1{path}")

    async def _post(
        self, model: ModelSpec, url: str, body: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": "application/json"}
        key = api_key(model)
        if model.provider == "anthropic":
            headers["anthropic-version"] = anthropic.API_VERSION
            if key is not None:
                headers["x-api-key"] = key
        elif key is not None:
            headers["Authorization"] = f"Bearer {key}"
        try:
            return await self._session.post(
                url, data=fastjson.dumps(body), headers=headers, timeout=_timeout(model.timeout)
            )
        except _UpstreamError as exc:
            raise _failure_from_exception(exc, model) from exc

    async def _send(
        self, model: ModelSpec, chat: dict[str, Any], *, stream: bool
    ) -> aiohttp.ClientResponse:
        name = model.upstream_model or model.name
        if model.provider == "ollama":
            url = f"{model.base_url.rstrip('/')}/api/chat"
            return await self._post(model, url, ollama_request(chat, name, stream=stream))
        if model.provider == "anthropic":
            body = anthropic.messages_request(chat, name, stream=stream)
            return await self._post(model, self._openai_url(model, "/messages"), body)
        body = {**chat, "model": name, "stream": stream}
        if stream:  # usage is how tokens and cost are metered; clients may not have asked
            options = chat.get("stream_options") or {}
            body["stream_options"] = {**options, "include_usage": True}
        return await self._post(model, self._openai_url(model, "/chat/completions"), body)

    async def _json(self, model: ModelSpec, response: aiohttp.ClientResponse) -> Any:
        async with response:
            if response.status != 200:
                raise await _failure_from_response(response, model, self._scrubber)
            try:
                raw = self._scrubber.scrub(await response.read())
            except _UpstreamError as exc:
                raise _failure_from_exception(exc, model) from exc
        try:
            return fastjson.loads(raw)
        except ValueError as exc:
            raise malformed(model, "the body is not JSON") from exc

    async def complete(self, model: ModelSpec, chat: dict[str, Any]) -> dict[str, Any]:
        """The model's completion in OpenAI shape, checked (answers.py), or UpstreamFailure."""
        data = await self._json(model, await self._send(model, chat, stream=False))
        if model.provider == "ollama":
            ollama = checked_ollama(model, data)
            data = completion_from_ollama(ollama, f"chatcmpl-{secrets.token_hex(8)}")
        elif model.provider == "anthropic":
            try:
                data = anthropic.completion_from_message(data)
            except ValueError as exc:
                raise malformed(model, str(exc)) from exc
        return checked_completion(model, data)

    async def embed(self, model: ModelSpec, request: dict[str, Any]) -> dict[str, Any]:
        """Embeddings in OpenAI shape (Ollama's /api/embed translated), or UpstreamFailure."""
        name = model.upstream_model or model.name
        if model.provider == "anthropic":
            message = f"model {model.name}: Anthropic's API has no embeddings"
            raise UpstreamFailure(
                "no_embeddings", 502, error_body(message, "upstream_config_error")
            )
        if model.provider != "ollama":
            url = self._openai_url(model, "/embeddings")
            data = await self._json(model, await self._post(model, url, {**request, "model": name}))
            return checked_embeddings(model, data)
        url = f"{model.base_url.rstrip('/')}/api/embed"
        body = {"model": name, "input": request.get("input")}
        data = await self._json(model, await self._post(model, url, body))
        return checked_embeddings(model, embeddings_from_ollama(checked_ollama(model, data)))

    async def open_stream(self, model: ModelSpec, chat: dict[str, Any]) -> UpstreamStream:
        """A stream whose status was 200 and that has begun to answer: past this point no
        fallback is possible."""
        response = await self._send(model, chat, stream=True)
        if response.status != 200:
            async with response:
                raise await _failure_from_response(response, model, self._scrubber)
        stream = UpstreamStream(response, model, self._scrubber)
        try:
            await stream.hold_until_decided()
        except BaseException:
            await stream.aclose()
            raise
        return stream
