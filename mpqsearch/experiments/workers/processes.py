"""Processes by identity, processes that die with others, and ending processes for sure (Linux).

A pid alone names a process only while it lives: once it exits, the number can be reused. Every
record that outlives the moment therefore keeps the pid *and* the process's start time (field 22
of ``/proc/<pid>/stat``, clock ticks since boot), and nothing is signalled unless both still
match. Waiting for a process to be gone uses a pidfd (``os.pidfd_open``): no polling, no reuse race.

Two ways to die with another process: :func:`parent_death_preexec` asks the kernel
(``PR_SET_PDEATHSIG``) to signal a child when the thread that started it ends (for NNI's manager,
started by the launcher's main thread); :func:`exit_with` watches any process, not only a parent,
through pidfds (for workers, whose anchor is the launcher or NNI's manager).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 on (the command name, which may hold spaces, cut off)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), ``None`` if there is no such process (or
    only a zombie: it has ended, its parent has not collected it yet)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and fields[0] != "Z" else None


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def group_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def command_line(pid: int) -> list[str]:
    """``pid``'s arguments, empty if it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies included until reaped)."""
    return [pid for pid in all_pids() if group_of(pid) == pgid]


@dataclass(frozen=True)
class ProcessRecord:
    """A process as it can be recognized later: its pid and its start time."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessRecord | None:
        started = start_time(pid)
        return None if started is None else cls(pid, started)

    @classmethod
    def from_dict(cls, data: Any) -> ProcessRecord | None:
        try:
            return cls(int(data["pid"]), int(data["start_time"]))
        except (TypeError, KeyError, ValueError):
            return None

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def alive(self) -> bool:
        """Whether this very process still runs (the pid is not a later process's)."""
        return start_time(self.pid) == self.start_time

    def __str__(self) -> str:
        return f"{self.pid}:{self.start_time}"

    @classmethod
    def parse(cls, text: str) -> ProcessRecord:
        """The inverse of ``str()``: ``PID:START_TIME``."""
        pid, _, started = text.partition(":")
        return cls(int(pid), int(started))


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def parent_death_preexec(sig: int, new_group: bool = True) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the calling thread
    ends (and leads a new process group, as NNI starts its manager). The C function is looked up
    here, in the parent: the child only calls it. A child whose parent died before the request
    took effect exits at once."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if new_group:
            os.setpgrp()
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def exit_with(anchors: Iterable[ProcessRecord], on_end: Callable[[], None] | None = None) -> None:
    """Call ``on_end`` (default: end this process, ``os._exit(0)``) the moment any of ``anchors``
    ends, or at once if one already has. A daemon thread waits on their pidfds."""
    on_end = on_end or (lambda: os._exit(0))
    fds = []
    for anchor in anchors:
        try:
            fd = os.pidfd_open(anchor.pid)
        except ProcessLookupError:
            on_end()
            return
        if not anchor.alive():  # the pid was reused before we opened it: the anchor is gone
            on_end()
            return
        fds.append(fd)
    if not fds:
        return

    def wait() -> None:
        select.select(fds, [], [])
        on_end()

    threading.Thread(target=wait, daemon=True, name="anchor-watch").start()


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; whether it has (or never existed)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def kill_and_wait(pid: int, sig: int = signal.SIGKILL, timeout: float = 10.0) -> bool:
    """Signal ``pid`` and wait until it is gone (SIGKILL after ``timeout`` if ``sig`` was gentler);
    whether it is gone. Waiting matters: a slot whose worker is still dying must not be reused."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        for current in (sig, signal.SIGKILL) if sig != signal.SIGKILL else (sig,):
            try:
                signal.pidfd_send_signal(fd, current)
            except ProcessLookupError:
                return True
            if select.select([fd], [], [], timeout)[0]:
                return True
        return False
    finally:
        os.close(fd)


def end_group(pgid: int, grace: float = 15.0, leader_only: bool = False) -> bool:
    """SIGTERM every process of group ``pgid`` (with ``leader_only``, only its leader, which ends
    the rest itself), SIGKILL what is left after ``grace`` seconds; whether the group is gone."""
    try:
        if leader_only:
            os.kill(pgid, signal.SIGTERM)
        else:
            os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not _live(group_members(pgid)):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    time.sleep(0.2)
    return not _live(group_members(pgid))


def _live(pids: list[int]) -> list[int]:
    """``pids`` without zombies (a zombie has ended; only its parent's wait is missing)."""
    return [pid for pid in pids if (_stat_fields(pid) or ["Z"])[0] != "Z"]


def find_processes(*needles: str) -> list[int]:
    """Processes of this user whose command line contains every one of ``needles`` (as one
    space-joined string), this process excluded."""
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
        except OSError:
            continue
        text = " ".join(command_line(pid))
        if text and all(needle in text for needle in needles):
            found.append(pid)
    return _live(found)
