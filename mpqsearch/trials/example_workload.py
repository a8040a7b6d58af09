"""The ``example`` workload: the example network on synthetic data, for smoke runs and tests.

It needs no trained weights and no data files: inputs are fixed-seed Gaussian images and the
targets are the FP32 model's own predictions, so ``top1`` measures how often the quantized model
agrees with the float one (FP32 scores 1.0 by construction). Trials take milliseconds.
"""

from __future__ import annotations

import torch

from ..example import EXAMPLE_INPUT_SHAPE, build
from .workload import Workload, register_workload


def top1(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample top-1 correctness (1.0 or 0.0)."""
    return {"top1": (output.argmax(dim=1) == target).to(torch.float32)}


@register_workload("example")
def example_workload() -> Workload:
    generator = torch.Generator().manual_seed(1234)
    shape = EXAMPLE_INPUT_SHAPE[1:]
    calib = [torch.randn(16, *shape, generator=generator) for _ in range(2)]
    inputs = [torch.randn(64, *shape, generator=generator) for _ in range(2)]
    model = build()
    with torch.no_grad():
        eval_data = [(x, model(x).argmax(dim=1)) for x in inputs]
    return Workload(
        name="example", task="classification", build_model=build,
        example_input=torch.randn(EXAMPLE_INPUT_SHAPE, generator=generator),
        calib_data=calib, eval_data=eval_data, metric=top1, directions={"top1": "maximize"},
        description="example network, agreement of the quantized model with FP32 on synthetic inputs",
    )
