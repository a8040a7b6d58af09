"""The tensors that no layer outputs but layers read, and their quantizers: model inputs, add and
concat outputs, and any other tensor a quantized layer reads (a mean, a product, a normalized
concat). See docs/numerics.md ("Where activations are quantized") for the rules and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

from .ops import MODEL_INPUT, chain_step, input_sources, is_concat, is_tensor_join, operands, site_of

Origin = tuple[fx.Node, fx.Node | None]
"""A layer call's input: the tensor it comes from and the op the layer reads (``None``: that tensor)."""


@dataclass
class TensorSite:
    """Where a tensor that no layer outputs is quantized: a model input, an add or concat output, or
    another tensor a layer reads.

    ``mode`` (module docstring): ``own`` quantizer calibrated on this tensor, or ``same_grid``: the
    quantizer of ``follows`` (shared by its tie group) applied without calibrating, the values
    being on its grid already.
    """

    key: str  # "<input:NAME>", "<join:NAME>" or "<tensor:NAME>", NAME being the fx node's
    node: str  # fx node after which the tensor is quantized
    follows: str | None  # the layer whose activation settings apply; None: a model input (input_bits)
    mode: str
    unsigned: bool | None  # None: decided from calibration data (model inputs)
    readers: tuple[str, ...]  # the layers reading it, directly or through grid-preserving ops


class Joins:
    """Which add and concat outputs are quantized, and how (docs/numerics.md)."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module], sites: Mapping[str, Any],
                 site_layers: dict[str, str], sources: dict[str, set[str]]) -> None:
        self.sites, self.site_layers, self.sources = sites, site_layers, sources
        self.joins = {n.name: n for n in graph.nodes if is_tensor_join(n) and sources.get(n.name)}
        self.ends = {name: site_of(node, modules) for name, node in self.joins.items()}
        self._grid: dict[str, bool] = {}

    def on_grid(self, name: str) -> bool:
        """Whether the concat ``name`` joins only tensors on its tie group's grid."""
        if name not in self._grid:
            node = self.joins[name]
            self._grid[name] = is_concat(node) and self.ends[name][0] is node and all(
                operand.name in self.site_layers
                or (operand.name in self.joins and is_concat(operand) and self.on_grid(operand.name))
                for operand in operands(node))
        return self._grid[name]

    def nonnegative(self, node: fx.Node) -> bool:
        if node.name in self.site_layers:
            return bool(self.sites[self.site_layers[node.name]].unsigned)
        if node.name not in self.joins:
            return False
        end, nonneg, _ = self.ends[node.name]
        return nonneg if end is not node else all(self.nonnegative(op) for op in operands(node))

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
                quantized += [op.name for op in operands(self.joins[name]) if op.name in self.joins]
        return modes


def tensor_sites_of(graph: fx.Graph, joins: Joins, leader: dict[str, str], order: list[str],
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


def read_sites_of(origins: dict[str, list[Origin]], direct: dict[str, list[Origin]], key_of: Mapping[str, str],
                  modules: dict[str, nn.Module], site_layers: dict[str, str], leader: dict[str, str],
                  order: list[str]) -> tuple[dict[str, list[Origin]], dict[str, TensorSite]]:
    """Every other tensor a layer reads: keyed ``<tensor:NAME>``, quantized by its own quantizer
    where the layer reads it, or before ops that only move values (a flatten after a pooling:
    ONNX Runtime then runs the pooling on integers too), not before a ReLU (it would waste the
    sign bit). ``origins`` are the layers' inputs walked back through grid-preserving ops,
    ``direct`` the same walked back only through ops that move values; returns the origins with
    these tensors in place, and the new sites. Such a tensor follows the activation settings of
    the earliest layer it is computed from (a model input's when none)."""
    updated: dict[str, list[Origin]] = {}
    readers: dict[fx.Node, list[str]] = {}
    for layer, calls in origins.items():
        updated[layer] = []
        for (origin, read), (near, near_read) in zip(calls, direct[layer], strict=True):
            if origin.name in key_of:
                updated[layer].append((origin, read))
            else:
                updated[layer].append((near, near_read))
                readers.setdefault(near, []).append(layer)
    found: dict[str, TensorSite] = {}
    for node, names in readers.items():
        sources = [s for s in input_sources(node, site_layers) if s != MODEL_INPUT]
        follows = leader[min(sources, key=order.index)] if sources else None
        key = f"<tensor:{node.name}>"
        unsigned = True if chain_step(node, modules)[1] else None
        found[key] = TensorSite(key, node.name, follows, "own", unsigned, tuple(dict.fromkeys(names)))
    return updated, found
