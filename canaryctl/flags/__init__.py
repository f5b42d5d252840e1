"""Flag stores: where the routing split lives. One module per backend, one seam in base.py."""

from canaryctl.flags.base import FlagSnapshot, FlagStore, Split
from canaryctl.flags.memory import MemoryFlagStore

__all__ = ["FlagSnapshot", "FlagStore", "MemoryFlagStore", "Split"]
