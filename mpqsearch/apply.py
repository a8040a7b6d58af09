"""Applying a policy to a model: the one call users make with an exported policy file."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .policy import Policy
from .quant.graph import layer_fingerprint
from .quant.transform import quantize_model
from .quant.weights import load_float_state


def apply_policy(model: nn.Module, policy: Policy, calib_data: Iterable[Any] | None = None, **kwargs: Any) -> nn.Module:
    """A fake-quantized copy of ``model`` under ``policy``; ``model`` is left untouched.

    ``calib_data`` is an iterable of example inputs (tensors, argument tuples or keyword dicts)
    from which activation scales are calibrated; it may be omitted when every activation stays
    at 32 bits. The policy must have been made for this model (same layers and weight shapes);
    its ``input_bits`` quantize the model inputs and its ``target`` says which CPUs the weights'
    grids are made for. A refined policy (one with ``weights``) is
    quantized on the scales of ``model``'s own weights and calibration, then its refined float
    weights take their place (the grid they were trained on). Extra keyword arguments go to
    :func:`mpqsearch.quant.quantize_model` (cached statistics).

    Example::

        policy = load_policy("policy.yaml", model)
        qmodel = apply_policy(model, policy, calib_batches)
        output = qmodel(x)
    """
    policy.check_model(layer_fingerprint(model))
    weights = policy.read_weights(model)
    qmodel = quantize_model(model, policy.layers, calib_data, input_bits=policy.input_bits, target=policy.target,
                            **kwargs)
    if weights is not None:
        load_float_state(qmodel, weights)
    return qmodel
