"""Where a model's activations are quantized, read from its torch.fx graph.

For every quantizable layer we find its *activation site*: the layer's output followed through
the element-wise ops that only it feeds (batch norm, ReLU, clamp, ...). The activation is
quantized there, unsigned if the last op is non-negative (ReLU family, sigmoid, clamp at >= 0).

Seed 004 gives tensors joined by add or concat one shared scale and bit width. We tie the layers
whose sites feed one add or concat, following operands that are themselves adds or concats
(a residual stream is one chain of adds, so every layer writing into it shares its scale).
Operands that are neither a site nor a join (a model input, a scaled branch ``0.2 * y``) are not
followed. Where the model cannot be traced we fall back to hooks on the layers' outputs, take
signedness from the calibration data, warn once, and apply no ties.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)

_CHAIN_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU,
    nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout,
)
_NONNEG_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)
_CHAIN_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardtanh, F.hardswish,
    F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.clamp, torch.clip, F.dropout,
}
_NONNEG_FUNCTIONS = {F.relu, torch.relu, F.relu6, torch.sigmoid, F.sigmoid, F.hardsigmoid}
_CHAIN_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "clip", "clip_"}
_NONNEG_METHODS = {"relu", "relu_", "sigmoid"}
_CLAMPS = {torch.clamp, torch.clip, F.hardtanh, "clamp", "clamp_", "clip", "clip_"}
_JOIN_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.cat, torch.concat, torch.concatenate}
_JOIN_METHODS = {"add", "add_"}


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
    """Where one layer's output activation is quantized."""

    layer: str
    nodes: tuple[str, ...]  # fx node names, one per call of the layer; empty when not traced
    unsigned: bool | None  # None: decided from calibration data (hook fallback)


@dataclass
class GraphAnalysis:
    graph_module: fx.GraphModule | None
    sites: dict[str, ActivationSite]
    ties: list[tuple[str, ...]] = field(default_factory=list)
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per layer, the layers whose quantized activations it reads (or :data:`MODEL_INPUT`)."""

    @property
    def traced(self) -> bool:
        return self.graph_module is not None

    def tie_of(self, layer: str) -> tuple[str, ...] | None:
        return next((group for group in self.ties if layer in group), None)


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


def _site_of(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, bool]:
    end, unsigned = node, False
    while len(end.users) == 1:
        user = next(iter(end.users))
        passes, nonneg = _chain_step(user, modules)
        if not passes or user.args[0] is not end:
            break
        end, unsigned = user, nonneg
    return end, unsigned


def _is_join(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _JOIN_FUNCTIONS) or (
        node.op == "call_method" and node.target in _JOIN_METHODS)


def _operands(node: fx.Node) -> list[fx.Node]:
    args = node.args[0] if node.target in (torch.cat, torch.concat, torch.concatenate) else node.args[:2]
    return [a for a in args if isinstance(a, fx.Node)]


def _find_ties(graph: fx.Graph, site_layers: dict[str, str]) -> list[tuple[str, ...]]:
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
    return [tuple(g) for g in groups.values() if len(g) > 1]


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


def analyze(model: nn.Module) -> GraphAnalysis:
    """Trace ``model`` and locate every quantizable layer's activation site and the ties."""
    layers = quantizable_layers(model)
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: use hooks
        warnings.warn(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(err).__name__}: {err}); "
            "activations are quantized at the layers' outputs, signedness comes from calibration "
            "and tensors joined by add or concat are not tied to one scale",
            UntraceableModelWarning, stacklevel=2)
        return GraphAnalysis(None, {n: ActivationSite(n, (), None) for n in layers})
    modules = dict(gm.named_modules())
    sites: dict[str, ActivationSite] = {}
    site_layers: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in layers:
            end, unsigned = _site_of(node, modules)
            site = sites.setdefault(node.target, ActivationSite(node.target, (), True))
            site.nodes += (end.name,)
            site.unsigned = site.unsigned and unsigned  # a layer called twice: both must be >= 0
            site_layers[end.name] = node.target
    inputs: dict[str, tuple[str, ...]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in layers:
            inputs[node.target] = tuple(dict.fromkeys(inputs.get(node.target, ()) + _input_sources(node, site_layers)))
    order = list(sites)  # execution order
    ties = sorted((tuple(sorted(g, key=order.index)) for g in _find_ties(gm.graph, site_layers)),
                  key=lambda g: order.index(g[0]))
    return GraphAnalysis(gm, sites, ties, inputs)
