"""NNI tuners of mpqsearch, loaded by NNI's dispatcher from this directory.

This file imports no torch (only torch-free parts of mpqsearch): NNI gives a tuner 10 seconds to
connect to its manager, and importing torch alone can take several on a busy 2-core machine.

- :class:`GuardedTuner` runs one of NNI's built-in tuners on the scalarized objective, hands out
  the seed policies first, and survives TPE's race (a trial's end reaching the tuner before its
  final metric, NNI issues #5689/#5739/#5798) by holding such an end back until the metric came.
- :class:`MultiObjectiveTuner` wraps a sampler of :mod:`mpqsearch.experiments.samplers` (the
  sensitivity-model search, NSGA-II, TPE, ...) in a study, so a real Pareto search runs inside
  NNI and shows in its web UI.

Resuming without rerunning a finished policy: NNI rebuilds a resumed experiment's tuner with the
same arguments, so a tuner that kept nothing would queue its seeds again and replay its sampler's
random stream from the same seed (10 trials held 5 distinct policies). Given a ``state_file`` in
the run directory, each tuner keeps what it handed out there: the multi-objective tuner its whole
Optuna study (a journal file: every trial with the sampler's own attributes, NSGA-II's
generations included), the guarded tuner the parameter sets (:mod:`.handed_out`). A resumed tuner
then queues the seeds only if none ran and asks again (up to ``max_reask`` times) when its sampler
proposes a policy it already handed out. The multi-objective tuner's sampler reseeds itself from
(seed, trial number) every trial, so a resume continues its stream exactly; the guarded tuner
continues with its seed offset by the trials it holds (a new stream, not a replay).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from nni.tuner import Tuner

from mpqsearch.experiments.config import Algorithm
from mpqsearch.experiments.drivers.nni_tuners.handed_out import HandedOut, params_key
from mpqsearch.experiments.samplers import SamplerContext, make_sampler
from mpqsearch.experiments.samplers.distinct import answer_from_record, recorded_trial
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
    """A built-in NNI tuner behind seeds, an event-order guard and a record of what it handed out."""

    def __init__(self, tuner: str = "TPE", tuner_args: dict[str, Any] | None = None,
                 seeds: list[dict[str, Any]] | None = None, optimize_mode: str = "maximize",
                 state_file: str | None = None, max_reask: int = 20) -> None:
        module_name, class_name, defaults = BUILTIN_TUNERS[tuner]
        cls = getattr(importlib.import_module(module_name), class_name)
        self.handed = HandedOut(state_file)
        args = {**defaults, "optimize_mode": optimize_mode, **(tuner_args or {})}
        if isinstance(args.get("seed"), int) and self.handed.count:
            args["seed"] += self.handed.count  # resumed: a new random stream, not a replay
        self.inner = cls(**args)
        self.seeds = _SeedQueue([seed for seed in seeds or [] if seed not in self.handed])
        self.max_reask = max_reask
        self.reported: set[int] = set()
        self.held_ends: dict[int, bool] = {}

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.inner.update_search_space(search_space)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        params = self.seeds.take(parameter_id)
        for _ in range(self.max_reask if params is None else 0):
            params = self.inner.generate_parameters(parameter_id, **kwargs)
            if params not in self.handed:
                break
            self.inner.trial_end(parameter_id, False)  # a policy already handed out: drop it, ask again
        self.handed.add(params)
        return params

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
    ``context``: the :class:`~mpqsearch.experiments.samplers.SamplerContext` (as a dict) the
    launcher computed, so that the sampler is built as the Optuna driver builds it (same sampler,
    same seed: the same policies in the same order). The seeds are queued at the first request,
    after a resumed experiment's ``import_data``, and only those not yet in the study. A proposal
    of a policy already evaluated is answered from its record (the sampler learns it, NNI never
    runs it) and the sampler is asked again.
    """

    def __init__(self, objectives: list[list[str]], constraints: list[list[Any]] | None = None,
                 sampler: str = "NSGAII", sampler_args: dict[str, Any] | None = None,
                 seeds: list[dict[str, Any]] | None = None, state_file: str | None = None,
                 max_reask: int = 20, context: dict[str, Any] | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.objectives = [(name, direction) for name, direction in objectives]
        self.constraints = [Constraint(*c) for c in constraints or []]
        self.max_reask = max_reask
        storage = (optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(state_file))
                   if state_file else None)
        directions = [d for _, d in self.objectives]
        self.study = optuna.create_study(
            study_name="tuner", storage=storage, directions=directions, load_if_exists=True,
            sampler=make_sampler(Algorithm(name=sampler, args=sampler_args or {}), key="tuner",
                                 context=SamplerContext.from_dict(context) if context else None))
        resumed = bool(self.study.user_attrs.get("seeded"))
        self.pending_seeds = None if resumed else list(seeds or [])
        if resumed:  # asked, never told: the previous manager's running trials, which NNI reruns
            for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                self.study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
                self.study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        self.distributions: dict[str, Any] = {}
        self.trials: dict[int, Any] = {}
        _logger.info("tuner state %s: %d trials held, resumed: %s", state_file, len(self.study.trials), resumed)

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.distributions = {name: self.optuna.distributions.CategoricalDistribution(spec["_value"])
                              for name, spec in search_space.items()}

    def _taken(self) -> set[str]:
        """Every policy handed out (and not merely queued), finished or running."""
        waiting = self.optuna.trial.TrialState.WAITING
        return {params_key(t.params) for t in self.study.get_trials(deepcopy=False) if t.state != waiting}

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if self.pending_seeds is not None:
            for seed in self.pending_seeds:
                self.study.enqueue_trial(seed, user_attrs={"seed": True}, skip_if_exists=True)
            self.study.set_user_attr("seeded", True)
            self.pending_seeds = None
        taken = self._taken()
        for _ in range(self.max_reask):
            trial = self.study.ask(self.distributions)
            if params_key(trial.params) not in taken:
                break
            recorded = recorded_trial(self.study, trial.number, trial.params)
            if recorded is not None:  # evaluated before: the sampler learns its record, NNI runs nothing
                self.study.tell(trial, answer_from_record(trial, recorded))
            else:  # running now: drop it, ask again
                trial.set_user_attr("duplicate", True)
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
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
        if kwargs.get("trial_job_id"):
            trial.set_user_attr("nni_trial", kwargs["trial_job_id"])
        for constraint in self.constraints:
            trial.set_constraint(constraint.name, constraint.violation(value[constraint.metric]))
        self.study.tell(trial, self._values(value))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        trial = self.trials.get(parameter_id)
        if trial is not None and not success:
            self.trials.pop(parameter_id)
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Finished results of a resumed experiment become completed trials of the study, unless
        the study already holds them (its own earlier trials, by NNI trial ID; results of the
        trials NNI reran, which carry no ID, by their parameters)."""
        trials = self.study.get_trials(deepcopy=False)
        known_ids = {t.user_attrs.get("nni_trial") for t in trials} - {None}
        complete = {params_key(t.params) for t in trials if t.state == self.optuna.trial.TrialState.COMPLETE}
        added = 0
        for record in data:
            value = record["value"]
            params = {k: v for k, v in record["parameter"].items() if k in self.distributions}
            if not isinstance(value, dict) or len(params) != len(self.distributions):
                continue
            job = record.get("trialJobId")
            if job in known_ids or (job is None and params_key(params) in complete):
                continue
            self.study.add_trial(self.optuna.trial.create_trial(
                params=params, distributions=self.distributions, values=self._values(value),
                user_attrs={"nni_trial": job, "imported": True}))
            complete.add(params_key(params))
            added += 1
        _logger.info("import_data: %d records, %d added", len(data), added)


__all__ = ["BUILTIN_TUNERS", "GuardedTuner", "MultiObjectiveTuner"]
