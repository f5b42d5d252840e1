"""The range of the ids the state database gives runs and experiments, for every front door that
reads one (the CLI's arguments, the API's paths): past it an id is a typo, never a query."""

__all__ = ["MAX_ID"]

MAX_ID = 2**63 - 1
"""The largest value a database integer key holds (SQLite's INTEGER, PostgreSQL's BIGINT)."""
