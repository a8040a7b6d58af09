"""Metrics, objectives and constraints: their names, directions, and the one feasibility rule.

Every part that judges a trial (both drivers, the NNI tuners, progress lines and the analysis
sources) reads it through this module, which imports neither torch nor NNI, so that NNI's tuner
process and trial client can use it too.

A constraint's *violation* follows Optuna's convention: how far the value lies outside the bound,
feasible when every violation is at most 0 (:func:`feasible`). Constraints are keyed by
:attr:`Constraint.name` (``"psnr_drop<=1"``), so two bounds on one metric stay apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import numpy as np
from pydantic import BeforeValidator, ConfigDict, StrictStr, model_validator
from pydantic.dataclasses import dataclass as schema

_STRICT = ConfigDict(extra="forbid")  # each field type is strict itself; instances or mappings

Direction = Literal["maximize", "minimize"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
TRIAL_METRICS = ("size_ratio", "size_bytes", "bops", "bops_ratio", "latency_ms")
"""Metrics every trial reports besides the workload's own (and ``<metric>_drop`` for those),
all to minimize."""
INFEASIBLE_PENALTY = 1e3
"""Added to the scalarized objective (in its worse direction) per unit of constraint violation,
on top of the same constant, so that every infeasible trial ranks behind every feasible one."""


def _number(value: object) -> object:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"must be a number, got {value!r}")
    return value


Bound = Annotated[float | None, BeforeValidator(_number)]


@schema(config=_STRICT)
class Objective:
    """One metric to optimize and its direction (an experiment file's ``objectives`` entry)."""

    metric: StrictStr
    direction: Direction


@schema(config=_STRICT)
class Constraint:
    """``metric <= max`` and/or ``metric >= min``; a trial violating it is infeasible (an
    experiment file's ``constraints`` entry)."""

    metric: StrictStr
    max: Bound = None
    min: Bound = None

    @model_validator(mode="after")
    def _bounded(self) -> Constraint:
        if self.max is None and self.min is None:
            raise ValueError("needs max or min")
        return self

    @property
    def name(self) -> str:
        """The constraint as text (``psnr_drop<=1``, ``0.1<=size_ratio<=0.25``): its key in
        Optuna's ``set_constraint`` and in trial records."""
        low = f"{self.min:g}<=" if self.min is not None else ""
        high = f"<={self.max:g}" if self.max is not None else ""
        return f"{low}{self.metric}{high}"

    def violation(self, value: float) -> float:
        """How far ``value`` lies outside the bound (at most 0 when feasible); Optuna's convention."""
        over = value - self.max if self.max is not None else float("-inf")
        under = self.min - value if self.min is not None else float("-inf")
        return max(over, under)


def feasible(violations: Mapping[str, float] | Iterable[float] | None) -> bool:
    """The feasibility rule: every violation at most 0. Takes a mapping (Optuna 5's
    ``FrozenTrial.constraints``, a trial record's ``violations``) or a sequence; none is feasible."""
    if violations is None:
        return True
    values = violations.values() if isinstance(violations, Mapping) else violations
    return all(v <= 0 for v in values)


def available_metrics(directions: Mapping[str, str]) -> list[str]:
    """Every metric a trial reports for a workload whose own metrics have ``directions``."""
    names = list(directions)
    return names + [f"{name}_drop" for name in names] + list(TRIAL_METRICS)


def metric_directions(objectives: Sequence[Objective], workload_directions: Mapping[str, str],
                      metrics: Iterable[str] = ()) -> dict[str, str]:
    """Directions of every metric: the workload's, costs and ``*_drop`` to minimize, the
    objectives' own last (an objective's direction wins)."""
    directions = {f"{m}_drop": "minimize" for m in workload_directions}
    directions.update(workload_directions)
    directions.update({m: "minimize" for m in TRIAL_METRICS})
    directions.update({m: "minimize" for m in metrics if m.endswith("_drop")})
    directions.update({o.metric: o.direction for o in objectives})
    return directions


def check_directions(directions: Sequence[str]) -> list[bool]:
    """``True`` per maximized objective; ``ValueError`` for anything but maximize or minimize."""
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"direction must be maximize or minimize, got {d!r}")
    return [d == "maximize" for d in directions]


def pareto_mask(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """True for the points no other point dominates (duplicates of a front point all stay);
    moocore's non-dominated filter (imported on use: the experiment file is read without it)."""
    import moocore

    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    return moocore.is_nondominated(values.reshape(len(values), -1), maximise=check_directions(directions),
                                   keep_weakly=True)


@dataclass
class ObjectiveSet:
    """What the search optimizes (several objectives) and what it must respect (constraints).

    Multi-objective drivers (Optuna, the NNI multi-objective tuner) use :meth:`values`; NNI's
    built-in single-objective tuners use :meth:`scalarize`: the first objective, penalized when
    a constraint is violated.
    """

    objectives: list[Objective]
    constraints: list[Constraint]

    @property
    def names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def values(self, metrics: Mapping[str, float]) -> list[float]:
        return [metrics[name] for name in self.names]

    def violations(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Per constraint (by :attr:`Constraint.name`), its violation: feasible when <= 0."""
        return {c.name: c.violation(metrics[c.metric]) for c in self.constraints}

    def feasible(self, metrics: Mapping[str, float]) -> bool:
        return feasible(self.violations(metrics))

    def scalarize(self, metrics: Mapping[str, float]) -> float:
        """The first objective; an infeasible trial is pushed behind every feasible one."""
        value = metrics[self.objectives[0].metric]
        excess = sum(max(v, 0.0) for v in self.violations(metrics).values())
        if excess > 0:
            penalty = INFEASIBLE_PENALTY * (1 + excess)
            value = value - penalty if self.objectives[0].direction == "maximize" else value + penalty
        return value

    def front_size(self, values: Sequence[Sequence[float]]) -> int:
        """How many of the feasible trials' objective ``values`` lie on their Pareto front."""
        return int(pareto_mask(values, self.directions).sum())
