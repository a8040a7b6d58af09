"""The strategy interface: seed the search with policies, prune its choices.

A strategy looks at the workload before the search starts. ``seed`` returns policies the driver
runs first (Optuna's ``enqueue_trial``, an NNI tuner's first suggestions); ``prune`` returns a
narrower search space (for example: sensitive layers only keep their high-bit choices). Both
drivers accept both.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable
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
    """Base class: override ``seed``, ``prune`` or both."""

    name = "strategy"

    def seed(self, context: StrategyContext) -> list[Policy]:
        """Policies to evaluate before the search's own suggestions; each must lie in ``context.space``."""
        return []

    def prune(self, context: StrategyContext) -> SearchSpace:
        """A narrowed copy of ``context.space`` (see :meth:`SearchSpace.restrict`)."""
        return context.space


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
    except TypeError as err:
        raise ValueError(f"strategy {name!r}: bad arguments: {err}") from None
