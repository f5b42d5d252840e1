"""Guards: a standing watch on a flag between rollouts (the `Guard` document)."""

from canaryctl.guard.journal import GuardJournal
from canaryctl.guard.watch import GuardPhase, GuardWatch

__all__ = ["GuardJournal", "GuardPhase", "GuardWatch"]
