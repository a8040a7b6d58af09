"""What was found: one loader for every experiment, Pareto fronts, hypervolume, figures,
reports and picking the policy to take home.

- :mod:`.results`: :func:`load_results` -> :class:`Results` (one :class:`TrialRow` per trial);
- :mod:`.pareto`: fronts, hypervolume (via moocore), knee;
- :mod:`.figures`, :mod:`.report`: plotly figures and the self-contained HTML report;
- :mod:`.baselines`: uniform-precision baselines evaluated on request;
- :mod:`.pick`, :mod:`.export`: pick rules and the exported policy (and ONNX model);
- :mod:`.reapply`: re-evaluating an exported policy against its recorded metrics.
"""

from .pareto import hypervolume, hypervolume_history, knee, nadir, pareto_front, pareto_mask
from .results import Results, TrialRow, load_results

__all__ = ["Results", "TrialRow", "hypervolume", "hypervolume_history", "knee", "load_results", "nadir",
           "pareto_front", "pareto_mask"]
