"""Hostile clients against the gateway and the chaos proxy, over real loopback HTTP: whatever the
body, headers, path or method, the answer is never a 5xx, and what the client sent (an id, a
header, a route name) never comes back longer than a short prefix.

The upstream behind both servers answers every request with a fixed, well-formed completion, so
a 5xx here can only be the server under test's own. Hypothesis drives the bulk; the named cases
pin each limit (413 while a 50 MB body is still arriving, 400 for bytes that are not UTF-8 or
JSON 100,000 deep, 413 for a 5 MB feedback id, 431 for an identity header past the limit).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from canaryctl.chaos import BackgroundServer
from canaryctl.chaos.proxy import create_proxy_app
from canaryctl.gateway import create_app
from canaryctl.request_limits import BadJSON, LimitBody, clip, parse_json
from canaryctl.runbook.gateway import GatewaySpec
from tests.fixed_upstream import FIXED_UPSTREAM, flag_file

TOKEN = "limits-token"
MAX_BODY = 64 * 1024
MAX_ID = 64
ERROR_BODY_MAX = 1500
"""No error this suite provokes needs more bytes than this to say what is wrong."""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with BackgroundServer(FIXED_UPSTREAM) as server:
        yield server.url


@pytest.fixture(scope="module")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags = flag_file(tmp_path_factory.mktemp("limits") / "flags.json", ["a"])
    spec = GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
            "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
            "models": [{"name": "a", "base_url": upstream}],
            "limits": {"max_body_bytes": MAX_BODY, "max_id_length": MAX_ID},
        }
    )
    with BackgroundServer(create_app(spec)) as server:
        yield server.url


@pytest.fixture(scope="module")
def proxy(upstream: str) -> Iterator[str]:
    app = create_proxy_app(upstream, token=TOKEN, max_body_bytes=MAX_BODY)
    with BackgroundServer(app) as server:
        yield server.url


# -- strategies --

_VISIBLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
short_text = st.text(max_size=16)
long_text = st.text(_VISIBLE, min_size=120, max_size=3000)
ids = st.one_of(short_text, long_text)
finite = st.floats(allow_nan=False, allow_infinity=False)  # NaN and 1e999 have their own cases
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant"]), "content": short_text}
    ),
    min_size=1,
    max_size=2,
)
request_fields = st.fixed_dictionaries(
    {"model": st.one_of(st.just("bot"), ids, json_values)},
    optional={
        "messages": st.one_of(messages, json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "stream_options": json_values,
        "temperature": json_values,
        "max_tokens": json_values,
        "user": st.one_of(ids, json_values),
        "input": st.one_of(short_text, json_values),
        "prompt": st.one_of(short_text, json_values),
        "options": json_values,
        "id": st.one_of(ids, json_values),
        "score": json_values,
        "fault": st.one_of(st.sampled_from(["error", "latency", "timeout"]), ids),
        "ttl": st.one_of(ids, json_values),
        "status": json_values,
    },
)


FIELDS = [
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "user",
    "options",
    "system",
    "prompt",
    "input",
    "tools",
]
CHAT = {"model": "bot", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
near_valid = st.builds(
    lambda messages, stream, odd: {"model": "bot", "messages": messages, "stream": stream, **odd},
    messages,
    st.sampled_from([True, True, False]),
    st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1, max_size=3),
)
"""A request that would be served but for one to three fields of any type: where crashes hide."""


def _nested(depth: int) -> bytes:
    return b'{"model": "bot", "messages": ' + b"[" * depth + b"]" * depth + b"}"


bodies = st.one_of(
    near_valid.map(lambda body: json.dumps(body).encode()),
    request_fields.map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=256),
    st.integers(50, 100_000).map(_nested),
    st.just(b'{"model": "bot", "temperature": NaN, "messages": []}'),
)
header_values = st.one_of(st.text(_VISIBLE, max_size=16), long_text).map(str.strip)
headers = st.dictionaries(
    st.sampled_from(
        ["X-User", "X-Team", "X-Tier", "X-Job", "Authorization", "x-api-key", "Idempotency-Key"]
    ),
    header_values,
    max_size=4,
)


def _paths(known: list[str]) -> st.SearchStrategy[str]:
    free = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
    return st.one_of(st.sampled_from(known), free.map(lambda p: "/" + p))


def _long_strings(value: Any) -> list[str]:
    """Every string of 100 characters or more in `value` (a body, headers, a path)."""
    found, pending = [], [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and len(item) >= 100:
            found.append(item)
        elif isinstance(item, dict):
            pending.extend([*item.keys(), *item.values()])
        elif isinstance(item, list):
            pending.extend(item)
    return found


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One client for the fuzz: a fresh one per example would spend most of its time on set-up."""
    with httpx.Client(timeout=15) as shared:
        yield shared


def _check(response: httpx.Response, body: bytes, sent_headers: dict[str, str], path: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        decoded = None
    for sent in _long_strings(decoded) + _long_strings(sent_headers) + _long_strings(path):
        assert sent[:100] not in response.text, "the response echoes the client's input"
    if response.status_code >= 400:
        assert len(response.content) <= ERROR_BODY_MAX, response.text[:300]


GATEWAY_PATHS = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/api/chat",
    "/api/generate",
    "/v1/feedback",
    "/metrics",
    "/health",
    "/v1/messages",
]
PROXY_PATHS = ["/_chaos/faults", "/_chaos/faults/f-1", "/_chaos/metrics", "/v1/chat/completions"]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]),
    path=_paths(GATEWAY_PATHS),
    body=bodies,
    sent_headers=headers,
)
def test_the_gateway_never_answers_5xx_nor_echoes_input(
    client: httpx.Client,
    gateway: str,
    method: str,
    path: str,
    body: bytes,
    sent_headers: dict[str, str],
) -> None:
    response = client.request(method, gateway + path, content=body, headers=sent_headers)
    _check(response, body, sent_headers, path)


@FUZZ
@given(path=st.sampled_from(GATEWAY_PATHS[:4]), body=near_valid)
@example(path="/v1/chat/completions", body={**CHAT, "stream": True, "stream_options": [1]})
@example(path="/api/chat", body={**CHAT, "options": ["num_predict"]})
def test_a_request_with_fields_of_any_type_is_served_or_refused_with_400(
    client: httpx.Client, gateway: str, path: str, body: dict[str, Any]
) -> None:
    """Served, or refused naming a field: never a crash in the fields the gateway reads.
    The examples are crashes this test found (a list for `stream_options` or `options`)."""
    response = client.post(gateway + path, json=body)
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    if response.status_code == 400:
        error = response.json()["error"]
        message = error if isinstance(error, str) else error["message"]
        field = message.split(":")[0].removeprefix("options.")
        assert field in [*FIELDS, "num_predict"] or message.startswith("the request needs")


@FUZZ
@given(
    method=st.sampled_from(["POST", "POST", "GET", "DELETE"]),
    path=_paths(PROXY_PATHS),
    body=bodies,
    sent_headers=headers,
    authorized=st.booleans(),
)
def test_the_chaos_proxy_never_answers_5xx_nor_echoes_input(
    client: httpx.Client,
    proxy: str,
    method: str,
    path: str,
    body: bytes,
    sent_headers: dict[str, str],
    authorized: bool,
) -> None:
    if authorized:
        sent_headers = {**sent_headers, "Authorization": f"Bearer {TOKEN}"}
    response = client.request(method, proxy + path, content=body, headers=sent_headers)
    _check(response, body, sent_headers, path)
    if response.status_code in (200, 201) and path == "/_chaos/faults" and method == "POST":
        client.delete(f"{proxy}/_chaos/faults", headers={"Authorization": f"Bearer {TOKEN}"})


# -- each limit, named --


def test_a_50_mb_body_is_refused_with_413_before_it_is_all_sent(gateway: str, proxy: str) -> None:
    """The server answers and closes while the client is still sending; it never reads 50 MB."""
    for base in (gateway, proxy):
        status = _raw_upload(base, "/v1/chat/completions", 50 * 1024 * 1024)
        assert status == 413, base


def test_a_chunked_body_is_counted_as_it_arrives(gateway: str, proxy: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 4096  # 160 KB, past the 64 KB limit, with no Content-Length

    for base in (gateway, proxy):
        response = httpx.post(f"{base}/v1/chat/completions", content=chunks(), timeout=10)
        assert response.status_code == 413
        assert "larger than 65536 bytes" in response.text


def test_bodies_that_are_not_utf8_or_too_deep_are_400_with_a_short_message(gateway: str) -> None:
    cases = {
        b'{"model": "bot", "messages": "\xff\xfe"}': "the body is not UTF-8 text (byte 30)",
        _nested(100_000)[:60_000]: "the body nests deeper than 64 levels",
        _nested(100): "the body nests deeper than 64 levels",
        b'{"model": "bot", "temperature": NaN}': "the body holds NaN, which JSON does not allow",
        b'{"model": "bot",': "the body is not JSON: Expecting property name enclosed in double",
    }
    for body, message in cases.items():
        for path in ("/v1/chat/completions", "/v1/feedback", "/api/chat"):
            response = httpx.post(gateway + path, content=body, timeout=10)
            assert response.status_code == 400, (path, body[:40])
            error = response.json()["error"]
            text = error if isinstance(error, str) else error["message"]
            assert text.startswith(message), text


def test_a_5_mb_feedback_id_is_refused_without_echoing_it(upstream: str, tmp_path: Path) -> None:
    """With the default limits (4 MiB bodies), a 5 MB id is a 413 for the body; within the body
    limit, an id past max_id_length is a 413 of its own."""
    spec = GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(flag_file(tmp_path / "flags.json", ["a"]))},
            "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
            "models": [{"name": "a", "base_url": upstream}],
        }
    )
    with BackgroundServer(create_app(spec)) as server:
        huge = "c" * 5_000_000
        response = httpx.post(
            f"{server.url}/v1/feedback", json={"id": huge, "score": 1}, timeout=30
        )
        assert response.status_code == 413
        assert len(response.content) < 300
        long = "c" * 300
        response = httpx.post(
            f"{server.url}/v1/feedback", json={"id": long, "score": 1}, timeout=10
        )
        assert response.status_code == 413
        assert (
            response.json()["error"]["message"] == "id: 300 characters, more than the 256 allowed"
        )
        assert long not in response.text


def test_identity_headers_and_route_names_past_the_limit(gateway: str) -> None:
    chat = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}
    for header in ("X-User", "X-Team", "X-Tier", "X-Job"):
        response = httpx.post(
            f"{gateway}/v1/chat/completions", json=chat, headers={header: "u" * 65}, timeout=10
        )
        assert response.status_code == 431, header
        assert response.json()["error"]["message"] == (
            f"{header}: 65 characters, more than the 64 allowed"
        )
    assert httpx.post(
        f"{gateway}/v1/chat/completions", json=chat, headers={"X-User": "u" * 64}, timeout=10
    ).is_success
    response = httpx.post(f"{gateway}/v1/chat/completions", json={**chat, "user": "u" * 65})
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "user: 65 characters, more than the 64 allowed"
    name = "r" * 5000
    response = httpx.post(f"{gateway}/v1/chat/completions", json={**chat, "model": name})
    assert response.status_code == 404
    assert "(5002 characters)" in response.text and name[:100] not in response.text


def test_the_proxy_admin_api_bounds_what_it_repeats(proxy: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    field = "z" * 2000
    response = httpx.post(f"{proxy}/_chaos/faults", json={"fault": "error", field: 1}, headers=auth)
    assert response.status_code == 422
    assert field[:200] not in response.text
    assert "... (2000 characters): Extra inputs are not permitted" in response.text
    response = httpx.delete(f"{proxy}/_chaos/faults/{'q' * 3000}", headers=auth)
    assert response.status_code == 404 and "q" * 100 not in response.text
    response = httpx.post(f"{proxy}/_chaos/faults", content=_nested(100_000)[:60_000], headers=auth)
    assert response.status_code == 422
    assert response.json()["error"] == "the body nests deeper than 64 levels"


def test_parse_json_names_what_is_wrong() -> None:
    assert parse_json(b'{"a": [1, {"b": 2.5}]}') == {"a": [1, {"b": 2.5}]}
    for body, message in (
        (b"1e999", "the body holds a number too large for a float ('1e999')"),
        (b"1" * 5000, "the body holds an integer with too many digits"),
        (b"-Infinity", "the body holds -Infinity, which JSON does not allow"),
        (b"[" * 9 + b"]" * 9, "the body nests deeper than 8 levels"),
    ):
        with pytest.raises(BadJSON) as raised:
            parse_json(body, max_depth=8)
        assert str(raised.value) == message
    assert parse_json(b"[" * 8 + b"]" * 8, max_depth=8) == [[[[[[[[]]]]]]]]
    assert clip("x" * 10) == repr("x" * 10)
    assert clip("x" * 100) == repr("x" * 100)[:64] + "... (102 characters)"


def _raw_upload(base: str, path: str, size: int) -> int:
    """Send `size` bytes of body over a raw socket; the status the server answered with, read
    as soon as it comes (the server may close before the body is all sent)."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk, sent = b"x" * 65536, 0
        sock.setblocking(False)
        answer = b""
        while b"\r\n" not in answer:
            assert time.monotonic() - started < 30, "no answer"
            try:
                read = sock.recv(4096)
                assert read, "the server closed the connection without an answer"
                answer += read
                continue
            except BlockingIOError:
                pass
            if sent < size:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.001)
            else:
                time.sleep(0.001)
    assert sent < size, "the server read the whole body before answering"
    return int(answer.split(b" ")[1])


def test_a_client_that_hangs_up_mid_body_never_reaches_the_app() -> None:
    """The demo's traffic generator stops mid-request at shutdown: the app must not be run on a
    half body (Starlette raises ClientDisconnect reading it, and uvicorn prints a traceback)."""
    import asyncio

    called, sent = [], []
    arriving = [
        {"type": "http.request", "body": b'{"model": "bo', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(await receive())

    async def receive() -> dict[str, Any]:
        return arriving.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    limited = LimitBody(app, MAX_BODY, render=lambda scope, status, message: {"error": message})
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    asyncio.run(limited(scope, receive, send))
    assert called == [] and sent == []

    arriving[:] = [{"type": "http.request", "body": b"{}", "more_body": False}]
    asyncio.run(limited(scope, receive, send))
    assert called == [{"type": "http.request", "body": b"{}"}]


# -- numbers from clients are bounded before any arithmetic --

HUGE_FIELDS = {
    "/v1/chat/completions": ["max_tokens", "max_completion_tokens"],
    "/v1/messages": ["max_tokens"],
    "/api/chat": ["options.num_predict"],
    "/api/generate": ["options.num_predict"],
}
MAX_TOKEN_COUNT = 10_000_000
"""No model writes more than this in one answer; what the gateway's 400 names as the bound."""


@pytest.fixture(scope="module")
def budgeted(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway with a cost budget on, so a request's token count is priced before it is sent."""
    flags = flag_file(tmp_path_factory.mktemp("budgeted") / "flags.json", ["a"])
    price = {"prompt_per_1k": 0.001, "completion_per_1k": 0.002}
    spec = GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
            "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
            "models": [{"name": "a", "base_url": upstream, "price": price}],
            "budgets": {"limits": [{"name": "big", "per": "user", "usd": 1e9}]},
        }
    )
    with BackgroundServer(create_app(spec)) as server:
        yield server.url


def _with_count(path: str, field: str, value: int) -> dict[str, Any]:
    body: dict[str, Any] = {**CHAT}
    if path == "/api/generate":
        body = {"model": "bot", "prompt": "What is 2 + 3?"}
    if field.startswith("options."):
        body["options"] = {field.removeprefix("options."): value}
    else:
        body[field] = value
    return body


huge = st.one_of(
    st.integers(MAX_TOKEN_COUNT + 1, 10**30),
    st.integers(300, 4000).map(lambda digits: 10**digits),
    st.integers(-(10**400), -3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(door=st.sampled_from([(p, f) for p, fs in HUGE_FIELDS.items() for f in fs]), value=huge)
@example(door=("/v1/chat/completions", "max_tokens"), value=10**400)
@example(door=("/v1/messages", "max_tokens"), value=10**400)
@example(door=("/api/chat", "options.num_predict"), value=10**400)
@example(door=("/api/generate", "options.num_predict"), value=10**400)
def test_a_huge_token_count_is_400_naming_the_field(
    client: httpx.Client, budgeted: str, door: tuple[str, str], value: int
) -> None:
    """`max_tokens: 10**400` with budgets on was an OverflowError pricing it, and a 500."""
    path, field = door
    if field == "options.num_predict" and value in (-1, -2):
        return  # Ollama's "no limit" and "fill the context"
    response = client.post(budgeted + path, json=_with_count(path, field, value))
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error = response.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert message.startswith(f"{field}: "), message
    assert str(MAX_TOKEN_COUNT) in message


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    door=st.sampled_from([(p, f) for p, fs in HUGE_FIELDS.items() for f in fs]),
    value=st.integers(1, MAX_TOKEN_COUNT),
)
def test_a_token_count_within_the_bound_is_served(
    client: httpx.Client, budgeted: str, door: tuple[str, str], value: int
) -> None:
    path, field = door
    response = client.post(budgeted + path, json=_with_count(path, field, value))
    assert response.status_code == 200, (response.status_code, response.text[:300])


def test_huge_numbers_elsewhere_are_400_not_500(client: httpx.Client, budgeted: str) -> None:
    for field in ("seed", "temperature", "top_p", "n"):
        response = client.post(f"{budgeted}/v1/chat/completions", json={**CHAT, field: 10**400})
        assert response.status_code == 400, field
        assert response.json()["error"]["message"].startswith(f"{field}: ")
    response = client.post(f"{budgeted}/v1/feedback", json={"id": "x", "score": 10**400})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("score: must be from 0 to 1")
