"""Chaos: a fault proxy in front of LLM providers, and scenarios that prove fallbacks work."""

from canaryctl.chaos.client import ChaosClient, token_from_env
from canaryctl.chaos.faults import ActiveFault, FaultTable, RequestFacts
from canaryctl.chaos.journal import Journal, junit_xml
from canaryctl.chaos.proxy import ADMIN_PREFIX, TOKEN_ENV, create_proxy_app
from canaryctl.chaos.scenario import ScenarioResult, run_scenario
from canaryctl.chaos.server import BackgroundServer

__all__ = [
    "ADMIN_PREFIX",
    "TOKEN_ENV",
    "ActiveFault",
    "BackgroundServer",
    "ChaosClient",
    "FaultTable",
    "Journal",
    "RequestFacts",
    "ScenarioResult",
    "create_proxy_app",
    "junit_xml",
    "run_scenario",
    "token_from_env",
]
