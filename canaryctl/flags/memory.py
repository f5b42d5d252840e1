"""An in-memory flag store: the fake that tests, the simulation and dry runs use."""

from __future__ import annotations

import json

from canaryctl.errors import FlagConflict, FlagMismatch
from canaryctl.flags.base import FlagClaim, FlagSnapshot, Split, may_take

__all__ = ["MemoryFlagStore"]


class MemoryFlagStore:
    """Holds one flag as a baseline/canary split; records every write in `history`."""

    def __init__(self, key: str, baseline: str, canary: str, *, canary_weight: float = 0.0):
        self.key, self.baseline, self.canary = key, baseline, canary
        self._state: dict[str, object] = {"canary_weight": canary_weight, "promoted": False}
        self._version = 1
        self.history: list[tuple[str, FlagSnapshot]] = []
        self.claimed_by: FlagClaim | None = None

    def snapshot(self) -> FlagSnapshot:
        return FlagSnapshot(self.key, self._version, json.dumps(self._state, sort_keys=True))

    def split(self, snapshot: FlagSnapshot) -> Split:
        state = json.loads(snapshot.raw)
        canary = 100.0 if state["promoted"] else float(state["canary_weight"])
        return Split(baseline=100.0 - canary, canary=canary)

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        return self.baseline, self.canary

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        if not 0 <= percent <= 100:
            raise FlagMismatch(f"canary weight {percent} is outside 0..100")
        return self._write({"canary_weight": percent, "promoted": False}, expect_version, comment)

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        return self._write({"canary_weight": 100.0, "promoted": True}, expect_version, comment)

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        return self._write(json.loads(saved.raw), expect_version, comment)

    def claim(self, claim: FlagClaim, *, take_over: bool = False) -> None:
        held = self.claimed_by
        if held is not None and not may_take(held, claim, take_over=take_over):
            raise held.refused(f"flag '{self.key}'")
        self.claimed_by = claim

    def release(self, claim: FlagClaim) -> None:
        if self.claimed_by is not None and self.claimed_by.token == claim.token:
            self.claimed_by = None

    def edit_by_someone_else(self, canary_weight: float) -> None:
        """Simulate a human changing the flag behind the controller's back."""
        self._state = {"canary_weight": canary_weight, "promoted": False}
        self._version += 1

    def _write(self, state: dict[str, object], expect_version: int, comment: str) -> FlagSnapshot:
        if expect_version != self._version:
            raise FlagConflict(
                f"flag '{self.key}' is at version {self._version}, expected {expect_version}: "
                "someone else changed it"
            )
        self._state = dict(state)
        self._version += 1
        snapshot = self.snapshot()
        self.history.append((comment, snapshot))
        return snapshot
