"""The one rule for tests that need a real program: skip where it is missing, fail under CI.

.ci/run installs every program named here from Debian's packages, so on CI a missing binary is a
broken set-up, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(*names: str, package: str) -> str:
    """The first of `names` found on PATH; skips, or fails when CI is set, naming `package`."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    message = f"{names[0]} is not installed (Debian package {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run must install it")
    pytest.skip(message)
