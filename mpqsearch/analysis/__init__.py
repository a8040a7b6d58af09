"""What was found: one loader for every experiment, Pareto fronts, hypervolume, figures,
reports and picking the policy to take home.

- :mod:`.table`: :class:`Results` (one :class:`TrialRow` per trial), filled by
  :mod:`.nni_source` and :mod:`.optuna_source`; :mod:`.results`: :func:`load_results`;
- :mod:`.pareto`: fronts, hypervolume (via moocore), knee;
- :mod:`.figures`, :mod:`.report`: plotly figures and the self-contained HTML report;
- :mod:`.baselines`: uniform-precision baselines evaluated on request;
- :mod:`.pick`, :mod:`.export`: pick rules and the exported policy (and ONNX model);
- :mod:`.reapply`: re-evaluating an exported policy against its recorded metrics.
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".pareto": ["hypervolume", "hypervolume_history", "knee", "nadir", "pareto_front", "pareto_mask"],
    ".results": ["load_results"],
    ".table": ["Results", "TrialRow"],
})
