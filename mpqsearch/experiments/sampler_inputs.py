"""What a run tells its sampler (:class:`~.samplers.SamplerContext`), computed from the setup.

For the ``SensitivityModel`` sampler also its :class:`~.samplers.ModelInputs`:

- cost objectives: an objective whose metric (size, BOPs, ...) is exactly additive over the
  parameters is computed for every one-parameter change of the all-highest policy and checked on
  a few other policies; one that is not additive (BOPs multiply weight and activation bits) is
  left to the model as measured;
- the prior of the primary metric (or its ``_drop``): the ``sensitivity`` strategy's per-layer
  drops (one layer at W4A8, every other float), scaled to each weight choice ``b`` by
  ``E(b) / E(4)`` with ``E(b) = ||Q_b(W) - W||^2`` of the layer's weights (HAWQ's perturbation
  term, no evaluation); activations and other measured objectives start at zero.

The probes cost one evaluation per layer; the inputs are kept in the trial cache, so the
workers, NNI's tuner and a resume never probe again.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from ..policy import Policy
from ..search_spaces import SearchSpace
from ..search_spaces.costs import bit_operations, fp32_size_bytes, model_size_bytes
from ..strategies import StrategyContext, get_strategy
from .config import ExperimentConfig
from .samplers import MODEL, ModelInputs, SamplerContext
from .setup import ExperimentSetup

PROBE_BITS = (4, 8)
ADDITIVE_CHECKS = 8
"""Random policies on which an objective's one-parameter costs must add up exactly."""


def sampler_name(config: ExperimentConfig) -> str:
    """The sampler the experiment runs: the Optuna driver's ``sampler``, the NNI multi-objective
    tuner's ``tuner.args.sampler``."""
    if config.driver == "nni":
        return str(config.tuner.args.get("sampler", "NSGAII"))
    return config.sampler.name


def _cost_functions(space: SearchSpace) -> dict[str, Any]:
    fp32 = fp32_size_bytes(space)
    ops = bit_operations(space, Policy.uniform(space, 32, 32))
    return {"size_bytes": lambda p: float(model_size_bytes(space, p)),
            "size_ratio": lambda p: model_size_bytes(space, p) / fp32,
            "bops": lambda p: float(bit_operations(space, p)),
            "bops_ratio": lambda p: bit_operations(space, p) / ops}


def _additive(space: SearchSpace, choices: dict[str, list[Any]],
              fn: Any) -> tuple[float, dict[str, list[float]]] | None:
    """``fn``'s value as base + one term per parameter choice, if it adds up exactly."""
    top = {n: max(c) for n, c in choices.items()}
    base = fn(space.policy_from_params(top))
    terms = {n: [fn(space.policy_from_params({**top, n: c})) - base for c in cs] for n, cs in choices.items()}
    rng = random.Random(0)
    checks = [{n: min(c) for n, c in choices.items()}] + [
        {n: rng.choice(c) for n, c in choices.items()} for _ in range(ADDITIVE_CHECKS)]
    for params in checks:
        predicted = base + sum(terms[n][choices[n].index(c)] for n, c in params.items())
        actual = fn(space.policy_from_params(params))
        if abs(predicted - actual) > 1e-9 * max(1.0, abs(actual)):
            return None
    return base, terms


@torch.no_grad()
def weight_noise(setup: ExperimentSetup, bits: list[int]) -> dict[str, dict[int, float]]:
    """``||Q_b(W) - W||^2`` per layer and weight bit width, from the quantized copies."""
    space, out = setup.space, {n: {} for n in setup.space.names}
    for b in bits:
        modules = dict(setup.evaluator.quantize(Policy.uniform(space, b, 8)).named_modules())
        for n in space.names:
            module = modules[n]
            original = module.parametrizations.weight.original
            out[n][b] = float(((module.weight - original) ** 2).sum())
    return out


def _prior(setup: ExperimentSetup, choices: dict[str, list[Any]]) -> dict[str, list[float]]:
    strategy = get_strategy("sensitivity", unit="layer", probe_bits=list(PROBE_BITS))
    drops = strategy.unit_drops(StrategyContext(setup.space, setup.evaluator))
    weight_bits = sorted({b for n, c in choices.items() if n.endswith("/w") for b in c} | {PROBE_BITS[0]})
    noise = weight_noise(setup, [b for b in weight_bits if b < 32])
    prior = {}
    for name, cs in choices.items():
        layer, _, kind = name.rpartition("/")
        if kind != "w" or layer not in drops:
            continue
        e, s, top = noise[layer], max(drops[layer], 0.0), max(cs)
        prior[name] = [0.0 if c == top or c >= 32 or e[PROBE_BITS[0]] <= 0 else s * e[c] / e[PROBE_BITS[0]]
                       for c in cs]
    return prior


def model_inputs(setup: ExperimentSetup) -> ModelInputs:
    """The :class:`ModelInputs` of ``setup``'s space and objectives, from the cache when there."""
    choices = {n: list(c) for n, c in setup.space.parameters().items()}
    names = setup.objectives.names
    key = repr((sorted(choices.items()), names, setup.space.base))
    cache = setup.evaluator.cache
    stored = cache.load("sampler_inputs") if cache else None
    if stored is not None and stored.get("key") == key:
        return ModelInputs.from_dict(stored["inputs"])
    functions = _cost_functions(setup.space)
    kinds, base, costs, prior = [], [], {}, {}
    primary = setup.workload.primary_metric
    for j, name in enumerate(names):
        found = _additive(setup.space, choices, functions[name]) if name in functions else None
        if found is not None:
            kinds.append("cost")
            base.append(found[0])
            costs[str(j)] = found[1]
            continue
        kinds.append("measured")
        base.append(0.0)
        if name in (primary, f"{primary}_drop"):
            prior[str(j)] = _prior(setup, choices)
    inputs = ModelInputs(choices, kinds, base, costs, prior)
    if cache:
        cache.save("sampler_inputs", {"key": key, "inputs": inputs.to_dict()})
    return inputs


def sampler_context(setup: ExperimentSetup, seeds: int) -> SamplerContext:
    """The context of the experiment's sampler; model inputs only for the model sampler."""
    choices = {n: list(c) for n, c in setup.space.parameters().items()}
    inputs = model_inputs(setup) if sampler_name(setup.config) == MODEL else None
    return SamplerContext(choices, setup.config.budget.max_trials, seeds, inputs)


__all__ = ["model_inputs", "sampler_context", "sampler_name", "weight_noise"]
