"""Latency backends, chosen by name: ``onnxruntime`` (default: the exported QDQ model timed end
to end in ONNX Runtime on the CPU), ``torch`` (eager timing of the fake-quant model), ``lut``
(HAQ-style per-layer lookup table, measured once and summed per policy) and ``none``.

Example::

    backend = get_latency_backend("onnxruntime", threads=1, repeats=50)
    result = backend.measure(LatencyRequest(model, qmodel, example_input, space, policy))
    result.median_ms, result.iqr_ms
"""

from . import lut, none, ort, torch_eager  # noqa: F401 - each registers its backend
from .base import (
                   LatencyBackend,
                   LatencyRequest,
                   LatencyResult,
                   TimedBackend,
                   Timing,
                   backend_options,
                   get_latency_backend,
                   latency_backend_names,
                   register_latency_backend,
                   time_calls,
)
from .lut import LookupTableBackend, compare_with_end_to_end
from .ort import OnnxRuntimeBackend
from .torch_eager import TorchBackend

__all__ = [
    "LatencyBackend", "LatencyRequest", "LatencyResult", "LookupTableBackend", "OnnxRuntimeBackend",
    "TimedBackend", "Timing", "TorchBackend", "backend_options", "compare_with_end_to_end", "get_latency_backend",
    "latency_backend_names", "register_latency_backend", "time_calls",
]
