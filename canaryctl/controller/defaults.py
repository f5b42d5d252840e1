"""The controller's defaults that commands show in their `--help`: kept apart from the store and
the leases (SQLAlchemy, threads) so that printing an option's default imports neither."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_LEASE_TTL", "DEFAULT_STATE_PATH", "wait_bound"]

DEFAULT_STATE_PATH = Path(".canaryctl/state.db")
"""Where a rollout's journal goes when no --state is given."""

DEFAULT_LEASE_TTL = 30.0
"""Seconds a run's lease lasts without a heartbeat: how soon another driver may take over."""


def wait_bound(ttl: float) -> float:
    """Seconds a database call may take under a lease of `ttl`: half of it (at most 5 s), so
    a heartbeat (one every third of the lease) that cannot get through fails while the lease
    still holds, and a call merely slowed by a loaded host is not cut short (a third of a 3 s
    lease failed single statements, each ending its run, on a loaded machine)."""
    return min(ttl / 2, 5.0)
