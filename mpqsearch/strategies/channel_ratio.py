"""Channel-ratio heuristic (seed 000): stages that change the channel count a lot are sensitive.

Seed 000 quantized one stage of SRGAN and ESRGAN at a time and found that the stages sensitive to
quantization are those whose convolution kernels' input and output channel counts differ
greatly ("the dimension of data conversion is very different"), and chose the sensitive stages
automatically from that ratio, giving them the higher bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..policy import Policy
from ..search_spaces import SearchSpace
from .base import Strategy, StrategyContext, distinct, register_strategy
from .two_level import bit_pair, bit_pairs, keep_high, two_level_policy


def _threshold(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{option} must be a non-negative number (|log2| of a channel ratio), got {value!r}")
    return float(value)


def stage_scores(space: SearchSpace) -> dict[str, float]:
    """Per stage (in network order), ``|log2(in / out)|``: ``in`` is the input channels of the
    stage's first layer, ``out`` the output channels of its last layer, in execution order.

    The abstract of seed 000 leaves open how a stage's ratio is formed from its convolutions. We
    take the stage's net channel change (the dimension of the data it converts) rather than an
    aggregate of every conv's own in/out ratio: convs inside a stage that only reshape the data
    internally must not count. An ESRGAN dense block's convs read growing concats (ratios 2 to 5)
    while the block maps 32 channels to 32, and SRResNet's body maps 48 to 48 conv by conv; both
    bodies come out at ratio 1, the head (3 to many), the upsampler (many to 4x as many before the
    pixel shuffle) and the RGB tail (many to 3) far from it. Linear layers count their features.
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for layer in space.layers:
        first.setdefault(layer.stage, layer.in_channels)
        last[layer.stage] = layer.out_channels
    return {stage: abs(math.log2(first[stage] / last[stage])) for stage in first}


@register_strategy("channel_ratio")
class ChannelRatioStrategy(Strategy):
    """Stages whose ``|log2(input / output channels)|`` exceeds ``threshold`` (default 1: more
    than a 2x change) are sensitive (see :func:`stage_scores`); stages are the ``LayerInfo.stage``
    of the space, i.e. whatever stage map it was built with.

    Seeds: for each threshold of ``seed_thresholds`` (default: ``[threshold]``) and each pair of
    ``low_bits`` (default W4A8, W6A8), sensitive stages at ``high_bits`` (default W8A8) and the
    others at the low pair; repeats are dropped. Prune: layers of sensitive stages keep only
    choices at or above ``high_bits``. Seed 000's abstract gives no bit widths; the defaults are
    the project's uniform baselines, 8 bits being what the int8 runtimes run losslessly.
    """

    score_label = "|log2 stage in/out channels|"

    def __init__(self, threshold: float = 1.0, seed_thresholds: Sequence[float] | None = None,
                 high_bits: Sequence[int] = (8, 8),
                 low_bits: Sequence[Sequence[int]] = ((4, 8), (6, 8))) -> None:
        self.threshold = _threshold(threshold, "threshold")
        if seed_thresholds is None:
            self.seed_thresholds = [self.threshold]
        elif isinstance(seed_thresholds, Sequence) and not isinstance(seed_thresholds, str) and seed_thresholds:
            self.seed_thresholds = [_threshold(t, f"seed_thresholds[{i}]") for i, t in enumerate(seed_thresholds)]
        else:
            raise ValueError(f"seed_thresholds must be a non-empty list of numbers, got {seed_thresholds!r}")
        self.high_bits = bit_pair(high_bits, "high_bits")
        self.low_bits = bit_pairs(low_bits, "low_bits")

    def sensitive_stages(self, space: SearchSpace, threshold: float | None = None) -> list[str]:
        """Stages scoring strictly above ``threshold`` (default: this strategy's)."""
        limit = self.threshold if threshold is None else threshold
        return [stage for stage, score in stage_scores(space).items() if score > limit]

    def _sensitive_layers(self, space: SearchSpace, threshold: float | None = None) -> list[str]:
        stages = set(self.sensitive_stages(space, threshold))
        return [layer.name for layer in space.layers if layer.stage in stages]

    def scores(self, context: StrategyContext) -> dict[str, float]:
        by_stage = stage_scores(context.space)
        return {layer.name: by_stage[layer.stage] for layer in context.space.layers}

    def seed(self, context: StrategyContext) -> list[Policy]:
        space = context.space
        return distinct(two_level_policy(space, set(self._sensitive_layers(space, threshold)), self.high_bits, low)
                        for threshold in self.seed_thresholds for low in self.low_bits)

    def prune(self, context: StrategyContext) -> SearchSpace:
        return keep_high(context.space, self._sensitive_layers(context.space), self.high_bits)
