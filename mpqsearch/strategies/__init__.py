"""Which policies to try: strategies that seed and prune the search (see :mod:`.base`)."""

from . import uniform  # noqa: F401  (registers the built-in strategies)
from . import gamma  # noqa: F401
from . import channel_ratio  # noqa: F401
from . import importance  # noqa: F401
from . import sensitivity  # noqa: F401
from .base import (Strategy, StrategyContext, get_strategy, nearest_choice, policy_from_bits, register_strategy,
                   strategy_names)

__all__ = ["Strategy", "StrategyContext", "get_strategy", "nearest_choice", "policy_from_bits", "register_strategy",
           "strategy_names"]
