"""Flag stores: where the routing split lives. One module per backend, one seam in base.py."""

from canaryctl.flags.base import FlagClaim, FlagSnapshot, FlagStore, Split
from canaryctl.flags.factory import flag_store_for
from canaryctl.flags.file import FileFlagStore
from canaryctl.flags.launchdarkly import LaunchDarklyFlagStore
from canaryctl.flags.memory import MemoryFlagStore

__all__ = [
    "FileFlagStore",
    "FlagClaim",
    "FlagSnapshot",
    "FlagStore",
    "LaunchDarklyFlagStore",
    "MemoryFlagStore",
    "Split",
    "flag_store_for",
]
