"""The controller's HTTP API: runs, approve and abort, Alertmanager's webhook, the OpenAPI
document and the live page, over the shared state store."""

from canaryctl.api.app import api_routes, create_app, json_errors
from canaryctl.api.tokens import ApiTokens, Role

__all__ = ["ApiTokens", "Role", "api_routes", "create_app", "json_errors"]
