"""Backtests: what a runbook would have decided on recorded traffic, by the same pure tick
and analysis a rollout runs. Pure: counts in, decisions out; the CLI reads and prints."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "journal": ["RunBacktest", "backtest_run"],
        "replay": ["History", "Replay", "replay"],
    },
)
