"""Chaos: a fault proxy in front of LLM providers, and scenarios that prove fallbacks work."""

from canaryctl.chaos.client import ChaosClient, token_from_env
from canaryctl.chaos.faults import ActiveFault, FaultTable, RequestFacts
from canaryctl.chaos.proxy import ADMIN_PREFIX, TOKEN_ENV, create_proxy_app
from canaryctl.chaos.server import BackgroundServer

__all__ = [
    "ADMIN_PREFIX",
    "TOKEN_ENV",
    "ActiveFault",
    "BackgroundServer",
    "ChaosClient",
    "FaultTable",
    "RequestFacts",
    "create_proxy_app",
    "token_from_env",
]
