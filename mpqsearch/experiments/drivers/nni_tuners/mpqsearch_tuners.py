"""NNI tuners of mpqsearch, loaded by NNI's dispatcher from this directory.

This file imports no torch (only torch-free parts of mpqsearch): NNI gives a tuner 10 seconds to
connect to its manager, and importing torch alone can take several on a busy 2-core machine.

- :class:`GuardedTuner` runs one of NNI's built-in tuners on the scalarized objective, hands out
  the seed policies first, and survives TPE's race (a trial's end reaching the tuner before its
  final metric, NNI issues #5689/#5739/#5798) by holding such an end back until the metric came.
- :class:`MultiObjectiveTuner` wraps an Optuna multi-objective sampler (NSGA-II, TPE) in an
  in-memory study, so a real Pareto search runs inside NNI and shows in its web UI.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from nni.tuner import Tuner

from mpqsearch.experiments.config import Algorithm
from mpqsearch.experiments.samplers import make_sampler
from mpqsearch.objectives import Constraint

_logger = logging.getLogger("mpqsearch.tuners")

BUILTIN_TUNERS = {
    "TPE": ("nni.algorithms.hpo.tpe_tuner", "TpeTuner", {}),
    "Evolution": ("nni.algorithms.hpo.evolution_tuner", "EvolutionTuner", {}),
    "Anneal": ("nni.algorithms.hpo.hyperopt_tuner", "HyperoptTuner", {"algorithm_name": "anneal"}),
    "Random": ("nni.algorithms.hpo.random_tuner", "RandomTuner", {}),
    "GridSearch": ("nni.algorithms.hpo.gridsearch_tuner", "GridSearchTuner", {}),
}


class _SeedQueue:
    """Hands out seed parameters first and remembers which parameter ids were seeds."""

    def __init__(self, seeds: list[dict[str, Any]] | None) -> None:
        self.pending = list(seeds or [])
        self.ids: set[int] = set()

    def take(self, parameter_id: int) -> dict[str, Any] | None:
        if not self.pending:
            return None
        self.ids.add(parameter_id)
        return self.pending.pop(0)


class GuardedTuner(Tuner):
    """A built-in NNI tuner behind seeds and an event-order guard."""

    def __init__(self, tuner: str = "TPE", tuner_args: dict[str, Any] | None = None,
                 seeds: list[dict[str, Any]] | None = None, optimize_mode: str = "maximize") -> None:
        module_name, class_name, defaults = BUILTIN_TUNERS[tuner]
        cls = getattr(importlib.import_module(module_name), class_name)
        args = {**defaults, "optimize_mode": optimize_mode, **(tuner_args or {})}
        self.inner = cls(**args)
        self.seeds = _SeedQueue(seeds)
        self.reported: set[int] = set()
        self.held_ends: dict[int, bool] = {}

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.inner.update_search_space(search_space)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        seed = self.seeds.take(parameter_id)
        return seed if seed is not None else self.inner.generate_parameters(parameter_id, **kwargs)

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        self.reported.add(parameter_id)
        if parameter_id in self.seeds.ids:
            self._import(parameters, value)
        else:
            try:
                self.inner.receive_trial_result(parameter_id, parameters, value, **kwargs)
            except KeyError:  # the inner tuner forgot the parameters: keep the result anyway
                _logger.warning("tuner lost parameter %s; result imported instead", parameter_id)
                self._import(parameters, value)
        if parameter_id in self.held_ends:
            self.inner.trial_end(parameter_id, self.held_ends.pop(parameter_id))

    def _import(self, parameters: dict[str, Any], value: Any) -> None:
        try:
            self.inner.import_data([{"parameter": parameters, "value": value}])
        except (AttributeError, NotImplementedError, KeyError, ValueError):
            _logger.info("%s cannot import results; a seed's result is not fed to it", type(self.inner).__name__)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        if success and parameter_id not in self.reported:
            self.held_ends[parameter_id] = success  # the metric is still on its way
            return
        if parameter_id not in self.seeds.ids:
            self.inner.trial_end(parameter_id, success, **kwargs)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        self.inner.import_data(data)


class MultiObjectiveTuner(Tuner):
    """Optuna's multi-objective samplers inside NNI.

    ``objectives`` are ``[metric, direction]`` pairs read from the trial's metric dict;
    ``constraints`` are ``[metric, max, min]`` triples (``None`` for an open side) recorded with
    Optuna 5's ``set_constraint``. Failed trials are told as failed, so the sampler moves on.
    """

    def __init__(self, objectives: list[list[str]], constraints: list[list[Any]] | None = None,
                 sampler: str = "NSGAII", sampler_args: dict[str, Any] | None = None,
                 seeds: list[dict[str, Any]] | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.objectives = [(name, direction) for name, direction in objectives]
        self.constraints = [Constraint(*c) for c in constraints or []]
        self.study = optuna.create_study(directions=[d for _, d in self.objectives],
                                         sampler=make_sampler(Algorithm(name=sampler, args=sampler_args or {}),
                                                              key="tuner"))
        for seed in seeds or []:
            self.study.enqueue_trial(seed, user_attrs={"seed": True})
        self.distributions: dict[str, Any] = {}
        self.trials: dict[int, Any] = {}

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.distributions = {name: self.optuna.distributions.CategoricalDistribution(spec["_value"])
                              for name, spec in search_space.items()}

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        trial = self.study.ask(self.distributions)
        self.trials[parameter_id] = trial
        return dict(trial.params)

    def _values(self, value: Any) -> list[float]:
        if not isinstance(value, dict):
            raise ValueError(f"trial metric must be a dict with {[n for n, _ in self.objectives]}, got {value!r}")
        return [float(value[name]) for name, _ in self.objectives]

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        trial = self.trials.pop(parameter_id, None)
        if trial is None:
            return
        for constraint in self.constraints:
            trial.set_constraint(constraint.name, constraint.violation(value[constraint.metric]))
        self.study.tell(trial, self._values(value))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        trial = self.trials.get(parameter_id)
        if trial is not None and not success:
            self.trials.pop(parameter_id)
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Finished results of a resumed experiment become completed trials of the study."""
        for record in data:
            value = record["value"]
            params = {k: v for k, v in record["parameter"].items() if k in self.distributions}
            if not isinstance(value, dict) or len(params) != len(self.distributions):
                continue
            self.study.add_trial(self.optuna.trial.create_trial(
                params=params, distributions=self.distributions, values=self._values(value)))


__all__ = ["BUILTIN_TUNERS", "GuardedTuner", "MultiObjectiveTuner"]
