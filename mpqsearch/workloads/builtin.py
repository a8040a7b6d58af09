"""The built-in workloads: three x2 super-resolution networks and a digits classifier.

Each loads its committed trained weights (``mpqsearch/workloads/weights/<name>.pt``; retrain with
``mpqsearch train <name>``) and data that ship in scikit-image and scikit-learn, so nothing is
downloaded. Super-resolution is scored by PSNR and SSIM on Y of the four held-out test crops,
one image per evaluation pair, with bicubic upscaling's scores on the same crops as the baseline
(the floor a network must beat); activations are calibrated on the two calibration crops.
Digits is scored by top-1 on the 540-image test split, calibrated on four train batches.
Each workload's ``train_data`` (for QAT refinement) streams the batches its network was trained
on: random patches of the train images (L1 loss) or train-split digits (cross-entropy), never
the test data, from a fixed seed so that a refinement reruns identically.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from . import data
from .base import Workload
from .cfqp import cfqp_workload
from .metrics import mean_metric, sr_metric, top1
from .models import load_trained
from .training import CONFIGS, Batch, digit_batches, sr_patches

DIGITS_EVAL_BATCH = 128
DIGITS_CALIB_BATCHES = 4
DIGITS_CALIB_BATCH = 64
TRAIN_DATA_SEED = 0


def _train_batches(name: str) -> Iterator[Batch]:
    """Endless training batches of workload ``name`` (:data:`~.training.CONFIGS` sizes), seeded."""
    generator = torch.Generator().manual_seed(TRAIN_DATA_SEED)
    if name == "cls-digits":
        return digit_batches(CONFIGS[name], generator)
    return sr_patches(data.sr_pairs("train"), CONFIGS[name], data.SCALE, generator)


@functools.cache
def _bicubic_baselines(scale: int) -> dict[str, float]:
    return mean_metric(lambda lr: data.resize_bicubic(lr, scale), data.eval_pairs("test", scale), sr_metric(scale))


def _sr_workload(name: str, description: str) -> Workload:
    test = data.eval_pairs("test")
    calib = [lr for lr, _ in data.eval_pairs("calibration")]
    return Workload(
        name=name, task="super-resolution", build_model=functools.partial(load_trained, name),
        example_input=calib[0], calib_data=calib, eval_data=list(test), metric=sr_metric(data.SCALE),
        directions={"psnr": "maximize", "ssim": "maximize"}, baselines=dict(_bicubic_baselines(data.SCALE)),
        train_data=functools.partial(_train_batches, name), train_loss=F.l1_loss,
        description=f"{description}; x{data.SCALE} on {data.EVAL_CROP}x{data.EVAL_CROP} centre crops of "
                    f"{', '.join(data.SR_SPLITS['test'])} (scikit-image), PSNR/SSIM on Y",
    )


def espcn_x2() -> Workload:
    return _sr_workload("sr-espcn-x2", "ESPCN-style super-resolution (3 convs, PixelShuffle)")


def srresnet_x2() -> Workload:
    return _sr_workload("sr-srresnet-x2", "SRResNet-style generator (SRGAN; 4 residual blocks, 48 channels)")


def rrdb_x2() -> Workload:
    return _sr_workload("sr-rrdb-x2", "small RRDB generator (ESRGAN; 2 RRDBs, 32 channels, growth 16)")


def espcn_clip_x2() -> Workload:
    return _sr_workload("sr-espcn-clip-x2", "ESPCN-style super-resolution as mobile SR builds it: HR pixels "
                                            "through a clipped ReLU [0, 1], no bicubic skip")


def espcn_clipfree_x2() -> Workload:
    """sr-espcn-clip-x2's weights with the clipped ReLU made a ReLU, calibrated on the CFQP set."""
    clipped = espcn_clip_x2()
    clip_free = dataclasses.replace(
        clipped, name="sr-espcn-clipfree-x2", build_model=lambda: clipped.build_model().without_clipping(),
        description=clipped.description.replace("a clipped ReLU [0, 1]",
                                                "a ReLU (clip-free; sr-espcn-clip-x2's weights)"))
    return cfqp_workload(clip_free)


def digits() -> Workload:
    train_images, _ = data.digits("train")
    test_images, test_labels = data.digits("test")
    calib = [train_images[i * DIGITS_CALIB_BATCH:(i + 1) * DIGITS_CALIB_BATCH] for i in range(DIGITS_CALIB_BATCHES)]
    eval_data = [(test_images[i:i + DIGITS_EVAL_BATCH], test_labels[i:i + DIGITS_EVAL_BATCH])
                 for i in range(0, len(test_labels), DIGITS_EVAL_BATCH)]
    return Workload(
        name="cls-digits", task="classification", build_model=functools.partial(load_trained, "cls-digits"),
        example_input=train_images[:1], calib_data=calib, eval_data=eval_data, metric=top1,
        directions={"top1": "maximize"},
        train_data=functools.partial(_train_batches, "cls-digits"), train_loss=F.cross_entropy,
        description=f"small CNN with a residual add and a concat on scikit-learn's 8x8 digits, top-1 on "
                    f"the {len(test_labels)}-image test split",
    )
