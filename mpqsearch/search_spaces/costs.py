"""What a policy costs in storage: weights at their bit widths plus the scales that decode them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..policy import Policy
from ..quant.graph import MODEL_INPUT, analyze, quantizable_layers
from ..quant.spec import FLOAT_BITS
from .space import SearchSpace

PRODUCT_SCALE_BITS = 32
"""A ``product`` scale is stored as one float32."""
SHIFT_SCALE_BITS = 8
"""A ``shift`` scale is a power of two: only its exponent, one int8, is stored."""


@dataclass(frozen=True)
class _LayerStorage:
    name: str
    weight_params: int
    bias_params: int
    channels: int
    act_key: str  # layers sharing an activation quantizer share one act_key


def _from_space(space: SearchSpace) -> tuple[list[_LayerStorage], int]:
    layers = [
        _LayerStorage(info.name, info.weight_params, info.params - info.weight_params,
                      info.weight_shape[1] if info.kind.startswith("ConvTranspose") else info.weight_shape[0],
                      info.tied_group or info.name)
        for info in space.layers
    ]
    return layers, space.other_params


def _from_model(model: nn.Module) -> tuple[list[_LayerStorage], int]:
    analysis = analyze(model)
    tie_key = {m: group[0] for group in analysis.ties for m in group}
    folded = quantizable_layers(analysis.graph_module) if analysis.traced else {}
    layers, seen = [], set()
    for name, original in quantizable_layers(model).items():
        module = folded.get(name, original)  # the layer with its batch norm folded in, if any
        weight = module.weight
        bias = 0 if module.bias is None else module.bias.numel()
        axis = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
        layers.append(_LayerStorage(name, weight.numel(), bias, weight.shape[axis], tie_key.get(name, name)))
        seen.update(id(p) for p in original.parameters(recurse=False))
        if name in analysis.folds:
            seen.update(id(model.get_parameter(key)) for key in analysis.folds[name].parameter_keys)
    other = sum(p.numel() for p in model.parameters() if id(p) not in seen)
    return layers, other


def model_size_bytes(model_or_space: nn.Module | SearchSpace, policy: Policy) -> int:
    """Bytes to store the model under ``policy``, batch norms folded into their layers.

    Weights take ``weight_bits`` each; biases and every parameter outside the quantizable layers
    (batch norm, PReLU) stay float32. A quantized weight adds one scale per output channel (or one
    per tensor), a quantized layer activation one scale per quantizer (tied layers share it; the
    few scales of quantized model inputs and add or concat outputs are not counted). 32-bit
    tensors need no scale, so the all-32 policy gives exactly the FP32 size. Bits are summed over
    the model, then rounded up to whole bytes once.
    """
    from_space = isinstance(model_or_space, SearchSpace)
    layers, other = _from_space(model_or_space) if from_space else _from_model(model_or_space)
    missing = [layer.name for layer in layers if layer.name not in policy.layers]
    if missing:
        raise KeyError(f"policy has no settings for layer {missing[0]!r}")
    bits = other * FLOAT_BITS
    act_scales: dict[str, int] = {}
    for layer in layers:
        config = policy.layers[layer.name]
        scale_bits = SHIFT_SCALE_BITS if config.scale == "shift" else PRODUCT_SCALE_BITS
        bits += layer.weight_params * config.weight_bits + layer.bias_params * FLOAT_BITS
        if config.weight_bits != FLOAT_BITS:
            bits += (layer.channels if config.granularity == "per_channel" else 1) * scale_bits
        if config.act_bits != FLOAT_BITS:
            act_scales[layer.act_key] = scale_bits
    return math.ceil((bits + sum(act_scales.values())) / 8)


def fp32_size_bytes(space: SearchSpace) -> int:
    """Bytes of the model with every tensor in float32 (the all-32 policy)."""
    return model_size_bytes(space, Policy.uniform(space.fingerprint(), FLOAT_BITS, FLOAT_BITS))


def size_ratio(space: SearchSpace, policy: Policy) -> float:
    """``policy``'s size as a fraction of the FP32 model's: the ``size_ratio`` every trial reports."""
    return model_size_bytes(space, policy) / fp32_size_bytes(space)


def bit_operations(space: SearchSpace, policy: Policy) -> int:
    """BOPs: each layer's MACs times its weight bits times the bits of the activation it reads.

    The input bits are those of the producing layers' activation quantizers (the widest, when a
    layer reads several through an add or concat, whose output is quantized at their tied bits);
    a model input counts the policy's ``input_bits`` when a layer with quantized weights reads it
    (so it is quantized, :mod:`mpqsearch.quant.transform`), else 32; a layer whose inputs are
    unknown (untraced model) counts 32.
    """
    input_quantized = any(MODEL_INPUT in info.input_from and policy.layers[info.name].weight_bits != FLOAT_BITS
                          for info in space.layers)
    source_bits = {name: config.act_bits for name, config in policy.layers.items()}
    source_bits[MODEL_INPUT] = policy.input_bits if input_quantized else FLOAT_BITS
    total = 0
    for info in space.layers:
        in_bits = max((source_bits.get(s, FLOAT_BITS) for s in info.input_from), default=FLOAT_BITS)
        total += info.macs * policy.layers[info.name].weight_bits * in_bits
    return total
