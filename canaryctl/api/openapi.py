"""The API's OpenAPI 3.1 document, built from the same endpoint table the routes are: a path,
a method, a role and a response can only be served if they are described, and the other way
round (tests/test_api.py walks both and validates every answer against these schemas).

Schemas are JSON Schema 2020-12, as OpenAPI 3.1 has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from canaryctl.api.tokens import Role
from canaryctl.controller.phases import Phase
from canaryctl.controller.store import SUBMITTED
from canaryctl.ids import MAX_ID
from canaryctl.runbook.common import API_VERSION, NAME_PATTERN

__all__ = ["MAX_RUN_ID", "SCHEMAS", "Operation", "openapi_document"]

MAX_RUN_ID = MAX_ID
"""Past it, a run id is a client's mistake."""

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_OBJECT = {"type": "object"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "OpenAPI": {
        "type": "object",
        "required": ["openapi", "info", "paths", "components"],
        "properties": {"openapi": {"const": "3.1.0"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "what was wrong, in words"}},
        "additionalProperties": False,
    },
    "Run": {
        "type": "object",
        "description": "one rollout run as journaled (without its runbook copy)",
        "required": [
            "run_id", "name", "phase", "outcome", "reason", "exit_code", "host", "pid",
            "version", "started_at", "updated_at", "ended_at", "weight", "step", "final_split",
            "owner", "lease_until",
        ],
        "properties": {
            "run_id": {"type": "integer", "minimum": 1},
            "name": {"type": "string"},
            "phase": {"enum": [SUBMITTED, *(p.value for p in Phase)]},
            "outcome": {"type": ["string", "null"]},
            "reason": {"type": "string"},
            "exit_code": {"type": ["integer", "null"]},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "version": {"type": "string"},
            "started_at": {"type": "number", "description": "seconds since the epoch"},
            "updated_at": {"type": "number"},
            "ended_at": _NUMBER_OR_NULL,
            "weight": {**_NUMBER_OR_NULL, "description": "the canary's percent of traffic"},
            "step": {"type": ["integer", "null"], "description": "index in the plan"},
            "final_split": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "number"},
            },
            "owner": {
                "type": ["string", "null"],
                "description": "the controller or process holding the run's lease (host:pid:nonce)",
            },
            "lease_until": {**_NUMBER_OR_NULL, "description": "when that lease runs out"},
        },
        "additionalProperties": False,
    },
    "RunList": {
        "type": "object",
        "required": ["runs"],
        "properties": {"runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}},
        "additionalProperties": False,
    },
    "Event": {
        "type": "object",
        "description": "a journal entry: written before its action, its result filled in after",
        "required": ["id", "run_id", "at", "type", "data", "result", "ended_at"],
        "properties": {
            "id": {"type": "integer"},
            "run_id": {"type": "integer"},
            "at": {"type": "number"},
            "type": {"type": "string"},
            "data": _OBJECT,
            "result": {"type": ["object", "null"]},
            "ended_at": _NUMBER_OR_NULL,
        },
        "additionalProperties": False,
    },
    "Check": {
        "type": "object",
        "required": ["slo", "metric", "outcome", "reason", "canary_value", "baseline_value",
                     "bound", "canary_requests", "baseline_requests"],
        "properties": {
            "slo": {"type": "string"},
            "metric": {"type": "string"},
            "outcome": {"enum": ["pass", "fail", "inconclusive"]},
            "reason": {"type": "string"},
            "canary_value": _NUMBER_OR_NULL,
            "baseline_value": _NUMBER_OR_NULL,
            "bound": _NUMBER_OR_NULL,
            "canary_requests": {"type": "number"},
            "baseline_requests": {"type": "number"},
            "evidence": {**_OBJECT, "description": "a sequential test's e-value and interval"},
        },
        "additionalProperties": False,
    },
    "Verdict": {
        "type": "object",
        "description": "one analysis: the SLOs judged on one window at one weight",
        "required": ["at", "weight", "closing", "outcome", "reason", "window_start",
                     "window_end", "checks"],
        "properties": {
            "at": {"type": "number"},
            "weight": {"type": "number"},
            "closing": {"type": "boolean"},
            "outcome": {"enum": ["pass", "fail", "inconclusive"]},
            "reason": {"type": "string"},
            "window_start": {"type": "number"},
            "window_end": {"type": "number"},
            "checks": {"type": "array", "items": {"$ref": "#/components/schemas/Check"}},
            "baseline": {"type": "string", "description": "the baseline variant's name"},
            "canary": {"type": "string", "description": "the canary variant's name"},
            "since": {"type": "number", "description": "when the judged window began"},
            "observation": {
                "type": "object",
                "description": "the counts judged, per variant (what `canaryctl backtest --run` "
                "judges again); absent from runs journaled before counts were kept",
                "required": ["start", "end", "variants", "slo_values"],
                "properties": {
                    "start": {"type": "number"},
                    "end": {"type": "number"},
                    "variants": {"type": "object"},
                    "slo_values": {"type": "object"},
                },
            },
        },
        "additionalProperties": False,
    },
    "RunDetail": {
        "type": "object",
        "required": ["run", "events", "verdicts", "chart_svg"],
        "properties": {
            "run": {"$ref": "#/components/schemas/Run"},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "verdicts": {"type": "array", "items": {"$ref": "#/components/schemas/Verdict"}},
            "chart_svg": {
                "type": "string",
                "description": "the report's chart (weight, error rate, p95 over time) as SVG",
            },
        },
        "additionalProperties": False,
    },
    "RequestFiled": {
        "type": "object",
        "description": "an approve or abort request, filed for the run's driver to act on",
        "required": ["request_id", "run_id", "kind", "by"],
        "properties": {
            "request_id": {"type": "integer"},
            "run_id": {"type": "integer"},
            "kind": {"enum": ["approve", "abort"]},
            "by": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "AlertmanagerPayload": {
        "type": "object",
        "description": "Alertmanager's webhook payload (version 4), or Grafana's contact point",
        "required": ["alerts"],
        "properties": {
            "version": {"type": "string"},
            "status": {"enum": ["firing", "resolved"]},
            "alerts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "labels"],
                    "properties": {
                        "status": {"enum": ["firing", "resolved"]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "fingerprint": {"type": "string", "maxLength": 128},
                    },
                },
            },
        },
    },
    "Runbook": {
        "type": "object",
        "description": "a Rollout document, as JSON or YAML text: its envelope here, its `spec` "
        "as `canaryctl schema Rollout` prints it (a spec that breaks a rule is a 422 naming "
        "every problem)",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": "Rollout"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": NAME_PATTERN},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "additionalProperties": False,
            },
            "spec": {"type": "object"},
        },
        "additionalProperties": False,
    },
    "RunSubmitted": {
        "type": "object",
        "required": ["run_id", "name"],
        "properties": {"run_id": {"type": "integer", "minimum": 1}, "name": {"type": "string"}},
        "additionalProperties": False,
    },
    "AlertRef": {
        "type": "object",
        "required": ["alertname", "fingerprint"],
        "properties": {"alertname": {"type": "string"}, "fingerprint": {"type": "string"}},
        "additionalProperties": False,
    },
    "AlertOutcome": {
        "type": "object",
        "required": ["aborted", "repeats", "unmatched", "resolved"],
        "properties": {
            "aborted": {
                "type": "array",
                "description": "runs an abort was filed for, with the alert: the run's driver "
                "restores its flag within about a second",
                "items": {"$ref": "#/components/schemas/AlertAction"},
            },
            "repeats": {
                "type": "array",
                "description": "alerts that had already aborted these runs: nothing changed",
                "items": {"$ref": "#/components/schemas/AlertAction"},
            },
            "unmatched": {
                "type": "array",
                "description": "firing alerts no running rollout's abort_on matches",
                "items": {"$ref": "#/components/schemas/AlertRef"},
            },
            "resolved": {"type": "integer", "description": "resolved alerts, which change nothing"},
        },
        "additionalProperties": False,
    },
    "AlertAction": {
        "type": "object",
        "required": ["run_id", "alertname", "fingerprint"],
        "properties": {
            "run_id": {"type": "integer"},
            "alertname": {"type": "string"},
            "fingerprint": {"type": "string"},
        },
        "additionalProperties": False,
    },
}  # fmt: skip


@dataclass(frozen=True)
class Operation:
    """One method on one path: who may call it and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    role: Role | None
    responses: dict[int, tuple[str, str | None]]
    """status -> (description, schema name in SCHEMAS, or None for a non-JSON body)"""
    parameters: Sequence[dict[str, Any]] = ()
    request_schema: str | None = None
    content_type: str = "application/json"
    """what a 2xx answer's body is"""
    tags: Sequence[str] = field(default_factory=lambda: ("runs",))


def _responses(operation: Operation) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    statuses = dict(operation.responses)
    statuses.setdefault(500, ("unexpected: a bug, or the store driver's own error (logged)",
                              "Error"))  # fmt: skip
    if operation.role is not None:
        statuses.setdefault(401, ("no token, or not one of CANARYCTL_API_TOKENS", "Error"))
        if operation.role is Role.OPERATOR:
            statuses.setdefault(403, ("a viewer's token: this needs an operator", "Error"))
    for status, (description, schema) in sorted(statuses.items()):
        answer: dict[str, Any] = {"description": description}
        if schema is not None:
            answer["content"] = {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{schema}"}}}  # fmt: skip
        elif 200 <= status < 300:
            answer["content"] = {operation.content_type: {"schema": {"type": "string"}}}
        answers[str(status)] = answer
    return answers


def openapi_document(operations: Sequence[Operation], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": list(op.tags),
            "responses": _responses(op),
        }
        if op.parameters:
            entry["parameters"] = list(op.parameters)
        if op.role is not None:
            entry["security"] = [{"bearer": []}]
            entry["x-canaryctl-role"] = op.role.value
        else:
            entry["security"] = []
        if op.request_schema is not None:
            schema = {"schema": {"$ref": f"#/components/schemas/{op.request_schema}"}}
            media = ("application/json", "application/yaml") if op.request_schema == "Runbook" \
                else ("application/json",)  # fmt: skip
            entry["requestBody"] = {"required": True, "content": dict.fromkeys(media, schema)}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "canaryctl controller API",
            "version": version,
            "description": "Rollouts in the shared state store: read them (viewer), approve "
            "or abort them and post Alertmanager webhooks (operator). Tokens come from "
            "CANARYCTL_API_TOKENS (NAME:ROLE:TOKEN,...).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
