"""mpqsearch: search per-layer bit widths of PyTorch models.

The public API::

    from mpqsearch import SearchSpace, Policy, apply_policy, load_policy, save_policy, model_size_bytes

    space = SearchSpace.from_model(model, example_input)
    policy = Policy.uniform(space, weight_bits=4, act_bits=8)
    qmodel = apply_policy(model, policy, calib_data)
    export_onnx(qmodel, example_input, "model.onnx")   # QDQ model for ONNX Runtime
"""

from .apply import apply_policy
from .policy import Policy, PolicyError, load_policy, save_policy
from .quant.export import export_onnx, onnxruntime_session
from .quant.spec import LayerQuantConfig
from .search_spaces import SearchSpace
from .search_spaces.costs import model_size_bytes

__version__ = "0.1.0"

__all__ = [
    "LayerQuantConfig", "Policy", "PolicyError", "SearchSpace", "apply_policy", "export_onnx", "load_policy",
    "model_size_bytes", "onnxruntime_session", "save_policy",
]
