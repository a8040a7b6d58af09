"""ONNX Runtime's integer kernels, computed in torch bit for bit: what its CPU provider's
``QLinearConv``, ``QGemm``, ``QLinearAdd``, ``QLinearMul``, ``QLinearGlobalAveragePool`` and
``QLinearSigmoid`` compute from 8-bit levels (x86 with AVX2 or AVX-512; docs/numerics.md,
"Exact evaluation", has the sources and the measurements).

Tensors here hold *centered* levels ``q - z`` (the fake-quant model's ``round(x / s)``) as float
tensors; a :class:`Grid` says how a tensor is stored in its uint8 container. Accumulations are
exact: float32 when no partial sum can reach 2^24, float64 otherwise. Floating-point steps happen
in float32 in ONNX Runtime's order, and a fused multiply-add is one float64 multiply-add rounded
once to float32 (exact wherever the float64 sum is, i.e. whenever its terms are within 2^21 of
each other in magnitude, as in every kernel here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EXACT_FLOAT32 = 2**24
"""Integers below this magnitude, and sums of them, are exact in float32."""


@dataclass(frozen=True)
class Grid:
    """An 8-bit quantization grid as ONNX Runtime stores it: ``scale``, the uint8 container's zero
    point ``zero_point``, and the lowest and highest centered levels (narrower than the container
    below 8 bits: the export clips there)."""

    scale: torch.Tensor  # float32, 0-dim
    zero_point: int
    low: int
    high: int

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """The centered levels of ``x``, a tensor on this grid (``levels * scale`` values)."""
        return torch.round(x / self.scale)

    def values(self, levels: torch.Tensor) -> torch.Tensor:
        """What ``DequantizeLinear`` gives for centered ``levels`` (in place)."""
        return levels.mul_(self.scale)

    def saturate(self, container: torch.Tensor) -> torch.Tensor:
        """Rounded container values (level plus zero point, as a kernel computes them) to centered
        levels: saturated to uint8, less the zero point, clipped to the grid (in place)."""
        return container.clamp_(0, 255).sub_(self.zero_point).clamp_(self.low, self.high)


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32)


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` of float32 tensors, rounded once to float32 (``vfmadd``)."""
    return _f32(a.double() * b.double() + c.double())


def requantize(acc: torch.Tensor, multiplier: torch.Tensor, out: Grid) -> torch.Tensor:
    """``MlasRequantizeOutput``: int32 accumulator to float32 (round to nearest even), times the
    float32 multiplier, rounded half to even, plus the zero point, saturated; centered levels."""
    levels = _f32(acc).mul_(multiplier).round_()
    return levels.clamp_(-out.zero_point, 255 - out.zero_point).clamp_(out.low, out.high)


def output_multiplier(input_scale: torch.Tensor, weight_scale: torch.Tensor, output_scale: torch.Tensor
                      ) -> torch.Tensor:
    """``QLinearConv``'s and ``QGemm``'s requantization multiplier, per output channel or per
    tensor: ``s_in * s_w / s_out`` evaluated left to right in float32."""
    return (_f32(input_scale) * _f32(weight_scale)) / _f32(output_scale)


def accumulate(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               input_bound: float) -> torch.Tensor:
    """The exact int32 accumulator of a convolution or linear layer on centered input levels
    ``x`` (magnitude at most ``input_bound``) with weight and bias levels: the layer's own
    operation on the levels, in float32 where no partial sum can reach 2^24 (every order of
    summation is then exact), else in float64."""
    reduce = tuple(d for d in range(weight.dim()) if d != 0)
    bound = input_bound * weight.abs().sum(dim=reduce) + (bias.abs() if bias is not None else 0.0)
    if float(bound.max()) >= EXACT_FLOAT32:
        x, weight = x.double(), weight.double()
        bias = bias.double() if bias is not None else None
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    return layer._conv_forward(x, weight, bias)


def qlinear_add(a: torch.Tensor, grid_a: Grid, b: torch.Tensor, grid_b: Grid, out: Grid) -> torch.Tensor:
    """``QLinearAdd`` (``MlasQLinearAddKernelAvx2``) of centered levels of equal shape:
    ``fma(qa, s_a/s_c, fma(qb, s_b/s_c, z_c - fma(s_a/s_c, z_a, s_b/s_c z_b)))`` on the stored
    values, rounded half to even and saturated. The compiler contracts the constant's
    ``s_a/s_c z_a + s_b/s_c z_b`` into that fused multiply-add (measured: without it, 25 of 20
    million sums of random scales and zero points came out one level off)."""
    ratio_a, ratio_b = grid_a.scale / out.scale, grid_b.scale / out.scale
    fixed = _scalar(out.zero_point) - fma(ratio_a, _scalar(grid_a.zero_point), ratio_b * grid_b.zero_point)
    stored_a, stored_b = a + grid_a.zero_point, b + grid_b.zero_point
    partial = fma(stored_b, ratio_b, fixed)
    return out.saturate(fma(stored_a, ratio_a, partial).round_())


def qlinear_mul(a: torch.Tensor, grid_a: Grid, b: torch.Tensor, grid_b: Grid, out: Grid) -> torch.Tensor:
    """``QLinearMul`` (``MlasQLinearMulKernel``, SSE2) of centered levels, broadcasting: the exact
    integer product times ``s_a * s_b / s_c``, plus ``z_c``, each step in float32, rounded half to
    even and saturated."""
    ratio = (grid_a.scale * grid_b.scale) / out.scale
    stored = (a * b).mul_(ratio).add_(_scalar(out.zero_point))
    return out.saturate(stored.round_())


def qlinear_global_average_pool(x: torch.Tensor, grid: Grid, out: Grid) -> torch.Tensor:
    """``QLinearGlobalAveragePool`` over the trailing two dimensions: the exact integer sum times
    ``s_in / (s_out * H W)`` (float32), rounded half to even and saturated (kept dimensions)."""
    size = x.shape[-1] * x.shape[-2]
    multiplier = grid.scale / (out.scale * _scalar(float(size)))
    acc = x.double().sum(dim=(-2, -1), keepdim=True)
    return requantize(acc, multiplier, out)


_LOGISTIC = {name: _scalar(value) for name, value in {
    "alpha_9": 4.37031012579801e-11, "alpha_7": 1.15627324459942e-07, "alpha_5": 6.08574864600143e-05,
    "alpha_3": 8.51377133304701e-03, "alpha_1": 2.48287947061529e-01, "beta_10": 6.10247389755681e-13,
    "beta_8": 5.76102136993427e-09, "beta_6": 6.29106785017040e-06, "beta_4": 1.70198817374094e-03,
    "beta_2": 1.16817656904453e-01, "beta_0": 9.93151921023180e-01}.items()}
"""``MlasLogisticConstants`` (Eigen's rational approximation); each literal's float32 value."""


def logistic(x: torch.Tensor) -> torch.Tensor:
    """``MlasComputeLogistic`` (``MlasLogisticKernelFma3``) on float32 values: what ONNX Runtime's
    ``Sigmoid`` and ``QLinearSigmoid`` lookup table compute (not ``torch.sigmoid``)."""
    c = _LOGISTIC
    x = _f32(x).clamp(-18.0, 18.0)
    x2 = x * x
    p = fma(x2, c["alpha_9"], c["alpha_7"])
    for name in ("alpha_5", "alpha_3", "alpha_1"):
        p = fma(p, x2, c[name])
    q = fma(x2, c["beta_10"], c["beta_8"])
    for name in ("beta_6", "beta_4", "beta_2", "beta_0"):
        q = fma(q, x2, c[name])
    return ((x * p) / q).add_(0.5).clamp_min_(0.0)
