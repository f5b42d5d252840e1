"""An in-memory flag store: the fake that tests, the simulation and dry runs use."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from canaryctl.errors import FlagConflict, FlagMismatch
from canaryctl.flags.base import (
    FlagClaim,
    FlagSnapshot,
    Split,
    check_claim,
    check_fence,
    integer_weights,
    releasable,
)

__all__ = ["MemoryFlagStore"]


class MemoryFlagStore:
    """Holds one flag as a baseline/canary split (or an experiment's split of any variations,
    `weights`); records every write in `history`."""

    def __init__(self, key: str, baseline: str, canary: str, *, canary_weight: float = 0.0):
        self.key, self.baseline, self.canary = key, baseline, canary
        self._state: dict[str, object] = {"canary_weight": canary_weight, "promoted": False}
        self._version = 1
        self.history: list[tuple[str, FlagSnapshot]] = []
        self.claimed_by: FlagClaim | None = None
        self._fence: FlagClaim | None = None

    def snapshot(self) -> FlagSnapshot:
        return FlagSnapshot(self.key, self._version, json.dumps(self._state, sort_keys=True))

    def split(self, snapshot: FlagSnapshot) -> Split:
        state = json.loads(snapshot.raw)
        if "weights" in state:
            weights = state["weights"]
            baseline, canary = weights.get(self.baseline, 0.0), weights.get(self.canary, 0.0)
            return Split(baseline, canary, other=100.0 - baseline - canary)
        canary = 100.0 if state["promoted"] else float(state["canary_weight"])
        return Split(baseline=100.0 - canary, canary=canary)

    def values(self, snapshot: FlagSnapshot, variations: Sequence[str]) -> tuple[str, ...]:
        return tuple(variations)

    def weights(self, snapshot: FlagSnapshot) -> dict[str, float]:
        state = json.loads(snapshot.raw)
        if "weights" in state:
            return {k: float(v) for k, v in state["weights"].items() if v > 0}
        split = self.split(snapshot)
        return {k: v for k, v in ((self.baseline, split.baseline), (self.canary, split.canary))
                if v > 0}  # fmt: skip

    def set_split(
        self, weights: Mapping[str, float], *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        try:
            integer_weights(weights, 100_000)
        except ValueError as exc:
            raise FlagMismatch(f"flag '{self.key}': {exc}") from None
        state = {"canary_weight": float(weights.get(self.canary, 0.0)), "promoted": False,
                 "weights": {k: float(v) for k, v in weights.items()}}  # fmt: skip
        return self._write(state, expect_version, comment)

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

    def claim(self, claim: FlagClaim, *, take_over: bool = False) -> FlagClaim | None:
        held = self.claimed_by
        check_claim(held, claim, take_over=take_over, where=f"flag '{self.key}'")
        self.claimed_by = self._fence = claim
        return held

    def release(self, claim: FlagClaim) -> None:
        if releasable(self.claimed_by, claim):
            self.claimed_by = None
        self._fence = None

    def edit_by_someone_else(self, canary_weight: float) -> None:
        """Simulate a human changing the flag behind the controller's back."""
        self._state = {"canary_weight": canary_weight, "promoted": False}
        self._version += 1

    def _write(self, state: dict[str, object], expect_version: int, comment: str) -> FlagSnapshot:
        if self._fence is not None:
            check_fence(self.claimed_by, self._fence, f"flag '{self.key}'")
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
