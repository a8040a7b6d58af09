"""Error-limit strategy (seed 004): a layer gives up bits while its activation scale stays within gamma.

Seed 004 bounds every layer's rounding error, which is at most half a quantization step and so
proportional to the scale, by one limit gamma ("每一层对最终结果的影响都是相同的": every layer
is taken to matter equally). Every layer starts at 8 bits and loses a bit while its scale stays
below gamma; it compares the *activation* scale, because a convolution layer's largest values
are its activations. A sweep over gamma gives a family of policies across model sizes (the
paper's Table 4: gamma 0.08 to 0.2, 6.49 to 4.48 average bits).

What the paper leaves open, and what we chose:

- The stopping point. Its text reads "bits -= 1 while scale < gamma, until the scale exceeds
  gamma", which ends one bit *past* the limit. We keep the limit: a layer drops to ``b - 1``
  bits only if its scale at ``b - 1`` bits is still ``<= gamma``, so it ends at the fewest bits
  whose scale stays within gamma (8 where even the 8-bit scale exceeds it). With scales that
  double per bit the two readings give the same family, the literal one at half the gamma.
- Weights. The paper sets one bit width per layer ("该层位宽") from the activation scale, and
  its model sizes follow it, so a layer's weights take the bits its activation rule gives (each
  parameter then snaps to its nearest choice, :func:`~.base.policy_from_bits`); without that the
  sweep would not span sizes, which count weights only. Option ``act_bits`` (ours) fixes every
  activation instead and lets the rule set the weights alone: on the SR workloads activations
  cost far more PSNR per bit than weights, so that family lies well above the paper's.
- The floor. The paper names none; a layer stops at the lowest bit width any of its parameters
  offers (weights usually reach 2 bits, activations 4: a layer whose rule says 3 gets W3A4).
- The scale. Computed exactly as the trial will: the evaluator's cached calibration statistics,
  the space's base settings (``scale`` product or shift, ``act_clipping``), unsigned after ReLU
  and signed otherwise, one shared scale per tied group (add/concat, which so share their bits).
- The sweep. ``gammas`` lists it; otherwise ``count`` values (default 16) spread log-uniformly
  from the smallest 8-bit scale of any layer (every layer keeps 8 bits) to the largest scale of
  any layer at its floor (every layer at its floor). That range spans about 8 halvings on the
  SR workloads, so 16 values step about half a bit: 8 stepped a whole bit and gave only uniform
  policies on ``sr-espcn-x2``, whose layers' scales lie within 2x of each other. Repeated
  policies are dropped.
- Pruning. Every parameter keeps only the choices at or above those of the seed at the largest
  gamma of the sweep: the search never spends trials below the most aggressive error limit
  configured. With the automatic sweep that seed sits at every floor and nothing is narrowed, so
  a prune entry should list ``gammas``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..policy import Policy
from ..quant import prepare
from ..quant.spec import FLOAT_BITS, MIN_BITS, LayerQuantConfig, check_bits
from ..search_spaces import SearchSpace
from ..trials.evaluate import Evaluator
from .base import Strategy, StrategyContext, distinct, policy_from_bits, register_strategy

START_BITS = 8
"""Every layer starts here (seed 004)."""
DEFAULT_COUNT = 16

ScaleTable = dict[str, dict[int, float]]
"""Per layer, its activation scale at each bit width from ``MIN_BITS`` to ``START_BITS``."""


def activation_scales(evaluator: Evaluator, base: LayerQuantConfig) -> ScaleTable:
    """Every layer's activation scale at ``MIN_BITS..START_BITS`` bits, as a trial sets it.

    The quantizers come from :func:`~mpqsearch.quant.prepare` (so signedness and tied groups are
    the trial's) and read the evaluator's cached statistics; their own ``set_quantization`` turns
    statistics, bits, clipping and scale kind into the scale. Tied layers share one entry.
    """
    _, quantizers, _ = prepare(evaluator.model)
    stats = evaluator.act_stats
    shared: dict[int, dict[int, float]] = {}
    table: ScaleTable = {}
    for name in evaluator.space.names:
        quantizer = quantizers[name]
        if id(quantizer) not in shared:
            quantizer.stats = stats[name]
            scales = {}
            for bits in range(MIN_BITS, START_BITS + 1):
                quantizer.set_quantization(bits, base.act_clipping, base.scale)
                scales[bits] = float(quantizer.scale)
            shared[id(quantizer)] = scales
        table[name] = shared[id(quantizer)]
    return table


def error_limit_bits(scales: Mapping[int, float], gamma: float, floor: int) -> int:
    """Seed 004's rule for one layer: from 8 bits, drop a bit while the scale at one bit fewer
    stays ``<= gamma``, never below ``floor``."""
    bits = START_BITS
    while bits > floor and scales[bits - 1] <= gamma:
        bits -= 1
    return bits


def _floors(space: SearchSpace) -> dict[str, int]:
    """Per layer with a quantized choice: the lowest bits any of its parameters offers, at most 8."""
    floors = {}
    for n in space.names:
        offered = [b for b in (*space.weight_choices[n], *space.act_choices[n]) if b != FLOAT_BITS]
        if offered:
            floors[n] = min(START_BITS, max(MIN_BITS, min(offered)))
    return floors


def _positive(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option} must be a positive number (an activation scale), got {value!r}")
    return float(value)


@register_strategy("gamma")
class GammaStrategy(Strategy):
    """Seed 004's error limit (module docstring): per gamma, every layer takes the fewest bits
    (from 8 down) whose activation scale stays within gamma, for its weights and activation.

    Options: ``gammas``, a list of limits; or ``count`` (default 16) limits spread log-uniformly
    between bounds taken from the calibrated scales; ``act_bits``: every activation at these
    bits, the rule setting the weights only (default: activations follow the rule, as in the
    paper). Seeds: one policy per gamma, smallest first (most bits first), repeats dropped, each
    with ``provenance["gamma"]``. Prune: choices at or above the seed of the largest gamma.
    Scores: log2 of the gamma at which the layer first drops below 8 bits (its 7-bit scale):
    layers with wide activations keep their bits longest.
    """

    score_label = "log2 gamma at the first bit dropped"

    def __init__(self, gammas: Sequence[float] | None = None, count: int | None = None,
                 act_bits: int | None = None) -> None:
        if gammas is not None and count is not None:
            raise ValueError("give either gammas or count, not both")
        if gammas is not None:
            if isinstance(gammas, (str, bytes)) or not isinstance(gammas, Sequence) or not gammas:
                raise ValueError(f"gammas must be a non-empty list of positive numbers, got {gammas!r}")
            gammas = sorted({_positive(g, f"gammas[{i}]") for i, g in enumerate(gammas)})
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 2):
            raise ValueError(f"count must be an integer >= 2, got {count!r}")
        if act_bits is not None:
            try:
                check_bits(act_bits)
            except ValueError as err:
                raise ValueError(f"act_bits: {err}") from None
        self.gammas = gammas
        self.act_bits = act_bits
        self.count = DEFAULT_COUNT if count is None else count
        self._cached: tuple[Evaluator, LayerQuantConfig, ScaleTable] | None = None

    def scales(self, context: StrategyContext) -> ScaleTable:
        """:func:`activation_scales` for the context's evaluator and base settings, computed once."""
        evaluator, base = context.evaluator, context.space.base
        if self._cached is None or self._cached[0] is not evaluator or self._cached[1] != base:
            self._cached = (evaluator, base, activation_scales(evaluator, base))
        return self._cached[2]

    def layer_bits(self, context: StrategyContext, gamma: float) -> dict[str, int]:
        """The bits the error limit ``gamma`` gives each layer with a quantized choice."""
        scales = self.scales(context)
        return {n: error_limit_bits(scales[n], gamma, floor) for n, floor in _floors(context.space).items()}

    def sweep(self, context: StrategyContext) -> list[float]:
        """The gammas of the sweep, ascending: ``gammas``, or ``count`` log-uniform values from the
        smallest 8-bit scale to the largest scale at a layer's floor."""
        if self.gammas is not None:
            return list(self.gammas)
        scales = self.scales(context)
        floors = _floors(context.space)
        if not floors:
            return []
        low = min(scales[n][START_BITS] for n in floors)
        high = max(scales[n][floor] for n, floor in floors.items())
        if high <= low:
            return [low]
        return [low * (high / low) ** (i / (self.count - 1)) for i in range(self.count)]

    def policy(self, context: StrategyContext, gamma: float) -> Policy:
        """The policy of the space nearest to :meth:`layer_bits` for weights, and for activations
        too unless ``act_bits`` fixes them."""
        bits = self.layer_bits(context, gamma)
        return policy_from_bits(context.space, bits, bits if self.act_bits is None else self.act_bits)

    def scores(self, context: StrategyContext) -> dict[str, float]:
        scales = self.scales(context)
        return {n: math.log2(scales[n][START_BITS - 1]) for n in context.space.names}

    def seed(self, context: StrategyContext) -> list[Policy]:
        seeds = []
        for gamma in self.sweep(context):
            policy = self.policy(context, gamma)
            policy.provenance["gamma"] = gamma
            seeds.append(policy)
        return distinct(seeds)

    def prune(self, context: StrategyContext) -> SearchSpace:
        space = context.space
        gammas = self.sweep(context)
        if not gammas:
            return space
        lowest = self.policy(context, gammas[-1]).layers
        return space.restrict(
            weight={n: [b for b in space.weight_choices[n] if b >= lowest[n].weight_bits] for n in space.names},
            act={n: [b for b in space.act_choices[n] if b >= lowest[n].act_bits] for n in space.names})
