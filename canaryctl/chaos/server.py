"""Serving the fault proxy: in the foreground for `canaryctl chaos proxy`, or on a background
thread for tests and benchmarks. The set-up (and its limits) is every server's: canaryctl.serving.
"""

from canaryctl.serving import BackgroundServer, bind, server_for

__all__ = ["BackgroundServer", "bind", "server_for"]
