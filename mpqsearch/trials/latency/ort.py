"""The default backend: the exported QDQ model, timed end to end in ONNX Runtime on the CPU.

This is the number a deployment sees: layers at 8 bits or fewer run as ONNX Runtime's fused
int8 kernels where its graph optimizer can fuse them, 16-bit layers as float kernels between
int16 Q/DQ, 32-bit layers in float (see :mod:`mpqsearch.quant.export`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...quant.export import check_target, export_onnx, model_target, onnxruntime_session
from ...quant.qdq import warn_without_vnni
from .base import LatencyRequest, LatencyResult, TimedBackend, Timing, register_latency_backend, time_calls


def _arrays(example_input: Any) -> list[np.ndarray]:
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    return [x.detach().cpu().numpy() for x in inputs]


def time_onnx(path: str | os.PathLike, example_input: Any, *, threads: int, warmup: int, repeats: int) -> Timing:
    """Time ``session.run`` of an ONNX file on ``example_input`` (tensors, in the model's input
    order) with ``threads`` intra-op threads."""
    session = onnxruntime_session(path, threads=threads)
    feed = {meta.name: array for meta, array in zip(session.get_inputs(), _arrays(example_input), strict=True)}
    return time_calls(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)


@register_latency_backend
class OnnxRuntimeBackend(TimedBackend):
    """Exports the request's fake-quant model (:func:`~mpqsearch.quant.export.export_onnx`, for
    ``target``: ``portable``, ``vnni``, or by default the one the model was quantized for) and
    times it: median and IQR of ``repeats`` runs after
    ``warmup``, ``threads`` intra-op threads."""

    name = "onnxruntime"

    def __init__(self, *, threads: int = 1, repeats: int = 50, warmup: int = 10, target: str | None = None) -> None:
        super().__init__(threads=threads, repeats=repeats, warmup=warmup)
        if target is not None:
            check_target(target)
        self.target = target

    def measure(self, request: LatencyRequest) -> LatencyResult:
        if request.qmodel is None:
            raise ValueError("the onnxruntime latency backend times the quantized model: the request has none")
        return self.result(self.time_model(request.qmodel, request.example_input), "end-to-end")

    def time_model(self, model: torch.nn.Module, example_input: Any) -> Timing:
        """Export ``model`` (fake-quant or float) to a temporary file and time it."""
        with tempfile.TemporaryDirectory(prefix="mpqsearch-latency-") as tmp:
            path = export_onnx(model, example_input, Path(tmp) / "model.onnx", target=self.target)
            warn_without_vnni(self.target or model_target(model), "timing an ONNX file")
            return time_onnx(path, example_input, threads=self.threads, warmup=self.warmup, repeats=self.repeats)
