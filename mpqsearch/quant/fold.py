"""BatchNorm folded into the convolution or linear layer before it, as every int8 deployment does.

A batch norm in eval mode is an affine map per channel, ``y = (x - mean) * f + beta`` with
``f = gamma / sqrt(var + eps)``, so ``bn(conv(x))`` is one convolution with weight ``w * f`` and
bias ``(b - mean) * f + beta`` (torch's :func:`~torch.nn.utils.fusion.fuse_conv_bn_weights`).
Weights are quantized after folding, so the fake-quant model, the size and BOPs counts and the
ONNX export all see the layer that runs (an unfolded batch norm between a convolution and its
quantizer keeps ONNX Runtime from running the convolution in int8).

Folding uses the running statistics: the folded model is the float model in eval mode, and QAT
(:mod:`mpqsearch.trials.refine`, which trains in eval mode) trains the folded weights with the
statistics frozen. :func:`unfold_state` and :func:`fold_state` map between the folded weights and
the float model's own ``state_dict`` (convolution and batch-norm entries), so refined weights stay
a plain ``state_dict`` of the float model (docs/numerics.md, "BatchNorm folding").

Folded: a batch-norm module (``nn.BatchNorm1d/2d/3d`` and subclasses such as timm's
``BatchNormAct2d``, whose traced forward is ``F.batch_norm`` on its buffers) or a functional
``F.batch_norm`` with running statistics and ``training=False``, whose input is the output of a
quantizable layer called once and read by nothing else. A grouped transposed convolution, and a
linear layer whose batch norm does not normalize its output features, stay as they are.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights


@dataclass(frozen=True)
class Fold:
    """One batch norm folded into ``layer``: the ``state_dict`` keys of its tensors (``None``: no
    affine weight or bias) and its ``eps``."""

    layer: str
    running_mean: str
    running_var: str
    weight: str | None
    bias: str | None
    eps: float

    @property
    def parameter_keys(self) -> tuple[str, ...]:
        return tuple(key for key in (self.weight, self.bias) if key is not None)


def _batch_norm(node: fx.Node, modules: Mapping[str, nn.Module]) -> tuple[Fold, tuple[fx.Node, ...]] | None:
    """``node`` as a foldable batch norm of its first argument (with ``layer`` left empty) and the
    ``get_attr`` nodes it reads, or ``None``."""
    if node.op == "call_module":
        bn = modules.get(node.target)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None or len(node.args) != 1:
            return None
        prefix = f"{node.target}."
        return Fold("", prefix + "running_mean", prefix + "running_var", prefix + "weight" if bn.affine else None,
                    prefix + "bias" if bn.affine else None, bn.eps), ()
    if node.op != "call_function" or node.target is not F.batch_norm:
        return None
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    defaults = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}
    bound = defaults | dict(zip(names, node.args, strict=False)) | dict(node.kwargs)  # args may stop early
    tensors = [bound.get(key) for key in ("running_mean", "running_var", "weight", "bias")]
    if bound["training"] is not False or not isinstance(bound["eps"], float) or not all(
            t is None or (isinstance(t, fx.Node) and t.op == "get_attr") for t in tensors) or None in tensors[:2]:
        return None
    keys = [None if t is None else t.target for t in tensors]
    return Fold("", *keys, bound["eps"]), tuple(t for t in tensors if t is not None)


def _tensor(gm: fx.GraphModule, key: str | None) -> torch.Tensor | None:
    if key is None:
        return None
    module, _, name = key.rpartition(".")
    return getattr(gm.get_submodule(module), name)


def _fused(layer: nn.Module, fold: Fold, tensors: Mapping[str, torch.Tensor | None]) -> nn.Module | None:
    """A copy of ``layer`` with ``fold``'s batch norm folded in, from ``tensors`` (by key)."""
    stats = (tensors[fold.running_mean], tensors[fold.running_var], fold.eps,
             tensors.get(fold.weight), tensors.get(fold.bias))
    if isinstance(layer, nn.Linear):
        if stats[0].numel() != layer.out_features:
            return None
        ones = torch.ones_like(stats[0])
        weight, bias = fuse_linear_bn_weights(layer.weight, layer.bias, *stats[:3],
                                              ones if stats[3] is None else stats[3],
                                              torch.zeros_like(ones) if stats[4] is None else stats[4])
    else:
        transpose = isinstance(layer, nn.modules.conv._ConvTransposeNd)
        if transpose and layer.groups != 1:
            return None
        weight, bias = fuse_conv_bn_weights(layer.weight, layer.bias, *stats, transpose=transpose)
    fused = copy.deepcopy(layer)
    fused.weight, fused.bias = weight, bias
    return fused


def fold_batch_norms(gm: fx.GraphModule, layers: Mapping[str, nn.Module]) -> dict[str, Fold]:
    """Fold, in ``gm``'s graph, every batch norm that directly follows one of ``layers`` (module
    docstring); the folded layers are copies, so modules ``gm`` shares with another model are left
    alone. Returns the folds by layer name."""
    modules = dict(gm.named_modules())
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    folds: dict[str, Fold] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in layers or calls[node.target] != 1 or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        found = _batch_norm(user, modules)
        if found is None or user.args[0] is not node or (user.op == "call_module" and calls[user.target] != 1):
            continue
        fold, attrs = found
        fold = Fold(node.target, *(getattr(fold, f) for f in ("running_mean", "running_var", "weight", "bias", "eps")))
        tensors = {key: _tensor(gm, key) for key in (fold.running_mean, fold.running_var, fold.weight, fold.bias)}
        fused = _fused(modules[node.target], fold, tensors)
        if fused is None:
            continue
        parent, _, name = node.target.rpartition(".")
        setattr(gm.get_submodule(parent), name, fused)
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        for attr in attrs:
            if not attr.users:
                gm.graph.erase_node(attr)
        if user.op == "call_module":
            gm.delete_submodule(user.target)
        folds[node.target] = fold
    if folds:
        gm.recompile()
    return folds


def _factor(fold: Fold, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    gamma = state[fold.weight] if fold.weight is not None else torch.ones_like(state[fold.running_var])
    return gamma * torch.rsqrt(state[fold.running_var] + fold.eps)


def _shape(layer: nn.Module, dims: int) -> list[int]:
    transpose = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    return [1, -1] + [1] * (dims - 2) if transpose else [-1] + [1] * (dims - 1)


@torch.no_grad()
def fold_state(layer: nn.Module, fold: Fold, state: Mapping[str, torch.Tensor],
               prefix: str) -> dict[str, torch.Tensor]:
    """The folded ``weight`` and ``bias`` of ``layer`` (keys ``prefix + 'weight'`` and
    ``prefix + 'bias'`` in ``state``, the float model's ``state_dict``) under ``fold``."""
    factor = _factor(fold, state)
    weight = state[prefix + "weight"] * factor.reshape(_shape(layer, state[prefix + "weight"].dim()))
    bias = state.get(prefix + "bias")
    bias = torch.zeros_like(factor) if bias is None else bias
    beta = state[fold.bias] if fold.bias is not None else torch.zeros_like(factor)
    return {"weight": weight, "bias": (bias - state[fold.running_mean]) * factor + beta}


@torch.no_grad()
def unfold_state(layer: nn.Module, fold: Fold, weight: torch.Tensor, bias: torch.Tensor,
                 state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The inverse of :func:`fold_state`: the float model's ``weight`` and ``bias`` of ``layer``
    that fold to ``weight`` and ``bias`` under the batch norm in ``state``. A channel whose factor
    is 0 (``gamma = 0``) keeps ``state``'s own values; a layer without a bias absorbs the folded
    bias in the batch norm's ``bias`` instead (returned too, under its key)."""
    factor = _factor(fold, state)
    safe = torch.where(factor == 0, torch.ones_like(factor), factor)
    shape = _shape(layer, weight.dim())
    unfolded = torch.where((factor == 0).reshape(shape), state[prefix + "weight"], weight / safe.reshape(shape))
    beta = state[fold.bias] if fold.bias is not None else torch.zeros_like(factor)
    result = {prefix + "weight": unfolded}
    if prefix + "bias" in state and state[prefix + "bias"] is not None:
        result[prefix + "bias"] = torch.where(factor == 0, state[prefix + "bias"],
                                              (bias - beta) / safe + state[fold.running_mean])
    elif fold.bias is not None:  # the layer had no bias: the change goes to the batch norm's beta
        result[fold.bias] = bias + state[fold.running_mean] * factor
    return result
