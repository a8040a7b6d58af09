"""Deployable ONNX export: a fake-quant model as a QDQ model that computes the same numbers.

What the file holds, per the numerics of :mod:`.functional`:

- a quantized weight is an integer initializer (see :func:`weight_container`: int8 up to 7 bits,
  uint8 at 8, or int8 for ``target="vnni"``, int16 up to 16) holding the fake-quant model's own
  integer levels, read back from its output (``round(fq(w) / s)`` is exact, so the levels are
  those of torch's kernel even where ``round(w / s)`` would tie differently), followed by
  ``DequantizeLinear`` with the same scales (per channel on ``WeightFakeQuant.axis``);
- a quantized activation (a layer's, a model input's, an add's or concat's, see :mod:`.graph`)
  is ``QuantizeLinear -> DequantizeLinear`` with its scale, in uint8 up to 8 bits (zero point 0,
  or 128 for signed levels: see :func:`container`) and int16 up to 16 (opset 21, zero point 0,
  see :func:`container` for 16-bit unsigned); 32 bits is nothing. A :class:`~.modules.SameGridQuant`
  (a concat on its operands' grid, a quantized tensor read through a reshape or pixel shuffle) is
  one more ``Q -> DQ`` with the same scale. When ``b`` is below the container (5 bits in uint8)
  the levels are clamped to the ``b``-bit range by ``Q -> DQ -> Clip -> Q -> DQ``: the first
  ``Q`` stays the direct consumer of the producing layer, so ONNX Runtime still fuses
  ``DQ -> Conv -> Q`` into ``QLinearConv``, and the next layer still reads a ``DQ``. A float
  ``Clip`` before the first ``Q`` would break the producer's fusion; ``Q -> Clip(int8) -> DQ``
  keeps it too, but ONNX Runtime 1.31's integer Clip is slower than the float ``DQ -> Clip ->
  Q`` (4-conv chain at 16x64x64, 1 thread: 0.82 ms against 0.50 ms, 0.40 ms with no clip).
  Each step is exact: the clip bounds are the float32 products ``qmin * s`` and ``qmax * s``
  that ``DQ`` itself computes;
- a bias behind a quantized input and weight is int32 at scale ``s_in * s_w``, the form int8
  kernels need: the fake-quant model holds it so (:class:`~.modules.BiasFakeQuant`) and the file
  gets its levels; :func:`quantize_biases` does the same for modules built from this module's
  pieces. Other biases stay float.

Rounding: torch's kernel computes ``nearbyint(x * (1/s))``, ``QuantizeLinear`` computes
``x / s`` rounded half to even. The two can differ only when ``x / s`` lies within a float32
rounding error of a half-integer; with power-of-two (``shift``) scales ``1/s`` is exact and they
never differ. ONNX Runtime's fused int8 kernels add their own rounding (int32 accumulation, a
float requantization multiplier, ``QLinearAdd``'s arithmetic), so an output can move by one level
where the fake-quant value sits next to a rounding boundary (the tests bound it by one output step).

ONNX Runtime (1.31, 1.32) on the CPU runs a Conv (depthwise included) as ``QLinearConv`` when it reads a
``DQ`` of 8 bits or fewer and writes one ``Q`` of 8 bits or fewer with nothing between but a ReLU
into an unsigned ``Q`` (which it drops); a PReLU, LeakyReLU or sigmoid there, or a ReLU before a
signed ``Q``, keeps it float. An add or concat between 8-bit ``DQ`` s and a ``Q`` runs as
``QLinearAdd``/``QLinearConcat``; reshapes and max pooling run on the integers. ConvTranspose
and Gemm, 16-bit tensors, and layers reading an unquantized tensor (a mean, ``0.2 * y``) run in
float. Open files through :func:`onnxruntime_session`, which turns off the one pass that would
change the numbers.

How: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) with
``torch.autograd.Function.symbolic``, its documented extension point. The dynamo exporter needs
``onnxscript`` (not a dependency here) and fails on ``fake_quantize`` ops
(pytorch/pytorch#167063, open), or decomposes Q/DQ into arithmetic (#127167); the TorchScript
exporter's own ``fake_quantize`` symbolics accept only the full 8-bit ranges and would keep
float weights. The TorchScript exporter tops out at opset 20 and warns above it, but every
operator changed in opset 21 except ``GroupNormalization`` (which it never emits) only gained
types, so its output is valid at 21, which int16 QDQ needs. Its deprecation warnings are
silenced here; if a later torch removes it, this module is the one place to port.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from .functional import bias_grid, fake_quantize, quant_range
from .modules import ActFakeQuant, BiasFakeQuant, SameGridQuant, WeightFakeQuant
from .spec import EXPORT_TARGETS, FLOAT_BITS

DEFAULT_OPSET = 21
MIN_OPSET = 13
"""Per-channel ``DequantizeLinear`` (the ``axis`` attribute) needs opset 13."""
INT16_OPSET = 21
"""16-bit ``QuantizeLinear``/``DequantizeLinear`` need opset 21."""


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


def weight_container(bits: int, target: str = "portable") -> tuple[torch.dtype, int]:
    """The integer type holding ``bits``-bit signed weight levels, and its zero point.

    int8 up to 7 bits, int16 up to 16. At 8 bits it depends on ``target``:

    - ``portable`` (default): uint8 with zero point 128 (the int8 levels shifted: the same
      numbers). ONNX Runtime on x86 CPUs without VNNI (AVX2 only, such as AMD EPYC before Zen 4)
      runs an int8 weight against a uint8 activation with ``VPMADDUBSW``, which adds two
      products in a saturating int16: ``255 * 127 * 2`` overflows it and outputs move by dozens
      of levels (measured: sr-espcn-x2 W8A8 off by 0.15 in [0, 1] pixels). uint8 weights take
      the u8u8 kernels, which widen to 16 bits first and never saturate; below 8 bits
      ``255 * 64 * 2 = 32640`` fits, so int8 weights keep the faster u8s8 kernels exactly. The
      file computes the policy's numbers on every x86 CPU; the price is the u8u8 kernels' speed
      (``benchmarks/onnx_latency.py``: on one EPYC at 1 thread, sr-srresnet-x2 W8A8 ran at
      0.79x FP32 in u8u8, W7A8 at 1.05x in u8s8).
    - ``vnni``: int8, as ONNX Runtime's own quantizer writes them, for CPUs whose u8s8 kernels
      accumulate in int32 (x86 with AVX512-VNNI or AVX-VNNI): faster there, wrong on AVX2-only
      x86 CPUs.
    """
    check_target(target)
    if bits <= 7 or (bits == 8 and target == "vnni"):
        return torch.int8, 0
    if bits == 8:
        return torch.uint8, 128
    return torch.int16, 0


def _broadcast(scale: torch.Tensor, dims: int, axis: int | None) -> torch.Tensor:
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
            values = values - _broadcast(zero_point.to(torch.float32), levels.dim(), axis)
        return values * _broadcast(scale, levels.dim(), axis)

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
    levels = torch.round(weight.detach() / _broadcast(scale, weight.dim(), axis))
    if levels.abs().max() > quant_range(quantizer.bits, True)[1]:
        raise ValueError(f"weight levels exceed the {quantizer.bits}-bit range")
    dtype, zero = weight_container(quantizer.bits, target)
    if not zero:
        return DequantizedWeight(levels.to(dtype), scale, axis)
    return DequantizedWeight((levels + zero).to(dtype), scale, axis, torch.full_like(scale, zero, dtype=dtype))


def dequantized_bias(bias: torch.Tensor, quantizer: BiasFakeQuant) -> DequantizedWeight:
    """The export form of ``quantizer``, whose output is ``bias``: int32 levels (exact: the
    fake-quant values are ``levels * scale`` of float32 levels) and the scale, per channel or not."""
    scale = quantizer.scale.detach().to(torch.float32)
    axis = 0 if scale.numel() > 1 else None
    scale = scale.reshape(-1) if axis is not None else scale.reshape(())
    return DequantizedWeight(torch.round(bias.detach() / scale).to(torch.int32), scale, axis)


def deployable_copy(qmodel: nn.Module, target: str = "portable") -> nn.Module:
    """A copy of ``qmodel`` in eval mode whose fake quantizers are replaced by the export modules
    (weights in :func:`weight_container`'s types for ``target``).

    It computes exactly what ``qmodel`` computes (in eval mode); ``qmodel`` is not modified.
    """
    model = copy.deepcopy(qmodel).eval()
    replaced: dict[int, nn.Module] = {}  # tied layers share one quantizer: keep sharing it

    def export_module(name: str, quantizer: ActFakeQuant) -> nn.Module:
        if quantizer.observing:
            raise ValueError(f"activation quantizer {name!r} is still observing: export a model from "
                             "mpqsearch.quant.quantize_model or mpqsearch.apply_policy")
        if id(quantizer) not in replaced:
            replaced[id(quantizer)] = nn.Identity() if quantizer.bits == FLOAT_BITS else \
                QuantizedActivation(quantizer.scale, quantizer.bits, quantizer.signed, quantizer.zero_point)
        return replaced[id(quantizer)]

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ActFakeQuant):
                setattr(parent, name, export_module(name, child))
            elif isinstance(child, SameGridQuant):  # the same Q -> DQ, written where the tensor is read
                setattr(parent, name, export_module(name, child.quantizer))
    for name, layer in model.named_modules():
        for tensor in ("weight", "bias"):
            if not parametrize.is_parametrized(layer, tensor):
                continue
            chain = layer.parametrizations[tensor]
            for index, quantizer in enumerate(chain):
                if not isinstance(quantizer, (WeightFakeQuant, BiasFakeQuant)):
                    continue
                if index != len(chain) - 1:
                    raise ValueError(f"layer {name!r}: the {tensor} quantizer must be its last parametrization")
                with torch.no_grad():
                    value = getattr(layer, tensor)
                    chain[index] = dequantized_weight(value, quantizer, target) if tensor == "weight" else \
                        dequantized_bias(value, quantizer)
    return model


def _bit_widths(qmodel: nn.Module) -> set[int]:
    bits = {m.bits for m in qmodel.modules() if isinstance(m, (ActFakeQuant, WeightFakeQuant))}
    return bits - {FLOAT_BITS}


def export_onnx(
    qmodel: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    target: str = "portable",
) -> Path:
    """Write ``qmodel`` (from :func:`~mpqsearch.quant.quantize_model` or
    :func:`~mpqsearch.apply_policy`) as a QDQ ONNX model and return the path.

    ``example_input`` is one tensor or a sequence of tensors (the model's positional inputs),
    named ``input`` (or ``input0``, ``input1``, ...); outputs are named ``output`` (or
    ``output0``, ...). ``dynamic_batch`` makes dimension 0 of every input and output symbolic.
    ``opset`` must be 13 or more, and 21 or more when a tensor has 9 to 16 bits. ``target``
    (``portable`` or ``vnni``) says how 8-bit weights are stored (:func:`weight_container`):
    ``vnni`` files run faster on CPUs with VNNI and give wrong outputs on AVX2-only x86 CPUs.
    Run the file in ONNX Runtime through :func:`onnxruntime_session` (see
    :data:`ORT_DISABLED_OPTIMIZERS`).
    """
    check_target(target)
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: per-channel DequantizeLinear needs opset {MIN_OPSET} or newer")
    wide = [b for b in _bit_widths(qmodel) if b > 8]
    if wide and opset < INT16_OPSET:
        raise ValueError(f"opset {opset}: {max(wide)}-bit tensors need int16 QuantizeLinear/DequantizeLinear, "
                         f"which came with opset {INT16_OPSET}")
    return write_onnx(deployable_copy(qmodel, target), example_input, path, opset=opset, dynamic_batch=dynamic_batch)


def write_onnx(
    module: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> Path:
    """Export a module built from this module's pieces (:func:`deployable_copy`, or one made of
    :class:`Quantize`, :class:`Dequantize` and layers) and give its biases the int32 form.

    Integer example inputs become integer graph inputs. Names and ``dynamic_batch`` as in
    :func:`export_onnx`.
    """
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    with torch.no_grad():
        outputs = module(*inputs)
    count = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
    input_names = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
    output_names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notices and its "opset 21 is not supported"
        # warning (see the module docstring) say nothing about this model; TracerWarnings do.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.onnx.errors.OnnxExporterWarning)
        torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)
    model = onnx.load_from_string(buffer.getvalue())
    quantize_biases(model.graph)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


_BIAS_OPS = ("Conv", "ConvTranspose", "Gemm")


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` outputs, followed through ``Identity`` (the exporter's
    way of sharing a tied quantizer's scale)."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _int_bytes(dq: onnx.NodeProto, constants: dict[str, np.ndarray], inputs: dict[str, int]) -> int | None:
    """Bytes per level of what ``dq`` dequantizes (its zero point's type, else its input's)."""
    for name in (dq.input[2:3] or []) + [dq.input[0]]:
        if name in constants:
            return constants[name].dtype.itemsize
        if name in inputs:
            return onnx.helper.tensor_dtype_to_np_dtype(inputs[name]).itemsize
    return None


def quantize_biases(graph: onnx.GraphProto) -> int:
    """Give every Conv, ConvTranspose and Gemm that reads a per-tensor ``DequantizeLinear``
    input and a ``DequantizeLinear`` weight an int32 bias ``round(b / (s_in * s_w))`` behind a
    ``DequantizeLinear`` with that scale. Returns how many biases changed.

    This is the QDQ convention that ONNX Runtime's fused int8 kernels need (``QLinearConv`` takes
    the int32 bias as it is) and what its ``WeightBiasQuantization`` pass would do at load time;
    done here, the file says it, and that pass, which also quantizes float weights, can stay off
    (:data:`ORT_DISABLED_OPTIMIZERS`). The bias moves by at most ``s_in * s_w / 2``. Where the
    levels overflow int32 (16-bit inputs and weights have tiny scales), a layer wider than 8
    bits, which no int8 kernel runs, gets its own scale ``max|b| / 2^30``; an 8-bit
    layer's levels are clamped, as its int32 accumulator would clamp them.
    """
    constants = _constants(graph)
    inputs = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    producers = {name: node for node in graph.node for name in node.output}
    replaced: set[str] = set()
    for node in list(graph.node):
        if node.op_type not in _BIAS_OPS or len(node.input) < 3 or node.input[2] not in constants:
            continue
        dqs = [producers.get(name) for name in node.input[:2]]
        if not all(dq is not None and dq.op_type == "DequantizeLinear" for dq in dqs):
            continue
        s_in, s_w = (constants.get(dq.input[1]) for dq in dqs)
        bias = constants[node.input[2]]
        if s_in is None or s_w is None or s_in.size != 1 or bias.dtype != np.float32 or s_w.size not in (1, bias.size):
            continue
        narrow = all(_int_bytes(dq, constants, inputs) == 1 for dq in dqs)
        levels, scale = bias_grid(torch.tensor(bias), torch.tensor(s_in), torch.tensor(s_w), narrow)
        levels, scale = levels.numpy(), scale.numpy()
        name = node.input[2]
        graph.initializer.extend([numpy_helper.from_array(levels.astype(np.int32), f"{name}_int32"),
                                  numpy_helper.from_array(scale, f"{name}_scale")])
        dequantize = onnx.helper.make_node("DequantizeLinear", [f"{name}_int32", f"{name}_scale"],
                                           [f"{name}_dequantized"], **({"axis": 0} if scale.size > 1 else {}))
        graph.node.insert(list(graph.node).index(node), dequantize)
        node.input[2] = f"{name}_dequantized"
        replaced.add(name)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name in replaced and t.name not in used]:
        graph.initializer.remove(tensor)
    return len(replaced)


ORT_DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)
"""ONNX Runtime graph passes to turn off for an exported model. ``WeightBiasQuantization``
(ONNX Runtime 1.20+) quantizes the float weight of any Conv, ConvTranspose or Gemm that reads a
``DequantizeLinear`` output to per-tensor int8, so a layer the policy keeps at 32 bits would run
(and compute) as int8; its bias work is already done by :func:`quantize_biases`."""


def onnxruntime_session(model: str | os.PathLike | bytes, *, threads: int = 1,
                        optimized_model_path: str | os.PathLike | None = None) -> Any:
    """An ONNX Runtime CPU session for an exported model: all graph optimizations but
    :data:`ORT_DISABLED_OPTIMIZERS`, ``threads`` intra-op threads, sequential execution, quiet.
    ``optimized_model_path`` saves the optimized graph (to see which layers were fused)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the optimized-model notice is expected here
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS))
