"""Analysis: turn observations of both variants into a verdict with its evidence. Pure."""

import lazy_loader

# Each name is imported on first use, so importing one submodule (or running one command)
# does not load the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "assess": ["assess"],
        "judge": ["judge"],
        "verdict": ["Check", "Evidence", "Outcome", "Verdict"],
    },
)
