"""Sensitivity probes (seed 000): quantize one layer or stage at a time and watch the metric drop.

Seed 000 quantized single stages (or a few together) of SRGAN and ESRGAN to observe their
"quantization sensitivity": the error from quantizing different stages differs greatly. Here each
probe quantizes one unit (a layer, or a stage) at low bits with every other layer left in float,
and the drop of the workload's primary metric from FP32 ranks the units.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any
from weakref import WeakKeyDictionary

from ..policy import Policy
from ..quant.spec import FLOAT_BITS
from ..search_spaces import SearchSpace
from ..trials.evaluate import Evaluator
from .base import Strategy, StrategyContext, distinct, register_strategy
from .two_level import BitPair, bit_pair, bit_pairs, keep_high, two_level_policy

UNITS = ("layer", "stage")

_probe_cache: WeakKeyDictionary[Evaluator, dict[Hashable, dict[str, float]]] = WeakKeyDictionary()
"""Probe drops per evaluator, so that strategy instances sharing one (an experiment's prune and
seed phases build one each) probe once."""


def _fraction(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{option} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _count(fraction: float, total: int) -> int:
    """``ceil(fraction * total)``, immune to float noise (``0.1 * 30`` is ``3.0000000000000004``)."""
    return math.ceil(round(fraction * total, 9))


def _list(values: Any, option: str) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{option} must be a list, got {values!r}")
    return list(values)


def probe_policy(space: SearchSpace, members: Sequence[str], bits: BitPair) -> Policy:
    """``members`` at ``bits`` and every other layer float (32 bits), with ``space``'s other
    settings. The other layers of a tied group a member belongs to get the probe's activation
    bits with float weights: the group shares one activation quantizer, so quantizing a member's
    activation quantizes theirs. Probes need not lie in ``space``."""
    probed = set(members)
    shared = {m for n in members if space.layer(n).tied_group for m in space.tied_groups[space.layer(n).tied_group]}
    layers = {}
    for n in space.names:
        weight = bits[0] if n in probed else FLOAT_BITS
        act = bits[1] if n in probed or n in shared else FLOAT_BITS
        layers[n] = replace(space.base, weight_bits=weight, act_bits=act)
    return Policy(layers, space.fingerprint(), input_bits=space.input_bits)


@register_strategy("sensitivity")
class SensitivityStrategy(Strategy):
    """Ranks units (``unit: layer``, the default, or ``stage``) by the primary metric's drop from
    FP32 (its increase for a metric to minimize) when only that unit is quantized at
    ``probe_bits`` (default W4A8), measured by the context's evaluator without latency.

    Seeds: the ``k`` most sensitive units at ``high_bits`` (default W8A8), the rest at each pair
    of ``low_bits`` (default W4A8, W6A8), for every ``k`` of ``top_k`` and ``ceil(f * units)``
    for every ``f`` of ``top_fractions`` (default 0.1, 0.25, 0.5); repeats are dropped. Prune:
    the ``ceil(prune_fraction * units)`` most sensitive units (default a quarter) keep only
    choices at or above ``high_bits``.

    Choices where seed 000's abstract is silent: it names no bit widths, so the probe's W4A8 is
    the lowest uniform baseline of the project, where super-resolution drops measurably while
    8-bit activations stay at int8 runtimes' width; ties in the ranking keep network order;
    layers the space keeps in float are neither probed nor scored; ``scores`` gives each layer
    its unit's drop.
    """

    def __init__(self, unit: str = "layer", probe_bits: Sequence[int] = (4, 8), high_bits: Sequence[int] = (8, 8),
                 low_bits: Sequence[Sequence[int]] = ((4, 8), (6, 8)), top_k: Sequence[int] = (),
                 top_fractions: Sequence[float] = (0.1, 0.25, 0.5), prune_fraction: float = 0.25) -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.unit = unit
        self.probe_bits = bit_pair(probe_bits, "probe_bits")
        self.high_bits = bit_pair(high_bits, "high_bits")
        self.low_bits = bit_pairs(low_bits, "low_bits")
        self.top_k = _list(top_k, "top_k")
        for i, k in enumerate(self.top_k):
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError(f"top_k[{i}] must be a non-negative integer, got {k!r}")
        self.top_fractions = [_fraction(f, f"top_fractions[{i}]")
                              for i, f in enumerate(_list(top_fractions, "top_fractions"))]
        if not self.top_k and not self.top_fractions:
            raise ValueError("top_k and top_fractions are both empty: no seeds to make")
        self.prune_fraction = _fraction(prune_fraction, "prune_fraction")
        self.score_label = f"metric drop, one {unit} at W{self.probe_bits[0]}A{self.probe_bits[1]}"

    def units(self, space: SearchSpace) -> dict[str, list[str]]:
        """The probed units in network order, each with its layers (those the space may quantize)."""
        floating = set(space.float_layers)
        units: dict[str, list[str]] = {}
        for layer in (layer for layer in space.layers if layer.name not in floating):
            units.setdefault(layer.name if self.unit == "layer" else layer.stage, []).append(layer.name)
        return units

    def unit_drops(self, context: StrategyContext) -> dict[str, float]:
        """Each unit's probe drop, in network order; measured once per evaluator and settings."""
        space, evaluator = context.space, context.evaluator
        units = self.units(space)
        key = (self.probe_bits, space.base, space.input_bits, tuple((u, tuple(m)) for u, m in units.items()))
        cached = _probe_cache.setdefault(evaluator, {})
        if key not in cached:
            metric = evaluator.workload.primary_metric
            cached[key] = {u: evaluator.evaluate(probe_policy(space, members, self.probe_bits),
                                                 measure_latency=False).drops[metric]
                           for u, members in units.items()}
        return dict(cached[key])

    def ranking(self, context: StrategyContext) -> list[str]:
        """Units from the most to the least sensitive (ties in network order)."""
        drops = self.unit_drops(context)
        return sorted(drops, key=lambda u: -drops[u])

    def scores(self, context: StrategyContext) -> dict[str, float]:
        drops = self.unit_drops(context)
        return {n: drops[u] for u, members in self.units(context.space).items() for n in members}

    def _layers_of_top(self, context: StrategyContext, count: int) -> set[str]:
        units = self.units(context.space)
        return {n for u in self.ranking(context)[:count] for n in units[u]}

    def seed(self, context: StrategyContext) -> list[Policy]:
        total = len(self.units(context.space))
        counts = sorted({min(k, total) for k in self.top_k} | {_count(f, total) for f in self.top_fractions})
        return distinct(two_level_policy(context.space, self._layers_of_top(context, k), self.high_bits, low)
                        for k in counts for low in self.low_bits)

    def prune(self, context: StrategyContext) -> SearchSpace:
        top = self._layers_of_top(context, _count(self.prune_fraction, len(self.units(context.space))))
        return keep_high(context.space, [n for n in context.space.names if n in top], self.high_bits)
