"""A launcher's side: start the workers before the search needs them, end them all afterwards.

Workers a launcher starts are anchored to it (they exit the moment it does, even by ``kill -9``);
:meth:`WorkerPool.close` ends them sooner, when the search is over, together with any worker a
trial started in the same run directory (a replacement for one that crashed).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence

from .processes import ProcessRecord, kill_and_wait
from .slots import Slots, iter_workers


class WorkerPool:
    """The workers of one run directory, as its launcher sees them."""

    def __init__(self, slots: Slots, command: Sequence[str], environment: dict[str, str] | None = None) -> None:
        self.slots, self.command, self.environment = slots, list(command), environment
        self.started: list[subprocess.Popen] = []

    def start(self, count: int) -> None:
        """Start ``count`` workers (slots 0..count-1) in the background, anchored to this process;
        ends whatever listens there first (a previous launch's workers)."""
        self.end_listening()
        anchor = ProcessRecord.of(os.getpid())
        for index in range(count):
            self.started.append(self.slots.start(index, self.command, [anchor] if anchor else [], self.environment))

    def end_listening(self) -> list[int]:
        """End every worker listening in the run directory; their pids."""
        ended = []
        for _index, pid in iter_workers(self.slots):
            kill_and_wait(pid, signal.SIGTERM, timeout=5.0)
            ended.append(pid)
        return ended

    def close(self) -> None:
        """End every worker: those this pool started (listening or not yet) and any other that
        listens in the run directory."""
        for process in self.started:
            if process.poll() is None:
                kill_and_wait(process.pid, signal.SIGTERM, timeout=5.0)
            process.wait()
        self.started.clear()
        self.end_listening()
