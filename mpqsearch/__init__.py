"""mpqsearch: search per-layer bit widths of PyTorch models.

The public API::

    from mpqsearch import SearchSpace, Policy, apply_policy, load_policy, save_policy, model_size_bytes

    space = SearchSpace.from_model(model, example_input)
    policy = Policy.uniform(space, weight_bits=4, act_bits=8)
    qmodel = apply_policy(model, policy, calib_data)
    export_onnx(qmodel, example_input, "model.onnx")   # QDQ model for ONNX Runtime

The names are imported on first use (PEP 562), so that the torch-free parts of the package (the
experiment file, objectives, the NNI trial client and tuners) load without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "apply_policy": ".apply",
    "Policy": ".policy", "PolicyError": ".policy", "load_policy": ".policy", "save_policy": ".policy",
    "export_onnx": ".quant.export", "onnxruntime_session": ".quant.export",
    "LayerQuantConfig": ".quant.spec",
    "SearchSpace": ".search_spaces",
    "model_size_bytes": ".search_spaces.costs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mpqsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
