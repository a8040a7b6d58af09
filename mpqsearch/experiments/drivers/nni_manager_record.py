"""Which NNI manager and which launcher run an experiment: ``manager.json`` in its run directory.

The launcher writes the manager's and its own pid and start time, and the web UI's port, once
the manager answers. ``resume`` and ``stop`` read it back: a live launcher is asked to stop (it
owns the manager and the workers); a manager left by a launcher that died (one started by an
older mpqsearch, or whose death signal did not arrive) is ended, after its pid, start time and
command line (NNI's ``main.js`` with this experiment's ID and working directory) all matched, so
that a reused pid is never signalled. NNI's own list (``~/nni-experiments/.experiment``) keeps a
bare pid that may belong to another process by now, so it is not trusted for this.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from ...files import write_atomic
from ..workers.processes import ProcessRecord, command_line, end_group, find_processes, group_of, kill_and_wait

MANAGER_FILE = "manager.json"
NNI_DIR = "nni"
"""NNI's experiment working directory inside the run directory."""


@dataclass(frozen=True)
class ManagerRecord:
    experiment_id: str
    manager: ProcessRecord
    port: int
    launcher: ProcessRecord | None


def write_manager_record(run_dir: Path, record: ManagerRecord) -> None:
    data = {"experiment_id": record.experiment_id, "manager": record.manager.to_dict(), "port": record.port,
            "launcher": record.launcher.to_dict() if record.launcher else None}
    write_atomic(run_dir / MANAGER_FILE, lambda handle: json.dump(data, handle, indent=1))


def read_manager_record(run_dir: Path) -> ManagerRecord | None:
    try:
        data = json.loads((run_dir / MANAGER_FILE).read_text())
        manager = ProcessRecord.from_dict(data["manager"])
        if manager is None:
            return None
        return ManagerRecord(str(data["experiment_id"]), manager, int(data["port"]),
                             ProcessRecord.from_dict(data.get("launcher")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_manager_record(run_dir: Path) -> None:
    (run_dir / MANAGER_FILE).unlink(missing_ok=True)


def _argument(arguments: list[str], name: str) -> str | None:
    return arguments[arguments.index(name) + 1] if name in arguments[:-1] else None


def is_manager(pid: int, run_dir: Path, experiment_id: str) -> bool:
    """Whether ``pid`` is NNI's manager of ``experiment_id`` working in ``run_dir``."""
    arguments = command_line(pid)
    directory = _argument(arguments, "--experiments-directory")
    return (any(a.endswith("main.js") for a in arguments) and _argument(arguments, "--experiment-id") == experiment_id
            and directory is not None and os.path.realpath(directory) == os.path.realpath(run_dir / NNI_DIR))


def live_managers(run_dir: Path, experiment_id: str) -> list[int]:
    """Pids of the managers of ``experiment_id`` in ``run_dir`` still running: the recorded one
    (pid, start time and command line checked) and any other found by its command line."""
    found = set()
    record = read_manager_record(run_dir)
    if record and record.manager.alive() and is_manager(record.manager.pid, run_dir, experiment_id):
        found.add(record.manager.pid)
    found |= {pid for pid in find_processes("main.js", "--experiment-id", experiment_id)
              if is_manager(pid, run_dir, experiment_id)}
    return sorted(found)


def live_launcher(run_dir: Path) -> ProcessRecord | None:
    """The launcher running the experiment, if it still runs (and is not this process)."""
    record = read_manager_record(run_dir)
    launcher = record.launcher if record else None
    if launcher is None or launcher.pid == os.getpid() or not launcher.alive():
        return None
    return launcher


def end_managers(run_dir: Path, experiment_id: str, grace: float = 15.0) -> list[int]:
    """End every live manager of the experiment: SIGTERM to the manager, which shuts down
    gracefully (its trials cancelled and left to rerun on resume, its tuner stopped, its database
    consistent), then SIGKILL to what is left of its process group (its tuner, its trials) after
    ``grace`` seconds; returns their pids."""
    pids = live_managers(run_dir, experiment_id)
    for pid in pids:
        if group_of(pid) == pid:  # NNI starts the manager as the leader of its own group
            end_group(pid, grace, leader_only=True)
        else:
            kill_and_wait(pid, signal.SIGTERM, timeout=grace)
    return pids
