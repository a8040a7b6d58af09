"""Launching, resuming, viewing and stopping experiments, whichever the driver.

Everything a launch reads is checked before anything is written: the experiment file, the
driver's own settings, the workload, the search space and the objectives; only then is the run
directory (:mod:`.runs`) created. The driver comes from the registry (:mod:`.drivers`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from ..quant.spec import default_target
from .config import ConfigError, ExperimentConfig, config_error, load_config
from .drivers import get_driver
from .drivers.base import Driver
from .lifetime import RunLock
from .progress import Progress
from .runs import (
    EXPERIMENT_FILE,
    STOP_FILE,
    find_run,
    launch_directory,
    load_run,
    new_experiment_id,
    private_files,
    run_directory,
    save_run,
)
from .setup import build_setup

OVERRIDE_FLAGS = {"driver": "--driver", "budget.max_trials": "--max-trials", "storage": "--storage",
                  "port": "--port", "directory": "--directory"}
"""Keys of the experiment file that command-line flags override, and the flag of each."""


def apply_overrides(config: ExperimentConfig, **flags: Any) -> ExperimentConfig:
    """A copy of ``config`` with the given flags (``driver``, ``max_trials``, ``storage``,
    ``port``, ``directory``; ``None`` leaves the file's value), each checked as the flag it is."""
    data, given = config.to_dict(), {}
    for key, flag in OVERRIDE_FLAGS.items():
        value = flags.get(flag.lstrip("-").replace("-", "_"))
        if value is not None:
            section, _, name = key.rpartition(".")
            (data[section] if section else data)[name] = value
            given[key] = flag
    try:
        overridden = ExperimentConfig.model_validate({**data, "source": config.source})
    except ValidationError as err:
        raise config_error(err, config.source, OVERRIDE_FLAGS) from None
    overridden._flags = given
    return overridden


def _driver(config: ExperimentConfig, experiment_id: str, run_dir: Path) -> Driver:
    cls = get_driver(config.driver)
    cls.check(config)
    return cls(config, experiment_id, run_dir)


def launch(config: ExperimentConfig, out: TextIO | None = None) -> str:
    """Run a new experiment until its budget is spent; returns its ID."""
    out = out or sys.stdout
    if config.latency.target is None:  # fixed now, so a resume on another machine searches the same numerics
        config = config.model_copy(update={"latency": config.latency.model_copy(update={"target": default_target()})})
    experiment_id = new_experiment_id()
    run_dir = run_directory(config, experiment_id)
    if run_dir.parent.exists() and not run_dir.parent.is_dir():
        raise ConfigError(f"{config.where('directory')}: {run_dir.parent} is a file, not a directory")
    driver = _driver(config, experiment_id, run_dir)
    setup = build_setup(config, cache_dir=run_dir / "cache")
    with private_files():
        try:
            save_run(run_dir, config, experiment_id)
        except OSError as err:
            raise ConfigError(f"{config.where('directory')}: cannot write {err.filename or run_dir}: "
                              f"{err.strerror or err}") from None
        with _running(run_dir, experiment_id):
            print(f"experiment {experiment_id} ({config.driver}) on {config.workload}", file=out)
            print(f"  results: {run_dir}", file=out)
            driver.describe(out)
            driver.launch(setup, Progress(setup.objectives, config.budget.max_trials, driver.multi_objective, out),
                          out)
    return experiment_id


@contextmanager
def _running(run_dir: Path, experiment_id: str) -> Iterator[None]:
    """Hold the run directory's lock for the block: one launcher per experiment at a time."""
    lock = RunLock(run_dir)
    if not lock.acquire():
        raise ConfigError(f"experiment {experiment_id} is already running (launcher pid {lock.owner}); wait for it "
                          "or stop it, or add workers to an Optuna experiment with: mpqsearch worker STORAGE "
                          f"--study {experiment_id}")
    try:
        yield
    finally:
        lock.release()


def resume(experiment_id: str, directory: str | Path | None = None, port: int | None = None,
           out: TextIO | None = None, storage: str | None = None) -> None:
    """Continue an interrupted or stopped experiment where it was (``storage``: the storage URL
    again, where the launch's held a password, which is never saved)."""
    out = out or sys.stdout
    run_dir = find_run(experiment_id, directory)
    sys.path.insert(0, launch_directory(run_dir))
    config = load_run(run_dir, storage)
    if port is not None:
        config = apply_overrides(config, port=port)
    driver = _driver(config, experiment_id, run_dir)
    setup = build_setup(config, cache_dir=run_dir / "cache")
    with private_files(), _running(run_dir, experiment_id):
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        print(f"resuming experiment {experiment_id} ({config.driver})", file=out)
        driver.describe(out)
        driver.resume(setup, Progress(setup.objectives, config.budget.max_trials, driver.multi_objective, out), out)


def view(experiment_id: str, directory: str | Path | None = None, port: int | None = None) -> None:
    """Serve the driver's view of an experiment (NNI's web UI) until interrupted."""
    run_dir = find_run(experiment_id, directory)
    _driver(load_run(run_dir), experiment_id, run_dir).view(port)


def stop(experiment_id: str, directory: str | Path | None = None) -> None:
    """Ask a running experiment to stop: running trials finish and are recorded, no new one starts."""
    run_dir = find_run(experiment_id, directory)
    _driver(load_config(run_dir / EXPERIMENT_FILE), experiment_id, run_dir).stop()
