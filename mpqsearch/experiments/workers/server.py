"""The worker's side: build the expensive state once, then answer one connection at a time.

:func:`run_worker` is a worker process's main: it parses the slot options :mod:`.slots` adds to a
worker's command, arranges to exit with its anchors (the launcher, or NNI's manager), builds its
handler while it still holds the slot's start lock (so clients wait for it), listens, releases
the lock, and serves. It exits on SIGTERM; when an anchor ends (at once, or once the request it is
answering is answered: the trial it serves is then ended or cancelled by whoever runs it, NNI's
manager, rather than failed by a vanished worker); and after ``--idle-exit`` seconds without a
request: before exiting idle it takes the slot's lock, so no trial is between finding the socket
and being answered when the socket goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import protocol
from .processes import ProcessRecord, exit_with
from .slots import peer_credentials

Handler = Callable[[dict[str, Any]], dict[str, Any]]
"""Answers one request (its ``op`` is ``evaluate``): ``ok`` (true unless it says otherwise) and
its own fields; an exception becomes ``ok: false`` with the reason."""
IDLE_EXIT_SECONDS = 600.0


def parse_slot_options(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="worker")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--slot-lock", required=True, type=Path)
    parser.add_argument("--start-fd", type=int)
    parser.add_argument("--anchor", type=ProcessRecord.parse, action="append", default=[])
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT_SECONDS)
    return parser.parse_args(argv)


def _listen(path: Path) -> tuple[socket.socket, int]:
    """The listening socket at ``path`` and the inode of its file (to remove only our own later)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)  # a dead worker's socket file
    before = os.umask(0o177)
    try:
        listener.bind(os.fsencode(path))  # created 0600
    finally:
        os.umask(before)
    listener.listen(8)
    return listener, os.stat(path).st_ino


def _answer(handler: Handler, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "ping":
        return {"ok": True, "pid": os.getpid()}
    if op != "evaluate":
        return {"ok": False, "reason": f"unknown request {op!r}"}
    try:
        return {"ok": True, **handler(request)}
    except Exception as err:  # the request fails, the worker stays
        traceback.print_exc()
        return {"ok": False, "reason": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}


def _serve_one(listener: socket.socket, handler: Handler) -> None:
    conn, _ = listener.accept()
    with conn:
        _pid, uid = peer_credentials(conn)
        if uid != os.getuid():
            return
        try:
            request = protocol.receive(conn, time.monotonic() + 30)
        except (TimeoutError, ValueError):
            return
        if request is None:
            return
        answer = _answer(handler, request)
        try:
            protocol.send(conn, answer)
        except OSError:
            pass  # the client went away (its trial was cancelled): nobody to answer


def _idle_exit(listener: socket.socket, path: Path, inode: int, slot_lock: Path) -> bool:
    """Stop listening if no trial holds the slot; whether it did."""
    fd = os.open(slot_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # a trial is about to connect
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            path.unlink()
    listener.close()
    os.close(fd)
    return True


class _Orphaning:
    """Exit when an anchor ends, but not in the middle of answering a request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy = self.orphaned = False

    def anchor_ended(self) -> None:
        with self.lock:
            if not self.busy:
                os._exit(0)
            self.orphaned = True

    def serving(self, busy: bool) -> None:
        with self.lock:
            self.busy = busy
            if not busy and self.orphaned:
                os._exit(0)


def run_worker(argv: Sequence[str], make_handler: Callable[[], Handler]) -> None:
    """A worker process's main (see the module docstring); returns when it stops serving."""
    options = parse_slot_options(argv)
    orphaning = _Orphaning()
    exit_with(options.anchor, orphaning.anchor_ended)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the launcher's to handle
    handler = make_handler()  # the expensive part, while the start lock is held
    listener, inode = _listen(options.socket)
    if options.start_fd is not None:
        os.close(options.start_fd)  # ready: release the start lock
    print(f"worker {os.getpid()} ready on {options.socket}", flush=True)
    while True:
        if not select.select([listener], [], [], options.idle_exit)[0]:
            if _idle_exit(listener, options.socket, inode, options.slot_lock):
                print(f"worker {os.getpid()}: idle for {options.idle_exit:.0f} s, exiting", flush=True)
                return
            continue
        orphaning.serving(True)
        _serve_one(listener, handler)
        sys.stdout.flush()
        orphaning.serving(False)
