"""What one trial does: workloads (model, data, metric), and the evaluation of one policy.

- :mod:`.workload`: the :class:`Workload` and the registry of built-in ones;
- :mod:`.evaluate`: :class:`Evaluator` / :func:`evaluate_policy` -> :class:`TrialResult`;
- :mod:`.latency`: latency backends (``onnxruntime``, ``torch``, ``lut``, ``none``);
- :mod:`.cache`, :mod:`.isolation`: what concurrent trial processes share and how they keep out
  of each other's timings.
"""

from .evaluate import Evaluator, MetricError, QuantizationError, TrialError, TrialResult, evaluate_policy
from .workload import Workload, get_workload, register_workload, workload_names

__all__ = [
    "Evaluator", "MetricError", "QuantizationError", "TrialError", "TrialResult", "Workload", "evaluate_policy",
    "get_workload", "register_workload", "workload_names",
]
