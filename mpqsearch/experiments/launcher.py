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
from typing import Any, TextIO

import yaml

from .config import ConfigError, ExperimentConfig, load_config
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
    """One line per change: trials done, failed, running, and the best value so far."""

    def __init__(self, objective: str, direction: str, max_trials: int, out: TextIO = sys.stdout) -> None:
        self.objective, self.direction, self.max_trials, self.out = objective, direction, max_trials, out
        self.last: tuple | None = None

    def show(self, done: int, failed: int, running: int, best: float | None) -> None:
        state = (done, failed, running, best)
        if state == self.last:
            return
        self.last = state
        best_text = "-" if best is None else f"{best:.4g}"
        print(f"  trials {done + failed}/{self.max_trials}: {done} done, {failed} failed, {running} running; "
              f"best {self.objective} {best_text}", file=self.out, flush=True)

    def best(self, values: list[float]) -> float | None:
        if not values:
            return None
        return max(values) if self.direction == "maximize" else min(values)


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


def launch(config: ExperimentConfig, out: TextIO = sys.stdout) -> str:
    """Run a new experiment until its budget is spent; returns its ID."""
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
           out: TextIO = sys.stdout) -> None:
    """Continue an interrupted or stopped experiment where it was."""
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
        driver.run(config_path, optuna_progress(config, run_dir, out))
        return
    from .nni_driver import NniDriver, nni_progress

    driver = NniDriver(config, experiment_id, run_dir)
    print(f"  web UI: http://{config.host}:{config.port}", file=out)
    progress = nni_progress(config, run_dir, out)
    if resume:
        driver.resume(config.port, progress)
    else:
        driver.launch(build_setup(config, cache_dir=run_dir / "cache"), config_path, config.port, progress)


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
