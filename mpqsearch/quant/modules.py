"""The fake-quantize modules a quantized model is made of.

:class:`WeightFakeQuant` is a ``torch.nn.utils.parametrize`` parametrization of a layer's
weight, so the layer's own forward runs unchanged on the quantized weight and gradients reach
the float weight through the straight-through estimator (QAT). :class:`ActFakeQuant` is inserted
after a layer's output activation; during calibration it only observes.
"""

from __future__ import annotations

import torch
from torch import nn

from .functional import clip_values, fake_quantize, scale_from_clip
from .observers import ActivationStats
from .spec import FLOAT_BITS, LayerQuantConfig


def weight_channel_axis(layer: nn.Module) -> int:
    """The weight dimension of output channels: 1 for transposed convolutions, else 0.

    For a grouped transposed convolution dimension 1 holds ``out_channels / groups`` channels,
    so "per channel" there shares each scale across the groups (still correct, coarser).
    """
    return 1 if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 0


def weight_scale(weight: torch.Tensor, config: LayerQuantConfig, axis: int) -> torch.Tensor:
    """Per-channel (shape ``[C]``) or per-tensor (shape ``[1]``) scale of a signed weight."""
    w = weight.detach()
    rows = w.movedim(axis, 0).reshape(w.shape[axis], -1)
    if config.granularity == "per_tensor":
        rows = rows.reshape(1, -1)
    clip = clip_values(rows, config.weight_bits, True, config.weight_clipping, config.scale)
    return scale_from_clip(clip, config.weight_bits, True, config.scale)


class WeightFakeQuant(nn.Module):
    """Parametrization ``w -> fake_quantize(w)`` with a fixed scale computed from ``w``."""

    def __init__(self, weight: torch.Tensor, config: LayerQuantConfig, axis: int = 0,
                 scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.bits = config.weight_bits
        self.per_channel = config.granularity == "per_channel"
        self.axis = axis
        if scale is None:
            scale = weight_scale(weight, config, axis)
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.scale, self.bits, True, self.axis if self.per_channel else None)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, axis={self.axis}"


class ActFakeQuant(nn.Module):
    """Per-tensor activation quantizer; observes while ``observing`` is set.

    ``unsigned`` marks activations known to be non-negative (after ReLU): they use all ``2^b``
    levels on ``[0, c]``; signed ones keep the level ``-2^(b-1)`` (see :mod:`.functional`). One instance serves every tensor of a tied group (seed 004: tensors
    joined by add or concat share one scale and bit width), so calibration merges their
    statistics.
    """

    def __init__(self, unsigned: bool, stats: ActivationStats | None = None) -> None:
        super().__init__()
        self.unsigned = unsigned
        self.stats = stats if stats is not None else ActivationStats()
        self.observing = True
        self.bits = FLOAT_BITS
        self.register_buffer("scale", torch.ones(()))

    def set_quantization(self, bits: int, clipping: str = "max", kind: str = "product") -> None:
        """Leave observing and quantize at ``bits`` with a scale derived from the statistics."""
        self.observing = False
        self.bits = bits
        if bits != FLOAT_BITS:
            self.scale = self.stats.scale(bits, not self.unsigned, clipping, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.stats.update(x)
            return x
        return fake_quantize(x, self.scale, self.bits, not self.unsigned, narrow=False)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, unsigned={self.unsigned}, observing={self.observing}"
