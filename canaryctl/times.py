"""How canaryctl writes a moment for people: one format for reports, status lines, claims and
backtest messages, so the same instant reads the same everywhere (never a raw epoch)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["when"]


def when(epoch: float | None) -> str:
    """`2026-12-07 16:30:00Z` for an epoch in seconds; an em dash for none."""
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
