"""Where a model's activations are quantized, read from its torch.fx graph (batch norms folded first).

Every quantizable layer gets an *activation site* (its output through the element-wise ops only
it feeds), and, where an int8 kernel cannot fold that activation, a quantizer before it too
(:attr:`GraphAnalysis.pre`); layers whose sites feed one add or concat are tied to one scale
(seed 004); every tensor a quantized layer reads is quantized (:mod:`.sites`), so ONNX Runtime
can hand it integers. Untraceable models fall back to hooks on the layers' outputs (signedness
from calibration, no ties, no tensor sites) with a warning. docs/numerics.md has the rules and
the measurements behind them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import fx, nn

from .fold import Fold, fold_batch_norms
from .ops import (
    CHAIN_KINDS,
    MODEL_INPUT,
    bounded_below,
    input_sources,
    is_join,
    moves_values,
    operands,
    passes_through,
    site_of,
)
from .sites import Joins, Origin, TensorSite, read_sites_of, tensor_sites_of
from .weights import FOLDS_ATTRIBUTE

QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


class UntraceableModelWarning(UserWarning):
    """The model could not be traced by torch.fx; activation ties are not applied."""


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Named Conv1d, Conv2d (depthwise included), ConvTranspose2d and Linear modules."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZABLE_TYPES)}


def layer_fingerprint(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The model's identity for policy files: each quantizable layer's weight shape."""
    return {name: tuple(m.weight.shape) for name, m in quantizable_layers(model).items()}


@dataclass
class ActivationSite:
    """Where one layer's output activation is quantized.

    ``chain`` says what lies between the layer and its quantizer: ``none`` (nothing, or identity
    ops), ``clamp`` (only clamps at zero: the ReLU family, which an int8 kernel folds into an
    unsigned quantization) or ``other`` (any other op: PReLU, LeakyReLU, sigmoid, batch norm).
    """

    layer: str
    nodes: tuple[str, ...]  # fx node names, one per call of the layer; empty when not traced
    unsigned: bool | None  # None: decided from calibration data (hook fallback)
    chain: str = "none"
    outputs: tuple[str, ...] = ()  # the layer's own fx nodes, one per call
    bounded: bool = False  # the chain ends in an activation bounded below (SiLU, hardswish, GELU)


@dataclass
class GraphAnalysis:
    graph_module: fx.GraphModule | None
    sites: dict[str, ActivationSite]
    ties: list[tuple[str, ...]] = field(default_factory=list)
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per layer, the layers whose quantized activations it reads (or :data:`MODEL_INPUT`)."""
    tensor_sites: dict[str, TensorSite] = field(default_factory=dict)
    regrids: dict[str, str] = field(default_factory=dict)
    """fx node (a grid-preserving op a layer reads) -> key of the quantizer whose grid its values lie on."""
    reads: dict[str, str | None] = field(default_factory=dict)
    """Per layer, the key (a layer or a tensor site) of the quantized tensor it reads, directly or
    through grid-preserving ops; ``None`` when it reads anything else (or differs between calls)."""
    folds: dict[str, Fold] = field(default_factory=dict)
    """The batch norms folded into layers (:mod:`.fold`), by layer name."""
    pre: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Layers whose output is also quantized before its activation (no int8 kernel folds the
    activation into its output quantizer), with the fx nodes (the layer's calls) to quantize."""

    @property
    def traced(self) -> bool:
        return self.graph_module is not None

    def tie_of(self, layer: str) -> tuple[str, ...] | None:
        return next((group for group in self.ties if layer in group), None)

    def act_source(self, key: str) -> str:
        """The layer whose activation bits quantize the tensor ``key`` (a layer's own activation
        or a join output), or :data:`MODEL_INPUT` for a model input (the policy's ``input_bits``)."""
        if key in self.sites:
            return key
        return self.tensor_sites[key].follows or MODEL_INPUT


def _find_ties(graph: fx.Graph, site_layers: dict[str, str]) -> tuple[list[tuple[str, ...]], dict[str, set[str]]]:
    """The groups of tied layers, and per join node the layers whose sites it is computed from."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    sources: dict[str, set[str]] = {}
    for node in graph.nodes:  # topological order: operands are resolved before their users
        if not is_join(node):
            continue
        found: set[str] = set()
        for operand in operands(node):
            if operand.name in site_layers:
                found.add(site_layers[operand.name])
            found |= sources.get(operand.name, set())
        sources[node.name] = found
        members = sorted(found)
        for other in members[1:]:
            parent[find(other)] = find(members[0])
    groups: dict[str, list[str]] = {}
    for layer in parent:
        groups.setdefault(find(layer), []).append(layer)
    return [tuple(g) for g in groups.values() if len(g) > 1], sources


def _layer_origins(graph: fx.Graph, layers: dict[str, nn.Module], modules: dict[str, nn.Module],
                   stops: set[str], through: Callable[[fx.Node, dict[str, nn.Module]], bool],
                   ) -> dict[str, list[Origin]]:
    """Per layer and call, walking back from its input through the ops ``through`` accepts up to a
    node in ``stops`` (a site's end): the tensor they start from, and the op the layer reads
    (``None`` when it reads that tensor directly)."""
    origins: dict[str, list[Origin]] = {}
    for node in graph.nodes:
        first = next(iter(node.args), None)
        if node.op != "call_module" or node.target not in layers or not isinstance(first, fx.Node):
            continue
        read, origin = None, node.args[0]
        while origin.name not in stops and through(origin, modules) and isinstance(origin.args[0], fx.Node):
            read = read or origin
            origin = origin.args[0]
        origins.setdefault(node.target, []).append((origin, read))
    return origins


def _reads(origins: dict[str, list[Origin]], key_of: dict[str, str]) -> tuple[dict[str, str], dict[str, str | None]]:
    """:attr:`GraphAnalysis.regrids` and :attr:`GraphAnalysis.reads`, ``key_of`` naming the
    quantizer of each quantized tensor's fx node."""
    regrids = {read.name: key_of[origin.name] for calls in origins.values() for origin, read in calls
               if read is not None and origin.name in key_of}
    reads = {}
    for layer, calls in origins.items():
        keys = {key_of.get(origin.name) for origin, _ in calls}
        reads[layer] = keys.pop() if len(keys) == 1 else None
    return regrids, reads


def _trace(model: nn.Module) -> fx.GraphModule:
    """``model`` traced in eval mode (constants such as ``self.training`` are baked into the graph);
    its own mode is left as it was."""
    was_training = model.training
    model.eval()
    try:
        return fx.symbolic_trace(model)
    finally:
        model.train(was_training)


def analyze(model: nn.Module) -> GraphAnalysis:
    """Trace ``model`` (in eval mode), fold its batch norms into the layers before them (:mod:`.fold`;
    the returned graph module holds the folded copies, ``model`` is left alone) and locate every
    quantizable layer's activation site and the ties."""
    layers = quantizable_layers(model)
    try:
        gm = _trace(model)
    except Exception as err:
        warnings.warn(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(err).__name__}: {err}); "
            "activations are quantized at the layers' outputs, signedness comes from calibration "
            "and tensors joined by add or concat are not tied to one scale",
            UntraceableModelWarning, stacklevel=2)
        return GraphAnalysis(None, {n: ActivationSite(n, (), None) for n in layers})
    folds = fold_batch_norms(gm, layers)
    setattr(gm, FOLDS_ATTRIBUTE, folds)
    modules = dict(gm.named_modules())
    sites: dict[str, ActivationSite] = {}
    site_layers: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in layers:
            end, unsigned, chain = site_of(node, modules)
            site = sites.setdefault(node.target, ActivationSite(node.target, (), True, chain,
                                                                bounded=bounded_below(end, modules)))
            site.bounded = site.bounded and bounded_below(end, modules)
            site.nodes += (end.name,)
            site.outputs += (node.name,)
            site.unsigned = site.unsigned and unsigned  # a layer called twice: both must be >= 0
            site.chain = max(site.chain, chain, key=CHAIN_KINDS.index)
            site_layers[end.name] = node.target
    inputs: dict[str, tuple[str, ...]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in layers:
            inputs[node.target] = tuple(dict.fromkeys(inputs.get(node.target, ()) + input_sources(node, site_layers)))
    order = list(sites)  # execution order
    groups, sources = _find_ties(gm.graph, site_layers)
    ties = sorted((tuple(sorted(g, key=order.index)) for g in groups), key=lambda g: order.index(g[0]))
    leader = {layer: layer for layer in sites} | {m: group[0] for group in ties for m in group}
    joins = Joins(gm.graph, modules, sites, site_layers, sources)
    stops = set(site_layers) | {end.name for end, _, _ in joins.ends.values()}
    origins = _layer_origins(gm.graph, layers, modules, stops, passes_through)
    tensor_sites = tensor_sites_of(gm.graph, joins, leader, order, origins)
    key_of = dict(site_layers) | {site.node: key for key, site in tensor_sites.items()}
    direct = _layer_origins(gm.graph, layers, modules, stops, moves_values)
    origins, read_sites = read_sites_of(origins, direct, key_of, modules, site_layers, leader, order)
    tensor_sites.update(read_sites)
    regrids, reads = _reads(origins, key_of | {site.node: key for key, site in read_sites.items()})
    analysis = GraphAnalysis(gm, sites, ties, inputs, tensor_sites, regrids, reads, folds)
    analysis.pre = {name: site.outputs for name, site in sites.items() if _needs_pre(analysis, name)}
    return analysis


def _needs_pre(analysis: GraphAnalysis, layer: str) -> bool:
    """Whether an activation other than a clamp at zero into an unsigned grid follows ``layer``:
    ONNX Runtime folds only those into an int8 kernel's output."""
    site = analysis.sites[layer]
    group = analysis.tie_of(layer) or (layer,)
    return site.chain == "other" or (site.chain == "clamp" and not all(analysis.sites[m].unsigned for m in group))
