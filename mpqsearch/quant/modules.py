"""The fake-quantize modules a quantized model is made of.

:class:`WeightFakeQuant` is a ``torch.nn.utils.parametrize`` parametrization of a layer's
weight, so the layer's own forward runs unchanged on the quantized weight and gradients reach
the float weight through the straight-through estimator (QAT). :class:`ActFakeQuant` is inserted
after a layer's output activation (and at model inputs and join outputs, see :mod:`.graph`);
during calibration it only observes. :class:`SameGridQuant` applies an :class:`ActFakeQuant`'s grid
to a tensor already on it, without observing.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import nn

from .functional import INT32_MAX, INT32_MIN, bias_grid, clip_values, fake_quantize, scale_from_clip
from .observers import ActivationStats
from .spec import FLOAT_BITS, LayerQuantConfig


def weight_channel_axis(layer: nn.Module) -> int:
    """The weight dimension of output channels: 1 for transposed convolutions, else 0.

    For a grouped transposed convolution dimension 1 holds ``out_channels / groups`` channels,
    so "per channel" there shares each scale across the groups (still correct, coarser).
    """
    return 1 if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 0


SCALE_CACHE_SIZE = 4096
"""Weight scales kept by :func:`weight_scale` (a few floats per channel each), newest last."""
_scale_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()


def _digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest() + str(tuple(data.shape))


def weight_scale(weight: torch.Tensor, config: LayerQuantConfig, axis: int, qmax: int | None = None) -> torch.Tensor:
    """Per-channel (shape ``[C]``) or per-tensor (shape ``[1]``) scale of a signed weight whose
    largest level is ``qmax`` (default ``2^(b-1) - 1``, see :func:`~.functional.weight_qmax`).

    Scales are cached by the weight's content and the weight settings, so quantizing the same
    model again (every ``apply_policy``, export and evaluation of a user's model) skips the
    ``mse`` search, which dominates quantizing a model."""
    key = (_digest(weight), axis, qmax, config.weight_bits, config.granularity, config.weight_clipping, config.scale)
    if key in _scale_cache:
        _scale_cache.move_to_end(key)
        return _scale_cache[key].clone()
    w = weight.detach()
    rows = w.movedim(axis, 0).reshape(w.shape[axis], -1)
    if config.granularity == "per_tensor":
        rows = rows.reshape(1, -1)
    clip = clip_values(rows, config.weight_bits, True, config.weight_clipping, config.scale, qmax=qmax)
    scale = scale_from_clip(clip, config.weight_bits, True, config.scale, qmax)
    _scale_cache[key] = scale.clone()
    while len(_scale_cache) > SCALE_CACHE_SIZE:
        _scale_cache.popitem(last=False)
    return scale


class WeightFakeQuant(nn.Module):
    """Parametrization ``w -> fake_quantize(w)`` with a fixed scale computed from ``w``."""

    def __init__(self, weight: torch.Tensor, config: LayerQuantConfig, axis: int = 0,
                 scale: torch.Tensor | None = None, qmax: int | None = None) -> None:
        super().__init__()
        self.bits = config.weight_bits
        self.qmax = qmax if qmax is not None else 2 ** (self.bits - 1) - 1
        self.per_channel = config.granularity == "per_channel"
        self.axis = axis
        if scale is None:
            scale = weight_scale(weight, config, axis, self.qmax)
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.scale, self.bits, True, self.axis if self.per_channel else None,
                             qmax=self.qmax)

    def levels(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer levels of ``weight`` (what :meth:`forward` multiplies by the scale), as floats."""
        scale = self.scale.to(torch.float32)
        if self.per_channel:
            scale = scale.reshape([-1 if d == self.axis % weight.dim() else 1 for d in range(weight.dim())])
        return (weight.detach() * (1.0 / scale)).round_().clamp_(-self.qmax, self.qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, qmax={self.qmax}, per_channel={self.per_channel}, axis={self.axis}"


class BiasFakeQuant(nn.Module):
    """Parametrization ``b -> round(b / s) * s`` on the int32 grid that int8 kernels add the bias
    on (:func:`~.functional.bias_grid`: ``s = s_in * s_w``), with a straight-through gradient.

    A layer with quantized weights that reads a quantized tensor gets it, so that the fake-quant
    model computes what the deployed model computes (the ONNX export gives such a bias these
    int32 levels, which its fused kernels need).
    """

    def __init__(self, bias: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor, narrow: bool) -> None:
        super().__init__()
        self.register_buffer("scale", bias_grid(bias, input_scale, weight_scale, narrow)[1].clone())

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return self.levels(bias) * self.scale + (bias - bias.detach())  # exactly the grid value; gradient 1

    def levels(self, bias: torch.Tensor) -> torch.Tensor:
        """The int32 levels of ``bias``, as floats."""
        return torch.round(bias.detach() / self.scale).clamp(INT32_MIN, INT32_MAX)


class ActFakeQuant(nn.Module):
    """Per-tensor activation quantizer; observes while ``observing`` is set.

    ``unsigned`` marks activations known to be non-negative (after ReLU): they use all ``2^b``
    levels on ``[0, c]``; signed ones keep the level ``-2^(b-1)`` (see :mod:`.functional`);
    ``None`` leaves it to the calibration data (non-negative there: unsigned), decided when the
    quantization is set. ``affine`` marks activations bounded below by a small negative value
    (SiLU, hardswish, GELU): a signed one gets an asymmetric grid, all ``2^b`` levels from the
    calibrated minimum up, and a zero point (``zero_point``; 0 on every other grid).
    One instance serves every tensor of a tied group (seed 004: tensors
    joined by add or concat share one scale and bit width), so calibration merges their
    statistics.
    """

    def __init__(self, unsigned: bool | None, stats: ActivationStats | None = None, *, affine: bool = False) -> None:
        super().__init__()
        self.unsigned = unsigned
        self.affine = affine
        self.zero_point = 0
        self.stats = stats if stats is not None else ActivationStats()
        self.observing = True
        self.bits = FLOAT_BITS
        self.register_buffer("scale", torch.ones(()))

    def set_quantization(self, bits: int, clipping: str = "max", kind: str = "product") -> None:
        """Leave observing and quantize at ``bits`` with a scale derived from the statistics."""
        self.observing = False
        self.bits = bits
        self.zero_point = 0
        if bits != FLOAT_BITS:
            if self.unsigned is None:
                self.unsigned = self.stats.nonnegative
            if self.affine and not self.unsigned:
                self.scale, self.zero_point = self.stats.affine(bits, clipping, kind)
            else:
                self.scale, self.zero_point = self.stats.scale(bits, not self.unsigned, clipping, kind), 0

    @property
    def signed(self) -> bool:
        """Whether the grid is symmetric around zero (an affine grid is unsigned, with a zero point)."""
        return not self.unsigned and not self.zero_point

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on this quantizer's grid, without observing it."""
        return fake_quantize(x, self.scale, self.bits, self.signed, narrow=False, divide=True,
                             zero_point=self.zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.stats.update(x)
            return x
        return self.quantize(x)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, unsigned={self.unsigned}, zero_point={self.zero_point}, observing={self.observing}"


class SameGridQuant(nn.Module):
    """Applies ``quantizer``'s grid, without observing, to a tensor whose values already lie on it
    (a concat of tensors sharing that grid, a reshaped quantized tensor).

    It changes no value and no statistic; it marks the tensor as quantized, so that the ONNX export
    writes ``Q -> DQ`` there and ONNX Runtime can hand the next layer integers.
    """

    def __init__(self, quantizer: ActFakeQuant) -> None:
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.quantizer.observing else self.quantizer.quantize(x)
