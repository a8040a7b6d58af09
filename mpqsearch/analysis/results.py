"""One table of trials, whichever driver ran them: :func:`load_results` is the only loader.

Example::

    results = load_results("1ix0tvm3")                       # an experiment by ID (NNI or Optuna)
    results = load_results("sqlite:///runs/x/optuna.db", study="x")   # any Optuna storage
    done = results.complete()
    results.column("top1", done), [row.policy for row in done]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..experiments.config import ConfigError, ExperimentConfig, load_config
from ..objectives import Objective, metric_directions
from ..policy import Policy
from ..search_spaces import SearchSpace

@dataclass
class TrialRow:
    """One trial: what was tried, what it measured, and how it went.

    ``number`` counts trials in the order the driver started them (Optuna's trial number, NNI's
    sequence ID); ``state`` is complete, failed, running, waiting, pruned or cancelled (NNI's and
    Optuna's states map onto these); ``start`` is a Unix time and ``duration`` seconds (``None``
    when unknown); ``feasible`` is false when a constraint was violated.
    """

    number: int
    trial_id: str
    state: str
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    strategy: str | None = None
    start: float | None = None
    duration: float | None = None
    fail_reason: str | None = None
    feasible: bool = True
    policy: Policy | None = None

    def value(self, name: str) -> Any:
        """A metric by name, or an attribute (``number``, ``state``, ``strategy``, ...)."""
        return self.metrics[name] if name in self.metrics else getattr(self, name, None)


@dataclass
class Results:
    """Every trial of one experiment, with what the experiment optimized.

    ``directions`` knows every metric's direction that the experiment implies (its objectives,
    the workload's metrics, sizes, BOPs and latency to minimize); ``space`` is the search space
    policies were made in (``None`` when the experiment file is unknown); ``strategy_scores``
    the per-layer scores of the strategies that seeded or pruned it (``{"name: what": {layer:
    score}}``, empty when none scored layers or the experiment's cache is gone).
    """

    experiment: str
    driver: str
    workload: str | None
    rows: list[TrialRow]
    objectives: list[Objective]
    directions: dict[str, str]
    config: ExperimentConfig | None = None
    space: SearchSpace | None = None
    strategy_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def complete(self, feasible_only: bool = False) -> list[TrialRow]:
        """Completed trials in trial order (only feasible ones if asked)."""
        return [r for r in self.rows if r.state == "complete" and (r.feasible or not feasible_only)]

    def column(self, name: str, rows: Iterable[TrialRow] | None = None) -> list[Any]:
        """One column of the table: ``results.column("size_ratio")``."""
        return [row.value(name) for row in (self.rows if rows is None else rows)]

    def direction(self, metric: str) -> str:
        if metric not in self.directions:
            known = sorted({m for row in self.rows for m in row.metrics})
            raise ValueError(f"unknown metric {metric!r} in experiment {self.experiment} "
                             f"(metrics: {', '.join(known) or 'none recorded'})")
        return self.directions[metric]


def is_storage(source: str) -> bool:
    """An Optuna storage (a database URL or a journal file) rather than an experiment ID."""
    from ..experiments.optuna_driver import JOURNAL_SUFFIXES

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
    from . import nni_source, optuna_source

    if is_storage(source):
        results = optuna_source.load_storage(source, study)
        config_path = Path(config) if config else optuna_source.experiment_file_beside(source)
        if config_path is not None:
            results.config = load_config(config_path)
    else:
        from ..experiments.launcher import find_run

        run_dir = find_run(source, directory)
        config_path = Path(config) if config else run_dir / "experiment.yaml"
        experiment = load_config(config_path)
        loader = nni_source.load_run if experiment.driver == "nni" else optuna_source.load_run
        results = loader(run_dir, source, experiment)
        results.config = experiment
    if policies and results.config is not None:
        attach_policies(results, cache_dir=config_path.parent / "cache")
    return results


def attach_policies(results: Results, cache_dir: Path | None = None) -> None:
    """Build the experiment's search space (as its drivers did) and each trial's policy."""
    from ..experiments.setup import build_setup

    if results.config is None:
        raise ConfigError(f"experiment {results.experiment}: no experiment file; policies cannot be rebuilt")
    setup = build_setup(results.config, cache_dir=cache_dir if cache_dir is not None and cache_dir.is_dir() else None)
    results.space = setup.space
    results.strategy_scores = setup.strategy_scores()
    results.workload = setup.workload.name
    metrics = {m for row in results.rows for m in row.metrics}
    results.directions = metric_directions(setup.objectives.objectives, setup.workload.directions, metrics)
    results.objectives = list(setup.objectives.objectives)
    for row in results.rows:
        try:
            row.policy = setup.space.policy_from_params(row.params) if row.params else None
        except (KeyError, ValueError):
            row.policy = None
