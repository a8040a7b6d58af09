"""Launching, resuming, viewing and stopping experiments, whichever the driver.

Each experiment has a directory ``<directory>/<id>/`` holding ``experiment.yaml`` (the file as
launched, flags applied), ``run.json`` (driver, storage, web UI), the shared trial cache, and
the driver's own storage (Optuna's database by default, NNI's working directory).
"""

from __future__ import annotations

import json
import secrets
import string
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import yaml

from .config import ConfigError, ExperimentConfig, load_config
from ..objectives import ObjectiveSet, pareto_mask
from .setup import build_setup, run_directory

STOP_FILE = "STOP"


def new_experiment_id() -> str:
    """Eight lowercase letters and digits, like NNI's experiment IDs."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def find_run(experiment_id: str, directory: str | Path | None = None) -> Path:
    base = Path(directory).expanduser() if directory else ExperimentConfig(workload="").experiment_dir
    run_dir = base / experiment_id
    if not (run_dir / "run.json").exists():
        raise ConfigError(f"no experiment {experiment_id!r} in {base} (pass --directory if it was launched elsewhere)")
    return run_dir


class Progress:
    """One line per change: trials done, failed and running, and what the search holds so far.

    A multi-objective search shows its feasible Pareto front (size, and the range of each
    objective over it): one best value of the first objective says little there. A
    single-objective search (NNI's built-in tuners) shows the best feasible first objective.
    """

    def __init__(self, objectives: ObjectiveSet, max_trials: int, multi_objective: bool,
                 out: TextIO | None = None) -> None:
        self.objectives, self.max_trials, self.out = objectives, max_trials, out or sys.stdout
        self.multi_objective = multi_objective and len(objectives.objectives) > 1
        self.last: tuple | None = None

    def show(self, done: int, failed: int, running: int, feasible_values: Sequence[Sequence[float]]) -> None:
        """Print a line if anything changed; ``feasible_values`` holds the objective values of the
        completed trials that meet every constraint."""
        state = (done, failed, running, self.summary(feasible_values))
        if state == self.last:
            return
        self.last = state
        print(f"  trials {done + failed}/{self.max_trials}: {done} done, {failed} failed, {running} running; "
              f"{state[3]}", file=self.out, flush=True)

    def summary(self, feasible_values: Sequence[Sequence[float]]) -> str:
        names = self.objectives.names
        if not feasible_values:
            return "no feasible trial yet"
        if not self.multi_objective:
            column = [v[0] for v in feasible_values]
            best = max(column) if self.objectives.directions[0] == "maximize" else min(column)
            return f"best {names[0]} {best:.4g}"
        values = np.asarray(feasible_values, dtype=float)
        front = values[pareto_mask(values, self.objectives.directions)]
        ranges = ", ".join(f"{name} {front[:, i].min():.4g}..{front[:, i].max():.4g}" for i, name in enumerate(names))
        return f"feasible front {len(front)} ({ranges})"


def apply_overrides(config: ExperimentConfig, **flags: Any) -> ExperimentConfig:
    """Command-line flags win over the file: driver, max_trials, storage, port, directory."""
    config = replace(config, budget=replace(config.budget))
    for key in ("driver", "storage", "port", "directory"):
        if flags.get(key) is not None:
            setattr(config, key, flags[key])
    if flags.get("max_trials") is not None:
        config.budget.max_trials = flags["max_trials"]
    if config.driver not in ("nni", "optuna"):
        raise ConfigError(f"--driver must be nni or optuna, got {config.driver!r}")
    return config


def _save_run(run_dir: Path, config: ExperimentConfig, experiment_id: str, **info: Any) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "experiment.yaml"
    data = config.to_dict()
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    (run_dir / "run.json").write_text(json.dumps({"id": experiment_id, "driver": config.driver,
                                                  "created": time.time(), **info}, indent=1))
    return config_path


def launch(config: ExperimentConfig, out: TextIO | None = None) -> str:
    """Run a new experiment until its budget is spent; returns its ID."""
    out = out or sys.stdout
    experiment_id = new_experiment_id()
    run_dir = run_directory(config, experiment_id)
    if config.driver == "nni":
        from .nni_driver import check_tuner
        check_tuner(config)
    config_path = _save_run(run_dir, config, experiment_id)
    config = load_config(config_path)
    print(f"experiment {experiment_id} ({config.driver}) on {config.workload}", file=out)
    print(f"  results: {run_dir}", file=out)
    _run(config, config_path, experiment_id, run_dir, out, resume=False)
    return experiment_id


def resume(experiment_id: str, directory: str | Path | None = None, port: int | None = None,
           out: TextIO | None = None) -> None:
    """Continue an interrupted or stopped experiment where it was."""
    out = out or sys.stdout
    run_dir = find_run(experiment_id, directory)
    config_path = run_dir / "experiment.yaml"
    config = load_config(config_path)
    if port is not None:
        config.port = port
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    print(f"resuming experiment {experiment_id} ({config.driver})", file=out)
    _run(config, config_path, experiment_id, run_dir, out, resume=True)


def _run(config: ExperimentConfig, config_path: Path, experiment_id: str, run_dir: Path, out: TextIO,
         resume: bool) -> None:
    if config.driver == "optuna":
        from .optuna_driver import OptunaDriver, optuna_progress

        driver = OptunaDriver(config, experiment_id, run_dir)
        print(f"  storage: {driver.url} (study {experiment_id}); watch it with: optuna-dashboard {driver.url}", file=out)
        driver.run(config_path, optuna_progress(config, out))
        return
    from .nni_driver import NniDriver, nni_progress

    driver = NniDriver(config, experiment_id, run_dir)
    setup = build_setup(config, cache_dir=run_dir / "cache")
    progress = nni_progress(config, setup.objectives, run_dir, out)
    if resume:
        driver.resume(config.port, progress, out)
    else:
        driver.launch(setup, config_path, config.port, progress, out)


def view(experiment_id: str, directory: str | Path | None = None, port: int | None = None) -> None:
    run_dir = find_run(experiment_id, directory)
    config = load_config(run_dir / "experiment.yaml")
    if config.driver != "nni":
        raise ConfigError(f"experiment {experiment_id} ran on Optuna: open it with optuna-dashboard "
                          f"sqlite:///{run_dir / 'optuna.db'} (or its storage URL)")
    from .nni_driver import NniDriver

    NniDriver(config, experiment_id, run_dir).view(port or config.port)


def stop(experiment_id: str, directory: str | Path | None = None) -> None:
    """Stop a running experiment: NNI through nnictl; Optuna workers finish their current trial."""
    run_dir = find_run(experiment_id, directory)
    config = load_config(run_dir / "experiment.yaml")
    if config.driver == "nni":
        subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", experiment_id], check=False)
    else:
        (run_dir / STOP_FILE).write_text("stop requested\n")
