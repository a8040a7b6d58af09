"""How tensors, layers and models are quantized: numerics only, no search.

- :mod:`.spec`: bit widths and the per-layer :class:`LayerQuantConfig`;
- :mod:`.functional`: clip values, scales, fake quantization of tensors;
- :mod:`.observers`: calibration statistics of activations;
- :mod:`.modules`: weight and activation fake-quantize modules;
- :mod:`.graph`: activation sites and add/concat ties from the torch.fx graph;
- :mod:`.transform`: the model transform (prepare, calibrate, quantize).
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".functional": ["clip_values", "fake_quantize", "quant_range", "scale_from_clip"],
    ".graph": ["QUANTIZABLE_TYPES", "UntraceableModelWarning", "analyze", "layer_fingerprint", "quantizable_layers"],
    ".modules": ["ActFakeQuant", "WeightFakeQuant", "weight_channel_axis", "weight_scale"],
    ".observers": ["ActivationStats"],
    ".spec": ["FLOAT_BITS", "VALID_BITS", "LayerQuantConfig", "check_bits"],
    ".transform": ["Prepared", "calibrate", "collect_activation_stats", "prepare", "quantize_model"],
})
