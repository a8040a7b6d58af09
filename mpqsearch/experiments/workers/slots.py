"""Worker slots: one warm worker per concurrent trial, found through files in the run directory.

Transport: a Unix domain stream socket per slot, ``<run_dir>/workers/slot-<i>.sock``, created mode
0600 in a directory of mode 0700. Why a Unix socket and not TCP on 127.0.0.1: nothing listens on
a network address, so no other machine and no other user of this one can reach a worker (a
loopback port is open to every local user, and the evaluation request names files to write);
the file mode decides who may connect, and each side still checks the other's uid through
``SO_PEERCRED``, which also gives a client its worker's pid (to kill it on a timeout, with no
pid file to go stale); a worker that dies is an end-of-file on the client's connection at once;
and a round trip costs microseconds. Where the run directory's path is too long for a socket
address (``sun_path``, 108 bytes), the sockets go to a private per-user directory instead
(``$XDG_RUNTIME_DIR`` or ``/tmp/mpqsearch-<uid>``, checked to be this user's and 0700).

Slots: a trial takes the first slot whose ``slot-<i>.lock`` it can lock (``flock``, held for the
whole trial, released by the kernel however the trial ends), so one trial talks to a worker at a
time and NNI's ``trial_concurrency`` trials map onto as many workers (one more appears if the
concurrency is raised in the web UI).

Starting a worker: whoever starts one (a launcher ahead of the search, or a trial that found no
worker) holds ``slot-<i>.start`` locked and hands that open file to the worker, which closes it
once it listens. A client that cannot connect waits for that lock: when it frees, either the
socket answers or the worker died starting, and the last line of ``slot-<i>.log`` says why.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .processes import ProcessRecord

WORKERS_DIR = "workers"
SUN_PATH_MAX = 107
MAX_SLOTS = 256


class WorkerStartError(RuntimeError):
    """A slot's worker could not be started (it exited, or did not listen in time)."""


def _private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter; refuses one that someone else owns."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{path}: not a directory of this user")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    return pid, uid


class Slots:
    """The worker slots of one run directory: their sockets, locks and logs."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.dir = _private_dir(self.run_dir / WORKERS_DIR)
        if len(os.fsencode(self.dir / f"slot-{MAX_SLOTS}.sock")) <= SUN_PATH_MAX:
            self.socket_dir = self.dir
        else:
            runtime = os.environ.get("XDG_RUNTIME_DIR")
            base = Path(runtime) / "mpqsearch" if runtime else Path(f"/tmp/mpqsearch-{os.getuid()}")
            digest = hashlib.sha256(os.fsencode(self.run_dir)).hexdigest()[:16]
            self.socket_dir = _private_dir(_private_dir(base) / digest)

    def socket_path(self, index: int) -> Path:
        return self.socket_dir / f"slot-{index}.sock"

    def lock_path(self, index: int) -> Path:
        return self.dir / f"slot-{index}.lock"

    def log_path(self, index: int) -> Path:
        return self.dir / f"slot-{index}.log"

    def _open(self, name: str) -> int:
        return os.open(self.dir / name, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, poll: float = 0.05) -> tuple[int, int]:
        """Wait for a free slot; returns its index and the open, locked file that holds it
        (close it to release the slot)."""
        while True:
            for index in range(MAX_SLOTS):
                fd = os.open(self.lock_path(index), os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return index, fd
                except BlockingIOError:
                    os.close(fd)
            time.sleep(poll)

    def connect(self, index: int) -> socket.socket | None:
        """A connection to slot ``index``'s worker, ``None`` if none listens there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fsencode(self.socket_path(index)))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        _pid, uid = peer_credentials(sock)
        if uid != os.getuid():
            sock.close()
            raise PermissionError(f"{self.socket_path(index)}: the worker runs as uid {uid}, not {os.getuid()}")
        return sock

    def indices(self) -> list[int]:
        """Slots that have a socket file (their worker may or may not still listen)."""
        return sorted(int(p.stem.split("-", 1)[1]) for p in self.socket_dir.glob("slot-*.sock"))

    def start(self, index: int, command: Sequence[str], anchors: Sequence[ProcessRecord] = (),
              environment: dict[str, str] | None = None) -> subprocess.Popen:
        """Start slot ``index``'s worker (``command`` plus the slot's options) in its own session,
        its output appended to the slot's log; returns once it is started, not ready. The caller
        must not already hold the slot's start lock."""
        start_fd = self._open(f"slot-{index}.start")
        try:
            fcntl.flock(start_fd, fcntl.LOCK_EX)
            return self._spawn(index, command, start_fd, anchors, environment)
        finally:
            os.close(start_fd)  # the worker keeps its copy (and so the lock) until it listens

    def _spawn(self, index: int, command: Sequence[str], start_fd: int, anchors: Sequence[ProcessRecord],
               environment: dict[str, str] | None) -> subprocess.Popen:
        full = [*command, "--socket", str(self.socket_path(index)), "--slot-lock", str(self.lock_path(index)),
                "--start-fd", str(start_fd), *[arg for anchor in anchors for arg in ("--anchor", str(anchor))]]
        log = os.open(self.log_path(index), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            return subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(start_fd,),
                                    start_new_session=True, cwd=self.run_dir, env=environment)
        finally:
            os.close(log)

    def _start_lock_free(self, index: int) -> bool:
        fd = self._open(f"slot-{index}.start")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def connect_or_start(self, index: int, command: Sequence[str], anchors: Sequence[ProcessRecord],
                         deadline: float, poll: float = 0.05) -> socket.socket:
        """A connection to slot ``index``'s worker, started here (anchored to ``anchors``) if
        nobody runs or starts one. Raises :class:`WorkerStartError` if it dies starting or does
        not listen before ``deadline`` (``time.monotonic()``)."""
        sock = self.connect(index)
        if sock is not None:
            return sock
        start_fd = self._open(f"slot-{index}.start")
        try:
            while True:  # someone (a launcher, a trial) may be starting this slot's worker
                try:
                    fcntl.flock(start_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WorkerStartError(f"worker slot {index}: still starting after the timeout") from None
                    time.sleep(poll)
            sock = self.connect(index)
            if sock is not None:
                return sock
            self._spawn(index, command, start_fd, anchors, None)
        finally:
            os.close(start_fd)
        return self.wait_ready(index, deadline, poll)

    def wait_ready(self, index: int, deadline: float, poll: float = 0.05) -> socket.socket:
        """Wait until slot ``index``'s worker listens; see :meth:`connect_or_start`."""
        while time.monotonic() < deadline:
            sock = self.connect(index)
            if sock is not None:
                return sock
            if self._start_lock_free(index):
                sock = self.connect(index)
                if sock is not None:
                    return sock
                raise WorkerStartError(f"worker slot {index} exited while starting: {self.last_log_line(index)}")
            time.sleep(poll)
        raise WorkerStartError(f"worker slot {index} did not start within the timeout "
                               f"(see {self.log_path(index)})")

    def last_log_line(self, index: int) -> str:
        try:
            lines = self.log_path(index).read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else "no output"


def python_module_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def iter_workers(slots: Slots) -> Iterator[tuple[int, int]]:
    """(slot, pid) of every worker listening in ``slots``."""
    for index in slots.indices():
        sock = slots.connect(index)
        if sock is not None:
            with sock:
                yield index, peer_credentials(sock)[0]
