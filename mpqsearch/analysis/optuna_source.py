"""Reading an Optuna study (the Optuna driver's, or any storage) into :class:`Results` rows."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..experiments.config import ConfigError, ExperimentConfig, redact_url
from ..experiments.drivers.optuna import open_storage, storage_url, study_attrs
from ..experiments.samplers.distinct import REPEAT_ATTR
from ..objectives import Objective, feasible, metric_directions
from .table import Results, TrialRow

_STATES = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
           TrialState.WAITING: "waiting", TrialState.PRUNED: "pruned"}


def _fail_reason(trial: FrozenTrial, retries: dict[int, int]) -> str | None:
    """The recorded reason, or for a trial its process left running, that it was retried."""
    reason = trial.user_attrs.get("fail_reason")
    if reason is None and trial.state == TrialState.FAIL and trial.number in retries:
        reason = f"interrupted (its process ended or stopped answering); retried as trial {retries[trial.number]}"
    return reason


def _row(trial: FrozenTrial, retries: dict[int, int]) -> TrialRow:
    start, end = trial.datetime_start, trial.datetime_complete
    return TrialRow(
        number=trial.number, trial_id=str(trial.number), state=_STATES[trial.state], params=dict(trial.params),
        metrics=dict(trial.user_attrs.get("metrics", {})), strategy=trial.user_attrs.get("strategy"),
        start=start.timestamp() if start else None,
        duration=(end - start).total_seconds() if start and end else None,
        fail_reason=_fail_reason(trial, retries),
        feasible=feasible(trial.constraints),
    )


def load_storage(url: str, study: str | None = None) -> Results:
    """Every trial of ``study`` in the storage at ``url`` (the only study there if not named)."""
    storage = open_storage(url, create=False)
    names = optuna.get_all_study_names(storage)
    if study is None:
        if len(names) != 1:
            raise ConfigError(f"{redact_url(url)}: holds {len(names)} studies ({', '.join(names) or 'none'}); "
                              "name one with --study")
        study = names[0]
    if study not in names:
        raise ConfigError(f"{redact_url(url)}: no study {study!r} (studies: {', '.join(names) or 'none'})")
    loaded = optuna.load_study(study_name=study, storage=storage)
    info = study_attrs(loaded)
    named = zip(info.get("objectives", []), loaded.directions, strict=False)  # foreign studies name none
    objectives = [Objective(name, d.name.lower()) for name, d in named]
    trials = loaded.get_trials(deepcopy=False)
    retries = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    rows = [_row(t, retries) for t in trials if REPEAT_ATTR not in t.user_attrs]  # answered from a record
    metrics = {m for row in rows for m in row.metrics}
    return Results(study, "optuna", info.get("workload"), rows, objectives, metric_directions(objectives, {}, metrics))


def experiment_file_beside(url: str) -> Path | None:
    """The ``experiment.yaml`` next to an SQLite or journal storage file, if there is one."""
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") or "://" not in url else None
    candidate = path.parent / "experiment.yaml" if path else None
    return candidate if candidate and candidate.exists() else None


def load_run(run_dir: Path, experiment_id: str, config: ExperimentConfig) -> Results:
    """The study of an Optuna-driven experiment: named by its ID, in its configured storage."""
    return load_storage(storage_url(config, run_dir), experiment_id)
