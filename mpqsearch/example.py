"""A small example network that exercises every layer kind mpqsearch handles.

It has a Conv2d stem, a residual block (Conv2d, depthwise Conv2d, add), a concat of two
branches, a ConvTranspose2d upsampler and a Linear head, so ``mpqsearch layers`` has something
to show before any trained workload exists, and the tests have one model with every feature.
"""

from __future__ import annotations

import torch
from torch import nn

EXAMPLE_INPUT_SHAPE = (1, 3, 32, 32)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.depthwise(self.relu(self.conv(x)))


class ExampleNet(nn.Module):
    """Stem -> residual block -> two-branch concat -> transposed-conv upsampler -> linear head."""

    def __init__(self, channels: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.block = ResidualBlock(channels)
        self.branch_a = nn.Conv2d(channels, channels, 1)
        self.branch_b = nn.Conv2d(channels, channels, 3, padding=1)
        self.up = nn.ConvTranspose2d(2 * channels, channels, 2, stride=2)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(torch.relu(self.stem(x)))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = torch.relu(self.up(x))
        return self.head(x.mean(dim=(2, 3)))


def build(seed: int = 0) -> ExampleNet:
    """The example network with deterministic random weights (``mpqsearch.example:build``)."""
    torch.manual_seed(seed)
    return ExampleNet().eval()
