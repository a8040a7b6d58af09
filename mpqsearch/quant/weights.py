"""The float tensors inside a fake-quantized model: read out after QAT, put back to rebuild it.

:func:`~.transform.quantize_model` parametrizes each quantized layer's weight (and a bias on the
int32 grid), so in the quantized copy the float tensor ``stem.weight`` lives at
``stem.parametrizations.weight.original``; every other tensor keeps its name. These two functions
map between the float model's ``state_dict`` and those places, so that refined weights
(:mod:`mpqsearch.trials.refine`) travel as a plain float ``state_dict`` and a rebuilt model keeps
the scales its quantization derived.

A layer with a batch norm folded into it (:mod:`.fold`) holds the folded weight and bias; they are
unfolded on the way out and folded on the way in, so the ``state_dict`` stays the float model's.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .fold import Fold, fold_state, unfold_state

FOLDS_ATTRIBUTE = "mpq_folds"
"""The attribute of a quantized model holding its :class:`~.fold.Fold` s by layer name."""


def _parametrized(key: str) -> str:
    module, _, name = key.rpartition(".")
    return f"{module}.parametrizations.{name}.original" if module else f"parametrizations.{name}.original"


def float_state(qmodel: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s ``state_dict`` with the values ``qmodel`` (a quantized copy of it) holds now;
    entries ``qmodel`` lacks (modules its traced graph never calls) keep ``model``'s values."""
    held = qmodel.state_dict()
    state = model.state_dict()
    result = {key: held.get(_parametrized(key), held.get(key, value)).detach().clone() for key, value in state.items()}
    for name, fold in _folds(qmodel).items():
        prefix = f"{name}." if name else ""
        weight, bias = (held[_parametrized(prefix + t)] if _parametrized(prefix + t) in held else held[prefix + t]
                        for t in ("weight", "bias"))
        result.update(unfold_state(qmodel.get_submodule(name), fold, weight, bias, state, prefix))
    return result


def _folds(qmodel: nn.Module) -> dict[str, Fold]:
    return dict(getattr(qmodel, FOLDS_ATTRIBUTE, None) or {})


@torch.no_grad()
def load_float_state(qmodel: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a float ``state_dict`` of the model ``qmodel`` was quantized from into ``qmodel``, in
    place, leaving every scale as it is; entries ``qmodel`` has no place for are skipped."""
    targets = qmodel.state_dict(keep_vars=True)
    state = dict(state)
    for name, fold in _folds(qmodel).items():
        prefix = f"{name}." if name else ""
        if prefix + "weight" in state:
            folded = fold_state(qmodel.get_submodule(name), fold, state, prefix)
            state.update({prefix + key: value for key, value in folded.items()})
    for key, value in state.items():
        target = targets.get(_parametrized(key), targets.get(key))
        if target is not None:
            target.copy_(value)
