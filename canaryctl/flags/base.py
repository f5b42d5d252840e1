"""The flag store seam: read the split, move it, put back what was there, claim the flag.

A rollout only ever touches two variations of one flag, the baseline and the canary. Every write
names the version it expects to find, so a change made by someone else during a run is detected
(FlagConflict) instead of overwritten: we do not fight a human. Every write, a restore included,
moves the flag's version forward: an SDK keeps the highest version it has seen and ignores an
older one.

A run claims its flag where the flag lives (a file beside the flag file, a custom property on the
LaunchDarkly flag), not in its state database, so two runs journaled in two databases cannot both
drive one flag.

The claim also fences the run's own drivers: it carries the epoch of the lease its driver holds
(canaryctl/controller/lease.py). A driver that takes a run over claims the flag again at its
newer epoch; a store that was given a claim checks, before every write, that the claim on the
flag is still that one, and a stalled driver's write finds a newer epoch and is refused
(ClaimFenced) without touching the flag. A claim never goes back to an older epoch.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, TypeGuard, runtime_checkable

from canaryctl import fastjson
from canaryctl.errors import ClaimFenced, FlagBackendError, FlagClaimed
from canaryctl.times import when

__all__ = [
    "FlagClaim",
    "FlagSnapshot",
    "FlagStore",
    "Split",
    "SplitStore",
    "check_claim",
    "check_fence",
    "check_read_back",
    "integer_weights",
    "may_take",
    "process_alive",
    "releasable",
]


@dataclass(frozen=True)
class FlagSnapshot:
    """The flag exactly as stored, enough to restore it byte for byte; safe to persist.

    `raw` is the backend's own serialisation of the flag (for the file backend, the file's text).
    It never holds a secret.
    """

    key: str
    version: int
    raw: str


@dataclass(frozen=True)
class Split:
    """Percent of default-rule traffic each side gets; `other` is what neither side gets."""

    baseline: float
    canary: float
    other: float = 0.0


@dataclass(frozen=True)
class FlagClaim:
    """Which run drives a flag, as written beside the flag for any other run to read.

    `token` is the run's identity across processes and databases (journaled with the run, so a
    `resume` re-takes its own claim); the rest names the run for the person another run refuses.
    `run_id` is None for the moment between taking the claim and journaling the run.
    """

    token: str
    run_id: int | None
    state: str
    host: str
    pid: int
    at: float
    holder: str = "rollout"
    """What drives the flag: `rollout`, `experiment` or `guard` (claims written before there
    were others read as `rollout`)."""
    epoch: int = 0
    """The lease epoch of the driver that wrote the claim (see the module docstring)."""
    restored: int | None = None
    """The flag version a restore of this run produced while its journal could not record it:
    the next driver of the run (resume, a controller) journals that restore as the run's own."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FlagClaim:
        """Raises ValueError for anything that is not a claim canaryctl wrote."""
        try:
            data = fastjson.loads(text)
            return cls(
                token=str(data["token"]),
                run_id=None if data["run_id"] is None else int(data["run_id"]),
                state=str(data["state"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                at=float(data["at"]),
                holder=str(data.get("holder", "rollout")),
                epoch=int(data.get("epoch", 0)),
                restored=None if data.get("restored") is None else int(data["restored"]),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"not a canaryctl claim: {exc}") from exc

    def refused(self, where: str) -> FlagClaimed:
        """The error a run gets that finds this claim on `where`: who holds it, what to do."""
        since = when(self.at)
        rollout = self.holder == "rollout" and self.run_id is not None
        if rollout:
            run = f"run {self.run_id}"
        elif self.holder == "rollout":
            run = "a run that was starting"
        else:
            run = f"an {self.holder}" if self.holder[0] in "aeiou" else f"a {self.holder}"
        owner = f"{run} (state {self.state}; process {self.pid} on {self.host}, since {since})"
        alive = process_alive(self.host, self.pid)
        if alive:
            todo = "wait for it to end, or stop it (its flag is restored)"
            if rollout:
                todo += f" or `canaryctl rollout abort {self.run_id} --state {self.state}`"
            return FlagClaimed(f"{where} is claimed by {owner}, still running: {todo}")
        gone = "whose process is gone" if alive is False else "on another host"
        todo = "--break-claim takes the flag over if you know no run drives it"
        if rollout:
            todo = (
                f"`canaryctl rollout resume {self.run_id} --state {self.state}` continues it; "
                f"`canaryctl rollout abort {self.run_id} --state {self.state}` then `resume` "
                f"restores the flag; or {todo}"
            )
        return FlagClaimed(f"{where} is claimed by {owner}, {gone}: {todo}")


def process_alive(host: str, pid: int) -> bool | None:
    """Is process `pid` on `host` alive? None when it runs on another host: we cannot tell."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def check_fence(held: FlagClaim | None, ours: FlagClaim, where: str) -> None:
    """Before a write (or a claim) by the driver that claimed with `ours`: raise ClaimFenced
    when the claim on the flag is no longer ours at our epoch (a newer driver of the run
    re-claimed it, or the run ended and released it)."""
    if held is None:
        raise ClaimFenced(f"{where}: the claim of run {ours.run_id} is gone; not writing")
    if held.token != ours.token or held.epoch > ours.epoch:
        raise ClaimFenced(
            f"{where} is claimed at lease epoch {held.epoch} now (this driver's: {ours.epoch}): "
            "another driver took the run over; not writing"
        )


def check_claim(held: FlagClaim | None, wanted: FlagClaim, *, take_over: bool, where: str) -> None:
    """Before writing claim `wanted` over `held`, the claim on `where` now: our own run's
    claim is ours again unless a newer driver holds it (ClaimFenced); another run's is refused
    (FlagClaimed) unless `may_take` allows it."""
    if held is None:
        return
    if held.token == wanted.token:
        check_fence(held, wanted, where)
    elif not may_take(held, wanted, take_over=take_over):
        raise held.refused(where)


def check_read_back(now: FlagClaim | None, wanted: FlagClaim, where: str) -> None:
    """For a backend without compare-and-swap: the claim read back after writing `wanted` must
    be it, or another run that wrote at the same moment holds the flag."""
    if now is None:
        raise FlagBackendError(f"{where}: the claim we wrote did not read back")
    if now.token != wanted.token:
        raise now.refused(where)
    check_fence(now, wanted, where)


def releasable(held: FlagClaim | None, ours: FlagClaim) -> TypeGuard[FlagClaim]:
    """May the driver that claimed with `ours` remove `held`? Only our run's, at our epoch or
    an older one: a claim that is gone, another run's or a newer driver's is left alone."""
    return held is not None and held.token == ours.token and held.epoch <= ours.epoch


def may_take(held: FlagClaim, wanted: FlagClaim, *, take_over: bool) -> bool:
    """The one rule every backend applies: our own claim is ours again; another run's only
    with `take_over`, and never while its process is alive on this host."""
    if held.token == wanted.token:
        return True
    return take_over and process_alive(held.host, held.pid) is not True


@runtime_checkable
class FlagStore(Protocol):
    """One flag, one baseline variation, one canary variation."""

    def snapshot(self) -> FlagSnapshot:
        """Read the flag as it is now. Raises FlagMismatch if the key or a variation is missing."""
        ...

    def split(self, snapshot: FlagSnapshot) -> Split:
        """What share of traffic each side gets in that snapshot."""
        ...

    def variants(self, snapshot: FlagSnapshot) -> tuple[str, str]:
        """The baseline's and the canary's variation values in that snapshot.

        A runbook may name a variation by its name; the gateway labels its metrics with the
        value it serves, so analysis asks for these.
        """
        ...

    def set_canary_weight(
        self, percent: float, *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        """Serve the canary to `percent`% and the baseline to the rest; return the new state.

        Raises FlagConflict if the stored version is not `expect_version`.
        """
        ...

    def promote(self, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Make the canary the variation everyone gets by default."""
        ...

    def restore(self, saved: FlagSnapshot, *, expect_version: int, comment: str) -> FlagSnapshot:
        """Serve what `saved` served again, at a version higher than any the flag had.

        Raises FlagConflict like the writes do.
        """
        ...

    def claim(self, claim: FlagClaim, *, take_over: bool = False) -> FlagClaim | None:
        """Mark the flag as driven by `claim`'s run, or refresh our own mark (same token); the
        claim that was there before, if any. Every later write checks the flag is still
        claimed so (check_fence).

        Raises FlagClaimed when another run's claim is there; `take_over` replaces one whose
        process is not alive on this host. Raises ClaimFenced when our own run's claim is
        there at a newer epoch.
        """
        ...

    def release(self, claim: FlagClaim) -> None:
        """Remove our claim; a claim with another token, or at a newer epoch, is left alone."""
        ...


@runtime_checkable
class SplitStore(FlagStore, Protocol):
    """A flag store that also serves many variations on one split: what an experiment needs.

    The split write has a rollout's guarantees: it names the version it expects (FlagConflict
    otherwise), moves the version forward, and `restore` puts back what a snapshot served.
    """

    def values(self, snapshot: FlagSnapshot, variations: Sequence[str]) -> tuple[str, ...]:
        """The value each variation (named as a document names it) serves: what the gateway
        labels its metrics with. Raises FlagMismatch naming one the flag lacks."""
        ...

    def weights(self, snapshot: FlagSnapshot) -> dict[str, float]:
        """Percent of the split target's traffic per variation value, in that snapshot."""
        ...

    def set_split(
        self, weights: Mapping[str, float], *, expect_version: int, comment: str
    ) -> FlagSnapshot:
        """Serve each variation its percent (they sum to 100), in the order given; a single
        variation at 100 is served to everyone without a rollout. Raises FlagConflict if the
        stored version is not `expect_version`, FlagMismatch for a variation the flag lacks."""
        ...


def integer_weights(weights: Mapping[str, float], scale: int) -> dict[str, int]:
    """Percents as integer weights summing to exactly `scale` (LaunchDarkly's 100000), by the
    largest remainder, so rounding never serves a share to nobody or to two."""
    total = sum(weights.values())
    if not weights or any(w < 0 for w in weights.values()) or abs(total - 100.0) > 1e-6:
        raise ValueError(f"a split's percents must be non-negative and sum to 100, not {total:g}")
    exact = {key: w * scale / 100.0 for key, w in weights.items()}
    out = {key: int(value) for key, value in exact.items()}
    short = scale - sum(out.values())
    for key in sorted(exact, key=lambda k: out[k] - exact[k])[:short]:
        out[key] += 1
    return out
