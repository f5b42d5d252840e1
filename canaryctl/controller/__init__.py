"""The rollout controller: a pure tick, a journal in SQLite or PostgreSQL, the shell that runs
them, and the service that drives many at once."""

import lazy_loader

# Each name is imported on first use, so importing one submodule (or running one command)
# does not load the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "events": ["ObserverFanout", "RolloutObserver", "RunInfo"],
        "hooks": ["HookResult", "HookRunner"],
        "phases": ["Phase"],
        "result": ["EXIT_CODES", "RunResult"],
        "runner": ["RolloutRunner", "resume_rollout", "run_rollout"],
        "step": ["RolloutState", "plan", "tick"],
        "store": ["DEFAULT_STATE_PATH", "StateStore"],
    },
)
