"""Eager PyTorch timing of the fake-quant model itself: no export, no runtime, for comparison.

Fake quantization runs in float, so this measures the cost of simulating a policy, not of
deploying it; use it to see what ONNX Runtime gains, or where ONNX Runtime is not available.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from ..threads import torch_threads
from .base import LatencyRequest, LatencyResult, TimedBackend, register_latency_backend, time_calls


@register_latency_backend
class TorchBackend(TimedBackend):
    """Times ``qmodel(example_input)`` in eval mode under ``torch.inference_mode`` with
    ``threads`` torch threads; weight fake quantization is cached over the runs
    (``parametrize.cached``), as a deployed model would hold its weights once."""

    name = "torch"

    def measure(self, request: LatencyRequest) -> LatencyResult:
        model = request.qmodel
        if model is None:
            raise ValueError("the torch latency backend times the quantized model: the request has none")
        inputs = request.example_input
        args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        was_training = model.training
        model.eval()
        try:
            with torch_threads(self.threads), torch.inference_mode(), parametrize.cached():
                timing = time_calls(lambda: model(*args), warmup=self.warmup, repeats=self.repeats)
        finally:
            model.train(was_training)
        return self.result(timing, "end-to-end")
