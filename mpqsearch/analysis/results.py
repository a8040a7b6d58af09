"""One table of trials, whichever driver ran them: :func:`load_results` is the only loader.

Example::

    results = load_results("1ix0tvm3")                       # an experiment by ID (NNI or Optuna)
    results = load_results("sqlite:///runs/x/optuna.db", study="x")   # any Optuna storage
    done = results.complete()
    results.column("top1", done), [row.policy for row in done]
"""

from __future__ import annotations

import os
from pathlib import Path

from ..experiments.config import ConfigError, load_config
from ..experiments.drivers.optuna import JOURNAL_SUFFIXES
from ..experiments.runs import EXPERIMENT_FILE, find_run
from ..experiments.setup import objective_set, recorded_space
from ..objectives import metric_directions
from . import nni_source, optuna_source
from .table import Results

SOURCES = {"nni": nni_source.load_run, "optuna": optuna_source.load_run}
"""Per driver, the reader of an experiment's trials from the driver's storage."""

def is_storage(source: str) -> bool:
    """An Optuna storage (a database URL or a journal file) rather than an experiment ID."""
    return "://" in source or source.endswith(JOURNAL_SUFFIXES)


def load_results(source: str, *, directory: str | os.PathLike | None = None, study: str | None = None,
                 config: str | os.PathLike | None = None, policies: bool = True) -> Results:
    """Every trial of an experiment, by ID (in ``directory``, default the experiments directory)
    or by Optuna storage URL or journal file (``study`` names the study; optional if it is the
    only one).

    Policies are rebuilt from each trial's parameters in the experiment's search space, built
    from its experiment file: the run directory's, or ``config`` for a bare storage. Without one
    (or with ``policies=False``, which skips building the workload), rows have ``policy=None``.
    """
    if is_storage(source):
        results = optuna_source.load_storage(source, study)
        config_path = Path(config) if config else optuna_source.experiment_file_beside(source)
        if config_path is not None:
            results.config = load_config(config_path)
    else:
        run_dir = find_run(source, directory)
        config_path = Path(config) if config else run_dir / EXPERIMENT_FILE
        results = SOURCES[(experiment := load_config(config_path)).driver](run_dir, source, experiment)
        results.config = experiment
    if policies and results.config is not None:
        attach_policies(results, run_dir=config_path.parent)
    return results


def attach_policies(results: Results, run_dir: Path | None = None) -> None:
    """Rebuild the space the experiment searched (from its file and what its launch recorded in
    ``run_dir``, evaluating nothing) and each trial's policy."""
    if results.config is None:
        raise ConfigError(f"experiment {results.experiment}: no experiment file; policies cannot be rebuilt")
    space, scores, workload = recorded_space(results.config, run_dir)
    objectives = objective_set(results.config, workload)
    results.space, results.strategy_scores, results.workload = space, scores, workload.name
    metrics = {m for row in results.rows for m in row.metrics}
    results.directions = metric_directions(objectives.objectives, workload.directions, metrics)
    results.objectives = list(objectives.objectives)
    for row in results.rows:
        try:
            row.policy = space.policy_from_params(row.params) if row.params else None
        except (KeyError, ValueError):
            row.policy = None
