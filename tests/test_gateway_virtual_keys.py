"""Virtual keys over real loopback HTTP: the key says who is calling (user, team, tier), the
identity headers are believed only behind a trusted proxy, a wrong key is a 401 that repeats
nothing, and feedback is taken only from the key that received the answer.

The flag sends the paid tier to model `b` and everyone else to `a`, so `x-canaryctl-variant`
shows which tier the gateway believed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from canaryctl.chaos import BackgroundServer
from canaryctl.errors import InvalidInput
from canaryctl.gateway import create_app
from canaryctl.gateway.identity import UNTRUSTED_BANNER, Callers, Refused, hash_key
from canaryctl.runbook.gateway import AuthSpec, ContextSpec, GatewaySpec
from tests.fixed_upstream import FIXED_UPSTREAM, flag_file
from tests.test_gateway import metric

PAID_KEY = "sk-canary-paid-0123456789"
FREE_KEY = "sk-canary-free-9876543210"
BATCH_KEY = "sk-canary-batch-5555555555"
PAID_RULE = {
    "id": "paid",
    "clauses": [
        {
            "attribute": "tier",
            "op": "in",
            "values": ["paid"],
            "negate": False,
            "contextKind": "user",
        }
    ],
    "variation": 1,
    "trackEvents": False,
}
CHAT = {"model": "bot", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}


class Served:
    """A gateway on loopback: `url`, and `metrics_url` for tests.test_gateway.metric."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.metrics_url = f"{url}/metrics"

    def chat(self, key: str | None = None, max_tokens: int = 64, **headers: str) -> httpx.Response:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        body = {**CHAT, "max_tokens": max_tokens}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=10)

    def feedback(self, completion_id: str, key: str | None = None) -> httpx.Response:
        headers = {} if key is None else {"x-api-key": key}
        body = {"id": completion_id, "score": 1}
        return httpx.post(f"{self.url}/v1/feedback", json=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with BackgroundServer(FIXED_UPSTREAM) as server:
        yield server.url


@pytest.fixture
def serve(upstream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """serve(auth=None, **spec) -> a Served gateway; the free key comes from the environment,
    the batch key from a keys file, the paid key's hash from the document."""
    monkeypatch.setenv("FREE_KEY", FREE_KEY)
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump({"keys": [{"id": "batch", "sha256": hash_key(BATCH_KEY), "team": "ml"}]})
    )
    flags = flag_file(tmp_path / "flags.json", ["a", "b"], [PAID_RULE])
    servers: list[BackgroundServer] = []

    def start(auth: dict[str, Any] | None = None, **spec: Any) -> Served:
        document = {
            "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
            "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
            "models": [{"name": "a", "base_url": upstream}, {"name": "b", "base_url": upstream}],
            **spec,
        }
        if auth is not None:
            document["auth"] = {"keys_file": str(keys_file), **auth}
        server = BackgroundServer(create_app(GatewaySpec.model_validate(document))).start()
        servers.append(server)
        return Served(server.url)

    yield start
    for server in servers:
        server.stop()


KEYS = [
    {"id": "paid-web", "sha256": hash_key(PAID_KEY), "user": "web", "tier": "paid"},
    {"id": "free-web", "key_env": "FREE_KEY", "team": "support"},
]


def test_the_key_decides_the_tier_whatever_the_headers_say(serve: Any) -> None:
    gateway = serve(auth={"keys": KEYS})
    paid = gateway.chat(PAID_KEY, **{"X-Tier": "free", "X-User": "someone-else"})
    assert paid.status_code == 200 and paid.headers["x-canaryctl-variant"] == "b"
    free = gateway.chat(FREE_KEY, **{"X-Tier": "paid"})
    assert free.status_code == 200 and free.headers["x-canaryctl-variant"] == "a"
    via_header = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"x-api-key": PAID_KEY}
    )
    assert via_header.headers["x-canaryctl-variant"] == "b"
    batch = gateway.chat(BATCH_KEY)  # from the keys file
    assert batch.status_code == 200
    assert metric(gateway, "llm_requests_total", tier="paid") == 2
    assert metric(gateway, "llm_requests_total", tier="free") == 2


def test_a_missing_or_wrong_key_is_401_and_repeats_nothing(serve: Any) -> None:
    gateway = serve(auth={"keys": KEYS})
    missing = gateway.chat()
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    wrong = "sk-canary-paid-0123456780"
    for response in (gateway.chat(wrong), gateway.chat(None, **{"x-api-key": wrong})):
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["message"] == "the API key is not valid for this gateway"
        assert error["code"] == "invalid_api_key" and wrong[:12] not in response.text
    ollama = httpx.post(f"{gateway.url}/api/chat", json=CHAT, headers={"x-api-key": wrong})
    assert ollama.status_code == 401 and ollama.json() == {
        "error": "the API key is not valid for this gateway"
    }
    assert httpx.get(f"{gateway.url}/metrics").status_code == 200  # Prometheus needs no key
    assert metric(gateway, "llm_requests_total") == 0


def test_feedback_is_taken_only_from_the_key_that_received_the_answer(serve: Any) -> None:
    gateway = serve(auth={"keys": KEYS})
    completion_id = gateway.chat(PAID_KEY).json()["id"]
    assert gateway.feedback(completion_id).status_code == 401
    other = gateway.feedback(completion_id, FREE_KEY)
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "not_your_answer"
    assert metric(gateway, "llm_quality_score_count") == 0
    mine = gateway.feedback(completion_id, PAID_KEY)
    assert mine.status_code == 200 and mine.json()["variant"] == "b"
    assert metric(gateway, "llm_quality_score_count", tier="paid") == 1
    assert gateway.feedback(completion_id, PAID_KEY).status_code == 404  # scored once


def test_behind_a_trusted_proxy_the_headers_override_the_key(serve: Any) -> None:
    gateway = serve(auth={"keys": KEYS, "trust_identity_headers": True})
    assert gateway.chat(FREE_KEY, **{"X-Tier": "paid"}).headers["x-canaryctl-variant"] == "b"
    assert gateway.chat(PAID_KEY).headers["x-canaryctl-variant"] == "b"  # the key's own tier
    assert gateway.chat("sk-nobody").status_code == 401  # trusted headers still need a key


def test_each_key_has_its_own_budget(serve: Any) -> None:
    budgets = {"limits": [{"name": "per-key", "per": "key", "tokens": 10}]}
    gateway = serve(auth={"keys": KEYS}, budgets=budgets)
    # estimated 7 prompt + 1 completion tokens, settled at the 4 the upstream reports: after
    # one answer the next estimate (4 + 8) no longer fits in 10
    assert gateway.chat(PAID_KEY, max_tokens=1).status_code == 200
    refused = gateway.chat(PAID_KEY, max_tokens=1, **{"X-User": "fresh-user"})
    assert refused.status_code == 429
    assert refused.json()["error"]["budget"] == "per-key"
    assert gateway.chat(FREE_KEY, max_tokens=1).status_code == 200  # another key, its own


def test_without_keys_the_headers_are_trusted_and_the_gateway_says_so(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="canaryctl.gateway.app"):
        gateway = serve()
    assert UNTRUSTED_BANNER in caplog.messages
    assert UNTRUSTED_BANNER == "no virtual keys configured: identity headers are trusted"
    assert gateway.chat(None, **{"X-Tier": "paid"}).headers["x-canaryctl-variant"] == "b"
    completion_id = gateway.chat().json()["id"]
    assert gateway.feedback(completion_id).status_code == 200


def test_key_configuration_errors_name_the_field(tmp_path: Path) -> None:
    context = ContextSpec()
    unset = AuthSpec.model_validate({"keys": [{"id": "k", "key_env": "NOT_SET_ANYWHERE"}]})
    with pytest.raises(InvalidInput, match=r"spec.auth.keys\[0\].key_env: environment variable"):
        Callers(unset, context, 256, environ={})
    same = {"sha256": hash_key("x")}
    twice = AuthSpec.model_validate({"keys": [{"id": "a", **same}, {"id": "b", **same}]})
    with pytest.raises(InvalidInput, match=r"keys\[1\]: the same key as 'a'"):
        Callers(twice, context, 256, environ={})
    broken = tmp_path / "keys.yaml"
    for text, message in (
        (b"\xff\xfe", "not UTF-8 text"),
        (b"- {id: a, sha256: nothex}", r"\[0.sha256\]: String should match pattern"),
        (b"- {id: a, sha256: " + hash_key("x").encode() + b", key: plain}", "Extra inputs"),
    ):
        broken.write_bytes(text)
        with pytest.raises(InvalidInput, match=message):
            Callers(AuthSpec(keys_file=broken), context, 256, environ={})
    with pytest.raises(InvalidInput, match="cannot read"):
        Callers(AuthSpec(keys_file=tmp_path / "absent.yaml"), context, 256, environ={})
    assert Callers(AuthSpec(), context, 256).banner == UNTRUSTED_BANNER


def test_a_key_charges_only_the_jobs_it_names(serve: Any) -> None:
    """Any caller sending `X-Job: nightly-eval` drained that job's budget, and the job's own key
    then got 429: a job header outside the key's `jobs` is a 403, and the budget is untouched."""
    keys = [
        {**KEYS[0], "jobs": ["nightly-eval"]},
        KEYS[1],  # names no job: it may charge none
    ]
    budgets = {"limits": [{"name": "per-job", "per": "job", "tokens": 20}]}
    gateway = serve(auth={"keys": keys}, budgets=budgets)
    for key in (FREE_KEY, BATCH_KEY):
        robbed = gateway.chat(key, max_tokens=1, **{"X-Job": "nightly-eval"})
        assert robbed.status_code == 403, key
        error = robbed.json()["error"]
        assert error["code"] == "job_not_allowed"
        assert error["message"] == "X-Job: this API key may not charge job 'nightly-eval'"
    # the job's budget is whole: its own key spends it (8 estimated, 4 settled each time)
    own = [gateway.chat(PAID_KEY, max_tokens=1, **{"X-Job": "nightly-eval"}) for _ in range(3)]
    assert [r.status_code for r in own] == [200, 200, 200]
    assert gateway.chat(FREE_KEY, max_tokens=1).status_code == 200  # no job header: served
    ollama = httpx.post(
        f"{gateway.url}/api/chat",
        json=CHAT,
        headers={"x-api-key": FREE_KEY, "X-Job": "nightly-eval"},
        timeout=10,
    )
    assert ollama.status_code == 403
    assert ollama.json() == {"error": "X-Job: this API key may not charge job 'nightly-eval'"}
    assert metric(gateway, "llm_requests_total") == 4


def test_behind_a_trusted_proxy_a_key_charges_only_its_teams(serve: Any) -> None:
    keys = [{**KEYS[1], "teams": ["search"]}, KEYS[0]]
    gateway = serve(auth={"keys": keys, "trust_identity_headers": True})
    for team in ("support", "search"):  # the key's own team, and one it lists
        assert gateway.chat(FREE_KEY, **{"X-Team": team}).status_code == 200, team
    other = gateway.chat(FREE_KEY, **{"X-Team": "finance"})
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "team_not_allowed"
    assert gateway.chat(PAID_KEY, **{"X-Team": "support"}).status_code == 403  # lists none
    assert gateway.chat(PAID_KEY).status_code == 200


def test_a_keys_file_names_jobs_and_teams(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            {"keys": [{"id": "evals", "sha256": hash_key(BATCH_KEY), "jobs": ["nightly"]}]}
        )
    )
    callers = Callers(AuthSpec(keys_file=keys_file), ContextSpec(), 256, environ={})
    auth = {"authorization": f"Bearer {BATCH_KEY}"}
    identity = callers.identify({**auth, "X-Job": "nightly"}, {})
    assert not isinstance(identity, Refused) and identity.job == "nightly"
    refused = callers.identify({**auth, "X-Job": "weekly"}, {})
    assert isinstance(refused, Refused) and refused.status == 403
