"""Process helpers the flag claim tests share."""

from __future__ import annotations

import subprocess

__all__ = ["dead_pid"]


def dead_pid() -> int:
    """The pid of a process that has exited (pids are not reused this fast)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
