"""LiteLLM's proxy, pinned, in a virtual environment of its own: what the overhead benchmark
measures against and what the LiteLLM end-to-end test (tests/test_litellm_e2e.py) drives.

Its own environment because LiteLLM's pins (starlette, fastapi, openai, ...) must not move the
project's. `.ci/run` runs this file once, so CI has the proxy the test needs:

    python benchmarks/litellm_env.py [--venv DIR]    # prints the `litellm` program's path
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

LITELLM_VERSION = "1.110.2"
"""The LiteLLM measured and tested: pinned, so that a figure names what it was measured against
and the shipped `litellm` metric profile is checked against this release's own names."""
LITELLM_PROXY_NEEDS = (
    *("gunicorn>=23.0.0,<24.0", "uvicorn>=0.33.0,<1.0", "granian>=2.7.4,<3.0"),
    *("uvloop>=0.22.1,<1.0", "fastapi>=0.136.3,<1.0", "starlette>=1.0.1,<2.0"),
    *("backoff>=2.2.1,<3.0", "rq>=2.7.0,<3.0"),
    *("websockets", "orjson", "apscheduler", "PyJWT", "cryptography", "semver"),
    *("python-multipart", "expression", "fastapi-sso", "mcp", "soundfile"),
    "prometheus_client",
)
"""What LiteLLM's proxy needs besides litellm itself. `litellm[proxy]==1.110.2` requires
`litellm-proxy==1.110.2`, which pip finds no release of; the proxy's code ships in litellm's own
wheel, so its extra's other requirements are installed by name (the first three lines), then
the modules the proxy imports at start that no requirement of litellm names, and
`prometheus_client` for its `callbacks: [prometheus]` (its docs ask for it beside the CLI)."""
LITELLM_VENV = Path.home() / ".cache" / "canaryctl-bench" / f"litellm-{LITELLM_VERSION}"


def install_litellm(venv: Path = LITELLM_VENV) -> Path:
    """The `litellm` program of `venv`, installed there at LITELLM_VERSION if missing; refuses a
    venv that holds another version."""
    litellm = venv / "bin" / "litellm"
    if not litellm.exists():
        print(
            f"installing litellm=={LITELLM_VERSION} and its proxy's needs into {venv} (once)...",
            file=sys.stderr,
        )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", f"litellm=={LITELLM_VERSION}"]
        subprocess.run([*pip, *LITELLM_PROXY_NEEDS], check=True)
    installed = litellm_version(venv)
    if installed != LITELLM_VERSION:
        raise SystemExit(f"{venv} holds litellm {installed}, not {LITELLM_VERSION}")
    if not _has(venv, "prometheus_client"):  # a venv made before it was in the list
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "prometheus_client"], check=True
        )
    return litellm


def litellm_version(venv: Path = LITELLM_VENV) -> str:
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _has(venv: Path, module: str) -> bool:
    probe = [str(venv / "bin" / "python"), "-c", f"import {module}"]
    return subprocess.run(probe, capture_output=True).returncode == 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=LITELLM_VENV)
    print(install_litellm(parser.parse_args().venv))
