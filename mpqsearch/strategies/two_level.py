"""Two-level precision: sensitive layers get (or keep only) the high bits, the others the low.

Seed 000 gives the stages it finds sensitive higher bits and the rest lower ones; the strategies
that split layers that way (``channel_ratio``, ``sensitivity``) share these helpers for their
options, their seed policies and their pruned spaces.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from ..policy import Policy
from ..quant.spec import check_bits
from ..search_spaces import SearchSpace
from .base import policy_from_bits

BitPair = tuple[int, int]
"""``(weight_bits, act_bits)``."""


def bit_pair(value: Any, option: str) -> BitPair:
    """``value`` as a valid ``(weight_bits, act_bits)`` pair; ``ValueError`` naming ``option``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{option} must be a [weight_bits, act_bits] pair, got {value!r}")
    try:
        return check_bits(value[0]), check_bits(value[1])
    except ValueError as err:
        raise ValueError(f"{option}: {err}") from None


def bit_pairs(values: Any, option: str) -> list[BitPair]:
    """A non-empty list of :func:`bit_pair` s."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{option} must be a non-empty list of [weight_bits, act_bits] pairs, got {values!r}")
    return [bit_pair(v, f"{option}[{i}]") for i, v in enumerate(values)]


def two_level_policy(space: SearchSpace, sensitive: Collection[str], high: BitPair, low: BitPair) -> Policy:
    """The policy of ``space`` nearest to: ``sensitive`` layers at ``high``, all others at ``low``
    (a tied activation group takes the most bits any member wants; see :func:`policy_from_bits`)."""
    weight = {n: high[0] if n in sensitive else low[0] for n in space.names}
    act = {n: high[1] if n in sensitive else low[1] for n in space.names}
    return policy_from_bits(space, weight, act)


def keep_high(space: SearchSpace, sensitive: Iterable[str], high: BitPair) -> SearchSpace:
    """``space`` where every ``sensitive`` layer keeps only its weight and activation choices at
    or above ``high`` (its highest choice where none is that high); a tied group is narrowed as
    a whole, since its members share one activation."""
    def at_least(choices: Sequence[int], bits: int) -> list[int]:
        return [b for b in choices if b >= bits] or [max(choices)]

    layers = list(sensitive)
    return space.restrict(weight={n: at_least(space.weight_choices[n], high[0]) for n in layers},
                          act={n: at_least(space.act_choices[n], high[1]) for n in layers})
