"""Data of the built-in workloads: nothing is downloaded, everything ships in installed packages.

Super-resolution uses scikit-image's sample images that are part of the wheel (``skimage.data``
fetches the others with pooch from the internet; we never ask for those). Images are split by
name, once and for all, into three disjoint sets:

- test: four colour photographs, the held-out images every metric is reported on;
- calibration: two other photographs (one colour, one grey), the model inputs that calibrate
  activation scales, and the validation images printed while training;
- train: everything else that is a natural image, colour or grey. Grey images are repeated into
  three channels; the metrics are computed on luma Y, so they teach the same edges.

``cat`` is the same picture as ``chelsea`` and the two views of ``stereo_motorcycle`` are nearly
the same picture, so only ``chelsea`` and the left motorcycle view are used. Synthetic images
(logo, colour wheel, checkerboard, blobs) are left out.

A low-resolution image is the high-resolution one (first cropped to a multiple of the scale)
downscaled by bicubic interpolation with antialiasing, ``F.interpolate(mode="bicubic",
antialias=True, align_corners=False)``, then clamped to [0, 1], the usual "BI" degradation
(MATLAB's ``imresize``, which antialiases when shrinking).

Test and calibration pairs are fixed centre crops of ``EVAL_CROP`` high-resolution pixels cut
from the whole-image pair (so the LR crop is exactly the part of the whole LR image, without
borders of its own): one evaluation then costs a fraction of a second even for the RRDB model,
which keeps the search's inner loop fast, and 192 pixels still hold the main subject of each
photograph.

Digits are scikit-learn's 8x8 handwritten digits (1797 images), split 70/30 stratified by label
with a fixed seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

SCALE = 2
EVAL_CROP = 192
DIGITS_TEST_FRACTION = 0.3
DIGITS_SEED = 0

SRPair = tuple[torch.Tensor, torch.Tensor]
"""``(lr, hr)``: ``[1, 3, h, w]`` and ``[1, 3, h * scale, w * scale]`` RGB in [0, 1]."""


def _skimage(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data  # imported on use: scikit-image is only needed by the SR workloads

        image = getattr(skimage.data, name)()
        return image if index is None else image[index]
    return load


SR_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle", 0),
    "camera": _skimage("camera"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "brick": _skimage("brick"),
    "cell": _skimage("cell"),
    "clock": _skimage("clock"),
    "coins": _skimage("coins"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "moon": _skimage("moon"),
    "page": _skimage("page"),
    "text": _skimage("text"),
}
SR_SPLITS: dict[str, tuple[str, ...]] = {
    "test": ("astronaut", "chelsea", "coffee", "rocket"),
    "calibration": ("motorcycle", "camera"),
    "train": ("hubble_deep_field", "immunohistochemistry", "retina", "brick", "cell", "clock", "coins",
              "grass", "gravel", "moon", "page", "text"),
}


def load_rgb(name: str) -> torch.Tensor:
    """Sample image ``name`` as ``[3, H, W]`` float32 RGB in [0, 1] (grey repeated to RGB)."""
    if name not in SR_IMAGES:
        raise ValueError(f"unknown image {name!r}; images: {', '.join(SR_IMAGES)}")
    image = torch.from_numpy(np.ascontiguousarray(SR_IMAGES[name]())).to(torch.float32) / 255.0
    image = image.unsqueeze(-1).expand(*image.shape, 3) if image.ndim == 2 else image[..., :3]
    return image.permute(2, 0, 1).contiguous()


def resize_bicubic(images: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Bicubic resize of ``[N, C, H, W]`` (antialiased when shrinking), clamped to [0, 1]."""
    resized = F.interpolate(images, scale_factor=scale_factor, mode="bicubic", antialias=True,
                            align_corners=False)
    return resized.clamp(0.0, 1.0)


def make_pair(hr: torch.Tensor, scale: int) -> SRPair:
    """``(lr, hr)`` from a ``[3, H, W]`` image: HR cropped to a multiple of ``scale``, LR downscaled."""
    height, width = (size - size % scale for size in hr.shape[-2:])
    hr = hr[None, :, :height, :width]
    return resize_bicubic(hr, 1.0 / scale), hr


def centre_crop(pair: SRPair, hr_size: int, scale: int) -> SRPair:
    """The centre ``hr_size`` square of an SR pair, aligned so the LR crop matches it exactly."""
    lr, hr = pair
    size = hr_size // scale
    height, width = lr.shape[-2:]
    if min(height, width) < size:
        raise ValueError(f"image of LR size {height}x{width} is smaller than the {size}-pixel crop")
    top, left = (height - size) // 2, (width - size) // 2
    return (lr[..., top:top + size, left:left + size],
            hr[..., top * scale:(top + size) * scale, left * scale:(left + size) * scale])


@functools.cache
def sr_pairs(split: str, scale: int = SCALE, crop: int | None = None) -> tuple[SRPair, ...]:
    """The ``(lr, hr)`` pairs of one split (``train``, ``calibration``, ``test``), cached.

    ``crop``: a centre crop of that many HR pixels per image; ``None`` keeps whole images.
    Callers must not modify the returned tensors (they are shared through the cache).
    """
    if split not in SR_SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SR_SPLITS)}")
    pairs = (make_pair(load_rgb(name), scale) for name in SR_SPLITS[split])
    return tuple(centre_crop(p, crop, scale) if crop else p for p in pairs)


def eval_pairs(split: str, scale: int = SCALE) -> tuple[SRPair, ...]:
    """The fixed ``EVAL_CROP`` centre crops of the ``test`` or ``calibration`` images."""
    return sr_pairs(split, scale, EVAL_CROP)


@functools.cache
def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits ``train`` or ``test``: inputs ``[N, 1, 8, 8]`` in [0, 1], labels ``[N]``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"unknown digits split {split!r}; splits: train, test")
    data = load_digits()
    images = torch.from_numpy(data.images).to(torch.float32).unsqueeze(1) / 16.0
    labels = torch.from_numpy(data.target).to(torch.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
                                           stratify=data.target, random_state=DIGITS_SEED)
    index = torch.from_numpy(train_idx if split == "train" else test_idx)
    return images[index], labels[index]
