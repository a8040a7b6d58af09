"""CFQP (seed 003): a calibration set augmented from the FP32 model's own outputs.

Post-training quantization takes every activation's range from the representative dataset (the
calibration inputs). Mobile SR networks clip activations (ReLU6, a clamp to the image range) so
that a range missed by a few calibration images cannot hurt; CFQP instead makes the calibration
set cover more, using nothing but the FP32 model, so that the clips can be removed. The seed gives
only the abstract ("augment RD images by only using outputs of the FP32 model"); what is added
here, and why:

- ``input``: the calibration images themselves (the plain set is kept);
- ``output``: the FP32 model's SR output ``y = f(x)``, fed as an input in its own right. The
  network is fully convolutional, so ``y`` is a valid input: the same scene at ``scale`` times the
  size, as a larger test image or a crop of one would show it (the abstract's "outputs" taken
  literally; it stands for crops of the output too, whose statistics it holds but for borders);
- ``downscaled``: ``y`` bicubic-downscaled back to the input size (the degradation of
  :mod:`.data`). It is the calibration scene again, but with the edges the model sharpened, so
  it drives the activations where sharper test images drive them.

Every image is clamped to [0, 1] (an input image is always in range, whatever a clip-free
model outputs), and, with ``flips``, also taken flipped left-right, upside down and both: a
convolution's kernels are not symmetric, so a flipped scene gives other activation peaks at no
cost in realism. Transposes are left out (they would change a non-square input's shape).
Views of one size are stacked into one batch, so the strided sample each activation keeps
(:class:`~mpqsearch.quant.observers.ActivationStats`) covers all of them evenly.

The default (all three sources, flipped) was fixed before measuring. What it does on
``sr-espcn-clip-x2`` (``benchmarks/cfqp.py``): the clip-free model calibrated on its CFQP set
quantizes to within 0.01 dB of the clipped one at W8A8 (32.2325 dB against 32.2415 dB, FP32
32.8062 dB for both), and no source subset moves W8A8 PSNR by more than 0.01 dB. With the
default ``max`` activation clipping a larger calibration set can only widen a range (the
plain images stay in it), so CFQP trades resolution for fewer saturated test activations; the
two calibration crops of the built-in workloads already span the test crops' ranges closely.

This is a transform of a workload's calibration data, not a search strategy (it chooses no
bits), so it lives with the workloads in ``trials``. The evaluator's on-disk cache is keyed by a
fingerprint of the calibration data, so statistics of an augmented set are never mistaken for
those of the plain one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .base import Workload
from .data import resize_bicubic

SOURCES = ("input", "output", "downscaled")
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""The flip views: none, left-right, upside down, both (a rotation by 180 degrees)."""


def _check_sources(sources: Iterable[str]) -> tuple[str, ...]:
    sources = tuple(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"CFQP sources must be a non-empty subset of {', '.join(SOURCES)}; got {list(sources)}")
    return sources


def _scale_of(x: torch.Tensor, y: torch.Tensor) -> int:
    """The integer upscaling factor from ``x`` to ``y``; ValueError if they are not an SR pair."""
    if y.ndim != 4 or y.shape[:2] != x.shape[:2] or y.shape[-2] % x.shape[-2] or y.shape[-1] % x.shape[-1]:
        raise ValueError(f"CFQP needs an SR model mapping [N, C, h, w] to [N, C, s*h, s*w]; "
                         f"input {tuple(x.shape)} gave output {tuple(y.shape)}")
    scale = y.shape[-2] // x.shape[-2]
    if y.shape[-1] // x.shape[-1] != scale:
        raise ValueError(f"CFQP: output {tuple(y.shape)} scales height and width of input {tuple(x.shape)} differently")
    return scale


@torch.no_grad()
def cfqp_calibration(model: nn.Module, calib_data: Sequence[torch.Tensor], *,
                     sources: Iterable[str] = SOURCES, flips: bool = True) -> list[torch.Tensor]:
    """The CFQP calibration set of an SR ``model`` (the FP32 one) from its plain ``calib_data``.

    ``calib_data`` holds image batches ``[N, C, h, w]`` in [0, 1]; ``sources`` picks what is
    added (see the module docstring), ``flips`` whether each view is also taken flipped. Returns
    one batch per image size, in order of first appearance. The model is run in eval mode and
    left in the mode it had.
    """
    sources = _check_sources(sources)
    batches: dict[tuple[int, ...], list[torch.Tensor]] = {}
    was_training = model.training
    model.eval()
    try:
        for index, x in enumerate(calib_data):
            if not isinstance(x, torch.Tensor) or x.ndim != 4:
                raise ValueError(f"CFQP: calibration item {index} is not an image batch [N, C, h, w]")
            views = {"input": x.clamp(0.0, 1.0)}
            if "output" in sources or "downscaled" in sources:
                y = model(x)
                scale = _scale_of(x, y)
                views["output"] = y.clamp(0.0, 1.0)
                views["downscaled"] = resize_bicubic(views["output"], 1.0 / scale)
            for source in sources:
                for dims in FLIPS if flips else FLIPS[:1]:
                    view = views[source].flip(dims) if dims else views[source]
                    batches.setdefault(tuple(view.shape[1:]), []).append(view)
    finally:
        model.train(was_training)
    return [torch.cat(views) for views in batches.values()]


def cfqp_workload(workload: Workload, *, name: str | None = None, sources: Iterable[str] = SOURCES,
                  flips: bool = True) -> Workload:
    """``workload`` with its calibration data replaced by :func:`cfqp_calibration` of its FP32
    model; ``name`` renames it (default: the same name; the evaluator's cache tells the two
    apart by their data).

    For a search, return it from a user workload function (``module:function``)::

        def espcn_cfqp() -> Workload:
            return cfqp_workload(get_workload("sr-espcn-x2"))
    """
    calib = cfqp_calibration(workload.build_model(), workload.calib_data, sources=sources, flips=flips)
    return dataclasses.replace(
        workload, name=name or workload.name, calib_data=calib,
        description=f"{workload.description}; calibrated on the CFQP set (views: {', '.join(sources)}"
                    f"{', flipped' if flips else ''})")
