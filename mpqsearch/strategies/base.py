"""The strategy interface: seed the search with policies, prune its choices.

A strategy looks at the workload before the search starts. ``seed`` returns policies the driver
runs first (Optuna's ``enqueue_trial``, an NNI tuner's first suggestions); ``prune`` returns a
narrower search space (for example: sensitive layers only keep their high-bit choices). Both
drivers accept both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..policy import Policy
from ..search_spaces import SearchSpace
from ..trials.evaluate import Evaluator


@dataclass
class StrategyContext:
    """What a strategy may read: the search space and an evaluator of the workload (its model,
    calibration and evaluation data, cached statistics)."""

    space: SearchSpace
    evaluator: Evaluator


class Strategy(ABC):
    """Base class: a strategy scores layers, seeds policies and prunes choices; one that does not
    rank layers returns no scores, one that does not seed returns no policies, one that does not
    prune returns the space as it is. Register a subclass with :func:`register_strategy`.
    ``mpqsearch seed`` prints all three; the report plots the scores."""

    name = "strategy"
    score_label = "score"
    """What :meth:`scores` holds, for table headers and axis titles (e.g. ``"PSNR drop (dB)"``)."""

    @abstractmethod
    def scores(self, context: StrategyContext) -> dict[str, float]:
        """Per-layer score in network order, higher meaning the layer deserves more bits; empty
        where the strategy does not rank layers."""

    @abstractmethod
    def seed(self, context: StrategyContext) -> list[Policy]:
        """Policies to evaluate before the search's own suggestions; each must lie in ``context.space``."""

    @abstractmethod
    def prune(self, context: StrategyContext) -> SearchSpace:
        """A narrowed copy of ``context.space`` (see :meth:`SearchSpace.restrict`), or the space itself."""


def nearest_choice(choices: Iterable[int], bits: int) -> int:
    """The choice closest to ``bits``, the higher one on a tie (never fewer bits than asked for
    when two are equally near)."""
    return min(choices, key=lambda b: (abs(b - bits), -b))


def policy_from_bits(space: SearchSpace, weight: Mapping[str, int] | int, act: Mapping[str, int] | int) -> Policy:
    """The policy of ``space`` closest to per-layer wanted bits (a mapping, or one value for all):
    every parameter takes its nearest choice (see :func:`nearest_choice`); a tied activation
    group takes the most bits any member wants. Layers missing from a mapping keep their highest
    choice."""
    def wanted(source: Mapping[str, int] | int, layer: str, choices: Iterable[int]) -> int:
        return source if isinstance(source, int) else source.get(layer, max(choices))

    searched = space.parameters()
    params: dict[str, int] = {}
    for n in space.names:
        if f"{n}/w" in searched:
            choices = space.weight_choices[n]
            params[f"{n}/w"] = nearest_choice(choices, wanted(weight, n, choices))
        name = space.act_param(n)
        if name in searched:
            choices = space.act_choices[n]
            params[name] = max(params.get(name, min(choices)), nearest_choice(choices, wanted(act, n, choices)))
    return space.policy_from_params(params)


def distinct(policies: Iterable[Policy]) -> list[Policy]:
    """``policies`` in order without repeats: the first of those with the same bits and scheme
    per layer and the same input bits is kept (with its provenance), the later ones dropped."""
    kept: list[Policy] = []
    for policy in policies:
        if all((policy.layers, policy.input_bits) != (k.layers, k.input_bits) for k in kept):
            kept.append(policy)
    return kept


_REGISTRY: dict[str, Callable[..., Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def decorate(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy(name: str, **args: Any) -> Strategy:
    """A registered strategy by name, built with ``args``; ``ValueError`` naming what exists."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(strategy_names())}")
    try:
        return _REGISTRY[name](**args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"strategy {name!r}: bad arguments: {err}") from None
