"""Per-sample metrics of the built-in workloads, in the :data:`~.workload.MetricFn` shape.

Super-resolution follows the usual SR benchmark convention: both images are clamped to [0, 1],
converted to the luma channel Y of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` does (0..255 units,
range 16..235), and ``scale`` pixels are cropped from every border before PSNR and SSIM.
Nothing is rounded to 8-bit integers. Sums run in float64 so that SSIM's variance terms
(differences of squares near 235^2) do not lose precision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from .base import MetricFn

_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * PEAK) ** 2
SSIM_C2 = (0.03 * PEAK) ** 2


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``[N, 3, H, W]`` RGB in [0, 1], as ``[N, 1, H, W]`` in 0..255 units."""
    weights = torch.tensor(_Y_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return _Y_OFFSET + (rgb * weights).sum(dim=1, keepdim=True)


def _sr_luma(image: torch.Tensor, border: int) -> torch.Tensor:
    y = rgb_to_y(image.detach().to(torch.float64).clamp(0.0, 1.0))
    return y[..., border:-border, border:-border] if border > 0 else y


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of ``[N, C, H, W]`` images in 0..255 units (peak 255); shape ``[N]``."""
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(PEAK**2 / mse)


@functools.cache
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return torch.outer(g, g).view(1, 1, size, size)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of ``[N, 1, H, W]`` images in 0..255 units; shape ``[N]``.

    An 11x11 Gaussian window (sigma 1.5) and population (not sample) covariances, averaged over
    the valid positions only (no padding): the same as scikit-image's ``structural_similarity``
    with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``.
    Unlike Wang's MATLAB script the images are not downsampled first.
    """
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(a.device)
    a, b = a.to(torch.float64), b.to(torch.float64)
    moments = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    filtered = F.conv2d(moments.flatten(0, 1).unsqueeze(1), window)
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = filtered.view(a.shape[0], 5, *filtered.shape[2:]).unbind(1)
    var_a = mean_aa - mean_a**2
    var_b = mean_bb - mean_b**2
    cov = mean_ab - mean_a * mean_b
    ssim_map = ((2 * mean_a * mean_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mean_a**2 + mean_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2))
    return ssim_map.mean(dim=(1, 2))


def sr_metric(scale: int) -> MetricFn:
    """PSNR and SSIM (float64) on Y with a ``scale``-pixel border crop, for RGB ``[N, 3, H, W]``."""
    def metric(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        a, b = _sr_luma(output, scale), _sr_luma(target, scale)
        return {"psnr": psnr(a, b), "ssim": ssim(a, b)}
    return metric


def top1(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """1.0 where the largest logit of ``[N, classes]`` is the ``[N]`` label, else 0.0."""
    return {"top1": (output.argmax(dim=1) == target).to(torch.float32)}


@torch.no_grad()
def mean_metric(predict: Callable[[torch.Tensor], torch.Tensor], pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
                metric: MetricFn) -> dict[str, float]:
    """Each metric averaged over all samples of ``(input, target)`` pairs, ``predict`` mapping
    an input to an output (a model, or bicubic upscaling for the SR baseline)."""
    values: dict[str, list[torch.Tensor]] = {}
    for inputs, target in pairs:
        for key, value in metric(predict(inputs), target).items():
            values.setdefault(key, []).append(value)
    return {key: float(torch.cat(v).mean()) for key, v in values.items()}
