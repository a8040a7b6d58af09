"""Tensor numerics: clip values, scales and fake quantization (seed 004).

Everything here is symmetric (zero point 0). Signed tensors use ``s = c / (2^(b-1) - 1)``
(seed 004); unsigned tensors (after ReLU) use ``[0, 2^b - 1]`` with ``s = c / (2^b - 1)``.
Signed weights use the narrow range ``[-(2^(b-1) - 1), 2^(b-1) - 1]``; signed activations keep
the extra level ``-2^(b-1)`` of the two's-complement range, so that an 8-bit activation is exactly
an ONNX int8 QuantizeLinear (which saturates at -128, not -127) and the deployed model computes
what the fake-quant model computes. Rounding and the straight-through gradient come
from torch's fake-quantize kernels, so one code path serves PTQ and QAT.
"""

from __future__ import annotations

import math

import torch

from .spec import FLOAT_BITS, SAFE_WEIGHT_LEVEL

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
WIDE_BIAS_LEVELS = 2**30
"""The largest level of a bias whose ``s_in * s_w`` grid overflows int32: below 2^31 with room
for float rounding."""

MSE_GRID = torch.linspace(1.0, 0.05, 96)
"""Fractions of the maximum tried by ``mse`` clipping. 1.0 comes first, so ``mse`` can never
do worse than ``max``; the low end reaches far enough for 2-bit weights of heavy-tailed layers."""
MSE_CHUNK = 1 << 24
"""Elements evaluated at once by the ``mse`` search (candidates times tensor size): 64 MB of float32."""
DEFAULT_PERCENTILE = 99.99
_TINY = 1e-12


def weight_qmax(bits: int, target: str = "portable") -> int:
    """The largest level of a ``bits``-bit signed weight for an export ``target``
    (:data:`~.spec.EXPORT_TARGETS`): ``2^(b-1) - 1``, but :data:`~.spec.SAFE_WEIGHT_LEVEL` for
    8-bit weights made for ``portable``, so the file is exact and fast on every x86 CPU."""
    return SAFE_WEIGHT_LEVEL if bits == 8 and target == "portable" else 2 ** (bits - 1) - 1


def quant_range(bits: int, signed: bool, narrow: bool = True) -> tuple[int, int]:
    """The integer levels ``(qmin, qmax)``; ``narrow`` drops ``-2^(b-1)`` from a signed range."""
    if signed:
        qmax = 2 ** (bits - 1) - 1
        return (-qmax if narrow else -qmax - 1), qmax
    return 0, 2**bits - 1


def scale_from_clip(clip: torch.Tensor, bits: int, signed: bool, kind: str = "product",
                    qmax: int | None = None) -> torch.Tensor:
    """The scale that maps the clip value ``c`` to the largest level.

    ``product``: ``s = c / qmax``. ``shift`` (seed 004): ``s = 2^-fl`` with
    ``fl = b - 1 - ceil(log2 c)`` for signed tensors; for unsigned tensors, which have one more
    bit of magnitude, ``fl = b - ceil(log2 c)`` (our extension of the paper's signed formula).
    ``qmax`` (signed only) overrides the largest level (a power of two for ``shift``).
    """
    clip = clip.to(torch.float32).clamp_min(_TINY)
    if kind == "product":
        return clip / (qmax or quant_range(bits, signed)[1])
    if kind == "shift":
        magnitude_bits = (bits - 1 if signed else bits) if qmax is None else int(math.log2(qmax)) + 1
        fl = magnitude_bits - torch.ceil(torch.log2(clip))
        return torch.exp2(-fl)
    raise ValueError(f"unknown scale kind {kind!r}")


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool, axis: int | None = None,
    narrow: bool = True, divide: bool = False, zero_point: int = 0, qmax: int | None = None,
) -> torch.Tensor:
    """Quantize and dequantize ``x`` with a per-tensor (``axis=None``) or per-channel scale.

    32 bits returns ``x`` itself. The gradient is the straight-through estimator of torch's
    kernels: 1 inside the clip range, 0 outside.

    Where no gradient is needed (evaluation, calibration searches) the same arithmetic runs as
    ``round(x * (1 / s)).clamp(qmin, qmax) * s`` in place: bit for bit what torch's kernels
    compute with a zero point of 0 (tested), and on the CPU some 25x faster than
    ``fake_quantize_per_tensor_affine``, whose cost otherwise matched a convolution's. With
    ``divide`` it computes ``round(x / s)`` instead, as ONNX's ``QuantizeLinear`` does: the two
    differ only where ``x / s`` is a tie, which ops such as a PReLU's 0.25 slope create from
    quantized inputs (activations use it, so that the export computes the same levels).
    ``zero_point`` (per tensor, unsigned only) shifts the ``2^b`` levels down by that many
    steps: an asymmetric grid on ``[-z s, (2^b - 1 - z) s]``. ``qmax`` (signed, narrow) overrides
    the largest level (:func:`weight_qmax`).
    """
    if bits == FLOAT_BITS:
        return x
    qmin, qmax = quant_range(bits, signed, narrow) if qmax is None else (-qmax, qmax)
    scale = scale.to(torch.float32)
    if zero_point and (signed or axis is not None):
        raise ValueError("a zero point applies to unsigned per-tensor grids only")
    if not (x.requires_grad and torch.is_grad_enabled()):
        qmin, qmax = qmin - zero_point, qmax - zero_point
        if axis is not None:
            scale = scale.reshape([-1 if d == axis % x.dim() else 1 for d in range(x.dim())])
        levels = x / scale if divide else x * (1.0 / scale)
        return levels.round_().clamp_(qmin, qmax).mul_(scale)
    if axis is None:
        zero = torch.full((), zero_point, dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero, qmin, qmax)
    zero = torch.zeros(scale.numel(), dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_channel_affine(x, scale.reshape(-1), zero, axis, qmin, qmax)


def _rows_max(rows: torch.Tensor, signed: bool) -> torch.Tensor:
    return rows.abs().amax(dim=1) if signed else rows.clamp_min(0).amax(dim=1)


def clip_values(
    rows: torch.Tensor,
    bits: int,
    signed: bool,
    clipping: str = "max",
    kind: str = "product",
    percentile: float = DEFAULT_PERCENTILE,
    narrow: bool = True,
    qmax: int | None = None,
) -> torch.Tensor:
    """One clip value per row of a 2-D tensor (a row is a channel, or the whole tensor).

    ``max``: the largest magnitude. ``percentile``: that percentile of the magnitudes.
    ``mse`` (seed 004): the fraction of the maximum, from :data:`MSE_GRID`, whose quantized copy
    has the smallest mean squared error, chosen per row.
    """
    rows = rows.detach().to(torch.float32)
    top = _rows_max(rows, signed)
    if clipping == "max":
        return top
    if clipping == "percentile":
        magnitude = rows.abs() if signed else rows.clamp_min(0)
        return torch.quantile(magnitude, percentile / 100.0, dim=1).clamp_max(top)
    if clipping != "mse":
        raise ValueError(f"unknown clipping {clipping!r}")
    clips = MSE_GRID.reshape(-1, 1) * top  # [fractions, rows]
    errors = torch.cat([_squared_errors(rows, scale_from_clip(chunk, bits, signed, kind, qmax), bits, signed, narrow,
                                        qmax)
                        for chunk in clips.split(max(1, MSE_CHUNK // max(rows.numel(), 1)))])
    return clips.gather(0, errors.argmin(dim=0, keepdim=True))[0]  # argmin: the first (largest) clip of ties


def _squared_errors(rows: torch.Tensor, scales: torch.Tensor, bits: int, signed: bool, narrow: bool,
                    qmax: int | None = None) -> torch.Tensor:
    """Per candidate (a row of ``scales``) and row: the summed squared error of quantizing ``rows``,
    exactly as :func:`fake_quantize` rounds (``x * (1/s)``), in place on one buffer."""
    qmin, qmax = quant_range(bits, signed, narrow) if qmax is None else (-qmax, qmax)
    scales = scales.unsqueeze(-1)  # [candidates, rows, 1]
    buffer = rows.unsqueeze(0) * (1.0 / scales)
    buffer.round_().clamp_(qmin, qmax).mul_(scales).sub_(rows)
    return buffer.mul_(buffer).sum(dim=-1)


def bias_grid(bias: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor,
              narrow: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The int32 levels and scale of a bias behind a quantized input and weight, as int8 kernels
    add it to their int32 accumulator: scale ``s_in * s_w`` (per tensor, or per channel with the
    weight), levels ``round(b / scale)``, all in float32.

    Where the levels overflow int32 (16-bit tensors have tiny scales), a ``narrow`` layer (input
    and weight of 8 bits or fewer, which an int8 kernel runs) clamps them as its accumulator
    would; any other layer, which runs in float, gets the scale ``max|b| / 2^30`` instead.
    """
    bias = bias.detach().to(torch.float32)
    scale = input_scale.detach().to(torch.float32).reshape(()) * weight_scale.detach().to(torch.float32)
    levels = torch.round(bias / scale)
    if levels.numel() and levels.abs().max() > INT32_MAX:
        if narrow:
            levels = levels.clamp(INT32_MIN, INT32_MAX)
        else:
            scale = bias.abs().max() / WIDE_BIAS_LEVELS
            levels = torch.round(bias / scale)
    return levels, scale
