"""mpqsearch: search per-layer bit widths of PyTorch models.

The public API::

    from mpqsearch import SearchSpace, Policy, apply_policy, load_policy, save_policy, model_size_bytes

    space = SearchSpace.from_model(model, example_input)
    policy = Policy.uniform(space, weight_bits=4, act_bits=8)
    qmodel = apply_policy(model, policy, calib_data)
    export_onnx(qmodel, example_input, "model.onnx")   # QDQ model for ONNX Runtime

Names are imported on first use (:mod:`mpqsearch._lazy`), so the torch-free parts of the package
(the experiment file, objectives, the NNI trial client and tuners) load without torch.
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".apply": ["apply_policy"],
    ".policy": ["Policy", "PolicyError", "load_policy", "save_policy"],
    ".quant.export": ["export_onnx", "onnxruntime_session"],
    ".quant.spec": ["LayerQuantConfig"],
    ".search_spaces": ["SearchSpace"],
    ".search_spaces.costs": ["model_size_bytes"],
})
