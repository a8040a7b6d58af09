"""Which layers exist, how they group into stages, what each may choose.

:func:`discover_layers` measures the layers; :class:`SearchSpace` holds their choices and renders
them for NNI (``to_nni``) and Optuna (``to_optuna``).
"""

from .layers import LayerInfo, discover_layers
from .space import DEFAULT_ACT_BITS, DEFAULT_WEIGHT_BITS, SearchSpace

__all__ = ["DEFAULT_ACT_BITS", "DEFAULT_WEIGHT_BITS", "LayerInfo", "SearchSpace", "discover_layers"]
