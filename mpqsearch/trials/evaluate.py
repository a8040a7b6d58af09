"""One trial's evaluation of a policy: accuracy, size, BOPs and measured latency.

Trials are the search's inner loop, so an :class:`Evaluator` computes once what does not depend
on the policy and reuses it for every trial: the float model, its layer table, the FP32 metrics,
the calibration statistics of every activation, and each (layer, weight config) scale.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..apply import apply_policy
from ..policy import Policy
from ..quant.observers import ActivationStats
from ..quant.spec import FLOAT_BITS
from ..quant.transform import Prepared, collect_activation_stats, prepare
from ..search_spaces import SearchSpace
from ..search_spaces.costs import bit_operations, fp32_size_bytes, model_size_bytes, size_ratio
from ..workloads.base import Workload
from .cache import TrialCache, fingerprint
from .errors import MetricError, QuantizationError
from .isolation import TrialLock
from .latency import LatencyRequest, LatencyResult, get_latency_backend
from .threads import torch_threads


@dataclass
class TrialResult:
    """What one policy measured on one workload.

    ``drops`` are signed so that positive always means worse than FP32 (``fp32 - value`` for a
    metric to maximize, ``value - fp32`` for one to minimize). ``timings`` are seconds per step.
    """

    workload: str
    metrics: dict[str, float]
    reference: dict[str, float]
    drops: dict[str, float]
    size_bytes: int
    size_ratio: float
    bops: int
    bops_ratio: float
    latency: LatencyResult | None
    timings: dict[str, float] = field(default_factory=dict)
    latency_isolation: str = "sole"
    """How the latency was kept clean: ``sole`` (no other trial ran in this evaluator's
    experiment), ``exclusive`` (timed under a lock no computing trial held) or ``table`` (read
    from a lookup table measured before the search)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.to_dict() if self.latency else None
        return data

    def flat_metrics(self) -> dict[str, float]:
        """Every number as one flat mapping (for NNI's metric dict and Optuna user attributes)."""
        flat = dict(self.metrics)
        flat.update({f"{k}_drop": v for k, v in self.drops.items()})
        flat.update(size_bytes=float(self.size_bytes), size_ratio=self.size_ratio,
                    bops=float(self.bops), bops_ratio=self.bops_ratio)
        if self.latency is not None:
            flat["latency_ms"] = self.latency.median_ms
        return flat


class Evaluator:
    """Evaluates policies on one workload, caching everything that does not depend on the policy.

    ``latency`` names a latency backend (``onnxruntime``, ``torch``, ``lut``, ``none``) with
    ``latency_options`` for it; ``threads`` fixes torch's thread count while metrics are computed
    (concurrent trials each get their share of the cores); ``lock``, shared by concurrent trials,
    keeps their computing out of each other's timings. With ``cache_dir``, the FP32 metrics,
    calibration statistics and weight scales are kept on disk for other processes (see
    :class:`~mpqsearch.trials.cache.TrialCache`).

    Example::

        evaluator = Evaluator(get_workload("sr-espcn-x2"), latency="none")
        result = evaluator.evaluate(Policy.uniform(evaluator.space, 4, 8))
        result.metrics["psnr"], result.size_ratio
    """

    def __init__(self, workload: Workload, *, latency: str = "onnxruntime",
                 latency_options: Mapping[str, Any] | None = None, threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None, lock: TrialLock | None = None) -> None:
        self.workload = workload
        self.threads = threads
        self.lock = lock
        self.model = workload.build_model().eval()
        self.cache = None
        if cache_dir is not None:
            key = f"{workload.name}-{fingerprint(self.model, workload.calib_data, workload.eval_data)}"
            self.cache = TrialCache(cache_dir, key)
        self.space = SearchSpace.from_model(self.model, workload.example_input)
        self.latency_backend = get_latency_backend(latency, **dict(latency_options or {}))
        self.fp32_size = fp32_size_bytes(self.space)
        self.fp32_bops = bit_operations(self.space, Policy.uniform(self.space, FLOAT_BITS, FLOAT_BITS))
        self._reference: dict[str, float] | None = self.cache.load("reference") if self.cache else None
        self._act_stats: dict[str, ActivationStats] | None = None
        self.weight_scales: dict[Any, torch.Tensor] = dict(self.cache.load("weight_scales") or {}) if self.cache else {}
        self._saved_scales = len(self.weight_scales)
        self._template: Prepared | None = None

    @property
    def reference(self) -> dict[str, float]:
        """FP32 metrics, measured once (and stored in the cache)."""
        if self._reference is None:
            self._reference = self.measure_metrics(self.model)
            if self.cache:
                self.cache.save("reference", self._reference)
        return self._reference

    @property
    def act_stats(self) -> dict[str, ActivationStats]:
        """Calibration statistics of every activation, collected once (and stored in the cache)."""
        if self._act_stats is None:
            stored = self.cache.load("act_stats") if self.cache else None
            if stored is not None:
                shared = {key: ActivationStats.from_state_dict(state) for key, state in stored["stats"].items()}
                self._act_stats = {layer: shared[key] for layer, key in stored["layers"].items()}
            else:
                with torch_threads(self.threads):
                    self._act_stats = collect_activation_stats(self.model, self.workload.calib_data)
                if self.cache:
                    self.cache.save("act_stats", _stats_state(self._act_stats))
        return self._act_stats

    def _store_new_scales(self) -> None:
        if self.cache and len(self.weight_scales) > self._saved_scales:
            self.cache.save("weight_scales", self.weight_scales)
            self._saved_scales = len(self.weight_scales)

    def quantize(self, policy: Policy) -> nn.Module:
        """The fake-quantized model for ``policy``, from the cached statistics and scales (and a
        refined policy's weights, see :func:`~mpqsearch.apply.apply_policy`). Each trial copies one
        traced and prepared model instead of tracing it again."""
        policy.check_model(self.space)
        try:
            if self._template is None:
                self._template = prepare(self.model)
            return apply_policy(self.model, policy, act_stats=self.act_stats, weight_scales=self.weight_scales,
                                template=self._template)
        except (ValueError, KeyError, RuntimeError) as err:
            raise QuantizationError(f"quantizing {self.workload.name} failed: {err}") from err

    @torch.no_grad()
    def measure_metrics(self, model: nn.Module) -> dict[str, float]:
        """Mean of every per-sample metric over the evaluation data; NaN or inf raise MetricError."""
        sums: dict[str, float] = {}
        count = 0
        model.eval()
        with torch_threads(self.threads), parametrize.cached():
            for inputs, target in self.workload.eval_data:
                output = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
                for name, values in self.workload.metric(output, target).items():
                    sums[name] = sums.get(name, 0.0) + float(values.sum())
                count += len(target)
        metrics = {name: total / count for name, total in sums.items()}
        for name in self.workload.directions:
            if name not in metrics:
                raise MetricError(f"{self.workload.name}: the metric function returned no {name!r}")
            if not math.isfinite(metrics[name]):
                raise MetricError(f"{self.workload.name}: metric {name!r} is {metrics[name]}")
        return metrics

    def _drop(self, name: str, value: float) -> float:
        reference = self.reference[name]
        return value - reference if self.workload.directions.get(name) == "minimize" else reference - value

    def evaluate(self, policy: Policy, *, measure_latency: bool = True) -> TrialResult:
        """Quantize with ``policy`` (PTQ on the calibration data), evaluate, and measure."""
        reference = self.reference  # measured outside the trial's timings
        timings: dict[str, float] = {}

        def timed(step: str, fn: Callable[[], Any]) -> Any:
            start = time.perf_counter()
            value = fn()
            timings[step] = time.perf_counter() - start
            return value

        with self.lock.computing() if self.lock else nullcontext():
            qmodel = timed("quantize", lambda: self.quantize(policy))
            self._store_new_scales()
            metrics = timed("metrics", lambda: self.measure_metrics(qmodel))
        latency = None
        if measure_latency:
            request = LatencyRequest(self.model, qmodel, self.workload.example_input, self.space, policy)
            with self.lock.timing() if self.lock else nullcontext():
                latency = timed("latency", lambda: self.latency_backend.measure(request))
        size = model_size_bytes(self.space, policy)
        bops = bit_operations(self.space, policy)
        return TrialResult(
            workload=self.workload.name,
            metrics=metrics,
            reference=dict(reference),
            drops={name: self._drop(name, value) for name, value in metrics.items() if name in reference},
            size_bytes=size,
            size_ratio=size_ratio(self.space, policy),
            bops=bops,
            bops_ratio=bops / self.fp32_bops if self.fp32_bops else 1.0,
            latency=latency,
            timings=timings,
            latency_isolation=self.latency_isolation,
        )

    @property
    def latency_isolation(self) -> str:
        return self.latency_backend.isolation(self.lock is not None)

    def prepare_latency(self) -> None:
        """Measure ahead what the latency backend caches, so that no trial measures it while
        others compute."""
        self.latency_backend.prepare(self.model, self.workload.example_input, self.space)


def _stats_state(stats: Mapping[str, ActivationStats]) -> dict[str, Any]:
    """Statistics as tensors and plain values; tied layers keep sharing one entry."""
    keys: dict[int, str] = {}
    for layer, value in stats.items():
        keys.setdefault(id(value), layer)
    return {"stats": {keys[id(v)]: v.state_dict() for v in stats.values()},
            "layers": {layer: keys[id(v)] for layer, v in stats.items()}}


_last_evaluator: tuple[Workload, str, dict[str, Any], Evaluator] | None = None


def evaluate_policy(workload: Workload, policy: Policy, latency: str = "onnxruntime", **options: Any) -> TrialResult:
    """Evaluate one policy. Consecutive calls with the same workload object and options reuse
    one :class:`Evaluator` and its caches; for several workloads at once, keep Evaluators yourself."""
    global _last_evaluator
    cached = _last_evaluator
    if cached is None or cached[0] is not workload or cached[1] != latency or cached[2] != options:
        cached = _last_evaluator = (workload, latency, options, Evaluator(workload, latency=latency, **options))
    return cached[3].evaluate(policy)
