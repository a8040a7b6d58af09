"""Retraining a built-in workload's network from scratch on the CPU.

``python -m mpqsearch.workloads.training sr-espcn-x2`` (or ``mpqsearch train sr-espcn-x2``) trains
with Adam and a cosine learning-rate decay and writes the float32 ``state_dict`` to
``mpqsearch/workloads/weights/<workload>.pt``, the file the workload loads. Super-resolution: L1 loss
on random aligned LR/HR patches of the train images, with random horizontal and vertical flips.
Digits: cross-entropy on random mini-batches of the train split. The trained RRDB network's
activation ranges are then equalized (:meth:`~.models.RRDBNet.equalize_`; the float function is
unchanged) so that the tensors its concats tie to one scale fit 8 bits. Everything random comes from
``seed``, and training runs on ``TRAIN_THREADS`` threads, so a rerun with the same seed on the same
software gives the same weights. The default step counts keep every model within about eight
minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data
from .base import MetricFn
from .metrics import mean_metric, sr_metric, top1
from .models import MODELS, RRDBNet, weights_path

TRAIN_THREADS = 2
EQUALIZE_BATCHES = 8
"""Training batches on which the RRDB's activation ranges are equalized after training."""

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Steps, mini-batch size and peak learning rate; ``patch`` is the LR patch side for SR."""

    steps: int
    batch: int
    lr: float
    patch: int = 0


CONFIGS: dict[str, TrainConfig] = {
    "sr-espcn-x2": TrainConfig(steps=6000, batch=16, lr=1e-3, patch=32),
    "sr-srresnet-x2": TrainConfig(steps=1500, batch=16, lr=1e-3, patch=32),
    "sr-rrdb-x2": TrainConfig(steps=1000, batch=16, lr=1e-3, patch=32),
    "cls-digits": TrainConfig(steps=1500, batch=64, lr=2e-3),
    "sr-espcn-clip-x2": TrainConfig(steps=1000, batch=16, lr=1e-3, patch=32),
}


def sr_patches(pairs: Sequence[data.SRPair], config: TrainConfig, scale: int,
               generator: torch.Generator) -> Iterator[Batch]:
    """Endless mini-batches of aligned ``(lr, hr)`` patches: image uniformly at random, then the
    position, then a horizontal and a vertical flip each with probability 1/2."""
    size = config.patch
    while True:
        lrs, hrs = [], []
        for _ in range(config.batch):
            lr, hr = pairs[int(torch.randint(len(pairs), (), generator=generator))]
            top = int(torch.randint(lr.shape[-2] - size + 1, (), generator=generator))
            left = int(torch.randint(lr.shape[-1] - size + 1, (), generator=generator))
            lr = lr[0, :, top:top + size, left:left + size]
            hr = hr[0, :, top * scale:(top + size) * scale, left * scale:(left + size) * scale]
            flips = [dim for dim in (-1, -2) if torch.rand((), generator=generator) < 0.5]
            lrs.append(lr.flip(flips) if flips else lr)
            hrs.append(hr.flip(flips) if flips else hr)
        yield torch.stack(lrs), torch.stack(hrs)


def digit_batches(config: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
    """Endless mini-batches of the digits train split, reshuffled every epoch."""
    images, labels = data.digits("train")
    while True:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - config.batch + 1, config.batch):
            index = order[start:start + config.batch]
            yield images[index], labels[index]


@dataclass
class _Task:
    batches: Iterator[Batch]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    validation: Sequence[Batch]
    validation_name: str
    metric: MetricFn
    baseline: Callable[[torch.Tensor], torch.Tensor] | None = None


def _task(name: str, config: TrainConfig, generator: torch.Generator) -> _Task:
    if name == "cls-digits":
        return _Task(digit_batches(config, generator), F.cross_entropy, [data.digits("train")], "train split", top1)
    return _Task(sr_patches(data.sr_pairs("train"), config, data.SCALE, generator), F.l1_loss,
                 data.eval_pairs("calibration"), "calibration images", sr_metric(data.SCALE),
                 baseline=lambda lr: data.resize_bicubic(lr, data.SCALE))


def _train(name: str, config: TrainConfig, steps: int, seed: int, progress: bool) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MODELS[name]().train()
    task = _task(name, config, torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    report_every = max(1, steps // 20)
    started, running, count = time.perf_counter(), 0.0, 0
    for step in range(1, steps + 1):
        inputs, target = next(task.batches)
        loss = task.loss(model(inputs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running, count = running + loss.item(), count + 1
        if progress and (step % report_every == 0 or step == steps):
            print(f"{name}: step {step}/{steps}  loss {running / count:.5f}  "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            running, count = 0.0, 0
    model.eval()
    if isinstance(model, RRDBNet):
        model.equalize_([next(task.batches)[0] for _ in range(EQUALIZE_BATCHES)])
    if progress:
        for label, predict in (("model", model), ("bicubic", task.baseline)):
            if predict is not None:
                scores = mean_metric(predict, task.validation, task.metric)
                print(f"{name}: {label} on the {task.validation_name}: "
                      + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    return model


def train_workload(name: str, *, steps: int | None = None, seed: int = 0, out: Path | str | None = None,
                   progress: bool = True) -> Path:
    """Train built-in workload ``name``'s network from scratch and save its ``state_dict``.

    ``steps`` overrides the default number of optimizer steps; ``out`` the file written
    (default: the committed weights file, :func:`~.models.weights_path`). Returns the path.
    The caller's thread count and global random state are restored afterwards.
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown built-in workload {name!r}; workloads: {', '.join(CONFIGS)}")
    config = CONFIGS[name]
    steps = config.steps if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    path = Path(out) if out is not None else weights_path(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        with torch.random.fork_rng():
            model = _train(name, config, steps, seed, progress)
    finally:
        torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.to(torch.float32) for k, v in model.state_dict().items()}, path)
    if progress:
        print(f"{name}: saved {path}", flush=True)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mpqsearch.workloads.training",
                                     description="Retrain a built-in workload's network on the CPU.")
    parser.add_argument("workload", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the workload's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="weights file (default: the committed one)")
    args = parser.parse_args(argv)
    train_workload(args.workload, steps=args.steps, seed=args.seed, out=args.out)


if __name__ == "__main__":
    main()
