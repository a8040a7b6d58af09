"""What one trial does: evaluate one policy on a workload (accuracy, size, BOPs, latency),
share what trials have in common, and refine a chosen policy by QAT.

- :mod:`.evaluate`: :class:`Evaluator` / :func:`evaluate_policy` -> :class:`TrialResult`;
- :mod:`.latency`: latency backends (``onnxruntime``, ``torch``, ``lut``, ``none``);
- :mod:`.cache`, :mod:`.isolation`: what concurrent trial processes share and how they keep out
  of each other's timings;
- :mod:`.refine`: QAT refinement of a policy.
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".errors": ["MetricError", "QuantizationError", "TrialError"],
    ".evaluate": ["Evaluator", "TrialResult", "evaluate_policy"],
})
