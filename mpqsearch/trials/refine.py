"""QAT refinement of one policy (seeds 000/001): fine-tune its fake-quantized model.

Seeds 000/001 quantize SRGAN and ESRGAN stage by stage and train the quantized model so that back
propagation corrects the quantization error (quantization-aware training). Here the search stays
post-training (a trial must be fast) and QAT refines the policy it found: ``mpqsearch refine``.
It lives in :mod:`mpqsearch.trials` because it is what a trial does to one policy (quantize,
train, evaluate), not a choice of which policies to try.

Where the seeds leave details open, we chose:

- Gradients: the weights are parametrized by :class:`~mpqsearch.quant.modules.WeightFakeQuant`
  (torch's fake-quantize kernel), whose straight-through estimator passes the gradient to the
  float weight inside the clip range and blocks it outside; biases on the int32 grid pass it
  unchanged. The trained parameters are these float weights and biases (and any float layer's).
- Scales stay fixed: weight scales from the model's own weights and activation scales from its
  calibration, exactly those of the policy's post-training quantization. They are not learned
  (LSQ), so a refined policy is its bits plus a float ``state_dict``: :func:`~mpqsearch.apply.apply_policy`
  derives the same scales from the model and the calibration data as for any policy, then puts
  the refined weights in place, and gets the trained model exactly. Re-deriving the scales from
  the refined weights instead would move the grid they were trained on (on the example workload
  at W3A8 it undid the training: probe loss 2.5e-4 before, 3.2e-4 after, 0.4e-4 while training).
- The "after" metrics are measured on that rebuilt model, the one ``mpqsearch apply`` reproduces.
- Data: the workload's ``train_data`` with its ``train_loss``; a workload without them is distilled
  from its FP32 model on the calibration inputs (mean squared error between the quantized and the
  FP32 outputs). The evaluation data is never trained on.
- Adam with a cosine decay from ``lr`` to zero over the steps (as the built-in networks were
  trained, :mod:`.training`), in eval mode: batch norm keeps the running statistics the model was
  calibrated with, dropout is off.

Example::

    evaluator = Evaluator(get_workload("sr-espcn-x2"), latency="none")
    result = refine(evaluator, Policy.uniform(evaluator.space, 4, 8), steps=300)
    result.before.metrics["psnr"], result.after.metrics["psnr"]
    save_policy(result.policy, "refined.yaml")     # and refined.weights.pt beside it
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..policy import Policy
from ..quant.weights import float_state
from .evaluate import Evaluator, TrialResult
from .threads import torch_threads

DEFAULT_LR = 1e-4
"""A tenth of the built-in networks' training rate: the weights only need to move within a few
quantization steps."""
PROBE_BATCHES = 4
"""Training batches (the first of the stream, at most) on which the loss is compared before and after."""

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int, float], None]
"""``progress(step, steps, loss)`` after every optimizer step."""


@dataclass
class Refinement:
    """The refined policy (its ``weights`` the refined float ``state_dict``, its ``metrics`` those
    measured with them) and what changed: trial results and probe losses before and after, the loss
    of every step, the training data used (``train_data`` or ``distillation``) and the seconds taken."""

    policy: Policy
    before: TrialResult
    after: TrialResult
    loss_before: float
    loss_after: float
    losses: list[float]
    data: str
    seconds: float


def _call(model: nn.Module, inputs: Any) -> torch.Tensor:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)


def _repeat(batches: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """The batches of ``batches()``, calling it again each time they run out."""
    while True:
        empty = True
        for batch in batches():
            empty = False
            yield batch
        if empty:
            raise ValueError("train_data yielded no batches")


def _training_data(evaluator: Evaluator) -> tuple[Callable[[], Iterable[Any]], Loss, str]:
    """``(batches, loss, kind)``: the workload's training data, or FP32 outputs on the calibration
    inputs as targets (distillation)."""
    workload = evaluator.workload
    if workload.train_data is not None:
        return workload.train_data, workload.train_loss, "train_data"
    with torch.no_grad(), torch_threads(evaluator.threads):
        pairs = [(inputs, _call(evaluator.model, inputs)) for inputs in workload.calib_data]
    return lambda: pairs, F.mse_loss, "distillation"


@torch.no_grad()
def _mean_loss(model: nn.Module, batches: list[Any], loss: Loss) -> float:
    return sum(float(loss(_call(model, inputs), target)) for inputs, target in batches) / len(batches)


def _train(qmodel: nn.Module, batches: Iterator[Any], loss_fn: Loss, steps: int, lr: float,
           progress: Progress | None) -> list[float]:
    qmodel.eval()
    optimizer = torch.optim.Adam([p for p in qmodel.parameters() if p.requires_grad], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses = []
    for step in range(1, steps + 1):
        inputs, target = next(batches)
        loss = loss_fn(_call(qmodel, inputs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, steps, losses[-1])
    return losses


def refine(evaluator: Evaluator, policy: Policy, steps: int, lr: float = DEFAULT_LR, *,
           progress: Progress | None = None) -> Refinement:
    """Fine-tune ``policy``'s fake-quantized model for ``steps`` Adam steps at peak rate ``lr``.

    Returns the refined policy (same bits; the refined weights; metrics measured with them; the
    provenance of ``policy`` plus a ``refined`` entry with the settings, the probe losses and the
    metrics before) and the comparison. ``evaluator``'s model and caches are left untouched. A
    policy that already has refined weights is refined further from them.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    started = time.perf_counter()
    before = evaluator.evaluate(policy, measure_latency=False)
    batches, loss_fn, kind = _training_data(evaluator)
    probe = list(itertools.islice(batches(), PROBE_BATCHES))
    if not probe:
        raise ValueError(f"{kind} yielded no batches")
    qmodel = evaluator.quantize(policy)
    with torch_threads(evaluator.threads):
        loss_before = _mean_loss(qmodel, probe, loss_fn)
        losses = _train(qmodel, _repeat(batches), loss_fn, steps, lr, progress)
    weights = float_state(qmodel, evaluator.model)
    refined = replace(policy, layers=dict(policy.layers), weights=weights, metrics={},
                      provenance=dict(policy.provenance))
    after = evaluator.evaluate(refined, measure_latency=False)
    with torch_threads(evaluator.threads):
        loss_after = _mean_loss(evaluator.quantize(refined), probe, loss_fn)
    refined.metrics = after.flat_metrics()
    refined.provenance["refined"] = {
        "steps": steps, "lr": lr, "data": kind, "loss_before": loss_before, "loss_after": loss_after,
        "metrics_before": before.flat_metrics(),
    }
    return Refinement(refined, before, after, loss_before, loss_after, losses, kind, time.perf_counter() - started)
