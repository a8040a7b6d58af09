"""Which policies to try: strategies that seed and prune the search (see :mod:`.base`)."""

from . import channel_ratio, gamma, importance, sensitivity, uniform  # noqa: F401  (register the built-ins)
from .base import (
                   Strategy,
                   StrategyContext,
                   distinct,
                   get_strategy,
                   nearest_choice,
                   policy_from_bits,
                   register_strategy,
                   strategy_names,
)

__all__ = ["Strategy", "StrategyContext", "distinct", "get_strategy", "nearest_choice", "policy_from_bits",
           "register_strategy", "strategy_names"]
