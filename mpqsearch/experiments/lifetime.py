"""No process outlives the command that started it: child processes die with their parent, and
one experiment is run by one launcher at a time.

On Linux a child asks the kernel to signal it when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
which also covers a parent killed with ``kill -9``, where no clean-up code of the parent runs.
Elsewhere the call does nothing (the children then end when their work does).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have this process receive ``sig`` when ``parent`` (the pid that started it) ends; if it
    has already ended, exit now (the request would come too late)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class RunLock:
    """An exclusive lock on a run directory, held by the process running the experiment.

    ``acquire`` returns ``False`` (and :attr:`owner` the holder's pid) when another process holds
    it; the kernel releases it when the holder ends, however it ends.
    """

    FILE = "launcher.lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / self.FILE
        self._handle: IO[str] | None = None

    @property
    def owner(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> bool:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
