"""The samplers layer on tiny synthetic spaces (no torch, no trial): the sensitivity-model
search, no repeated policies, per-trial reseeding (resume continues), seeds in NSGA-II's
population, record answers of repeats, and the same sequence from the Optuna driver's trial loop
and the NNI multi-objective tuner."""

import itertools
from types import SimpleNamespace

import optuna
import pytest

from mpqsearch.experiments.config import Algorithm, ConfigError
from mpqsearch.experiments.drivers.nni_tuners.mpqsearch_tuners import MultiObjectiveTuner
from mpqsearch.experiments.drivers.optuna import run_trials, spent
from mpqsearch.experiments.samplers import (
    MODEL,
    SAMPLERS,
    DistinctSampler,
    ModelInputs,
    SamplerContext,
    make_sampler,
    population_size,
)

CHOICES = {"a/w": [2, 4, 8], "a/a": [4, 8], "b/w": [2, 4, 8], "c/w": [2, 4, 8]}
NAMES = list(CHOICES)
LOSS = {"a/w": {2: 0.30, 4: 0.05}, "a/a": {4: 0.02}, "b/w": {2: 0.10, 4: 0.01}, "c/w": {2: 0.02, 4: 0.002}}
SIZE = {"a/w": 1.0, "a/a": 0.0, "b/w": 3.0, "c/w": 2.0}  # bytes per bit


def metric(params):
    """An almost additive accuracy (a small interaction between a and b) to maximize."""
    value = 1.0 - sum(LOSS[n].get(params[n], 0.0) for n in NAMES)
    return value - (0.01 if params["a/w"] == 2 and params["b/w"] == 2 else 0.0)


def size(params):
    return 10.0 + sum(SIZE[n] * params[n] for n in NAMES)


def inputs(prior=True):
    top = {n: max(c) for n, c in CHOICES.items()}
    costs = {n: [size({**top, n: c}) - size(top) for c in cs] for n, cs in CHOICES.items()}
    loss = {n: [LOSS[n].get(c, 0.0) * (0.5 if prior else 0.0) for c in cs] for n, cs in CHOICES.items()}
    return ModelInputs({n: list(c) for n, c in CHOICES.items()}, ["measured", "cost"], [0.0, size(top)],
                       {"1": costs}, {"0": loss})


def context(budget=20, seeds=0):
    return SamplerContext({n: list(c) for n, c in CHOICES.items()}, budget, seeds, inputs())


def _outcome(params):
    values = [metric(params), size(params)]
    return SimpleNamespace(metrics={"top1": values[0], "size_bytes": values[1]}, values=values, violations={},
                           scalar=values[0], result=SimpleNamespace(timings={}, latency=None, latency_isolation=""))


class FakeSetup:
    """What the Optuna driver's trial loop uses of a setup; a trial is the two functions above."""

    def __init__(self, budget):
        self.config = SimpleNamespace(budget=SimpleNamespace(max_trials=budget))
        self.space = SimpleNamespace(parameters=lambda: dict(CHOICES))
        self.evaluated = []

    def run_trial(self, params):
        self.evaluated.append(tuple(params[n] for n in NAMES))
        return _outcome(params)


def _study(name="NSGAII", seed=0, budget=20, seeds=(), **args):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.sampler = make_sampler(Algorithm(name=name, args={"seed": seed, **args}),
                                 context=context(budget, len(seeds)))
    for s in seeds:
        study.enqueue_trial(s, skip_if_exists=True)
    return study


def _drive(study, budget):
    setup = FakeSetup(budget)
    run_trials(setup, study, None, None)
    return setup.evaluated


def _true_front():
    points = [dict(zip(NAMES, v, strict=False)) for v in itertools.product(*CHOICES.values())]
    front = []
    for p in points:
        if not any(metric(q) >= metric(p) and size(q) <= size(p) and (metric(q), size(q)) != (metric(p), size(p))
                   for q in points):
            front.append(tuple(p[n] for n in NAMES))
    return set(front)


def test_every_sampler_is_selectable_by_name_and_the_model_is_one():
    assert MODEL == "SensitivityModel" and MODEL in SAMPLERS
    for name in SAMPLERS:
        assert isinstance(make_sampler(Algorithm(name=name, args={"seed": 1}), context=context()), DistinctSampler)
    with pytest.raises(ConfigError, match="sampler.args.inputs"):
        make_sampler(Algorithm(name=MODEL, args={"inputs": {}}))
    with pytest.raises(ConfigError, match="ridge"):
        make_sampler(Algorithm(name=MODEL, args={"ridge": -1}))
    with pytest.raises(ConfigError, match="needs the experiment's sampler inputs"):
        make_sampler(Algorithm(name=MODEL), context=SamplerContext(dict(CHOICES), 10))


def test_the_model_search_starts_at_the_corners_never_repeats_and_finds_the_front():
    evaluated = _drive(_study(MODEL), 20)
    assert evaluated[0] == (8, 8, 8, 8)  # every parameter at its highest choice
    assert evaluated[1] == (2, 8, 2, 2)  # the cheapest: weights lowest, the free activation highest
    assert len(set(evaluated)) == len(evaluated) == 20
    front = _true_front()
    assert len(front & set(evaluated)) >= 0.9 * len(front)  # 20 of 54 policies


def test_the_model_search_is_deterministic_and_a_resume_continues_it():
    whole = _drive(_study(MODEL, seed=3), 16)
    assert _drive(_study(MODEL, seed=3), 16) == whole
    study = _study(MODEL, seed=3)
    first = _drive(study, 7)
    study.sampler = make_sampler(Algorithm(name=MODEL, args={"seed": 3}), context=context(16))  # rebuilt
    assert first + _drive(study, 16) == whole


@pytest.mark.parametrize("name", ["NSGAII", "TPE", "Random"])
def test_stock_samplers_repeat_nothing_and_resume_without_replaying(name):
    whole = _drive(_study(name, seed=5), 30)
    assert len(set(whole)) == 30
    study = _study(name, seed=5)
    first = _drive(study, 12)
    study.sampler = make_sampler(Algorithm(name=name, args={"seed": 5}), context=context(30))
    assert first + _drive(study, 30) == whole


def test_seeds_enter_nsga2_population_of_a_size_suited_to_the_budget():
    assert population_size(100, 2) == 9 and population_size(20, 2) == 4 and population_size(30, 8) == 8
    seeds = [dict(zip(NAMES, (8, 8, 8, 8), strict=False)), dict(zip(NAMES, (2, 8, 2, 2), strict=False))]
    study = _study("NSGAII", seeds=seeds, budget=12)
    _drive(study, 12)
    key = optuna.samplers.NSGAIISampler._GENERATION_KEY
    trials = study.get_trials()
    assert [t.system_attrs.get(key) for t in trials[:2]] == [0, 0]
    assert max(t.system_attrs[key] for t in trials) >= 1


def test_a_repeated_seed_is_answered_from_its_record_and_spends_no_budget():
    study = _study("Random", budget=6)
    evaluated = _drive(study, 6)
    study.enqueue_trial(dict(zip(NAMES, evaluated[0], strict=False)))  # e.g. a strategy's seed met after a resume
    evaluated += _drive(study, 7)
    trials = study.get_trials()
    repeat = trials[6]
    assert repeat.user_attrs["repeat_of"] == 0 and repeat.values == trials[0].values
    assert len(evaluated) == 7 and len(set(evaluated)) == 7  # the repeat evaluated nothing
    assert spent(study) == 7 and len(trials) == 8


@pytest.mark.parametrize("name", [MODEL, "NSGAII", "TPE"])
def test_the_nni_tuner_and_the_optuna_driver_propose_the_same_sequence(name):
    seeds = [dict(zip(NAMES, (8, 8, 8, 8), strict=False))]
    optuna_run = _drive(_study(name, seed=7, budget=18, seeds=seeds), 18)
    tuner = MultiObjectiveTuner([["top1", "maximize"], ["size_bytes", "minimize"]], sampler=name,
                                sampler_args={"seed": 7}, seeds=seeds, context=context(18, 1).to_dict())
    tuner.update_search_space({n: {"_type": "choice", "_value": c} for n, c in CHOICES.items()})
    nni_run = []
    for parameter_id in range(18):  # one at a time, in NNI's order
        params = tuner.generate_parameters(parameter_id)
        nni_run.append(tuple(params[n] for n in NAMES))
        tuner.receive_trial_result(parameter_id, params, {"default": 0.0, **_outcome(params).metrics})
        tuner.trial_end(parameter_id, True)
    assert nni_run == optuna_run
