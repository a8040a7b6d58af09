"""Which layers exist, how they group into stages, what each may choose.

:func:`discover_layers` measures the layers; :class:`SearchSpace` holds their choices and renders
them for NNI (``to_nni``) and Optuna (``to_optuna``).
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".layers": ["LayerInfo", "discover_layers"],
    ".space": ["SearchSpace"],
})
