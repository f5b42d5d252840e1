"""One attempt at one model: send in the model's dialect, classify how it failed, read streams.

Models speak OpenAI's API, Ollama's (ollama.py) or Anthropic's Messages API (anthropic.py); the
translation is pure and lives in those modules, the sending and reading here.

Everything comes back in OpenAI shape, checked (answers.py): a 200 that is no answer is a failure
like any other. The clients' exceptions stop here: a failure is an UpstreamFailure (failures.py)
that is the model's (a fallback may answer) unless the request itself is wrong (400, 413, 422).

Every byte read from a provider (bodies, stream lines, the status phrase, Retry-After) passes the
gateway's Scrubber (scrubbing.py) before anything parses, relays or logs it.

Two clients, one per kind of URL. A plain-HTTP model (`http://`: a local server, a vLLM box, the
lab) is asked with canaryctl/http1.py: the request written as bytes in one write, the answer
parsed by httptools over kept-alive connections, with the model's `timeout` for connecting and
for silence. An HTTPS model goes through aiohttp's client (its TLS, and its C parser and pool).
The gateway's added latency is mostly its own Python per request, and the raw client costs a
fraction of aiohttp's (docs/gateway.md has the figures); both answer through `_Reply`, so
everything past the sending is written once.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

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
from canaryctl.http1 import Answer, RawUpstream, UpstreamFailed
from canaryctl.runbook.gateway import ModelSpec
from canaryctl.version import installed_version

__all__ = ["Upstream", "UpstreamFailure", "UpstreamStream", "error_body"]

_POOL_SIZE = 1000
"""Connections in use at once, per upstream host (raw) or in all (aiohttp)."""
_KEEPALIVE = 15.0
"""Seconds an idle connection to a plain-HTTP model is kept, as aiohttp kept them: a gateway
with sparse traffic does not connect anew per request (a server closing one first is handled:
canaryctl/http1.py asks again on a new connection)."""
_UpstreamError = (aiohttp.ClientError, TimeoutError, UpstreamFailed)
_END_GRACE = 1.0
"""Seconds a stream's connection may take, after the stream said it was done, to end its
answer and go back to the pool; past it, it is closed (the stream still counts as whole)."""


class _Reply(Protocol):
    """One answer from a model, whichever client read it: what the rest of this module uses."""

    status: int

    @property
    def reason(self) -> str | None: ...

    def header(self, name: str) -> str | None: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as the network reads bring it."""
        ...

    async def finish(self) -> None:
        """Wait (briefly) for the end of an answer whose content has all been read."""

    def close(self) -> None:
        """Back to the pool when read to the end; a half-read connection is closed instead."""


class _RawReply:
    """An answer read with canaryctl/http1.py."""

    __slots__ = ("_answer", "_loop", "_pool", "status")

    def __init__(self, pool: RawUpstream, answer: Answer, status: int) -> None:
        self._pool, self._answer, self.status = pool, answer, status
        self._loop = asyncio.get_running_loop()

    @property
    def reason(self) -> str | None:
        return self._answer.reason.decode("latin-1") or None

    def header(self, name: str) -> str | None:
        value = self._answer.header(name.encode())
        return None if value is None else value.decode("latin-1")

    async def read(self) -> bytes:
        return await self._answer.read(self._loop)

    def chunks(self) -> AsyncIterator[bytes]:
        return self._answer.body(self._loop)

    async def finish(self) -> None:
        answer = self._answer
        if not (answer.done or answer.lost):
            with suppress(TimeoutError, UpstreamFailed):
                await asyncio.wait_for(answer.read(self._loop), _END_GRACE)

    def close(self) -> None:
        self._pool.done(self._answer)


class _AiohttpReply:
    """An answer read with aiohttp's client (HTTPS models)."""

    __slots__ = ("_response", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response, self.status = response, response.status

    @property
    def reason(self) -> str | None:
        return self._response.reason

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    async def read(self) -> bytes:
        return await self._response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def finish(self) -> None:
        return None  # aiohttp's pool takes back what it can; nothing to wait for

    def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


async def _failure_from_reply(
    reply: _Reply, model: ModelSpec, scrubber: Scrubber
) -> UpstreamFailure:
    try:
        data = fastjson.loads(scrubber.scrub(await reply.read()))
    except ValueError:
        data = None
    except _UpstreamError as exc:
        return _failure_from_exception(exc, model)
    error = data.get("error") if isinstance(data, dict) else None
    phrase, retry_after = reply.reason, reply.header("retry-after")
    return failure_for_status(
        model, reply.status, error, scrubber.text(phrase), scrubber.text(retry_after)
    )


def _failure_from_exception(exc: BaseException, model: ModelSpec) -> UpstreamFailure:
    if isinstance(exc, TimeoutError) or (isinstance(exc, UpstreamFailed) and exc.timed_out):
        message = f"model {model.name} did not answer within {model.timeout:g}s"
        return UpstreamFailure("timeout", 504, error_body(message, "timeout"))
    if isinstance(exc, UpstreamFailed):  # its message says what happened, in a few words
        message = f"model {model.name} failed: its server {exc}"
    else:
        message = f"model {model.name} is unreachable ({type(exc).__name__})"
    return UpstreamFailure("connection_error", 502, error_body(message))


@functools.cache
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """Per connect and per read, as httpx's timeout was: a long stream that keeps sending is
    not cut, a silent model is. One object per distinct timeout, not one per request."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


@functools.cache
def _user_agent() -> str:
    """Looked up once, when the first plain-HTTP model is asked: not at import."""
    return f"canaryctl/{installed_version()}"


def _head(url: str, headers: dict[str, str]) -> bytes:
    """A POST's head to `url` up to its content-length's value: the same for every request to
    one model, so it is written once (`Upstream._raw_target`)."""
    parts = urlsplit(url)
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    lines = [f"POST {target} HTTP/1.1", f"host: {parts.netloc}", f"user-agent: {_user_agent()}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("accept-encoding: identity\r\ncontent-length: ")
    return "\r\n".join(lines).encode("latin-1")


class UpstreamStream:
    """OpenAI chunks read from an open upstream stream; `aclose()` whether or not it was read.

    Chunks come in batches: every whole line that one network read brought. The relay then
    writes to its client once per batch, not once per chunk: a write is most of what relaying a
    chunk costs, and when a model sends faster than the client reads, chunks bunch up. Every
    chunk passes `watch` (answers.StreamWatch), which knows at the end how the stream counts.
    """

    def __init__(self, reply: _Reply, model: ModelSpec, scrubber: Scrubber) -> None:
        self._reply = reply
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
            async for data in self._reply.chunks():
                *lines, pending = (pending + data).split(b"\n")
                batch: list[dict[str, Any]] = []
                going = all(self._parse(line, batch) for line in lines)
                if batch:
                    yield self._watched(batch)
                if not going:
                    await self._reply.finish()  # so its connection can be kept
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
        self._reply.close()


class Upstream:
    """Sends to models: plain-HTTP ones over canaryctl/http1.py's pools (one per host and
    timeout), HTTPS ones over one shared aiohttp session; connections are pooled across
    requests either way. `async with Upstream.open(scrubber) as upstream:` owns both; what the
    models send back is scrubbed of the gateway's secrets by `scrubber`."""

    def __init__(self, session: aiohttp.ClientSession, scrubber: Scrubber) -> None:
        self._session = session
        self._scrubber = scrubber
        self._pools: dict[tuple[str, float], RawUpstream] = {}
        self._targets: dict[tuple[str, str, str | None, float], tuple[RawUpstream, bytes]] = {}
        """(provider, URL, key, timeout): the pool and the request's head up to its length."""

    @classmethod
    @asynccontextmanager
    async def open(cls, scrubber: Scrubber | None = None) -> AsyncIterator[Upstream]:
        connector = aiohttp.TCPConnector(limit=_POOL_SIZE, ttl_dns_cache=300)
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=True, trust_env=False
        ) as session:
            upstream = cls(session, scrubber or Scrubber())
            try:
                yield upstream
            finally:
                for pool in upstream._pools.values():
                    pool.close()

    def _openai_url(self, model: ModelSpec, path: str) -> str:
        # OpenAI's and Anthropic's base URLs are written with /v1 or without.
        base = model.base_url.rstrip("/")
        return base + (path if base.endswith("/v1") else f"/v1{path}")

    def _raw_target(
        self, model: ModelSpec, url: str, key: str | None
    ) -> tuple[RawUpstream, bytes] | None:
        """The pool and head for a plain-HTTP model's `url`, built on its first request; None
        for a URL the raw client does not speak (HTTPS)."""
        found = self._targets.get((model.provider, url, key, model.timeout))
        if found is not None or not RawUpstream.serves(url):
            return found
        origin = urlsplit(url)
        at = (f"{origin.scheme}://{origin.netloc}", model.timeout)
        pool = self._pools.get(at)
        if pool is None:
            seconds = model.timeout
            pool = RawUpstream(
                at[0],
                connect_timeout=seconds,
                read_timeout=seconds,
                max_connections=_POOL_SIZE,
                keepalive=_KEEPALIVE,
            )
            self._pools[at] = pool
        found = (pool, _head(url, self._headers(model, key)))
        self._targets[model.provider, url, key, model.timeout] = found
        return found

    @staticmethod
    def _headers(model: ModelSpec, key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if model.provider == "anthropic":
            headers["anthropic-version"] = anthropic.API_VERSION
            if key is not None:
                headers["x-api-key"] = key
        elif key is not None:
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def _post(self, model: ModelSpec, url: str, body: dict[str, Any]) -> _Reply:
        key = api_key(model)
        raw = self._raw_target(model, url, key)
        payload = fastjson.dumps(body)
        try:
            if raw is None:
                response = await self._session.post(
                    url,
                    data=payload,
                    headers=self._headers(model, key),
                    timeout=_timeout(model.timeout),
                )
                return _AiohttpReply(response)
            pool, head = raw
            answer, status = await pool.ask(b"%b%d\r\n\r\n%b" % (head, len(payload), payload))
            return _RawReply(pool, answer, status)
        except _UpstreamError as exc:
            raise _failure_from_exception(exc, model) from exc

    async def _send(self, model: ModelSpec, chat: dict[str, Any], *, stream: bool) -> _Reply:
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

    async def _json(self, model: ModelSpec, reply: _Reply) -> Any:
        try:
            if reply.status != 200:
                raise await _failure_from_reply(reply, model, self._scrubber)
            try:
                raw = self._scrubber.scrub(await reply.read())
            except _UpstreamError as exc:
                raise _failure_from_exception(exc, model) from exc
        finally:
            reply.close()
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
        reply = await self._send(model, chat, stream=True)
        if reply.status != 200:
            try:
                raise await _failure_from_reply(reply, model, self._scrubber)
            finally:
                reply.close()
        stream = UpstreamStream(reply, model, self._scrubber)
        try:
            await stream.hold_until_decided()
        except BaseException:
            await stream.aclose()
            raise
        return stream
