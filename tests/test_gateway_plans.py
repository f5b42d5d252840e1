"""Each route's optional stages are chosen when the gateway loads: a route that asks for no
cache, judge or shadow has none of them in its plan, so its requests never run or test for
them (issue 29: a route pays only for what it uses)."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from canaryctl.gateway.app import create_app
from canaryctl.gateway.pipeline import Pipeline
from canaryctl.runbook.gateway import GatewaySpec


def _spec(tmp_path: Path) -> GatewaySpec:
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps({"flags": {}, "segments": {}}))
    route = {"flag": "f", "default_model": "a"}
    return GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(flags)},
            "models": [
                {"name": "a", "base_url": "http://127.0.0.1:9", "keyless": True},
                {"name": "s", "base_url": "http://127.0.0.1:9", "keyless": True},
            ],
            "routes": [
                {"name": "plain", **route},
                {"name": "judged", **route, "judge": {"model": "s"}},
                {"name": "shadowed", **route, "shadow": {"model": "s", "percent": 5}},
                {"name": "cached", **route},
            ],
            "cache": {"routes": ["cached"]},
        }
    )


def test_a_plain_route_s_plan_holds_no_optional_stage(tmp_path: Path) -> None:
    app = create_app(_spec(tmp_path))
    pipeline: Pipeline = app.state.pipeline
    stages = {name: plan.stages() for name, plan in pipeline.plans.items()}
    # spend is metered on every route (the document's `spend:` cannot be turned off)
    assert stages == {
        "plain": ("spend",),
        "judged": ("spend", "judge"),
        "shadowed": ("spend", "shadow"),
        "cached": ("cache", "spend"),
    }
    plain = pipeline.plans["plain"]
    assert plain.cache is None and plain.tracing is None
    assert [stage.__name__ for _, stage in plain.after_served] == ["meter_spend"]


def test_routed_posts_and_everything_else_answer_as_before(tmp_path: Path) -> None:
    """The routed POSTs skip Starlette's router; other methods and paths still reach it."""
    with TestClient(create_app(_spec(tmp_path))) as client:
        missing = client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        assert missing.status_code == 404
        assert "no route named 'nope'" in missing.json()["error"]["message"]
        assert client.get("/v1/chat/completions").status_code == 405
        assert client.post("/v1/nothing", json={}).status_code == 404
        assert client.get("/health").json() == {"status": "ok"}
