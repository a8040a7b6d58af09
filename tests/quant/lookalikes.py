"""Small look-alikes of the blocks of common vision networks (torchvision's and timm's), built here so
the suite needs neither: batch norms with non-trivial statistics, 16x16 inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """resnet18's block: conv-BN-ReLU, conv-BN, a strided 1x1 conv-BN downsample, add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(), *conv_bn(cout, cout))
        self.down = nn.Sequential(*conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.down(x))


class ResNetLike(nn.Module):
    """Stem conv-BN-ReLU, max pool, one basic block, global average pool, flatten, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 8, 3, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.block = BasicBlock(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    """mobilenet_v2's block: 1x1 expand-BN-ReLU6, depthwise 3x3-BN-ReLU6, 1x1 project-BN, add."""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.conv = nn.Sequential(*conv_bn(channels, hidden, 1), nn.ReLU6(), *conv_bn(hidden, hidden, 3, groups=hidden),
                                  nn.ReLU6(), *conv_bn(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class MobileNetV2Like(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*conv_bn(3, 8, 3, 2), nn.ReLU6(), InvertedResidual(8), InvertedResidual(8))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class SqueezeExcitation(nn.Module):
    """torchvision's SE: average pool, 1x1 conv, activation, 1x1 conv, gate, multiply."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module], gate: type[nn.Module]) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))


class MBConv(nn.Module):
    """efficientnet_b0's block (SiLU, SE with a sigmoid gate) or, with hardswish and a hard-sigmoid
    gate, mobilenet_v3's."""

    def __init__(self, channels: int, act: type[nn.Module], gate: type[nn.Module], expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(*conv_bn(channels, hidden, 1), act())
        self.depthwise = nn.Sequential(*conv_bn(hidden, hidden, 3, groups=hidden), act())
        self.se = SqueezeExcitation(hidden, channels // 2, act if act is nn.SiLU else nn.ReLU, gate)
        self.project = nn.Sequential(*conv_bn(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class EfficientNetLike(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.SiLU, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 8, 3, 2), act())
        self.blocks = nn.Sequential(MBConv(8, act, gate), MBConv(8, act, gate))
        self.head = nn.Sequential(*conv_bn(8, 32, 1), act())
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def mobilenet_v3_like() -> EfficientNetLike:
    return EfficientNetLike(nn.Hardswish, nn.Hardsigmoid)


class ShuffleUnit(nn.Module):
    """shufflenet_v2's unit: split the channels, conv-BN-ReLU, depthwise-BN, conv-BN-ReLU on one half,
    concat, channel shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(*conv_bn(half, half, 1), nn.ReLU(), *conv_bn(half, half, 3, groups=half),
                                    *conv_bn(half, half, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        out = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 8, 3, 2), nn.ReLU())
        self.units = nn.Sequential(ShuffleUnit(8), ShuffleUnit(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.units(self.stem(x)).mean([2, 3]))


class ConvNeXtBlock(nn.Module):
    """convnext's block: depthwise 7x7, permute to channels-last, LayerNorm, Linear, GELU, Linear,
    permute back, add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        return x + self.pwconv2(self.act(self.pwconv1(y))).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.block = ConvNeXtBlock(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean([2, 3]))


class DenseLayer(nn.Module):
    """densenet's layer: BN-ReLU-1x1 conv-BN-ReLU-3x3 conv on the concat of everything before."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(2 * growth), nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(F.relu(self.norm1(torch.cat(features, 1))))
        return self.conv2(F.relu(self.norm2(x)))


class DenseNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 8, 3, 2), nn.ReLU())
        self.layers = nn.ModuleList([DenseLayer(8, 4), DenseLayer(12, 4)])
        self.norm = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        x = F.relu(self.norm(torch.cat(features, 1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: F.batch_norm on its own buffers, then the activation."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(x)


class RegNetLike(nn.Module):
    """timm's regnetx: conv + BatchNormAct2d stacks, a grouped 3x3 conv, a shortcut add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), BatchNormAct2d(8))
        self.conv1 = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), BatchNormAct2d(16))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=2, bias=False), BatchNormAct2d(16))
        self.conv3 = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.conv3(self.conv2(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


LOOKALIKES = {
    "resnet": ResNetLike, "mobilenet_v2": MobileNetV2Like, "efficientnet": EfficientNetLike,
    "mobilenet_v3": mobilenet_v3_like, "shufflenet": ShuffleNetLike, "convnext": ConvNeXtLike,
    "densenet": DenseNetLike, "regnet": RegNetLike,
}


def build(name: str) -> nn.Module:
    """The look-alike ``name`` with fixed random weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    model = LOOKALIKES[name]()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def images(count: int = 8, size: int = 16) -> torch.Tensor:
    """Normalized-image-like inputs (as torchvision models take): smooth, signed."""
    noise = torch.randn(count, 3, size // 4, size // 4, generator=torch.Generator().manual_seed(5))
    return F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
