"""The exported file in ONNX Runtime: int32 biases in the form its int8 kernels need, and the
session options that keep its graph optimizer from changing the numbers (docs/numerics.md).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from .functional import bias_grid

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
