"""Slow clients against `canaryctl gateway serve` (its default limits), over loopback: how many
stalled connections the gateway still holds, how it answers them, and what memory it keeps.

python benchmarks/slow_clients.py [--bodies 300] [--big 100] [--headers 300] [--wait 60]
    # writes benchmarks/results/slow_clients.json

Three floods, one after the other, each of connections that stall and never finish:
- `bodies`: headers declaring a 2 KiB body, 1 KiB of it, then nothing;
- `big`: headers declaring a 4 MiB body (the default limit), all but the last KiB, then nothing;
- `headers`: half a request head, then nothing.
Each flood waits (at most `--wait` seconds) for the gateway to answer and close every
connection; what is still open then is counted. Memory is the gateway process's resident set,
read from /proc: idle (after some ordinary requests), at its peak during each flood, and after
the floods (their sockets closed by the client, `--settle` seconds later).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import record

BODY_SENT = 1024
MIB = 1024 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_document(directory: Path, port: int) -> Path:
    flag = {
        "key": "f",
        "on": True,
        "variations": ["a"],
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "version": 1,
        "salt": "f",
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
    }
    (directory / "flags.json").write_text(json.dumps({"flags": {"f": flag}, "segments": {}}))
    document = directory / "gateway.yaml"
    document.write_text(
        "apiVersion: canaryctl/v1\nkind: Gateway\nmetadata: {name: slow-clients}\nspec:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  flags: {{provider: file, path: {directory / 'flags.json'}}}\n"
        "  routes: [{name: bot, flag: f, default_model: a}]\n"
        "  models: [{name: a, base_url: 'http://127.0.0.1:9', keyless: true}]\n"
    )
    return document


def head(length: int) -> bytes:
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


class Flood:
    """`count` connections, each sent `payload` and then left stalled; watched until the server
    closes each one or `wait` seconds pass, sampling the server's memory as it goes."""

    def __init__(self, port: int, pid: int, count: int, payload: bytes) -> None:
        self.port, self.pid, self.count, self.payload = port, pid, count, payload
        self.statuses: Counter[str] = Counter()
        self.peak_mb = 0.0

    def run(self, wait: float) -> dict[str, Any]:
        selector = selectors.DefaultSelector()
        pending: dict[socket.socket, dict[str, Any]] = {}
        started = time.monotonic()
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port))
            sock.setblocking(False)
            pending[sock] = {"sent": 0, "answer": b""}
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        closed_at: list[float] = []
        last_sample = 0.0
        while pending and time.monotonic() - started < wait:
            for key, events in selector.select(timeout=0.2):
                sock = key.fileobj
                state = pending[sock]  # type: ignore[index]
                if events & selectors.EVENT_WRITE:
                    try:
                        state["sent"] += sock.send(self.payload[state["sent"] :])  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        state["sent"] = len(self.payload)
                    if state["sent"] >= len(self.payload):
                        selector.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(65536)  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    state["answer"] += data
                    if not data:
                        status = state["answer"][9:12].decode() or "closed without an answer"
                        self.statuses[status] += 1
                        closed_at.append(time.monotonic() - started)
                        selector.unregister(sock)
                        sock.close()  # type: ignore[union-attr]
                        del pending[sock]  # type: ignore[arg-type]
            if time.monotonic() - last_sample > 0.25:
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
                last_sample = time.monotonic()
        self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
        still_open = len(pending)
        for sock in list(pending):
            selector.unregister(sock)
            sock.close()
        selector.close()
        return {
            "connections": self.count,
            "bytes_sent_each": len(self.payload),
            "closed_by_server": len(closed_at),
            "still_open_after_wait": still_open,
            "last_closed_after_s": round(max(closed_at), 2) if closed_at else None,
            "statuses": dict(self.statuses),
            "peak_rss_mb": round(self.peak_mb, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=300, help="stalled 2 KiB bodies")
    parser.add_argument("--big", type=int, default=100, help="stalled 4 MiB bodies")
    parser.add_argument("--headers", type=int, default=300, help="stalled request heads")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds each flood is watched")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the last read")
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        document = gateway_document(Path(tmp), port)
        command = [sys.executable, "-m", "canaryctl", "gateway", "serve", str(document)]
        server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        try:
            results = _measure(port, server.pid, args)
        finally:
            server.terminate()
            server.wait(10)
    record.write("slow_clients", results, args, before=before)


def _measure(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    chat = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=10) as client:
        for _ in range(50):  # warm: every route's code loaded, pools made
            client.post(f"{url}/v1/chat/completions", json=chat)
            client.get(f"{url}/metrics")
    time.sleep(1)
    idle = rss_mb(pid)
    floods = {
        "bodies": Flood(port, pid, args.bodies, head(2 * BODY_SENT) + b"x" * BODY_SENT),
        "big": Flood(port, pid, args.big, head(4 * MIB) + b"x" * (4 * MIB - BODY_SENT)),
        "headers": Flood(port, pid, args.headers, b"POST /v1/chat/completions HTTP/1.1\r\nHo"),
    }
    figures: dict[str, Any] = {}
    for name, flood in floods.items():
        figures[name] = flood.run(args.wait)
        healthy = httpx.get(f"{url}/health", timeout=10).status_code
        figures[name]["health_after"] = healthy
        print(name, figures[name], flush=True)
    time.sleep(args.settle)
    after = rss_mb(pid)
    print(f"idle {idle:.1f} MB, after {after:.1f} MB ({after / idle - 1:+.0%})")
    return {
        "idle_rss_mb": round(idle, 1),
        "after_rss_mb": round(after, 1),
        "after_over_idle": round(after / idle - 1, 3),
        "wait_s": args.wait,
        "settle_s": args.settle,
        "floods": figures,
    }


if __name__ == "__main__":
    main()
