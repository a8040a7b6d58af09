"""The QDQ pieces of an export: integer containers of levels, and the autograd functions and modules
that compute the fake-quant values in torch and write ``QuantizeLinear``/``DequantizeLinear`` in ONNX
(their ``symbolic``, the TorchScript exporter's documented extension point). What the export writes
and why is in docs/numerics.md ("The ONNX export").
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from .functional import fake_quantize, quant_range
from .modules import BiasFakeQuant, WeightFakeQuant
from .spec import EXPORT_TARGETS, SAFE_WEIGHT_LEVEL, cpu_has_vnni


def container(bits: int, signed: bool, zero_point: int = 0) -> tuple[torch.dtype, int]:
    """The integer type holding ``bits``-bit activation levels, and its zero point (an unsigned
    grid's own ``zero_point`` added, see :class:`~.modules.ActFakeQuant`).

    uint8 up to 8 bits, zero point 0, or 128 for signed levels (the int8 levels shifted: the same
    numbers); int16 up to 16, zero point 0; 16-bit unsigned levels are int16 with zero point
    -32768 (the same 65536 levels) because the TorchScript exporter cannot write uint16.

    Signed 8-bit levels go in uint8 because ONNX Runtime on x86 runs int8 kernels on uint8
    activations only: it rewrites an int8 ``Q -> DQ`` pair to uint8 when the ``Q`` feeds a single
    ``DQ``, but a tensor read by two nodes (a residual stream: the next block's conv and the next
    add) keeps int8, and neither its producer nor its readers fuse.
    """
    if bits <= 8:
        return torch.uint8, (128 if signed else zero_point)
    return torch.int16, (0 if signed else zero_point - (2**15 if bits == 16 or zero_point else 0))


def check_target(target: str) -> None:
    if target not in EXPORT_TARGETS:
        raise ValueError(f"unknown export target {target!r}; choose one of {', '.join(EXPORT_TARGETS)}")


def weight_container(bits: int, target: str = "portable", qmax: int | None = None) -> tuple[torch.dtype, int]:
    """The integer type holding ``bits``-bit signed weight levels of magnitude ``qmax`` at most
    (default ``2^(b-1) - 1``), and its zero point.

    int8 up to 7 bits, and at 8 bits when the levels stay within +-64
    (:data:`~.spec.SAFE_WEIGHT_LEVEL`, the ``portable`` quantization): ONNX Runtime's u8s8
    kernels then compute exactly on every x86 CPU. Full-range 8-bit levels are int8 for
    ``target="vnni"`` (exact only on CPUs with VNNI) and uint8 with zero point 128 for
    ``portable`` (the u8u8 kernels: exact everywhere, slower). int16 above 8 bits.
    docs/numerics.md ("Export targets") explains the saturation and the measurements.
    """
    check_target(target)
    qmax = 2 ** (bits - 1) - 1 if qmax is None else qmax
    if bits <= 7 or (bits == 8 and (qmax <= SAFE_WEIGHT_LEVEL or target == "vnni")):
        return torch.int8, 0
    if bits == 8:
        return torch.uint8, 128
    return torch.int16, 0


class NoVNNIWarning(UserWarning):
    """A ``vnni`` model made or timed on a CPU without VNNI, where its 8-bit layers compute wrong numbers."""


def warn_without_vnni(target: str, what: str) -> None:
    """Warn when ``what`` (making or timing a file) happens for ``target="vnni"`` on a CPU whose
    flags show no VNNI: ONNX Runtime's u8s8 kernels saturate there (docs/numerics.md)."""
    if target == "vnni" and cpu_has_vnni() is False:
        warnings.warn(f"{what} for target 'vnni' on a CPU without VNNI (no avx512_vnni or avx_vnni flag): "
                      "its full-range 8-bit layers compute wrong numbers on this CPU; use target 'portable'",
                      NoVNNIWarning, stacklevel=3)


def broadcast(scale: torch.Tensor, dims: int, axis: int | None) -> torch.Tensor:
    if axis is None:
        return scale
    shape = [1] * dims
    shape[axis] = -1
    return scale.reshape(shape)


def _zero_point(g: Any, bits: int, signed: bool, zero_point: int = 0) -> Any:
    dtype, zero = container(bits, signed, zero_point)
    return g.op("Constant", value_t=torch.tensor(zero, dtype=dtype))


def _quantize_symbolic(g: Any, x: Any, scale: Any, zero: Any, bits: int, signed: bool, zero_point: int = 0) -> Any:
    quantized = g.op("QuantizeLinear", x, scale, zero)
    qmin, qmax = quant_range(bits, signed, narrow=False)
    qmin, qmax = qmin - zero_point, qmax - zero_point
    dtype, offset = container(bits, signed, zero_point)
    if (qmin + offset, qmax + offset) == (torch.iinfo(dtype).min, torch.iinfo(dtype).max):
        return quantized
    low, high = (g.op("Mul", scale, g.op("Constant", value_t=torch.tensor(float(v)))) for v in (qmin, qmax))
    clipped = g.op("Clip", g.op("DequantizeLinear", quantized, scale, zero), low, high)
    return g.op("QuantizeLinear", clipped, scale, zero)


def _levels(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool, zero_point: int = 0) -> torch.Tensor:
    dtype, offset = container(bits, signed, zero_point)
    levels = (fake_quantize(x, scale, bits, signed, narrow=False, divide=True, zero_point=zero_point) / scale).round()
    return (levels + offset if offset else levels).to(dtype)  # no "+ 0": it trips the exporter's peephole pass


class Quantize(torch.autograd.Function):
    """An activation's fake-quant levels in their :func:`container`, exported as
    ``QuantizeLinear`` (followed by ``DQ -> Clip -> Q`` below the container's width)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
        return _levels(x, scale, bits, signed)

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, bits: int, signed: bool) -> Any:
        return _quantize_symbolic(g, x, scale, _zero_point(g, bits, signed), bits, signed)


class Dequantize(torch.autograd.Function):
    """Integer levels minus the zero point (0 when ``None``, else a tensor shaped like the scale)
    times scale (per tensor, or per channel on ``axis``), exported as ``DequantizeLinear``."""

    @staticmethod
    def forward(ctx: Any, levels: torch.Tensor, scale: torch.Tensor, axis: int | None,
                zero_point: torch.Tensor | None = None) -> torch.Tensor:
        values = levels.to(torch.float32)
        if zero_point is not None:
            values = values - broadcast(zero_point.to(torch.float32), levels.dim(), axis)
        return values * broadcast(scale, levels.dim(), axis)

    @staticmethod
    def symbolic(g: Any, levels: Any, scale: Any, axis: int | None, zero_point: Any = None) -> Any:
        inputs = (levels, scale) if zero_point is None else (levels, scale, zero_point)
        if axis is None:
            return g.op("DequantizeLinear", *inputs)
        return g.op("DequantizeLinear", *inputs, axis_i=axis)


class QuantizeDequantize(torch.autograd.Function):
    """An activation's fake quantization, exported as ``Q -> DQ`` sharing one zero point."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool,
                zero_point: int = 0) -> torch.Tensor:
        offset = container(bits, signed, zero_point)[1]
        levels = _levels(x, scale, bits, signed, zero_point).to(torch.float32)
        return (levels - offset if offset else levels) * scale

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, bits: int, signed: bool, zero_point: int = 0) -> Any:
        zero = _zero_point(g, bits, signed, zero_point)
        return g.op("DequantizeLinear", _quantize_symbolic(g, x, scale, zero, bits, signed, zero_point), scale, zero)


class QuantizedActivation(nn.Module):
    """An :class:`ActFakeQuant` for export: same values, written as ``Q -> DQ``."""

    def __init__(self, scale: torch.Tensor, bits: int, signed: bool, zero_point: int = 0) -> None:
        super().__init__()
        self.bits, self.signed, self.zero_point = bits, signed, zero_point
        self.register_buffer("scale", scale.detach().to(torch.float32).reshape(()).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return QuantizeDequantize.apply(x, self.scale, self.bits, self.signed, self.zero_point)


class DequantizedWeight(nn.Module):
    """A weight parametrization for export: fixed integer levels less a zero point (none: 0)
    times scales (``DequantizeLinear``)."""

    def __init__(self, levels: torch.Tensor, scale: torch.Tensor, axis: int | None,
                 zero_point: torch.Tensor | None = None) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("levels", levels)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return Dequantize.apply(self.levels, self.scale, self.axis, self.zero_point)


def dequantized_weight(weight: torch.Tensor, quantizer: WeightFakeQuant, target: str = "portable") -> DequantizedWeight:
    """The export form of ``quantizer``, whose output is ``weight``: its levels are read back
    from that output, in :func:`weight_container`'s type for ``target``."""
    axis = quantizer.axis if quantizer.per_channel else None
    scale = quantizer.scale.detach().to(torch.float32)
    scale = scale.reshape(-1) if axis is not None else scale.reshape(())
    levels = torch.round(weight.detach() / broadcast(scale, weight.dim(), axis))
    if levels.abs().max() > quantizer.qmax:
        raise ValueError(f"weight levels exceed the {quantizer.bits}-bit range")
    dtype, zero = weight_container(quantizer.bits, target, quantizer.qmax)
    # an explicit zero point, 0 included: ONNX Runtime 1.32 fuses a Gemm into QGemm only with one
    return DequantizedWeight((levels + zero).to(dtype), scale, axis, torch.full_like(scale, zero, dtype=dtype))


def dequantized_bias(bias: torch.Tensor, quantizer: BiasFakeQuant) -> DequantizedWeight:
    """The export form of ``quantizer``, whose output is ``bias``: int32 levels (exact: the
    fake-quant values are ``levels * scale`` of float32 levels) and the scale, per channel or not."""
    scale = quantizer.scale.detach().to(torch.float32)
    axis = 0 if scale.numel() > 1 else None
    scale = scale.reshape(-1) if axis is not None else scale.reshape(())
    return DequantizedWeight(torch.round(bias.detach() / scale).to(torch.int32), scale, axis)
