"""From an experiment file to what every driver needs: workload, space, seeds, objectives.

Both drivers, and every trial process, build the same :class:`ExperimentSetup` from the same
file, so a trial evaluates exactly what the launcher planned. Prune strategies can be costly (one
probe trial per layer): with a cache directory the first setup stores the pruned choices there,
and every later one (trial processes, workers, a resume) reads them back. The launcher also writes
the searched space and the strategies' scores into the run directory (:meth:`ExperimentSetup.record`),
from which a report rebuilds policies without evaluating anything (:func:`recorded_space`).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..objectives import Objective, ObjectiveSet, available_metrics
from ..policy import Policy
from ..search_spaces import SearchSpace
from ..strategies import Strategy, StrategyContext, get_strategy
from ..trials.evaluate import Evaluator, TrialResult
from ..trials.isolation import TrialLock
from ..trials.latency import backend_options
from ..workloads import Workload, get_workload
from .config import ConfigError, ExperimentConfig
from .runs import read_json, save_json

SPACE_FILE = "space.json"


@dataclass
class TrialOutcome:
    """One finished trial as drivers record it."""

    result: TrialResult
    metrics: dict[str, float]
    values: list[float]
    violations: dict[str, float]
    scalar: float


@dataclass
class ExperimentSetup:
    config: ExperimentConfig
    workload: Workload
    evaluator: Evaluator
    space: SearchSpace
    objectives: ObjectiveSet

    def warm_up(self) -> None:
        """Compute once, before any trial, what trials share through the cache: the FP32
        metrics, the calibration statistics and whatever the latency backend measures ahead."""
        self.evaluator.reference  # noqa: B018 - the properties compute and store
        self.evaluator.act_stats  # noqa: B018
        self.evaluator.prepare_latency()

    def seeds(self) -> list[Policy]:
        """The seed policies of every configured seed strategy, each marked with its strategy:
        distinct (the same parameters after pruning and ties count once, the first strategy's),
        the first :meth:`seed_cap` of them in the strategies' order."""
        context = StrategyContext(self.space, self.evaluator)
        lists = []
        for i, ref in enumerate(self.config.strategies.seed):
            strategy = _strategy(self.config, "seed", i, ref.name, ref.args)
            _keep_scores(strategy, context)
            policies = strategy.seed(context)
            for policy in policies:
                policy.provenance["strategy"] = strategy.name
            lists.append(policies)
        chosen, keys = [], set()
        for policy in itertools.chain.from_iterable(lists):
            key = tuple(sorted(self.space.params_from_policy(policy).items()))
            if key not in keys and len(chosen) < self.seed_cap:
                keys.add(key)
                chosen.append(policy)
        return chosen

    @property
    def seed_cap(self) -> int:
        """At most ``strategies.seed_share`` of the budget runs seeds (but two, the usual pair of
        uniform corners, unless the budget is smaller): 13 gamma seeds took almost half of a
        30-trial budget, and the samplers' own proposals did better."""
        budget = self.config.budget.max_trials
        return min(budget, max(2, math.floor(round(self.config.strategies.seed_share * budget, 9))))

    def strategy_scores(self) -> dict[str, dict[str, float]]:
        """Per-layer scores of the strategies that seeded or pruned this experiment (``{"name:
        what the score is": {layer: score}}``), as kept in the cache when they ran."""
        return dict(self.evaluator.cache.load("strategy_scores") or {}) if self.evaluator.cache else {}

    def record(self, run_dir: Path) -> None:
        """Write the searched space's choices and the strategies' scores into ``run_dir``."""
        save_json(run_dir, SPACE_FILE, {"weight": self.space.weight_choices, "act": self.space.act_choices,
                                        "strategy_scores": self.strategy_scores()})

    def run_trial(self, params: dict[str, Any]) -> TrialOutcome:
        """Evaluate the policy of one parameter assignment; raises TrialError on failure."""
        policy = self.space.policy_from_params(params)
        result = self.evaluator.evaluate(policy)
        metrics = result.flat_metrics()
        return TrialOutcome(result, metrics, self.objectives.values(metrics),
                            self.objectives.violations(metrics), self.objectives.scalarize(metrics))


def _strategy(config: ExperimentConfig, phase: str, index: int, name: str, args: dict[str, Any]) -> Strategy:
    try:
        return get_strategy(name, **args)
    except ValueError as err:
        raise ConfigError(f"{config.source}: strategies.{phase}[{index}]: {err}") from None


def _keep_scores(strategy: Strategy, context: StrategyContext) -> None:
    """Store ``strategy``'s per-layer scores in the cache, for the report."""
    scores = strategy.scores(context)
    cache = context.evaluator.cache
    if scores and cache:
        cache.save("strategy_scores", {**(cache.load("strategy_scores") or {}),
                                       f"{strategy.name}: {strategy.score_label}": scores})


def load_workload(config: ExperimentConfig) -> Workload:
    try:
        return get_workload(config.workload)
    except ValueError as err:
        raise ConfigError(f"{config.source}: workload: {err}") from None


def build_space(config: ExperimentConfig, workload: Workload, model: nn.Module) -> SearchSpace:
    """The search space the experiment file describes, before pruning."""
    options = config.search_space
    try:
        space = SearchSpace.from_model(
            model, workload.example_input, weight_bits=options.weight_bits, act_bits=options.act_bits,
            include=options.include, exclude=options.exclude, overrides=options.overrides, base=options.base(),
            target=config.latency.target)
    except ValueError as err:
        raise ConfigError(f"{config.source}: search_space: {err}") from None
    if not space.parameters():
        raise ConfigError(f"{config.source}: search_space: nothing to search: every layer of {workload.name} is "
                          "excluded or has a single choice")
    return space


def build_setup(config: ExperimentConfig, cache_dir: str | os.PathLike | None = None,
                threads: int | None = None) -> ExperimentSetup:
    """Load the workload, build and prune the search space; configuration errors name the key.
    Nothing is written to ``cache_dir`` until something is computed."""
    workload = load_workload(config)
    latency_options = backend_options(config.latency.backend, config.latency.threads)  # the policies carry the target
    shared = cache_dir is not None and config.budget.concurrency > 1
    lock = TrialLock(Path(cache_dir) / "trials.lock") if shared else None
    try:
        evaluator = Evaluator(workload, latency=config.latency.backend, latency_options=latency_options,
                              threads=threads, cache_dir=cache_dir, lock=lock)
    except ValueError as err:
        raise ConfigError(f"{config.source}: latency: {err}") from None
    space = build_space(config, workload, evaluator.model)
    objectives = objective_set(config, workload)
    for i, ref in enumerate(config.strategies.seed):  # their arguments are checked before any trial runs
        _strategy(config, "seed", i, ref.name, ref.args)
    return ExperimentSetup(config, workload, evaluator, _pruned(config, space, evaluator), objectives)


def recorded_space(config: ExperimentConfig, run_dir: Path | None) -> tuple[SearchSpace, dict[str, Any], Workload]:
    """The space an experiment searched, rebuilt from its file and the choices the launcher
    recorded in ``run_dir`` (no evaluation: the workload's model is only traced), the strategies'
    scores, and the workload. Without a record, the unpruned space."""
    workload = load_workload(config)
    space = build_space(config, workload, workload.build_model().eval())
    record = read_json(run_dir, SPACE_FILE) if run_dir is not None else None
    if not record:
        return space, {}, workload
    return space.restrict(weight=record["weight"], act=record["act"]), record.get("strategy_scores", {}), workload


def objective_set(config: ExperimentConfig, workload: Workload) -> ObjectiveSet:
    """The configured objectives (default: the workload's primary metric and ``size_ratio``) and
    constraints, checked against the metrics a trial of this workload reports."""
    objectives = list(config.objectives) or [
        Objective(workload.primary_metric, workload.directions[workload.primary_metric]),
        Objective("size_ratio", "minimize"),
    ]
    known = available_metrics(workload.directions)
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
    return ObjectiveSet(objectives, list(config.constraints))


def _pruned(config: ExperimentConfig, space: SearchSpace, evaluator: Evaluator) -> SearchSpace:
    """``space`` narrowed by the prune strategies in turn, computed once per cache (the stored
    choices are reused while the search space options and prune strategies stay the same)."""
    if not config.strategies.prune:
        return space
    key = repr((config.search_space.model_dump(), [ref.model_dump() for ref in config.strategies.prune]))
    stored = evaluator.cache.load("pruned_space") if evaluator.cache else None
    if stored is not None and stored["key"] == key:
        return space.restrict(weight=stored["weight"], act=stored["act"])
    for i, ref in enumerate(config.strategies.prune):
        strategy, context = _strategy(config, "prune", i, ref.name, ref.args), StrategyContext(space, evaluator)
        _keep_scores(strategy, context)
        space = strategy.prune(context)
    if evaluator.cache:
        evaluator.cache.save("pruned_space", {"key": key, "weight": dict(space.weight_choices),
                                              "act": dict(space.act_choices)})
    return space


__all__ = ["ExperimentSetup", "TrialOutcome", "build_setup", "build_space", "objective_set", "recorded_space"]
