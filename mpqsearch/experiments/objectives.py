"""Objectives and constraints of an experiment, read off one trial's flat metrics."""

from __future__ import annotations

from dataclasses import dataclass

from ..trials.workload import Workload
from .config import TRIAL_METRICS, ConfigError, Constraint, ExperimentConfig, Objective

INFEASIBLE_PENALTY = 1e3
"""Added to the scalarized objective (in its worse direction) per unit of constraint violation,
on top of the same constant, so that every infeasible trial ranks behind every feasible one."""


def available_metrics(workload: Workload) -> list[str]:
    names = list(workload.directions)
    return names + [f"{name}_drop" for name in names] + list(TRIAL_METRICS)


@dataclass
class ObjectiveSet:
    """What the search optimizes (several objectives) and what it must respect (constraints).

    Multi-objective drivers (Optuna, the NNI multi-objective tuner) use :meth:`values`; NNI's
    built-in single-objective tuners use :meth:`scalarize`: the first objective, penalized when
    a constraint is violated.
    """

    objectives: list[Objective]
    constraints: list[Constraint]

    @classmethod
    def from_config(cls, config: ExperimentConfig, workload: Workload) -> ObjectiveSet:
        """The configured objectives (default: the workload's primary metric and ``size_ratio``),
        checked against the metrics a trial of this workload reports."""
        objectives = list(config.objectives) or [
            Objective(workload.primary_metric, workload.directions[workload.primary_metric]),
            Objective("size_ratio", "minimize"),
        ]
        known = available_metrics(workload)
        for kind, items in (("objectives", objectives), ("constraints", config.constraints)):
            for i, item in enumerate(items):
                if item.metric not in known:
                    raise ConfigError(f"{config.source}: {kind}[{i}].metric: unknown metric {item.metric!r} "
                                      f"for {workload.name} (available: {', '.join(known)})")
                if item.metric == "latency_ms" and config.latency.backend == "none":
                    raise ConfigError(f"{config.source}: {kind}[{i}].metric: latency_ms needs a latency "
                                      "backend, but latency.backend is none")
        names = [o.metric for o in objectives]
        if len(set(names)) != len(names):
            raise ConfigError(f"{config.source}: objectives: a metric is listed twice ({', '.join(names)})")
        return cls(objectives, list(config.constraints))

    @property
    def names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def values(self, metrics: dict[str, float]) -> list[float]:
        return [metrics[name] for name in self.names]

    def violations(self, metrics: dict[str, float]) -> list[float]:
        """One value per constraint, feasible when <= 0 (Optuna's convention)."""
        return [c.violation(metrics[c.metric]) for c in self.constraints]

    def feasible(self, metrics: dict[str, float]) -> bool:
        return all(v <= 0 for v in self.violations(metrics))

    def scalarize(self, metrics: dict[str, float]) -> float:
        """The first objective; an infeasible trial is pushed behind every feasible one."""
        value = metrics[self.objectives[0].metric]
        excess = sum(max(v, 0.0) for v in self.violations(metrics))
        if excess > 0:
            penalty = INFEASIBLE_PENALTY * (1 + excess)
            value = value - penalty if self.objectives[0].direction == "maximize" else value + penalty
        return value
