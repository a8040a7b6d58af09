"""Keeping latency measurements clean while several trials share one machine.

A latency measured while another trial computes is noise. :class:`TrialLock` is a readers-writer
lock on a file: trials hold it shared while they quantize and evaluate, and exclusively while
they time the model, so a timing runs only when no other trial on this machine computes. It uses
``fcntl.flock``, so it works across the processes NNI and Optuna workers run in.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path


class TrialLock:
    """Shared for computing, exclusive for timing; one lock file per experiment."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _held(self, mode: int) -> Iterator[None]:
        with open(self.path, "a+") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def computing(self) -> AbstractContextManager[None]:
        return self._held(fcntl.LOCK_SH)

    def timing(self) -> AbstractContextManager[None]:
        return self._held(fcntl.LOCK_EX)
