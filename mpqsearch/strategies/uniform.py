"""Uniform-precision seeds: the baselines every mixed policy must beat."""

from __future__ import annotations

from collections.abc import Sequence

from ..policy import Policy
from ..search_spaces import SearchSpace
from .base import Strategy, StrategyContext, policy_from_bits, register_strategy
from .two_level import bit_pair


@register_strategy("uniform")
class UniformStrategy(Strategy):
    """Seeds one uniform policy per ``(weight_bits, act_bits)`` pair (default W8A8, W6A8, W4A8).

    Where a parameter does not offer the pair's bits (an override, a pruned layer), it takes its
    nearest choice, the higher one on a tie, so seeds always lie in the (possibly pruned) space.
    """

    def __init__(self, bits: Sequence[Sequence[int]] = ((8, 8), (6, 8), (4, 8))) -> None:
        self.bits = [tuple(pair) for pair in bits]
        if any(len(pair) != 2 for pair in self.bits):
            raise TypeError(f"bits must be [weight_bits, act_bits] pairs, got {bits!r}")
        self.bits = [bit_pair(pair, f"bits[{i}]") for i, pair in enumerate(self.bits)]

    def scores(self, context: StrategyContext) -> dict[str, float]:
        return {}  # every layer alike

    def seed(self, context: StrategyContext) -> list[Policy]:
        return [policy_from_bits(context.space, weight, act) for weight, act in self.bits]

    def prune(self, context: StrategyContext) -> SearchSpace:
        return context.space
