"""Pareto fronts and hypervolume over any two or three objectives, each with its direction.

Non-dominated filtering and hypervolume come from ``moocore`` (maintained C implementations of
the standard algorithms, by the authors of the WFG/FPL hypervolume work); this module only maps
trials and directions onto it.

Example::

    objectives = [("top1", "maximize"), ("size_ratio", "minimize")]
    front = pareto_front(results.complete(feasible_only=True), objectives)
    hypervolume(points(front, objectives), reference=[0.0, 1.0], directions=["maximize", "minimize"])
"""

from __future__ import annotations

from collections.abc import Sequence

import moocore
import numpy as np

from ..objectives import check_directions, pareto_mask
from .table import Results, TrialRow

ObjectiveSpec = Sequence[tuple[str, str]]
"""``[(metric, "maximize" | "minimize"), ...]``: two or three objectives."""


def points(rows: Sequence[TrialRow], objectives: ObjectiveSpec) -> np.ndarray:
    """The objective values of ``rows`` as an ``(n, k)`` array."""
    values = [[row.metrics[m] for m, _ in objectives] for row in rows]
    return np.array(values, dtype=float).reshape(len(rows), len(objectives))


def objectives_of(results: Results, names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``names`` with their directions in ``results``; by default the experiment's objectives,
    made two or three for a front (a single objective is paired with ``size_ratio``, or
    ``bops_ratio`` if it is ``size_ratio``; beyond three, the first three)."""
    if names is None:
        spec = [(o.metric, o.direction) for o in results.objectives][:3]
        if len(spec) == 1:
            spec.append(("size_ratio" if spec[0][0] != "size_ratio" else "bops_ratio", "minimize"))
        return spec
    return [(name, results.direction(name)) for name in names]


def pareto_front(rows: Sequence[TrialRow], objectives: ObjectiveSpec) -> list[TrialRow]:
    """The non-dominated rows among those that recorded every objective, sorted by the first."""
    if not 2 <= len(objectives) <= 3:
        raise ValueError(f"a front needs two or three objectives, got {len(objectives)}")
    usable = [row for row in rows if all(m in row.metrics for m, _ in objectives)]
    mask = pareto_mask(points(usable, objectives), [d for _, d in objectives])
    front = (row for row, keep in zip(usable, mask, strict=True) if keep)
    return sorted(front, key=lambda row: row.metrics[objectives[0][0]])


def hypervolume(values: np.ndarray, reference: Sequence[float], directions: Sequence[str]) -> float:
    """Volume dominated by ``values`` and bounded by ``reference``; points beyond it count for nothing."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return 0.0
    reference = np.asarray(reference, dtype=float)
    return float(moocore.hypervolume(values, ref=reference, maximise=check_directions(directions)))


def nadir(rows: Sequence[TrialRow], objectives: ObjectiveSpec) -> list[float]:
    """The worst value of each objective over ``rows``: a reference point every trial reaches."""
    values = points([r for r in rows if all(m in r.metrics for m, _ in objectives)], objectives)
    if len(values) == 0:
        raise ValueError("no trial recorded every objective")
    columns = zip(values.T, objectives, strict=True)
    return [float(col.min() if d == "maximize" else col.max()) for col, (_, d) in columns]


def hypervolume_history(rows: Sequence[TrialRow], objectives: ObjectiveSpec,
                        reference: Sequence[float]) -> list[tuple[int, float]]:
    """``(trials so far, hypervolume)`` after each trial in trial order; failed and infeasible
    trials count as spent budget but add no volume."""
    directions = [d for _, d in objectives]
    ordered = sorted(rows, key=lambda row: row.number)
    history, kept = [], []
    for count, row in enumerate(ordered, start=1):
        if row.state == "complete" and row.feasible and all(m in row.metrics for m, _ in objectives):
            kept.append(row)
        history.append((count, hypervolume(points(kept, objectives), reference, directions)))
    return history


def knee(front: Sequence[TrialRow], objectives: ObjectiveSpec) -> TrialRow:
    """The front's balanced compromise: the smallest sum of objectives normalized to [0, 1] over
    the front, 0 being best (with two objectives: the point farthest below the line joining the
    two extremes)."""
    if not front:
        raise ValueError("the front is empty")
    values = points(front, objectives)
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = (values - low) / span
    for i, (_, direction) in enumerate(objectives):
        if direction == "maximize":
            scaled[:, i] = 1.0 - scaled[:, i]
    return front[int(np.argmin(scaled.sum(axis=1)))]
