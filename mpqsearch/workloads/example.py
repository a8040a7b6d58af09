"""The ``example`` workload: the example network on synthetic data, for smoke runs and tests.

It needs no trained weights and no data files. Inputs are fixed-seed synthetic images (a random
colour, a random linear gradient and noise); the network is the example network with its head
bias centred on that data (so its predictions spread over the classes instead of one class
winning on bias alone); the targets are the FP32 model's own predictions. ``top1`` therefore
measures how often the quantized model agrees with the float one (FP32 scores 1.0 by
construction). Trials take milliseconds.
"""

from __future__ import annotations

import torch

from ..example import EXAMPLE_INPUT_SHAPE, ExampleNet, build
from .base import Workload
from .metrics import top1


def synthetic_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Images with per-sample colour and gradient, so pooled features differ between samples."""
    channels, height, width = EXAMPLE_INPUT_SHAPE[1:]
    colour = 2 * torch.randn(count, channels, 1, 1, generator=generator)
    across = torch.randn(count, channels, 1, 1, generator=generator) * torch.linspace(-1, 1, width).view(1, 1, 1, -1)
    down = torch.randn(count, channels, 1, 1, generator=generator) * torch.linspace(-1, 1, height).view(1, 1, -1, 1)
    return colour + across + down + 0.3 * torch.randn(count, channels, height, width, generator=generator)


def build_centered() -> ExampleNet:
    """The example network whose mean logit over a fixed synthetic batch is zero."""
    model = build()
    with torch.no_grad():
        model.head.bias -= model(synthetic_images(256, torch.Generator().manual_seed(99))).mean(dim=0)
    return model


def example_workload() -> Workload:
    generator = torch.Generator().manual_seed(1234)
    calib = [synthetic_images(32, generator) for _ in range(2)]
    inputs = [synthetic_images(64, generator) for _ in range(2)]
    model = build_centered()
    with torch.no_grad():
        eval_data = [(x, model(x).argmax(dim=1)) for x in inputs]
    return Workload(
        name="example", task="classification", build_model=build_centered,
        example_input=synthetic_images(1, generator), calib_data=calib, eval_data=eval_data,
        metric=top1, directions={"top1": "maximize"},
        description="example network; agreement of the quantized model with FP32 on synthetic images",
    )
