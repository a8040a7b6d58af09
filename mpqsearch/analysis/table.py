"""The result table, whichever driver ran the trials: :class:`TrialRow` and :class:`Results`.

A leaf of :mod:`mpqsearch.analysis`: the sources that read each driver's storage
(:mod:`.nni_source`, :mod:`.optuna_source`) fill it, everything else reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..experiments.config import ExperimentConfig
from ..objectives import Objective
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
