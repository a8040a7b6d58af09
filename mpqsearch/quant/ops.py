"""What the ops of a traced graph do to a quantization grid: which ops an activation site passes
through (the element-wise chain after a layer), which clamp at zero, which join tensors, which
only move values. :mod:`.graph` builds the analysis from these answers.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

MODEL_INPUT = "<input>"
"""Stands for a model input among a layer's input sources."""


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


def chain_step(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, bool]:
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


def step_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str:
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


def site_of(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, bool, str]:
    """The end of the element-wise chain only ``node`` feeds, whether it is non-negative, and
    the chain's kind (:attr:`ActivationSite.chain`)."""
    end, unsigned, kind = node, False, "none"
    while len(end.users) == 1:
        user = next(iter(end.users))
        passes, nonneg = chain_step(user, modules)
        if not passes or user.args[0] is not end:
            break
        end, unsigned = user, nonneg
        kind = max(kind, step_kind(user, modules), key=CHAIN_KINDS.index)
    return end, unsigned, kind


def is_join(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _JOIN_FUNCTIONS) or (
        node.op == "call_method" and node.target in _JOIN_METHODS)


def is_concat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _CONCATS


def operands(node: fx.Node) -> list[fx.Node]:
    args = node.args[0] if is_concat(node) else node.args[:2]
    return [a for a in args if isinstance(a, fx.Node)]


def is_tensor_join(node: fx.Node) -> bool:
    """A join of tensors only: ``y + 1`` or ``torch.add(a, b, alpha=2)`` moves values off any grid."""
    if not is_join(node) or "alpha" in node.kwargs:
        return False
    args = node.args[0] if is_concat(node) else node.args[:2]
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




def moves_values(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """:func:`passes_through` less the clamps at zero: ops that only move or select values, so that a
    quantizer placed before them sees the same range as one placed after."""
    if node.op == "call_module":
        return passes_through(node, modules) and not isinstance(modules.get(node.target), nn.ReLU)
    return passes_through(node, modules) and node.target not in _ZERO_CLAMP_TARGETS


def input_sources(node: fx.Node, site_layers: dict[str, str]) -> tuple[str, ...]:
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


_BOUNDED_MODULES = (nn.SiLU, nn.Hardswish, nn.GELU, nn.ELU, nn.Mish, nn.CELU, nn.SELU)
_BOUNDED_FUNCTIONS = {F.silu, F.hardswish, F.gelu, F.elu, F.mish, F.celu, F.selu}


def bounded_below(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is an activation whose outputs never go below a small negative bound
    (SiLU >= -0.2785, hardswish >= -0.375, GELU >= -0.17, ELU >= -alpha): an asymmetric grid
    wastes no level on the negative side it never reaches."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _BOUNDED_MODULES)
    return node.op == "call_function" and node.target in _BOUNDED_FUNCTIONS
