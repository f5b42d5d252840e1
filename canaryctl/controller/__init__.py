"""The rollout controller: a pure tick, a journal in SQLite, and the shell that runs them."""

from canaryctl.controller.clock import Clock, FakeClock, SystemClock
from canaryctl.controller.events import ObserverFanout, RolloutObserver, RunInfo
from canaryctl.controller.hooks import HookResult, HookRunner
from canaryctl.controller.phases import Phase
from canaryctl.controller.result import EXIT_CODES, RunResult
from canaryctl.controller.runner import RolloutRunner, resume_rollout, run_rollout
from canaryctl.controller.step import RolloutState, plan, tick
from canaryctl.controller.store import DEFAULT_STATE_PATH, StateStore

__all__ = [
    "DEFAULT_STATE_PATH",
    "EXIT_CODES",
    "Clock",
    "FakeClock",
    "HookResult",
    "HookRunner",
    "ObserverFanout",
    "Phase",
    "RolloutObserver",
    "RolloutRunner",
    "RolloutState",
    "RunInfo",
    "RunResult",
    "StateStore",
    "SystemClock",
    "plan",
    "resume_rollout",
    "run_rollout",
    "tick",
]
