"""A raw TCP upstream for the HTTP/1.1 client's tests (canaryctl/http1.py): it writes exactly
the bytes a test gives it, so framings and failures no real server would send can be sent."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["canned_upstream"]


@contextmanager
def canned_upstream(
    answer: Callable[[int], bytes | list[bytes] | None],
    *,
    close: bool,
    between: Callable[[], None] | None = None,
) -> Iterator[tuple[str, list[socket.socket], list[bytes]]]:
    """Reads each request's head and body whole, writes `answer(n)` for the n-th connection
    (a list: one write each, `between()` called between them; None: none, and the connection is
    closed unanswered), and closes the connection after it when `close`. Yields its URL, the
    connections it accepted and the requests it read."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    requests: list[bytes] = []

    def serve_one(conn: socket.socket, n: int) -> None:
        with conn:
            while (request := _read_request(conn)) is not None:
                requests.append(request)
                writes = answer(n)
                if writes is None:
                    break
                for i, data in enumerate([writes] if isinstance(writes, bytes) else writes):
                    if i and between is not None:
                        between()
                    conn.sendall(data)
                if close:
                    break

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=serve_one, args=(conn, len(accepted)), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted, requests
    finally:
        server.close()
        thread.join(5)


def _read_request(conn: socket.socket) -> bytes | None:
    """One request read whole (head and body); None when the client closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body
