"""The built-in workloads' networks: x2 super-resolution models and a digits classifier.

Every SR model maps RGB in [0, 1] to RGB at twice the size and learns a *residual over bicubic
upscaling* (VDSR's global skip): the network's output is added to ``F.interpolate(x, bicubic)``.
It starts from the bicubic floor instead of from black, which lets these small models, trained
for minutes on a CPU, beat bicubic clearly; and its last layer's activation is a small residual,
so an 8-bit per-tensor scale resolves it finely. The output is not clamped (the metrics clamp).
:class:`ClippedESPCN`, the mobile-style model behind CFQP (seed 003), is the exception: it
predicts the pixels themselves through a clipped ReLU.

Top-level children name the stages the search heuristics work on: ``head`` (the first conv),
``body`` (the residual or dense blocks and the conv after them), ``upsampler`` (conv and
PixelShuffle) and ``tail`` (the convs producing RGB). ESPCN has only ``head``, ``body`` and
``upsampler``, its upsampler conv being the one that produces RGB.

Where an activation follows the upsampler conv it runs *before* the PixelShuffle: an element-wise
activation with one parameter commutes with the shuffle, so this is the papers' network, and
the activation quantizer then sits after the activation as it does for every other layer.
Everything traces with ``torch.fx``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import SCALE

LEAKY_SLOPE = 0.2
"""ESRGAN's LeakyReLU negative slope."""


def _conv(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)


def _bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


class ESPCN(nn.Module):
    """ESPCN (Shi et al. 2016): conv 5x5 (64) -> conv 3x3 (32) -> conv 3x3 (3 r^2) -> PixelShuffle.

    ReLU activations instead of the paper's tanh.
    """

    def __init__(self, scale: int = SCALE, features: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(_conv(3, features, 5), nn.ReLU())
        self.body = nn.Sequential(_conv(features, hidden), nn.ReLU())
        self.upsampler = nn.Sequential(_conv(hidden, 3 * scale**2), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampler(self.body(self.head(x))) + _bicubic(x, self.scale)


class ClippedESPCN(nn.Module):
    """ESPCN as mobile SR networks build it for int8 PTQ, with a clipped activation (seed 003):
    the upsampler conv predicts the HR pixels themselves (no bicubic skip) and a clipped ReLU
    ``min(max(x, 0), 1)`` bounds them to the image range before the PixelShuffle (XLSR's output
    activation), so that the output's quantization range is fixed whatever the calibration data.

    The clip sits at the one place where it acts: the hidden ReLUs of these small nets peak below
    1 on [0, 1] images, so ReLU6 there (or a clip at 1) would never bind and change nothing.
    :meth:`without_clipping` gives CFQP's clip-free model with the same weights.

    With no bicubic skip to start from, the network is initialized as nearest-neighbour
    upscaling instead: three channels of the head and body copy the input (it is non-negative, so
    the ReLUs pass it) and the upsampler conv copies them to every sub-pixel; the other weights
    keep PyTorch's initialization. Trained 1000 steps it beats bicubic by 0.69 dB on the test
    crops (6000 steps from PyTorch's initialization reached 0.25 dB). The image itself runs
    through every quantized layer, so PTQ costs it more than the residual models (W8A8: 0.56 dB).
    """

    def __init__(self, scale: int = SCALE, features: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(_conv(3, features, 5), nn.ReLU())
        self.body = nn.Sequential(_conv(features, hidden), nn.ReLU())
        self.upsampler = nn.Sequential(_conv(hidden, 3 * scale**2), nn.Hardtanh(0.0, 1.0), nn.PixelShuffle(scale))
        with torch.no_grad():
            for conv, rows in ((self.head[0], 1), (self.body[0], 1), (self.upsampler[0], scale**2)):
                # output channels c*rows .. (c+1)*rows-1 copy input channel c (PixelShuffle's order)
                conv.weight[:3 * rows].zero_()
                conv.bias[:3 * rows].zero_()
                for c in range(3):
                    conv.weight[c * rows:(c + 1) * rows, c, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampler(self.body(self.head(x)))

    def without_clipping(self) -> ClippedESPCN:
        """A copy whose clipped ReLU is a plain ReLU (same weights). Its float output differs only
        above 1, which every consumer of an image clamps (the metrics do)."""
        model = copy.deepcopy(self)
        model.upsampler[1] = nn.ReLU()
        return model


class ResidualBlock(nn.Module):
    """conv 3x3, activation, conv 3x3, plus the skip; SRResNet's block without batch norm
    (EDSR found batch norm harmful for SR)."""

    def __init__(self, channels: int, act: nn.Module) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.act = act
        self.conv2 = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class SRResNet(nn.Module):
    """The SRGAN generator (Ledig et al. 2017), small: 4 residual blocks of 48 channels, no BN.

    head: conv 9x9 + PReLU; body: blocks, conv 3x3, plus the long skip from the head;
    upsampler: conv 3x3 to 4x channels, PReLU, PixelShuffle; tail: conv 9x9 to RGB.
    """

    def __init__(self, scale: int = SCALE, channels: int = 48, blocks: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(_conv(3, channels, 9), nn.PReLU())
        self.body = nn.Sequential(*(ResidualBlock(channels, nn.PReLU()) for _ in range(blocks)),
                                  _conv(channels, channels))
        self.upsampler = nn.Sequential(_conv(channels, channels * scale**2), nn.PReLU(), nn.PixelShuffle(scale))
        self.tail = _conv(channels, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        features = features + self.body(features)
        return self.tail(self.upsampler(features)) + _bicubic(x, self.scale)


class DenseBlock(nn.Module):
    """ESRGAN's residual dense block: 5 convs, each reading the concat of all before it."""

    def __init__(self, channels: int, growth: int, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(channels + i * growth, growth) for i in range(4))
        self.fuse = _conv(channels + 4 * growth, channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for conv in self.convs:
            features = torch.cat([features, self.act(conv(features))], dim=1)
        return x + self.residual_scale * self.fuse(features)

    @torch.no_grad()
    def rescale_(self, factors: Sequence[float]) -> None:
        """Multiply dense conv ``k``'s output by ``factors[k] > 0`` and divide the input channels
        that read it, so the block computes the same function (LeakyReLU is positively
        homogeneous: ``lrelu(a x) = a lrelu(x)``)."""
        first = self.convs[0].in_channels  # the block input's channels come first in every concat
        for k, (conv, factor) in enumerate(zip(self.convs, factors, strict=True)):
            conv.weight.mul_(factor)
            conv.bias.mul_(factor)
            channels = slice(first + k * conv.out_channels, first + (k + 1) * conv.out_channels)
            for reader in [*self.convs[k + 1:], self.fuse]:
                reader.weight[:, channels] /= factor


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, then a scaled skip (0.2)."""

    def __init__(self, channels: int, growth: int, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(channels, growth, residual_scale) for _ in range(3)))
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.blocks(x)


class RRDBNet(nn.Module):
    """The ESRGAN generator (Wang et al. 2018), small: 2 RRDBs of 32 channels, growth 16.

    head: conv 3x3; body: RRDBs, conv 3x3, plus the long skip; upsampler: conv 3x3 to 4x
    channels, LeakyReLU, PixelShuffle (ESRGAN upsamples by nearest neighbour + conv instead; the
    issue asks for PixelShuffle); tail: conv 3x3, LeakyReLU, conv 3x3 to RGB. No batch norm.
    """

    def __init__(self, scale: int = SCALE, channels: int = 32, growth: int = 16, blocks: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.head = _conv(3, channels)
        self.body = nn.Sequential(*(RRDB(channels, growth) for _ in range(blocks)), _conv(channels, channels))
        self.upsampler = nn.Sequential(_conv(channels, channels * scale**2), nn.LeakyReLU(LEAKY_SLOPE),
                                       nn.PixelShuffle(scale))
        self.tail = nn.Sequential(_conv(channels, channels), nn.LeakyReLU(LEAKY_SLOPE), _conv(channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        features = features + self.body(features)
        return self.tail(self.upsampler(features)) + _bicubic(x, self.scale)

    @torch.no_grad()
    def equalize_(self, inputs: Iterable[torch.Tensor]) -> None:
        """Rescale each dense conv so that, on ``inputs``, its activation peaks where the head's does.

        Seed 004 gives tensors joined by a concat one scale, and the dense blocks' concats join
        every dense activation with the trunk, so the head, the dense convs and the body's last
        conv share one 8-bit scale. Training lets the last dense block of each RRDB grow its
        activations far beyond the trunk's (its output is scaled down by 0.2 twice): in our first
        trained model the head peaked at 1.3 and the last dense convs at 23, so the trunk kept only
        a few levels and uniform W8A8 lost 0.51 dB PSNR (the committed, equalized model: 0.05 dB).
        Cross-layer
        rescaling (as in Nagel et al. 2019, data-free quantization) fixes the ranges and leaves
        the float function unchanged.
        """
        peaks: dict[nn.Module, float] = {}

        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            activation = output if module is self.head else F.leaky_relu(output, LEAKY_SLOPE)
            peaks[module] = max(peaks.get(module, 0.0), activation.abs().max().item())

        blocks = [m for m in self.modules() if isinstance(m, DenseBlock)]
        watched = [self.head, *(conv for block in blocks for conv in block.convs)]
        handles = [m.register_forward_hook(record) for m in watched]
        try:
            for x in inputs:
                self(x)
        finally:
            for handle in handles:
                handle.remove()
        for block in blocks:
            block.rescale_([peaks[self.head] / peaks[conv] for conv in block.convs])


class DigitsNet(nn.Module):
    """A small CNN for 8x8 digits with a residual add and a two-branch concat.

    stem conv 3x3 -> residual block (conv, ReLU, conv, + skip) -> ReLU, max pool to 4x4 ->
    branches conv 1x1 and conv 3x3 (ReLU each) concatenated -> global average pool -> Linear.
    """

    def __init__(self, channels: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(1, channels), nn.ReLU())
        self.block = ResidualBlock(channels, nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.branch1 = nn.Sequential(_conv(channels, channels, 1), nn.ReLU())
        self.branch3 = nn.Sequential(_conv(channels, channels), nn.ReLU())
        self.classifier = nn.Linear(2 * channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.block(self.stem(x))))
        x = torch.cat([self.branch1(x), self.branch3(x)], dim=1)
        return self.classifier(x.mean(dim=(2, 3)))


MODELS: dict[str, type[nn.Module]] = {
    "sr-espcn-x2": ESPCN,
    "sr-srresnet-x2": SRResNet,
    "sr-rrdb-x2": RRDBNet,
    "cls-digits": DigitsNet,
    "sr-espcn-clip-x2": ClippedESPCN,
}
"""The network of each built-in workload, by workload name; each class builds with no arguments,
so ``mpqsearch layers mpqsearch.workloads.models:RRDBNet --input-shape 1,3,48,48`` shows it."""

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_path(name: str) -> Path:
    """Where the committed float32 ``state_dict`` of built-in workload ``name`` lives."""
    return WEIGHTS_DIR / f"{name}.pt"


def load_trained(name: str) -> nn.Module:
    """The trained network of built-in workload ``name`` in eval mode."""
    path = weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"trained weights of workload {name!r} not found: {path}; "
                                f"train them with `mpqsearch train {name}`")
    model = MODELS[name]()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
