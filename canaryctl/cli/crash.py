"""Where an unexpected exception's traceback goes: a private file, never the terminal.

The file holds canaryctl's version and the traceback, nothing else: not the environment and
not the command line, either of which can carry a token.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback

from canaryctl.version import installed_version

__all__ = ["crash_report"]


def crash_report(exc: BaseException) -> str:
    """Write `exc`'s traceback to a new file under $TMPDIR (mode 0600); say where, for the one
    line the user sees."""
    text = f"canaryctl {installed_version()} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n" + "".join(
        traceback.format_exception(exc)
    )
    try:
        fd, path = tempfile.mkstemp(prefix="canaryctl-crash-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as file:
            file.write(text)
    except OSError as error:
        return f"the traceback could not be saved ({error.strerror}); please report this bug"
    return f"the traceback is in {path}; please report this bug with it"
