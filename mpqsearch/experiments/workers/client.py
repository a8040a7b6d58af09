"""A trial's side: hand one request to a warm worker and wait for its answer, or for its failure.

Nothing hangs and nothing is blamed on the wrong trial: a worker that dies while answering is an
end of file, and the answer says so (with the worker's pid and log); a worker silent past the
timeout is killed, and waited for, before the slot is released (so the next trial starts a fresh
worker instead of meeting the dying one); a trial cancelled with SIGINT or SIGTERM (NNI cancels
so) kills its worker the same way and then dies by the same signal, as if it had computed itself.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import protocol
from .processes import ProcessRecord, kill_and_wait
from .slots import Slots, WorkerStartError, peer_credentials


def _failure(reason: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "reason": reason, **extra}


def request(slots: Slots, command: Sequence[str], message: dict[str, Any], timeout: float,
            anchors: Sequence[ProcessRecord] = ()) -> dict[str, Any]:
    """Send ``message`` to a worker of ``slots`` (started with ``command``, anchored to
    ``anchors``, if its slot has none) and return its answer; every failure is an answer with
    ``ok: false``, a ``reason`` and ``worker_failed: true``. ``timeout`` bounds the start and the
    answer, each."""
    index, slot_fd = slots.acquire()
    try:
        try:
            sock = slots.connect_or_start(index, command, anchors, time.monotonic() + timeout)
        except (OSError, WorkerStartError) as err:
            return _failure(f"no worker: {err}", worker_failed=True)
        with sock:
            pid, _uid = peer_credentials(sock)
            main = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
            previous = {sig: signal.signal(sig, _cancel(pid)) for sig in (signal.SIGINT, signal.SIGTERM) if main}
            try:
                return _exchange(sock, message, pid, timeout, slots, index)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    finally:
        os.close(slot_fd)


def _exchange(sock: Any, message: dict[str, Any], pid: int, timeout: float, slots: Slots,
              index: int) -> dict[str, Any]:
    try:
        protocol.send(sock, message)
        answer = protocol.receive(sock, time.monotonic() + timeout)
    except TimeoutError:
        kill_and_wait(pid)
        return _failure(f"the worker (pid {pid}) gave no answer within {timeout:g} s and was killed",
                        worker_failed=True)
    except OSError as err:
        answer, message = None, {"error": str(err)}
    if answer is None:
        kill_and_wait(pid)  # half dead (or dying): make sure the slot's next trial gets a new one
        last = slots.last_log_line(index)
        said = "" if "ready on" in last else f": {last}"
        return _failure(f"the worker (pid {pid}) exited while evaluating (its log: {slots.log_path(index)}{said})",
                        worker_failed=True)
    return answer


def _cancel(pid: int) -> Any:
    def handler(signum: int, _frame: Any) -> None:
        kill_and_wait(pid)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # end by the signal: NNI records a cancelled trial, not a failed one

    return handler
