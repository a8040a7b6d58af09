"""Samplers by name, for the Optuna driver and the NNI multi-objective tuner alike (one builder, so
the same experiment file gives the same sampler in both).

``SensitivityModel`` (:mod:`.model`) is mpqsearch's own search and the examples' default: it met
the search-efficiency targets on both benchmark spaces where no stock sampler came near. The stock
ones are Optuna's, with three changes made here when the sampler is built for a run (a
:class:`SamplerContext` given):

- every sampler is wrapped in :class:`~.distinct.DistinctSampler`: no policy is proposed twice,
  and every trial reseeds the sampler from (seed, trial number), so ``resume`` continues the
  stream instead of replaying it and both drivers propose the same sequence;
- ``NSGAII`` is :class:`~.distinct.SeededNSGAIISampler` (seed policies enter its population) with
  a population suited to the budget when none is given: a tenth of the trials left after the
  seeds, at least 4 (Optuna's 50 made every budget up to 50 trials plain random search);
- ``TPE`` treats the seeds as its start-up trials (``n_startup_trials``: the number of seeds, at
  least 2 and at most 10) and is multivariate unless told otherwise (Optuna's independent TPE
  repeated itself on 40-60 % of its trials).

Torch-free (the NNI tuner process imports it). A sampler's arguments come from the experiment
file; any the sampler refuses is a one-line :class:`~..config.ConfigError` naming the key.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from ..config import Algorithm, ConfigError
from .distinct import DistinctSampler, SeededNSGAIISampler
from .model import ModelInputs, SensitivityModelSampler

MODEL = "SensitivityModel"
SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    MODEL: SensitivityModelSampler,
    "NSGAII": SeededNSGAIISampler,
    "NSGAIII": optuna.samplers.NSGAIIISampler,
    "TPE": optuna.samplers.TPESampler,
    "Random": optuna.samplers.RandomSampler,
    "GP": optuna.samplers.GPSampler,
}
TUNER_SAMPLERS = (MODEL, "NSGAII", "NSGAIII", "TPE", "Random")
"""Those the NNI multi-objective tuner runs: GP imports torch, which can miss NNI's 10 seconds
for a tuner to connect."""
MAX_REDRAWS = {"GP": 2}
"""Redraws of a repeated proposal; each is a full ``sample_relative`` (for GP a model fit)."""


@dataclass
class SamplerContext:
    """What a run tells the sampler: the parameters and their choices (in the space's order), the
    budget, how many seed policies run first, and the :class:`ModelInputs` the model needs."""

    choices: dict[str, list[Any]]
    budget: int
    seeds: int = 0
    inputs: ModelInputs | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def distributions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        return {n: optuna.distributions.CategoricalDistribution(c) for n, c in self.choices.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"choices": self.choices, "budget": self.budget, "seeds": self.seeds,
                "inputs": self.inputs.to_dict() if self.inputs else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplerContext:
        inputs = data.get("inputs")
        return cls({n: list(c) for n, c in data["choices"].items()}, int(data["budget"]), int(data.get("seeds", 0)),
                   ModelInputs.from_dict(inputs) if inputs else None)


def population_size(budget: int, seeds: int) -> int:
    """NSGA-II's population for ``budget`` trials of which ``seeds`` are seeds: a tenth of the
    rest, at least 4, and never smaller than the seeds (generation 0 holds them all)."""
    return max(4, (budget - seeds) // 10, seeds)


def _defaults(name: str, args: dict[str, Any], context: SamplerContext) -> dict[str, Any]:
    if name == "NSGAII" and "population_size" not in args:
        args["population_size"] = population_size(context.budget, context.seeds)
    if name == "TPE":
        args.setdefault("n_startup_trials", min(10, max(2, context.seeds)))
        args.setdefault("multivariate", True)
    if name == MODEL:
        args["inputs"] = context.inputs
    return args


def make_sampler(algorithm: Algorithm, key: str = "sampler", source: str = "<config>",
                 context: SamplerContext | None = None) -> optuna.samplers.BaseSampler:
    """The sampler ``algorithm`` names, built with its args. With ``context`` (a run), built for
    that run as the module docstring says; without, only built to check its arguments. ``key``
    and ``source`` name where the algorithm was configured, for errors."""
    if algorithm.name not in SAMPLERS:
        raise ConfigError(f"{source}: {key}.name: unknown sampler {algorithm.name!r} "
                          f"(available: {', '.join(SAMPLERS)})")
    args: dict[str, Any] = dict(algorithm.args)
    seed = args.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{source}: {key}.args.seed: must be an integer, got {seed!r}")
    if algorithm.name == MODEL and "inputs" in args:
        raise ConfigError(f"{source}: {key}.args.inputs: computed by the experiment, not configured")
    if context is not None:
        args = _defaults(algorithm.name, args, context)
    try:
        with warnings.catch_warnings():  # multivariate TPE and GP are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = SAMPLERS[algorithm.name](**args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {key}.args: {algorithm.name}: {err}") from None
    if context is None:
        return sampler
    if algorithm.name == MODEL and context.inputs is None:
        raise ConfigError(f"{source}: {key}.name: {MODEL} needs the experiment's sampler inputs")
    return DistinctSampler(sampler, context.distributions, seed=seed,
                           max_redraws=MAX_REDRAWS.get(algorithm.name, 32))


__all__ = ["MODEL", "SAMPLERS", "TUNER_SAMPLERS", "DistinctSampler", "ModelInputs", "SamplerContext",
           "SeededNSGAIISampler", "SensitivityModelSampler", "make_sampler", "population_size"]
