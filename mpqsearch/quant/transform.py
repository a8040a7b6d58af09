"""The model transform: a float model and per-layer configs in, a fake-quantized copy out.

Like PyTorch's prepare/convert split: :func:`prepare` inserts observing activation quantizers,
:func:`calibrate` runs example inputs through the float model, :func:`quantize_model` fixes the
scales for the chosen bits and parametrizes the weights. Calibration sees float weights and
float activations, so its statistics do not depend on the policy and can be reused
(:func:`collect_activation_stats`).

Quantizers sit at every layer's activation site and at the tensor sites of :mod:`.graph` (model
inputs, add and concat outputs that layers read), keyed by layer name or tensor-site key. A
tensor site with its own quantizer is quantized only where a layer with quantized weights reads
it: a model input at ``input_bits``, a join output at the activation settings of the layer it
follows; otherwise it stays float, so an all-32-bit policy is the float model exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping, MutableMapping
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from . import exact
from .functional import weight_qmax
from .graph import GraphAnalysis, analyze, quantizable_layers
from .modules import ActFakeQuant, BiasFakeQuant, SameGridQuant, WeightFakeQuant, weight_channel_axis, weight_scale
from .observers import ActivationStats
from .spec import DEFAULT_INPUT_BITS, EXPORT_TARGETS, FLOAT_BITS, LayerQuantConfig, check_bits, default_target

ACT_CONTAINER = "mpq_act"
"""Holds the layers' activation quantizers (one per tied group)."""
INPUT_CONTAINER = "mpq_input"
JOIN_CONTAINER = "mpq_join"
TENSOR_CONTAINER = "mpq_tensor"
GRID_CONTAINER = "mpq_grid"
"""Hold the model inputs' quantizers, the join outputs' own quantizers, the quantizers of other
tensors that layers read and the :class:`SameGridQuant` s, each by fx node name."""
PRE_CONTAINER = "mpq_pre"
"""Holds the quantizers of layer outputs before their activation (:attr:`GraphAnalysis.pre`), by layer."""
_CONTAINERS = {"<input:": INPUT_CONTAINER, "<join:": JOIN_CONTAINER, "<tensor:": TENSOR_CONTAINER}


def pre_key(layer: str) -> str:
    """The quantizer key of ``layer``'s output before its activation."""
    return f"<pre:{layer}>"


def _module_key(layer: str) -> str:
    return layer.replace(".", "__")


def _insert_after(gm: fx.GraphModule, node_name: str, target: str) -> None:
    node = next(n for n in gm.graph.nodes if n.name == node_name)
    if node.op == "placeholder":  # after every placeholder: they are the function's arguments
        context = gm.graph.inserting_before(next(n for n in gm.graph.nodes if n.op != "placeholder"))
    else:
        context = gm.graph.inserting_after(node)
    with context:
        quantized = gm.graph.call_module(target, (node,))
    node.replace_all_uses_with(quantized, delete_user_cb=lambda user: user is not quantized)


def _layer_quantizers(analysis: GraphAnalysis, container: nn.Module) -> dict[str, ActFakeQuant]:
    """One quantizer per tied group or untied layer; signed if any of its layers' outputs may be
    negative."""
    quantizers: dict[str, ActFakeQuant] = {}
    groups = list(analysis.ties) + [(name,) for name in analysis.sites if analysis.tie_of(name) is None]
    for group in groups:
        signs = [analysis.sites[m].unsigned for m in group]
        quantizer = ActFakeQuant(unsigned=None if None in signs else all(signs),
                                 affine=all(analysis.sites[m].bounded for m in group))
        container.add_module(_module_key(group[0]), quantizer)
        quantizers.update(dict.fromkeys(group, quantizer))
    return {name: quantizers[name] for name in analysis.sites}


class Prepared(NamedTuple):
    """What :func:`prepare` returns: the model with its quantizers in place, the quantizer of each
    layer and tensor site (tied layers share one, which a ``same_grid`` tensor site maps to) and
    the graph analysis."""

    model: nn.Module
    quantizers: dict[str, ActFakeQuant]
    analysis: GraphAnalysis

    def copy(self) -> Prepared:
        """An independent copy (weights and quantizers; the analysis is shared, it is only read):
        a few times cheaper than tracing and analysing the model again, so a search's trials
        copy one (``quantize_model(..., template=...)``)."""
        model, quantizers = copy.deepcopy((self.model, self.quantizers))
        return Prepared(model, quantizers, self.analysis)


def prepare(model: nn.Module) -> Prepared:
    """A copy of ``model`` with an observing :class:`ActFakeQuant` at every activation site and
    tensor site (and a :class:`SameGridQuant` where a layer reads a quantized tensor through
    grid-preserving ops)."""
    model = copy.deepcopy(model)
    analysis = analyze(model)
    containers = {name: nn.Module() for name in (ACT_CONTAINER, PRE_CONTAINER, INPUT_CONTAINER, JOIN_CONTAINER,
                                                 TENSOR_CONTAINER, GRID_CONTAINER)}
    quantizers = _layer_quantizers(analysis, containers[ACT_CONTAINER])
    if analysis.graph_module is None:
        for name, layer in quantizable_layers(model).items():
            layer.add_module("act_quant", quantizers[name])
            layer.register_forward_hook(lambda module, args, output: module.act_quant(output))
        return Prepared(model, quantizers, analysis)
    gm = analysis.graph_module
    for name, container in containers.items():
        gm.add_module(name, container)
    for name, site in analysis.sites.items():
        group = analysis.tie_of(name)
        key = _module_key(group[0] if group else name)
        for node_name in site.nodes:
            _insert_after(gm, node_name, f"{ACT_CONTAINER}.{key}")
    for key, site in analysis.tensor_sites.items():
        if site.mode == "own":
            quantizers[key] = ActFakeQuant(unsigned=site.unsigned)
            container = _CONTAINERS[key[:key.index(":") + 1]]
            containers[container].add_module(site.node, quantizers[key])
            _insert_after(gm, site.node, f"{container}.{site.node}")
        else:  # a concat on its group's grid
            quantizers[key] = quantizers[site.follows]
            containers[GRID_CONTAINER].add_module(site.node, SameGridQuant(quantizers[key]))
            _insert_after(gm, site.node, f"{GRID_CONTAINER}.{site.node}")
    for name, nodes in analysis.pre.items():
        quantizers[pre_key(name)] = ActFakeQuant(unsigned=False)
        containers[PRE_CONTAINER].add_module(_module_key(name), quantizers[pre_key(name)])
        for node_name in nodes:
            _insert_after(gm, node_name, f"{PRE_CONTAINER}.{_module_key(name)}")
    for node_name, key in analysis.regrids.items():
        containers[GRID_CONTAINER].add_module(node_name, SameGridQuant(quantizers[key]))
        _insert_after(gm, node_name, f"{GRID_CONTAINER}.{node_name}")
    gm.recompile()
    return Prepared(gm, quantizers, analysis)


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
    """Calibration statistics per layer and tensor site (those sharing a quantizer share one
    object); reusable across policies."""
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


def _act_config(names: list[str], configs: Mapping[str, LayerQuantConfig], analysis: GraphAnalysis,
                input_bits: int) -> LayerQuantConfig | None:
    """The activation settings of the quantizer serving ``names``: its layers' config; a tensor
    site's own quantizer takes the config of the layer it follows, or for a model input
    ``input_bits`` with the clipping and scale kind of its first reader. ``None`` (float): no
    layer of the quantizer is configured, or no layer with quantized weights reads its site."""
    config = next((configs[name] for name in names if name in configs), None)
    site = analysis.tensor_sites.get(names[0])
    if site is None or config is not None:
        return config
    readers = [configs[r] for r in site.readers if r in configs and configs[r].weight_bits != FLOAT_BITS]
    if not readers:
        return None
    if site.follows is None:
        return replace(readers[0], act_bits=input_bits)
    return configs.get(site.follows)


def _pre_config(layer: str, configs: Mapping[str, LayerQuantConfig], analysis: GraphAnalysis,
                quantizers: Mapping[str, ActFakeQuant], settings: Mapping[int, LayerQuantConfig | None],
                ) -> LayerQuantConfig | None:
    """The settings of ``layer``'s output quantizer before its activation: the layer's own where an
    int8 kernel can run it (weights, the tensor it reads and its activation at 8 bits or fewer),
    else ``None`` (float: the layer runs in float, and its activation needs no integer input)."""
    config = configs.get(layer)
    source = quantizers.get(analysis.reads.get(layer) or "")
    source_config = settings.get(id(source)) if source is not None else None
    if config is None or source_config is None or max(config.weight_bits, config.act_bits, source_config.act_bits) > 8:
        return None
    return config


WeightScaleCache = MutableMapping[Hashable, torch.Tensor]


def quantize_model(
    model: nn.Module,
    configs: Mapping[str, LayerQuantConfig],
    calib_data: Iterable[Any] | None = None,
    *,
    input_bits: int = DEFAULT_INPUT_BITS,
    act_stats: Mapping[str, ActivationStats] | None = None,
    weight_scales: WeightScaleCache | None = None,
    template: Prepared | None = None,
    target: str | None = None,
) -> nn.Module:
    """A fake-quantized copy of ``model``; ``model`` itself is not modified.

    ``configs`` maps layer names to their :class:`LayerQuantConfig`; layers not named stay float.
    ``input_bits`` quantize the model inputs that layers with quantized weights read (32: float).
    Activation scales come from ``act_stats`` if given (see :func:`collect_activation_stats`),
    else from a calibration pass over ``calib_data``. ``weight_scales``, a dict the caller keeps,
    caches each (layer, weight config) scale across calls. ``template``, a :func:`prepare` of
    this same ``model`` (its weights unchanged since), is copied instead of tracing the model
    again and is left as it is. ``target`` (:data:`~.spec.EXPORT_TARGETS`, default this CPU's:
    :func:`~.spec.default_target`) is the CPU the model is made for: for ``portable`` 8-bit weights
    keep their levels within +-64 (:func:`~.functional.weight_qmax`). A traced model comes back
    as a ``torch.fx.GraphModule``.
    """
    target = default_target() if target is None else target
    if target not in EXPORT_TARGETS:
        raise ValueError(f"unknown export target {target!r}; choose one of {', '.join(EXPORT_TARGETS)}")
    layers = quantizable_layers(model)
    unknown = sorted(set(configs) - set(layers))
    if unknown:
        raise KeyError(f"no quantizable layer named {unknown[0]!r} in {type(model).__name__}")
    check_bits(input_bits)
    prepared, quantizers, analysis = prepare(model) if template is None else template.copy()
    _check_ties(configs, analysis)
    members: dict[int, list[str]] = {}
    for name, quantizer in quantizers.items():
        members.setdefault(id(quantizer), []).append(name)
    settings = {key: _act_config(names, configs, analysis, input_bits) for key, names in members.items()
                if not names[0].startswith("<pre:")}
    for layer in analysis.pre:
        settings[id(quantizers[pre_key(layer)])] = _pre_config(layer, configs, analysis, quantizers, settings)
    if act_stats is not None:
        missing = [name for name in quantizers if name not in act_stats]
        if missing:
            raise KeyError(f"act_stats has no statistics for {missing[0]!r}; collect them with "
                           "collect_activation_stats from this model")
        for name, quantizer in quantizers.items():
            quantizer.stats = act_stats[name]
    elif any(config is not None and config.act_bits != FLOAT_BITS for config in settings.values()):
        if calib_data is None:
            raise ValueError("activation quantization needs calib_data or act_stats")
        calibrate(prepared, calib_data)
    for key, names in members.items():
        quantizer, config = quantizers[names[0]], settings[key]
        if config is None or config.act_bits == FLOAT_BITS:
            quantizer.set_quantization(FLOAT_BITS)
            continue
        if not quantizer.stats.observed:
            raise ValueError(f"{names[0]!r} never ran during calibration; its activation has no scale")
        quantizer.set_quantization(config.act_bits, config.act_clipping, config.scale)
    prepared_layers = quantizable_layers(prepared)
    for name, config in configs.items():
        if config.weight_bits == FLOAT_BITS:
            continue
        layer = prepared_layers[name]
        axis = weight_channel_axis(layer)
        qmax = weight_qmax(config.weight_bits, target)
        key = (name, config.weight_bits, config.granularity, config.weight_clipping, config.scale)
        key += (qmax,) if qmax != weight_qmax(config.weight_bits, "vnni") else ()
        scale = weight_scales.get(key) if weight_scales is not None else None
        if scale is None:
            scale = weight_scale(layer.weight, config, axis, qmax)
            if weight_scales is not None:
                weight_scales[key] = scale
        weight_quantizer = WeightFakeQuant(layer.weight, config, axis, scale, qmax)
        parametrize.register_parametrization(layer, "weight", weight_quantizer)
        _quantize_bias(layer, weight_quantizer, quantizers.get(analysis.reads.get(name) or ""))
    if analysis.traced:
        exact.install(prepared)
    return prepared


def _quantize_bias(layer: nn.Module, weight_quantizer: WeightFakeQuant, input_quantizer: ActFakeQuant | None) -> None:
    """Put the bias of a layer reading a quantized tensor on its int32 grid (:class:`BiasFakeQuant`),
    where the ONNX export will (per-tensor input scale; weight scales per tensor or per bias entry)."""
    bias = layer.bias
    if bias is None or input_quantizer is None or input_quantizer.bits == FLOAT_BITS or \
            weight_quantizer.scale.numel() not in (1, bias.numel()):
        return
    narrow = input_quantizer.bits <= 8 and weight_quantizer.bits <= 8
    quantizer = BiasFakeQuant(bias, input_quantizer.scale, weight_quantizer.scale, narrow)
    parametrize.register_parametrization(layer, "bias", quantizer)
