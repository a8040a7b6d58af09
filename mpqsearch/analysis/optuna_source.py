"""Reading an Optuna study (the Optuna driver's, or any storage) into :class:`Results` rows."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..experiments.config import ConfigError, ExperimentConfig, Objective
from ..objectives import feasible, metric_directions
from ..experiments.optuna_driver import open_storage, storage_url
from .results import Results, TrialRow

_STATES = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
           TrialState.WAITING: "waiting", TrialState.PRUNED: "pruned"}


def _row(trial: FrozenTrial) -> TrialRow:
    start, end = trial.datetime_start, trial.datetime_complete
    return TrialRow(
        number=trial.number, trial_id=str(trial.number), state=_STATES[trial.state], params=dict(trial.params),
        metrics=dict(trial.user_attrs.get("metrics", {})), strategy=trial.user_attrs.get("strategy"),
        start=start.timestamp() if start else None,
        duration=(end - start).total_seconds() if start and end else None,
        fail_reason=trial.user_attrs.get("fail_reason"),
        feasible=feasible(trial.constraints),
    )


def load_storage(url: str, study: str | None = None) -> Results:
    """Every trial of ``study`` in the storage at ``url`` (the only study there if not named)."""
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if study is None:
        if len(names) != 1:
            raise ConfigError(f"{url}: holds {len(names)} studies ({', '.join(names) or 'none'}); name one with --study")
        study = names[0]
    if study not in names:
        raise ConfigError(f"{url}: no study {study!r} (studies: {', '.join(names) or 'none'})")
    loaded = optuna.load_study(study_name=study, storage=storage)
    info = loaded.user_attrs.get("mpqsearch", {})
    objectives = [Objective(name, d.name.lower()) for name, d in zip(info.get("objectives", []), loaded.directions)]
    rows = [_row(t) for t in loaded.get_trials(deepcopy=False)]
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
