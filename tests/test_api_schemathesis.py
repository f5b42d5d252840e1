"""Schemathesis against the controller API as served (real HTTP on loopback, a real state
file): every operation in /openapi.json, a bounded number of generated cases each, with no
server error and no answer or status that the document does not describe. The runs' ids in
the state are 1 (rolled back) and 2 (awaiting approval); the submit files nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from canaryctl.api import create_app
from canaryctl.api.app import OPERATIONS, SUBMIT
from canaryctl.api.openapi import openapi_document
from canaryctl.chaos.server import BackgroundServer
from canaryctl.controller import StateStore
from canaryctl.flags.base import FlagSnapshot
from canaryctl.runbook import Rollout
from canaryctl.version import installed_version
from tests.api_world import OPERATOR, TOKENS, auth, rolled_back

CASES = int(os.environ.get("CANARYCTL_SCHEMATHESIS_EXAMPLES", "30"))
"""Cases per operation: bounded so CI stays quick; raise it to search harder."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    world = rolled_back(tmp_path_factory.mktemp("schemathesis"))
    with StateStore(world.state) as store:
        store.create_run(name="waiting", runbook=world.rollout.model_dump(mode="json",
                         by_alias=True), host="elsewhere", pid=1, version="test",
                         started_at=1.7e9, prior_flag=FlagSnapshot("support-bot-model", 1, {}),
                         phase="awaiting_approval", state={"weight": 10, "item": 1})  # fmt: skip

    def submit(rollout: Rollout) -> int:
        return 3

    app = create_app(lambda: StateStore(world.state), TOKENS, submit=submit)
    with BackgroundServer(app) as server:
        yield server.url


DOCUMENT = openapi_document((*OPERATIONS, SUBMIT), installed_version())
schema = schemathesis.openapi.from_dict(DOCUMENT)
"""Loaded at collection (schemathesis' fixture loader needs a pytest internal that pytest 9.2
no longer has); the test checks the server serves exactly this document."""
schema.config.generation.update(allow_extra_parameters=False)
"""Negative cases change what the document describes; an unknown query parameter is ignored,
as by most HTTP APIs (the live page keeps working with a `?utm=` on its address)."""


@schema.parametrize()
@settings(
    max_examples=CASES,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms_to_its_document(served: str, case: Any) -> None:
    excluded = []
    if case.operation.path == "/api/v1/runs" and case.method == "POST":
        # The Runbook schema states the envelope; a spec is judged by the Rollout model's
        # rules (some beyond JSON Schema: a step after 100%, an SLO bound a metric cannot
        # take), so a schema-valid body may be the documented 422 naming its problems.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=served, headers=auth(OPERATOR), excluded_checks=excluded)


def test_the_document_tested_is_the_one_served(served: str) -> None:
    assert httpx.get(f"{served}/openapi.json").json() == DOCUMENT
