"""Where a model's activations are quantized, read from its torch.fx graph.

For every quantizable layer we find its *activation site*: the layer's output followed through
the element-wise ops that only it feeds (batch norm, ReLU, clamp, ...). The activation is
quantized there, unsigned if the last op is non-negative (ReLU family, sigmoid, clamp at >= 0).

Seed 004 gives tensors joined by add or concat one shared scale and bit width. We tie the layers
whose sites feed one add or concat, following operands that are themselves adds or concats
(a residual stream is one chain of adds, so every layer writing into it shares its scale).
Operands that are neither a site nor a join (a model input, a scaled branch ``0.2 * y``) are not
followed.

So that quantized layers read quantized tensors (what lets ONNX Runtime run them as int8
kernels), the tensors that layers read and no layer outputs are quantized too, as
:class:`TensorSite` s; "read" means directly or through grid-preserving ops
(:func:`passes_through`: reshapes, pixel shuffle, max pooling, ReLU):

- a model input, at the policy's ``input_bits``; its sign comes from the calibration data (a
  graph says nothing about an input's range);
- an add or concat output, after the element-wise ops only it feeds (as for a layer), at the
  activation settings of the tied group of the layers it is computed from:

  - a concat all of whose operands lie on the group's grid (the group's layers' outputs, such
    concats) is on that grid too: it reuses the group's quantizer without calibrating on it,
    which changes no value (``same_grid``);
  - an add, and a concat with an operand off that grid, gets its own quantizer calibrated on its
    output (``own``), unsigned when the graph makes it non-negative (a ReLU after it, or
    non-negative operands). An add's own scale fits the sum, whose range is not its operands';
    a concat of an add (ESRGAN's dense blocks concatenate the residual sum with conv outputs)
    requantizes onto its own scale, which leaves the group's scale to its layers (giving the add
    the group's scale instead widened the shared scale 1.7x on ``sr-rrdb-x2`` and cost 0.014 dB
    more PSNR). An operand that is no layer's output (a model input as in ``tail(y) + x``, a
    scaled branch ``0.2 * y``, a pooled tensor) is read as it is: quantized only if it is a
    quantized tensor itself (the model input is), and a model input counts as possibly negative.
    A join none of whose operands comes from a layer (``x + x``) stays float.

A layer that reads a quantized tensor through grid-preserving ops reads it again on the same
grid, which changes no value (:attr:`GraphAnalysis.regrids`), so that the ONNX export can hand it
integers.

Where the model cannot be traced we fall back to hooks on the layers' outputs, take signedness
from the calibration data, warn once, and apply no ties and no tensor sites.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from .fold import Fold, fold_batch_norms
from .weights import FOLDS_ATTRIBUTE
QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)

_CHAIN_MODULES = (
    nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU,
    nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout,
)
_NONNEG_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)
_CHAIN_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardtanh, F.hardswish,
    F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.clamp, torch.clip, F.dropout, F.batch_norm,
}
_NONNEG_FUNCTIONS = {F.relu, torch.relu, F.relu6, torch.sigmoid, F.sigmoid, F.hardsigmoid}
_CHAIN_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "clip", "clip_"}
_NONNEG_METHODS = {"relu", "relu_", "sigmoid"}
_CLAMPS = {torch.clamp, torch.clip, F.hardtanh, "clamp", "clamp_", "clip", "clip_"}
_IDENTITY_MODULES = (nn.Identity, nn.Dropout)
_ZERO_CLAMP_TARGETS = {F.relu, torch.relu, F.relu6, "relu", "relu_"}
CHAIN_KINDS = ("none", "clamp", "other")
_JOIN_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.cat, torch.concat, torch.concatenate}
_JOIN_METHODS = {"add", "add_"}
_CONCATS = (torch.cat, torch.concat, torch.concatenate)
_PASS_MODULES = (nn.PixelShuffle, nn.PixelUnshuffle, nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d,
                 nn.MaxPool3d, nn.ReLU)
_PASS_FUNCTIONS = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
                   torch.pixel_shuffle, torch.pixel_unshuffle, F.max_pool1d, F.max_pool2d, F.max_pool3d,
                   F.relu, torch.relu}
_PASS_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
                 "relu", "relu_"}


MODEL_INPUT = "<input>"
"""Stands for a model input among a layer's input sources."""


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


@dataclass
class TensorSite:
    """Where a tensor that no layer outputs is quantized: a model input or an add or concat output.

    ``mode`` (module docstring): ``own`` quantizer calibrated on this tensor, or ``same_grid``: the
    quantizer of ``follows`` (shared by its tie group) applied without calibrating, the values
    being on its grid already.
    """

    key: str  # "<input:NAME>" or "<join:NAME>", NAME being the fx node's
    node: str  # fx node after which the tensor is quantized
    follows: str | None  # the layer whose activation settings apply; None: a model input (input_bits)
    mode: str
    unsigned: bool | None  # None: decided from calibration data (model inputs)
    readers: tuple[str, ...]  # the layers reading it, directly or through grid-preserving ops


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


def _chain_step(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, bool]:
    """Whether ``node`` is an element-wise op a site may pass through, and if it is non-negative."""
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, _CHAIN_MODULES):
            nonneg = isinstance(module, _NONNEG_MODULES) or (
                isinstance(module, nn.Hardtanh) and module.min_val >= 0)
            return True, nonneg
        return False, False
    key = node.target if node.op in ("call_function", "call_method") else None
    if node.op == "call_function" and key in _CHAIN_FUNCTIONS:
        return True, key in _NONNEG_FUNCTIONS or (key in _CLAMPS and _clamp_min(node) >= 0)
    if node.op == "call_method" and key in _CHAIN_METHODS:
        return True, key in _NONNEG_METHODS or (key in _CLAMPS and _clamp_min(node) >= 0)
    return False, False


def _clamp_min(node: fx.Node) -> float:
    low = node.kwargs.get("min", node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else None))
    if node.target is F.hardtanh and low is None:
        low = -1.0
    return float(low) if isinstance(low, (int, float)) else float("-inf")


def _step_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """One chain op's place in :attr:`ActivationSite.chain`."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, _IDENTITY_MODULES):
            return "none"
        clamp = isinstance(module, nn.ReLU) or (isinstance(module, nn.Hardtanh) and module.min_val == 0)
    elif node.target is F.dropout:
        return "none"
    else:
        clamp = node.target in _ZERO_CLAMP_TARGETS or (node.target in _CLAMPS and _clamp_min(node) == 0)
    return "clamp" if clamp else "other"


def _site_of(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, bool, str]:
    """The end of the element-wise chain only ``node`` feeds, whether it is non-negative, and
    the chain's kind (:attr:`ActivationSite.chain`)."""
    end, unsigned, kind = node, False, "none"
    while len(end.users) == 1:
        user = next(iter(end.users))
        passes, nonneg = _chain_step(user, modules)
        if not passes or user.args[0] is not end:
            break
        end, unsigned = user, nonneg
        kind = max(kind, _step_kind(user, modules), key=CHAIN_KINDS.index)
    return end, unsigned, kind


def _is_join(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _JOIN_FUNCTIONS) or (
        node.op == "call_method" and node.target in _JOIN_METHODS)


def _is_concat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _CONCATS


def _operands(node: fx.Node) -> list[fx.Node]:
    args = node.args[0] if _is_concat(node) else node.args[:2]
    return [a for a in args if isinstance(a, fx.Node)]


def _is_tensor_join(node: fx.Node) -> bool:
    """A join of tensors only: ``y + 1`` or ``torch.add(a, b, alpha=2)`` moves values off any grid."""
    if not _is_join(node) or "alpha" in node.kwargs:
        return False
    args = node.args[0] if _is_concat(node) else node.args[:2]
    return all(isinstance(a, fx.Node) for a in args)


def passes_through(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` only moves or selects the values of its first argument, or clamps them at
    zero (reshapes, pixel shuffle, max pooling, ReLU), so that a tensor on a quantization grid
    (zero is on every grid) stays on it."""
    if node.op == "call_module":
        module = modules.get(node.target)
        return isinstance(module, _PASS_MODULES) and not getattr(module, "return_indices", False)
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS and not node.kwargs.get("return_indices", False)
    return node.op == "call_method" and node.target in _PASS_METHODS


def _find_ties(graph: fx.Graph, site_layers: dict[str, str]) -> tuple[list[tuple[str, ...]], dict[str, set[str]]]:
    """The groups of tied layers, and per join node the layers whose sites it is computed from."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    sources: dict[str, set[str]] = {}
    for node in graph.nodes:  # topological order: operands are resolved before their users
        if not _is_join(node):
            continue
        found: set[str] = set()
        for operand in _operands(node):
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


def _input_sources(node: fx.Node, site_layers: dict[str, str]) -> tuple[str, ...]:
    """Walk back from a layer's input to the activation sites (or model inputs) it is computed from."""
    found: dict[str, None] = {}
    stack = [a for a in node.all_input_nodes]
    seen: set[fx.Node] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.name in site_layers:
            found[site_layers[current.name]] = None
        elif current.op == "placeholder":
            found[MODEL_INPUT] = None
        else:
            stack.extend(current.all_input_nodes)
    return tuple(found)


Origin = tuple[fx.Node, fx.Node | None]


def _layer_origins(graph: fx.Graph, layers: dict[str, nn.Module], modules: dict[str, nn.Module],
                   stops: set[str]) -> dict[str, list[Origin]]:
    """Per layer and call, walking back from its input through grid-preserving ops up to a node in
    ``stops`` (a site's end): the tensor they start from, and the op the layer reads (``None``
    when it reads that tensor directly)."""
    origins: dict[str, list[Origin]] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in layers or not isinstance(next(iter(node.args), None), fx.Node):
            continue
        read, origin = None, node.args[0]
        while origin.name not in stops and passes_through(origin, modules) and isinstance(origin.args[0], fx.Node):
            read = read or origin
            origin = origin.args[0]
        origins.setdefault(node.target, []).append((origin, read))
    return origins


class _Joins:
    """Which add and concat outputs are quantized, and how (the module docstring's rules)."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module], sites: dict[str, ActivationSite],
                 site_layers: dict[str, str], sources: dict[str, set[str]]) -> None:
        self.sites, self.site_layers, self.sources = sites, site_layers, sources
        self.joins = {n.name: n for n in graph.nodes if _is_tensor_join(n) and sources.get(n.name)}
        self.ends = {name: _site_of(node, modules) for name, node in self.joins.items()}
        self._grid: dict[str, bool] = {}

    def on_grid(self, name: str) -> bool:
        """Whether the concat ``name`` joins only tensors on its tie group's grid."""
        if name not in self._grid:
            node = self.joins[name]
            self._grid[name] = _is_concat(node) and self.ends[name][0] is node and all(
                operand.name in self.site_layers
                or (operand.name in self.joins and _is_concat(operand) and self.on_grid(operand.name))
                for operand in _operands(node))
        return self._grid[name]

    def nonnegative(self, node: fx.Node) -> bool:
        if node.name in self.site_layers:
            return bool(self.sites[self.site_layers[node.name]].unsigned)
        if node.name not in self.joins:
            return False
        end, nonneg, _ = self.ends[node.name]
        return nonneg if end is not node else all(self.nonnegative(op) for op in _operands(node))

    def modes(self, read: set[str]) -> dict[str, str]:
        """The quantized joins and their modes, given the fx nodes that layers read; a concat on
        the grid marks the concats it joins too (free, and it lets them run on integers)."""
        quantized = [name for name, (end, _, _) in self.ends.items() if end.name in read]
        modes: dict[str, str] = {}
        while quantized:
            name = quantized.pop()
            if name in modes:
                continue
            modes[name] = "same_grid" if self.on_grid(name) else "own"
            if modes[name] == "same_grid":
                quantized += [op.name for op in _operands(self.joins[name]) if op.name in self.joins]
        return modes


def _tensor_sites(graph: fx.Graph, joins: _Joins, leader: dict[str, str], order: list[str],
                  origins: dict[str, list[Origin]]) -> dict[str, TensorSite]:
    """Model inputs and join outputs that layers read, keyed ``<input:NAME>`` and ``<join:NAME>``."""
    readers: dict[str, list[str]] = {}
    for layer, calls in origins.items():
        for origin, _ in calls:
            readers.setdefault(origin.name, []).append(layer)
    found: dict[str, TensorSite] = {}
    for node in graph.nodes:
        if node.op == "placeholder" and node.name in readers:
            key = f"<input:{node.name}>"
            found[key] = TensorSite(key, node.name, None, "own", None, tuple(dict.fromkeys(readers[node.name])))
    for name, mode in joins.modes(set(readers)).items():
        end = joins.ends[name][0]
        key = f"<join:{name}>"
        follows = leader[min(joins.sources[name], key=order.index)]
        found[key] = TensorSite(key, end.name, follows, mode, joins.nonnegative(joins.joins[name]),
                                tuple(dict.fromkeys(readers.get(end.name, ()))))
    return found


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
    except Exception as err:  # noqa: BLE001 - any tracing failure means: use hooks
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
            end, unsigned, chain = _site_of(node, modules)
            site = sites.setdefault(node.target, ActivationSite(node.target, (), True, chain))
            site.nodes += (end.name,)
            site.unsigned = site.unsigned and unsigned  # a layer called twice: both must be >= 0
            site.chain = max(site.chain, chain, key=CHAIN_KINDS.index)
            site_layers[end.name] = node.target
    inputs: dict[str, tuple[str, ...]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in layers:
            inputs[node.target] = tuple(dict.fromkeys(inputs.get(node.target, ()) + _input_sources(node, site_layers)))
    order = list(sites)  # execution order
    groups, sources = _find_ties(gm.graph, site_layers)
    ties = sorted((tuple(sorted(g, key=order.index)) for g in groups), key=lambda g: order.index(g[0]))
    leader = {layer: layer for layer in sites} | {m: group[0] for group in ties for m in group}
    joins = _Joins(gm.graph, modules, sites, site_layers, sources)
    stops = set(site_layers) | {end.name for end, _, _ in joins.ends.values()}
    origins = _layer_origins(gm.graph, layers, modules, stops)
    tensor_sites = _tensor_sites(gm.graph, joins, leader, order, origins)
    regrids, reads = _reads(origins, dict(site_layers) | {site.node: key for key, site in tensor_sites.items()})
    return GraphAnalysis(gm, sites, ties, inputs, tensor_sites, regrids, reads, folds)
