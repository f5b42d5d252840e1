"""Every error canaryctl raises on purpose, each carrying the exit code the CLI ends with.

    CanaryError (exit 1)
    ├── InvalidInput (exit 2): the user gave us something we cannot act on
    │   ├── InvalidDocument: a YAML document failed to load or validate; carries every problem
    │   ├── FlagMismatch: the flag named by a runbook is missing or lacks a variation
    │   └── FlagClaimed: another run holds the flag (its claim lives with the flag)
    ├── BackendError (exit 3): a backend failed after retries; the safe state was restored first
    │   ├── FlagBackendError
    │   │   └── FlagConflict: someone else changed the flag during our run; we stop, not fight
    │   │       └── ClaimFenced: a newer driver of the same run holds the flag's claim now
    │   ├── MetricsBackendError
    │   ├── ChaosBackendError: the fault proxy's admin API did not answer
    │   ├── StateBackendError: the state database (SQLite or PostgreSQL) failed
    │   └── RunTakenOver: another process drives the run now; this one stopped writing
    └── Interrupted (exit 130): Ctrl-C or SIGTERM, after the safe state was restored

Adapters translate third-party exceptions (httpx, ldclient, sqlite3) into these at the edge and
chain the original, so nothing above an adapter catches a library's own exception.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BackendError",
    "CanaryError",
    "ChaosBackendError",
    "ClaimFenced",
    "FlagBackendError",
    "FlagClaimed",
    "FlagConflict",
    "FlagMismatch",
    "Interrupted",
    "InvalidDocument",
    "InvalidInput",
    "MetricsBackendError",
    "Problem",
    "RunTakenOver",
    "StateBackendError",
]


class CanaryError(Exception):
    """Root of canaryctl's errors; the message is written for the person at the terminal."""

    exit_code = 1


class InvalidInput(CanaryError):
    """Raised before anything acts, so nothing needs restoring."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (file, field path, line) and what."""

    source: str
    location: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        if self.location:
            return _printable(f"{where}: {self.location}: {self.message}")
        return _printable(f"{where}: {self.message}")


def _printable(text: str) -> str:
    """A problem quotes the user's input; a newline, carriage return or terminal escape in a
    key must not split the line or repaint the screen, so those are shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class InvalidDocument(InvalidInput):
    """A document did not load or validate; `problems` lists each, one line apiece."""

    SHOWN = 50
    """Problems printed at most per file: a list of 100,000 bad entries is not 100,000 lines
    to read, and the files after it are still named."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        by_source: dict[str, list[Problem]] = {}
        for problem in problems:
            by_source.setdefault(problem.source, []).append(problem)
        lines = []
        for source, found in by_source.items():
            lines.extend(str(p) for p in found[: self.SHOWN])
            if len(found) > self.SHOWN:
                lines.append(f"{_printable(source)}: and {len(found) - self.SHOWN} more problems")
        super().__init__("\n".join(lines))


class FlagMismatch(InvalidInput):
    """The runbook names a flag key or variation that the flag source does not have."""


class FlagClaimed(InvalidInput):
    """Another run's claim is on the flag: starting would make two drivers of one split."""


class BackendError(CanaryError):
    """A backend stayed unreachable or kept failing after retries."""

    exit_code = 3


class FlagBackendError(BackendError):
    """Reading or writing the flag failed."""


class FlagConflict(FlagBackendError):
    """The flag's version moved for a reason that is not ours: a human is at the wheel."""


class ClaimFenced(FlagConflict):
    """The claim on the flag names the same run at a newer lease epoch: another driver took the
    run over while this one stalled, so this one must not touch the flag."""


class MetricsBackendError(BackendError):
    """The metrics backend could not be read; this is an error, never a failed SLO."""


class ChaosBackendError(BackendError):
    """The fault proxy's admin API could not be reached; a fault left behind ends by its TTL."""


class StateBackendError(BackendError):
    """The state database refused or dropped a statement (its message redacted)."""


class Interrupted(CanaryError):
    """Ctrl-C or SIGTERM arrived; raised after the flag was put back."""

    exit_code = 130


class RunTakenOver(BackendError):
    """This process stalled past its run's lease and another took the run over: it stopped
    without writing anything more (the flag and the journal are the new driver's)."""
