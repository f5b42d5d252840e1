"""The one rule for tests that need a real program: skip where it is missing, fail under CI.

.ci/run installs every program named here from Debian's packages, so on CI a missing binary is a
broken set-up, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest


def require_binary(*names: str, package: str, search: Iterable[Path] = ()) -> str:
    """The first of `names` found on PATH, else in `search` (directories a package keeps off
    PATH, like PostgreSQL's); skips, or fails when CI is set, naming `package`."""
    directories = [Path(d) for d in search]
    for name in names:
        path = shutil.which(name)
        for directory in directories:
            path = path or shutil.which(name, path=str(directory))
        if path is not None:
            return path
    _missing(f"{names[0]} is not installed (Debian package {package})")


def require_pip_program(name: str, directory: Path, *, install: str) -> str:
    """A program pip installed into a virtual environment of its own (`directory` is its bin),
    under the same rule: skip where missing, fail under CI; `install` is the command that
    installs it, which .ci/run runs."""
    path = shutil.which(name, path=str(directory))
    if path is None:
        _missing(f"{name} is not installed in {directory} (run `{install}`)")
    return str(path)


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run must install it")
    pytest.skip(message)
