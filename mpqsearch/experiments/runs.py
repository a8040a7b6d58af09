"""Where an experiment keeps its files: ``<directory>/<id>/``.

The run directory holds ``experiment.yaml`` (the file as launched, flags applied), ``run.json``
(its ID, driver and creation time), ``space.json`` (the search space the drivers searched, for the
report), the trials' shared cache and the driver's own storage.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..files import write_atomic
from .config import ConfigError, ExperimentConfig, load_config, redact_url


class RunError(RuntimeError):
    """An experiment cannot go on (its storage or disk failed); the message says what to do.
    Finished trials are kept."""


EXPERIMENT_FILE = "experiment.yaml"
RUN_FILE = "run.json"
STOP_FILE = "STOP"
"""Its presence asks the drivers' workers to finish their trial and stop."""
DEFAULT_DIRECTORY = ExperimentConfig.model_fields["directory"].default


def new_experiment_id() -> str:
    """Eight lowercase letters and digits, like NNI's experiment IDs."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def run_directory(config: ExperimentConfig, experiment_id: str) -> Path:
    return config.experiment_dir / experiment_id


def find_run(experiment_id: str, directory: str | Path | None = None) -> Path:
    """The run directory of ``experiment_id`` under ``directory`` (default: the default directory)."""
    base = Path(directory or DEFAULT_DIRECTORY).expanduser()
    run_dir = base / experiment_id
    if not (run_dir / RUN_FILE).exists():
        raise ConfigError(f"no experiment {experiment_id!r} in {base} (pass --directory if it was launched elsewhere)")
    return run_dir


def save_run(run_dir: Path, config: ExperimentConfig, experiment_id: str) -> Path:
    """Write the experiment file as launched (a storage password masked: it is never saved) and
    ``run.json``; returns the experiment file's path."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = config.to_dict()
    if data["storage"]:
        data["storage"] = redact_url(data["storage"])
    path = write_atomic(run_dir / EXPERIMENT_FILE, lambda handle: yaml.safe_dump(data, handle, sort_keys=False))
    info = {"id": experiment_id, "driver": config.driver, "created": time.time(), "cwd": os.getcwd()}
    write_atomic(run_dir / RUN_FILE, lambda handle: json.dump(info, handle, indent=1))
    return path


def load_run(run_dir: Path, storage: str | None = None) -> ExperimentConfig:
    """The experiment file of a run directory; ``storage`` replaces the saved storage URL, which
    must be given again where its password was masked."""
    config = load_config(run_dir / EXPERIMENT_FILE)
    if storage is not None:
        return config.model_copy(update={"storage": storage})
    if config.storage and ":***@" in config.storage:
        raise ConfigError(f"{config.source}: storage: its password was not saved; pass the storage URL again "
                          "with --storage (or leave the password out of URLs: PostgreSQL reads PGPASSWORD "
                          "and ~/.pgpass)")
    return config


@contextmanager
def private_files() -> Iterator[None]:
    """Inside the block, files and directories this process (and its children) create are its
    user's only (umask 077): run directories 0700, files 0600."""
    before = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(before)


def launch_directory(run_dir: Path) -> str:
    """The directory the experiment was launched from: ``module:function`` references in its file
    are found from there, as they were at launch (by resumed launches and trial processes alike)."""
    return (read_json(run_dir, RUN_FILE) or {}).get("cwd") or os.getcwd()


def save_json(run_dir: Path, name: str, data: Any) -> Path:
    return write_atomic(run_dir / name, lambda handle: json.dump(data, handle, indent=1))


def read_json(run_dir: Path, name: str) -> Any:
    """A JSON file of the run directory, ``None`` if there is none."""
    path = run_dir / name
    return json.loads(path.read_text()) if path.exists() else None
