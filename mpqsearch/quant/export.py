"""Deployable ONNX export: a fake-quant model as a QDQ model that computes the same numbers.

Every quantizer becomes ``QuantizeLinear -> DequantizeLinear`` (:mod:`.qdq`), weights integer
initializers behind ``DequantizeLinear``, biases of layers between quantized tensors int32
(:mod:`.runtime`), so that ONNX Runtime runs each layer between tensors of 8 bits or fewer in an
int8 kernel and computes the fake-quant model's numbers (up to rounding boundaries). Written by
the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). docs/numerics.md says what
the file holds, why, and which ONNX Runtime versions it was checked against.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from .modules import ActFakeQuant, BiasFakeQuant, SameGridQuant, WeightFakeQuant
from .qdq import (
    Dequantize,
    DequantizedWeight,
    Quantize,
    QuantizedActivation,
    QuantizeDequantize,
    check_target,
    container,
    dequantized_bias,
    dequantized_weight,
    warn_without_vnni,
    weight_container,
)
from .runtime import ORT_DISABLED_OPTIMIZERS, onnxruntime_session, quantize_biases
from .spec import FLOAT_BITS, SAFE_WEIGHT_LEVEL

__all__ = [
    "DEFAULT_OPSET", "ORT_DISABLED_OPTIMIZERS", "Dequantize", "DequantizedWeight", "Quantize", "QuantizeDequantize",
    "QuantizedActivation", "check_target", "container", "deployable_copy", "dequantized_bias", "dequantized_weight",
    "export_onnx", "model_target", "onnxruntime_session", "quantize_biases", "weight_container", "write_onnx",
]

DEFAULT_OPSET = 21
MIN_OPSET = 13
"""Per-channel ``DequantizeLinear`` (the ``axis`` attribute) needs opset 13."""
INT16_OPSET = 21
"""16-bit ``QuantizeLinear``/``DequantizeLinear`` need opset 21."""


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


def model_target(qmodel: nn.Module) -> str:
    """The export target ``qmodel`` was quantized for: ``vnni`` if an 8-bit weight uses the full
    range (levels beyond +-64), else ``portable``."""
    full = any(m.bits == 8 and m.qmax > SAFE_WEIGHT_LEVEL for m in qmodel.modules() if isinstance(m, WeightFakeQuant))
    return "vnni" if full else "portable"


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
    target: str | None = None,
) -> Path:
    """Write ``qmodel`` (from :func:`~mpqsearch.quant.quantize_model` or
    :func:`~mpqsearch.apply_policy`) as a QDQ ONNX model and return the path.

    ``example_input`` is one tensor or a sequence of tensors (the model's positional inputs),
    named ``input`` (or ``input0``, ``input1``, ...); outputs are named ``output`` (or
    ``output0``, ...). ``dynamic_batch`` makes dimension 0 of every input and output symbolic.
    ``opset`` must be 13 or more, and 21 or more when a tensor has 9 to 16 bits. ``target``
    (``portable`` or ``vnni``; default: the one ``qmodel`` was quantized for, :func:`model_target`)
    says how full-range 8-bit weights (a model quantized for ``vnni``)
    are stored (:func:`weight_container`): int8 for ``vnni`` (fast on CPUs with VNNI, wrong on
    AVX2-only x86 CPUs: a warning says so when this CPU has no VNNI), uint8 for ``portable``
    (exact, slower); weights quantized for ``portable`` are int8 and exact for either.
    Run the file in ONNX Runtime through :func:`onnxruntime_session` (see
    :data:`ORT_DISABLED_OPTIMIZERS`).
    """
    target = model_target(qmodel) if target is None else target
    check_target(target)
    warn_without_vnni(target, "writing an ONNX file")
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
