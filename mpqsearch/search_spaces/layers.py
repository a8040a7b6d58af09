"""Layer discovery: what each quantizable layer is, what it costs, and which stage it is in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..quant.fold import Fold
from ..quant.graph import analyze, quantizable_layers
from ..quant.transform import calibrate

StageMap = Mapping[str, str] | Callable[[str], str]


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer as the search sees it.

    ``macs`` are multiply-accumulates for the example input as given (batch included), measured
    from the shapes seen in one forward pass, summed over calls if the layer runs more than once.
    ``params`` counts weight and bias elements. ``tied_group`` names the group of layers whose
    activations share one scale and bit width (joined by add or concat), if any. ``input_from``
    lists the layers whose quantized activations this layer reads (``"<input>"`` for a model
    input; empty if the model could not be traced). A layer with a batch norm folded into it
    (:mod:`mpqsearch.quant.fold`) is described as folded: ``params`` counts its folded weight and
    bias, ``folded_params`` the batch norm's parameters it absorbed (no longer stored apart).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int
    weight_shape: tuple[int, ...]
    params: int
    weight_params: int
    macs: int
    stage: str
    tied_group: str | None
    act_unsigned: bool | None
    input_from: tuple[str, ...] = ()
    folded_params: int = 0

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["depthwise"] = self.depthwise
        return data


def _layer_macs(layer: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    if isinstance(layer, nn.Linear):
        return output.numel() * layer.in_features
    kernel = int(torch.tensor(layer.kernel_size).prod())
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        # every input element meets (out_channels / groups) * kernel weights
        return inputs.numel() * (layer.out_channels // layer.groups) * kernel
    return output.numel() * (layer.in_channels // layer.groups) * kernel


def _stage_of(name: str, stages: StageMap | None) -> str:
    """Default: the top-level child holding the layer. A mapping is matched by the longest
    key that equals the layer name or is a dotted prefix of it; unmatched layers keep the default."""
    default = name.split(".")[0]
    if stages is None:
        return default
    if callable(stages):
        return str(stages(name))
    matches = [k for k in stages if name == k or name.startswith(k + ".")]
    return str(stages[max(matches, key=len)]) if matches else default


def _folded_params(model: nn.Module, fold: Fold | None) -> int:
    return 0 if fold is None else sum(model.get_parameter(key).numel() for key in fold.parameter_keys)


def discover_layers(model: nn.Module, example_input: Any, stages: StageMap | None = None) -> list[LayerInfo]:
    """Every quantizable layer of ``model`` in execution order, measured on ``example_input``.

    Layers that do not run on the example input come last with zero MACs.
    """
    layers = quantizable_layers(model)
    macs: dict[str, int] = {}
    handles = []
    for name, layer in layers.items():
        def hook(module, args, output, name=name):
            macs[name] = macs.get(name, 0) + _layer_macs(module, args[0], output)
        handles.append(layer.register_forward_hook(hook))
    try:
        calibrate(model, [example_input])
    finally:
        for handle in handles:
            handle.remove()
    analysis = analyze(model)
    folded = quantizable_layers(analysis.graph_module) if analysis.traced else {}
    tie_names = {m: f"tied{i}" for i, group in enumerate(analysis.ties) for m in group}
    order = list(macs) + [n for n in layers if n not in macs]
    infos = []
    for name in order:
        layer = layers[name]
        is_linear = isinstance(layer, nn.Linear)
        site = analysis.sites.get(name)
        infos.append(LayerInfo(
            name=name,
            kind=type(layer).__name__,
            in_channels=layer.in_features if is_linear else layer.in_channels,
            out_channels=layer.out_features if is_linear else layer.out_channels,
            kernel_size=() if is_linear else tuple(layer.kernel_size),
            groups=1 if is_linear else layer.groups,
            weight_shape=tuple(layer.weight.shape),
            params=sum(p.numel() for p in folded.get(name, layer).parameters(recurse=False)),
            weight_params=layer.weight.numel(),
            macs=macs.get(name, 0),
            stage=_stage_of(name, stages),
            tied_group=tie_names.get(name),
            act_unsigned=site.unsigned if site else None,
            input_from=analysis.inputs.get(name, ()),
            folded_params=_folded_params(model, analysis.folds.get(name)),
        ))
    return infos
