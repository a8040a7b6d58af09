"""The progress line a running search prints: one line whenever something changed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from ..objectives import ObjectiveSet, pareto_mask


@dataclass(frozen=True)
class TrialCounts:
    """Where a search stands: trials done, failed and running, and the objective values of the
    completed trials that meet every constraint."""

    done: int
    failed: int
    running: int
    feasible_values: Sequence[Sequence[float]] = field(default_factory=list)


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

    def show(self, counts: TrialCounts) -> None:
        """Print a line if anything changed since the last one."""
        state = (counts.done, counts.failed, counts.running, self.summary(counts.feasible_values))
        if state == self.last:
            return
        self.last = state
        print(f"  trials {counts.done + counts.failed}/{self.max_trials}: {counts.done} done, {counts.failed} failed, "
              f"{counts.running} running; {state[3]}", file=self.out, flush=True)

    def summary(self, feasible_values: Sequence[Sequence[float]]) -> str:
        names = self.objectives.names
        if not len(feasible_values):
            return "no feasible trial yet"
        if not self.multi_objective:
            column = [v[0] for v in feasible_values]
            best = max(column) if self.objectives.directions[0] == "maximize" else min(column)
            return f"best {names[0]} {best:.4g}"
        values = np.asarray(feasible_values, dtype=float)
        front = values[pareto_mask(values, self.objectives.directions)]
        ranges = ", ".join(f"{name} {front[:, i].min():.4g}..{front[:, i].max():.4g}" for i, name in enumerate(names))
        return f"feasible front {len(front)} ({ranges})"
