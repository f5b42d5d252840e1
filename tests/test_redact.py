"""The one redaction policy: what of a URL, a header or a library's message may be shown."""

from __future__ import annotations

import pytest

from canaryctl.redact import (
    REDACTED,
    redact_document,
    redact_text,
    redact_url,
    redact_webhook_url,
    scrub,
)


@pytest.mark.parametrize(
    ("url", "shown", "webhook"),
    [
        ("https://u:pw@prom.example:9090/base?token=t#f", "https://prom.example:9090/base",
         "https://prom.example:9090"),
        ("https://hooks.slack.com/services/T0/B0/secret", "https://hooks.slack.com/services/T0/B0/secret",
         "https://hooks.slack.com"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379"),
        ("http://[::1]:8080/metrics?x=1", "http://[::1]:8080/metrics", "http://[::1]:8080"),
        ("http://user@host", "http://host", "http://host"),
        ("lab://primary", "lab://primary", "lab://primary"),
        ("not a url, maybe a pasted token", REDACTED, REDACTED),
        ("u:pw@host/metrics", REDACTED, REDACTED),  # no scheme: could be anything
        ("http://host:notaport/", REDACTED, REDACTED),
    ],
)  # fmt: skip
def test_urls_lose_userinfo_query_and_fragment_webhooks_their_path(
    url: str, shown: str, webhook: str
) -> None:
    assert redact_url(url) == shown
    assert redact_webhook_url(url) == webhook


def test_text_from_a_library_has_every_url_redacted() -> None:
    message = "Error connecting to redis://:hunter2@10.0.0.5:6379/0 (via http://a:b@proxy/?k=v)."
    assert redact_text(message) == (
        "Error connecting to redis://10.0.0.5:6379/0 (via http://proxy/)."
    )
    assert redact_text("no url here") == "no url here"


def test_scrub_replaces_the_credentials_we_sent_longest_first() -> None:
    echoed = "401 for Authorization: Bearer tok-123 (user alice:tok-123-long) at http://x:y@h/"
    assert scrub(echoed, ["tok-123", "tok-123-long", ""]) == (
        "401 for Authorization: Bearer *** (user alice:***) at http://h/"
    )


def test_a_document_keeps_its_shape_and_loses_its_secrets() -> None:
    runbook = {
        "spec": {
            "metrics": {"provider": "prometheus", "url": "https://u:pw@prom/?t=1", "timeout": 5},
            "on_rollback": [{"webhook": {"url": "https://hooks.slack.com/services/X",
                                         "headers": {"Authorization": "Bearer s"}}}],
            "notify": [{"webhook": {"url_env": "SLACK_WEBHOOK_URL", "format": "slack"}}],
            "targets": ["http://gw:8080/metrics?token=t"],
            "name": "http is a word, not a URL",
        }
    }  # fmt: skip
    assert redact_document(runbook) == {
        "spec": {
            "metrics": {"provider": "prometheus", "url": "https://prom/", "timeout": 5},
            "on_rollback": [{"webhook": {"url": "https://hooks.slack.com",
                                         "headers": {"Authorization": REDACTED}}}],
            "notify": [{"webhook": {"url_env": "SLACK_WEBHOOK_URL", "format": "slack"}}],
            "targets": ["http://gw:8080/metrics"],
            "name": "http is a word, not a URL",
        }
    }  # fmt: skip
    assert runbook["spec"]["targets"] == ["http://gw:8080/metrics?token=t"]  # a copy
