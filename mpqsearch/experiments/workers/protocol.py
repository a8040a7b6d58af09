"""The worker protocol: one connection per request, one JSON object per line each way.

Requests: ``{"op": "evaluate", ...}`` (the caller's fields) and ``{"op": "ping"}``. Answers carry
``"ok": true`` and the handler's fields, or ``"ok": false`` and a ``"reason"``. An end of file
before the answer's newline means the worker died: :func:`receive` returns ``None``.
"""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

VERSION = 1
_CHUNK = 1 << 16


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps({"v": VERSION, **message}, allow_nan=True).encode() + b"\n")


def receive(sock: socket.socket, deadline: float | None = None) -> dict[str, Any] | None:
    """The next message, ``None`` if the peer closed the connection first; raises TimeoutError
    once ``deadline`` (``time.monotonic()``) passes."""
    buffer = b""
    while not buffer.endswith(b"\n"):
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and (wait <= 0 or not select.select([sock], [], [], wait)[0]):
            raise TimeoutError("no answer before the deadline")
        try:
            chunk = sock.recv(_CHUNK)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return None
        buffer += chunk
    return json.loads(buffer)
