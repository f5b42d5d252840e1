"""Flag stores: where the routing split lives. One module per backend, one seam in base.py."""

import lazy_loader

# Each name is imported on first use, so importing one submodule (or running one command)
# does not load the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "base": ["FlagClaim", "FlagSnapshot", "FlagStore", "Split"],
        "factory": ["flag_store_for"],
        "file": ["FileFlagStore"],
        "launchdarkly": ["LaunchDarklyFlagStore"],
        "memory": ["MemoryFlagStore"],
        "split": ["SplitFlagStore"],
    },
)
