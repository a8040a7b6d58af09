"""A workload: the model, its data and its metric, everything one trial needs.

Built-in workloads are listed by name in :mod:`.registry`; a user workload is ``module:function``
returning a :class:`Workload`::

    def my_workload() -> Workload:
        return Workload(
            name="my-net", task="classification",
            build_model=lambda: load_my_trained_net(),      # trained weights, eval mode
            example_input=torch.randn(1, 3, 32, 32),
            calib_data=[x for x, _ in my_batches[:4]],     # model inputs only
            eval_data=my_batches[4:],                       # (input, target) pairs
            metric=top1_per_sample,                         # (output, target) -> {name: [N] tensor}
            directions={"top1": "maximize"},
        )

``mpqsearch layers my_module:my_workload`` and ``mpqsearch evaluate my_module:my_workload`` then
work as for a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..objectives import DIRECTIONS

MetricFn = Callable[[torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]]
"""``metric(output, target)`` returns, per metric name, one value per sample (shape ``[N]``);
the evaluator averages them over all samples of the evaluation data."""


@dataclass
class Workload:
    """Model factory, example input, calibration and evaluation data, and the metric.

    ``calib_data`` is a sequence of model inputs (batches); ``eval_data`` a sequence of
    ``(input, target)`` pairs. ``directions`` gives every metric the ``metric`` function returns
    its direction, the first one being the primary metric. ``baselines`` holds reference values
    that are not the model (bicubic upscaling for super-resolution), shown beside results.

    ``train_data`` (optional, for QAT refinement, :mod:`.refine`) is a zero-argument callable
    returning an iterator of ``(input, target)`` training batches (it is called again when one
    runs out), with ``train_loss(output, target)`` the scalar loss; it must not draw on the
    evaluation data. Without it, refinement distils the FP32 model on the calibration inputs.
    """

    name: str
    task: str
    build_model: Callable[[], nn.Module]
    example_input: torch.Tensor
    calib_data: Sequence[Any]
    eval_data: Sequence[tuple[Any, torch.Tensor]]
    metric: MetricFn
    directions: dict[str, str]
    baselines: dict[str, float] = field(default_factory=dict)
    description: str = ""
    train_data: Callable[[], Iterable[tuple[Any, torch.Tensor]]] | None = None
    train_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if (self.train_data is None) != (self.train_loss is None):
            raise ValueError(f"workload {self.name!r}: train_data and train_loss go together; got only "
                             f"{'train_data' if self.train_loss is None else 'train_loss'}")
        if not self.directions:
            raise ValueError(f"workload {self.name!r}: directions must name at least one metric")
        for metric, direction in self.directions.items():
            if direction not in DIRECTIONS:
                raise ValueError(f"workload {self.name!r}: direction of {metric!r} must be maximize or "
                                 f"minimize, got {direction!r}")

    @property
    def primary_metric(self) -> str:
        return next(iter(self.directions))
