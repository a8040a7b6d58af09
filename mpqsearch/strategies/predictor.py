"""MSQ's task predictor (seed 002): pyramid pooling plus a weight-imprinted cosine classifier.

After every layer, the feature map is average-pooled to several grid sizes (a pyramid pooling
module), the pooled maps are flattened and concatenated, and a classifier whose weights are
*imprinted* (the L2-normalized class means of the L2-normalized features of the training
samples) predicts the class of maximum cosine similarity. Its accuracy on held-out samples
estimates how much of the task a network has solved by that layer. Nothing is trained.

Choices where the paper's abstract is silent:

- Features are taken where the layer's activation quantizer sits (after its activation: the
  tensor the next layer reads and quantization perturbs), found in the torch.fx trace; a model
  that does not trace gives the layer's own output instead. A layer run several times has the
  pooled features of its calls concatenated.
- A sample may be a whole input (classification) or one cell of a fixed grid laid over the image
  (dense tasks such as super-resolution, whose calibration data are a few large images): the
  same grid is laid over every feature map and the output, whatever their resolution, so cell
  ``(i, j)`` of each covers the same part of the picture. Pooling a map to ``(rows * g, cols * g)``
  and cutting it into ``rows x cols`` blocks gives each cell's ``g x g`` pooled map (exactly so
  when the map's size divides evenly). Cells of one image run through the network together, with
  their real surroundings, instead of as separately zero-padded patches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..quant.graph import analyze

_ADAPTIVE_POOLS = {3: F.adaptive_avg_pool1d, 4: F.adaptive_avg_pool2d, 5: F.adaptive_avg_pool3d}


def pyramid_pool(x: torch.Tensor, grids: Sequence[int], cells: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """``[N, C, ...]`` features to ``[N * rows * cols, F]``: per sample (and cell, row-major), the
    average pools to each ``g`` of ``grids`` per spatial dimension, flattened and concatenated.

    A ``[N, F]`` tensor (a linear layer's output) has nothing to pool and is returned as is.
    """
    if x.dim() == 2:
        if cells != (1, 1):
            raise ValueError(f"a [N, F] tensor cannot be cut into {cells[0]}x{cells[1]} cells")
        return x
    if x.dim() not in _ADAPTIVE_POOLS:
        raise ValueError(f"cannot pyramid-pool a tensor of shape {tuple(x.shape)}")
    if x.dim() != 4 and cells != (1, 1):
        raise ValueError(f"cells need [N, C, H, W] maps, got shape {tuple(x.shape)}")
    rows, cols = cells
    levels = []
    for g in grids:
        if x.dim() == 4:
            pooled = F.adaptive_avg_pool2d(x, (rows * g, cols * g))
            n, c = pooled.shape[:2]
            blocks = pooled.reshape(n, c, rows, g, cols, g).permute(0, 2, 4, 1, 3, 5)
            levels.append(blocks.reshape(n * rows * cols, c * g * g))
        else:
            levels.append(_ADAPTIVE_POOLS[x.dim()](x, g).flatten(1))
    return torch.cat(levels, dim=1)


@dataclass
class PooledFeatures:
    """Pyramid-pooled features per layer (layers that never ran are absent) and of the model
    output, one row per sample, all in the same sample order."""

    layers: dict[str, torch.Tensor]
    output: torch.Tensor


class _SiteRecorder(fx.Interpreter):
    """Runs a traced model and hands the value of each watched node to ``record``."""

    def __init__(self, gm: fx.GraphModule, watched: dict[str, str],
                 record: Callable[[str, torch.Tensor], None]) -> None:
        super().__init__(gm)
        self.watched = watched
        self.record = record

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if node.name in self.watched:
            self.record(self.watched[node.name], value)
        return value


@torch.no_grad()
def pooled_features(model: nn.Module, inputs: Iterable[Any], grids: Sequence[int],
                    patch: int | None = None) -> PooledFeatures:
    """Run every input batch (a tensor or a tuple of arguments) through ``model`` and pool each
    quantizable layer's features at its activation site (module docstring) and the output.

    ``patch`` None: one sample per input. Otherwise each image (the first argument,
    ``[N, C, H, W]``) is cut into ``H // patch`` by ``W // patch`` cells, one sample each.
    """
    model.eval()
    analysis = analyze(model)
    modules = dict(model.named_modules())
    watched = {node: layer for layer, site in analysis.sites.items() for node in site.nodes}
    per_layer: dict[str, list[torch.Tensor]] = {}
    outputs: list[torch.Tensor] = []
    for batch in inputs:
        args = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        cells = (1, 1) if patch is None else (args[0].shape[-2] // patch, args[0].shape[-1] // patch)
        if min(cells) < 1:
            raise ValueError(f"input of shape {tuple(args[0].shape)} is smaller than one {patch}x{patch} patch")
        calls: dict[str, list[torch.Tensor]] = {}

        def record(layer: str, value: torch.Tensor, calls: dict = calls, cells: tuple[int, int] = cells) -> None:
            calls.setdefault(layer, []).append(pyramid_pool(value, grids, cells))

        if analysis.traced:
            output = _SiteRecorder(analysis.graph_module, watched, record).run(*args)
        else:
            handles = [modules[name].register_forward_hook(
                lambda module, arguments, value, name=name: record(name, value)) for name in analysis.sites]
            try:
                output = model(*args)
            finally:
                for handle in handles:
                    handle.remove()
        for layer, values in calls.items():
            per_layer.setdefault(layer, []).append(torch.cat(values, dim=1))
        outputs.append(pyramid_pool(output, grids, cells))
    if not outputs:
        raise ValueError("no calibration inputs to compute predictor features on")
    return PooledFeatures({layer: torch.cat(values) for layer, values in per_layer.items()}, torch.cat(outputs))


def imprinted_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                       test_labels: torch.Tensor) -> float:
    """Held-out accuracy of the imprinted cosine classifier: weights are the L2-normalized means
    of the L2-normalized training features of each class; a test sample takes the class of
    highest cosine similarity (a class absent from training is never predicted)."""
    train = F.normalize(train.double(), dim=1)
    classes = train_labels.unique()
    weights = F.normalize(torch.stack([train[train_labels == c].mean(dim=0) for c in classes]), dim=1)
    predicted = classes[(F.normalize(test.double(), dim=1) @ weights.T).argmax(dim=1)]
    return (predicted == test_labels).double().mean().item()


def majority_accuracy(train_labels: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Held-out accuracy of always predicting the most frequent training class: what a predictor
    reading no features scores (chance level, with unbalanced classes counted); labels are
    class indices 0..K-1."""
    return (test_labels == torch.bincount(train_labels).argmax()).double().mean().item()
