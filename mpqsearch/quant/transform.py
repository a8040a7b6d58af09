"""The model transform: a float model and per-layer configs in, a fake-quantized copy out.

Like PyTorch's prepare/convert split: :func:`prepare` inserts observing activation quantizers,
:func:`calibrate` runs example inputs through the float model, :func:`quantize_model` fixes the
scales for the chosen bits and parametrizes the weights. Calibration sees float weights and
float activations, so its statistics do not depend on the policy and can be reused
(:func:`collect_activation_stats`).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping, MutableMapping
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from .graph import GraphAnalysis, analyze, quantizable_layers
from .modules import ActFakeQuant, WeightFakeQuant, weight_channel_axis, weight_scale
from .observers import ActivationStats
from .spec import FLOAT_BITS, LayerQuantConfig

ACT_CONTAINER = "mpq_act"


def _module_key(layer: str) -> str:
    return layer.replace(".", "__")


def _insert_after(gm: fx.GraphModule, node_name: str, target: str) -> None:
    node = next(n for n in gm.graph.nodes if n.name == node_name)
    with gm.graph.inserting_after(node):
        quantized = gm.graph.call_module(target, (node,))
    node.replace_all_uses_with(quantized, delete_user_cb=lambda user: user is not quantized)


def prepare(model: nn.Module) -> tuple[nn.Module, dict[str, ActFakeQuant], GraphAnalysis]:
    """A copy of ``model`` with an observing :class:`ActFakeQuant` at every activation site.

    Returns the copy, the quantizer of each layer (tied layers share one) and the analysis.
    """
    model = copy.deepcopy(model)
    analysis = analyze(model)
    quantizers: dict[str, ActFakeQuant] = {}
    container = nn.Module()
    for group in analysis.ties:
        shared = ActFakeQuant(unsigned=all(analysis.sites[m].unsigned for m in group))
        container.add_module(_module_key(group[0]), shared)
        quantizers.update(dict.fromkeys(group, shared))
    for name, site in analysis.sites.items():
        if name not in quantizers:
            quantizers[name] = ActFakeQuant(unsigned=bool(site.unsigned))
            container.add_module(_module_key(name), quantizers[name])
    if analysis.graph_module is None:
        for name, layer in quantizable_layers(model).items():
            layer.add_module("act_quant", quantizers[name])
            layer.register_forward_hook(lambda module, args, output: module.act_quant(output))
        return model, quantizers, analysis
    gm = analysis.graph_module
    gm.add_module(ACT_CONTAINER, container)
    for name, site in analysis.sites.items():
        group = analysis.tie_of(name)
        key = _module_key(group[0] if group else name)
        for node_name in site.nodes:
            _insert_after(gm, node_name, f"{ACT_CONTAINER}.{key}")
    gm.recompile()
    return gm, quantizers, analysis


def _run(model: nn.Module, example: Any) -> None:
    if isinstance(example, Mapping):
        model(**example)
    elif isinstance(example, (tuple, list)):
        model(*example)
    else:
        model(example)


@torch.no_grad()
def calibrate(model: nn.Module, calib_data: Iterable[Any]) -> int:
    """Run every example input (a tensor, a tuple of args or a dict of kwargs) in eval mode.

    Returns the number of examples seen; raises ``ValueError`` if there were none.
    """
    was_training = model.training
    model.eval()
    count = 0
    try:
        for example in calib_data:
            _run(model, example)
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("calibration data is empty")
    return count


def collect_activation_stats(model: nn.Module, calib_data: Iterable[Any]) -> dict[str, ActivationStats]:
    """Calibration statistics per layer (tied layers share one object); reusable across policies."""
    prepared, quantizers, _ = prepare(model)
    calibrate(prepared, calib_data)
    return {name: q.stats for name, q in quantizers.items()}


def _check_ties(configs: Mapping[str, LayerQuantConfig], analysis: GraphAnalysis) -> None:
    for group in analysis.ties:
        settings = {(configs[m].act_bits, configs[m].act_clipping, configs[m].scale) for m in group if m in configs}
        if len(settings) > 1:
            detail = ", ".join(f"{m}={configs[m].act_bits}" for m in group if m in configs)
            raise ValueError(
                f"layers {', '.join(group)} feed one add or concat and must share activation bits, "
                f"clipping and scale kind (seed 004); got act_bits {detail}")


WeightScaleCache = MutableMapping[Hashable, torch.Tensor]


def quantize_model(
    model: nn.Module,
    configs: Mapping[str, LayerQuantConfig],
    calib_data: Iterable[Any] | None = None,
    *,
    act_stats: Mapping[str, ActivationStats] | None = None,
    weight_scales: WeightScaleCache | None = None,
) -> nn.Module:
    """A fake-quantized copy of ``model``; ``model`` itself is not modified.

    ``configs`` maps layer names to their :class:`LayerQuantConfig`; layers not named stay float.
    Activation scales come from ``act_stats`` if given (see :func:`collect_activation_stats`),
    else from a calibration pass over ``calib_data``. ``weight_scales``, a dict the caller keeps,
    caches each (layer, weight config) scale across calls. A traced model comes back as a
    ``torch.fx.GraphModule``.
    """
    layers = quantizable_layers(model)
    unknown = sorted(set(configs) - set(layers))
    if unknown:
        raise KeyError(f"no quantizable layer named {unknown[0]!r} in {type(model).__name__}")
    prepared, quantizers, analysis = prepare(model)
    _check_ties(configs, analysis)
    needs_acts = any(c.act_bits != FLOAT_BITS for c in configs.values())
    if act_stats is not None:
        for name, quantizer in quantizers.items():
            quantizer.stats = act_stats[name]
    elif needs_acts:
        if calib_data is None:
            raise ValueError("activation quantization needs calib_data or act_stats")
        calibrate(prepared, calib_data)
    members: dict[int, list[str]] = {}
    for name, quantizer in quantizers.items():
        members.setdefault(id(quantizer), []).append(name)
    for group in members.values():
        quantizer = quantizers[group[0]]
        config = next((configs[m] for m in group if m in configs), None)
        if config is None or config.act_bits == FLOAT_BITS:
            quantizer.set_quantization(FLOAT_BITS)
            continue
        if not quantizer.stats.observed:
            raise ValueError(f"layer {group[0]!r} never ran during calibration; its activation has no scale")
        if analysis.graph_module is None:
            quantizer.unsigned = quantizer.stats.nonnegative
        quantizer.set_quantization(config.act_bits, config.act_clipping, config.scale)
    prepared_layers = quantizable_layers(prepared)
    for name, config in configs.items():
        if config.weight_bits == FLOAT_BITS:
            continue
        layer = prepared_layers[name]
        axis = weight_channel_axis(layer)
        key = (name, config.weight_bits, config.granularity, config.weight_clipping, config.scale)
        scale = weight_scales.get(key) if weight_scales is not None else None
        if scale is None:
            scale = weight_scale(layer.weight, config, axis)
            if weight_scales is not None:
                weight_scales[key] = scale
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(layer.weight, config, axis, scale))
    return prepared
