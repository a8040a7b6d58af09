"""How tensors, layers and models are quantized: numerics only, no search.

- :mod:`.spec`: bit widths and the per-layer :class:`LayerQuantConfig`;
- :mod:`.functional`: clip values, scales, fake quantization of tensors;
- :mod:`.observers`: calibration statistics of activations;
- :mod:`.modules`: weight and activation fake-quantize modules;
- :mod:`.graph`: activation sites and add/concat ties from the torch.fx graph;
- :mod:`.transform`: the model transform (prepare, calibrate, quantize).
"""

from .functional import clip_values, fake_quantize, quant_range, scale_from_clip
from .graph import QUANTIZABLE_TYPES, UntraceableModelWarning, analyze, layer_fingerprint, quantizable_layers
from .modules import ActFakeQuant, WeightFakeQuant, weight_channel_axis, weight_scale
from .observers import ActivationStats
from .spec import FLOAT_BITS, VALID_BITS, LayerQuantConfig, check_bits
from .transform import Prepared, calibrate, collect_activation_stats, prepare, quantize_model

__all__ = [
    "FLOAT_BITS", "QUANTIZABLE_TYPES", "VALID_BITS", "ActFakeQuant", "ActivationStats", "LayerQuantConfig", "Prepared",
    "UntraceableModelWarning", "WeightFakeQuant", "analyze", "calibrate", "check_bits", "clip_values",
    "collect_activation_stats", "fake_quantize", "layer_fingerprint", "prepare", "quant_range",
    "quantizable_layers", "quantize_model", "scale_from_clip", "weight_channel_axis", "weight_scale",
]
