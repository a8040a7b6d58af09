"""What the lookup table measures and how: one-layer models per execution kind, whole-model
calibration graphs, all timed in one interleaved session whose load and stability are recorded.

docs/latency.md ("How entries are measured") says why each piece is there.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ...quant.export import Dequantize, Quantize, container, dequantized_weight, export_onnx, write_onnx
from ...quant.modules import WeightFakeQuant, weight_channel_axis
from ...quant.runtime import onnxruntime_session
from ...quant.spec import FLOAT_BITS, LayerQuantConfig
from ...quant.transform import quantize_model

KIND_BITS = {"u8s8": (7, 8), "u8u8": (8, 8), "int16": (16, 16)}
"""The weight and activation bits each integer kind's one-layer model is measured at."""

DQW_BITS = 7
"""The weight bits a ``dqw`` layer (float compute on dequantized weights) is measured at."""

GRAPHS = {"float": (FLOAT_BITS, FLOAT_BITS, FLOAT_BITS), "u8s8": (7, 8, 8), "int16": (16, 16, 16),
          "dqw": (DQW_BITS, FLOAT_BITS, FLOAT_BITS),
          "narrow": (7, 6, 8), "float_a8": (FLOAT_BITS, 8, 8), "float_a16": (FLOAT_BITS, 16, 16)}
"""Whole-model calibration graphs: weight, activation and input bits of every layer. ``float``,
``u8s8``, ``int16`` and ``dqw`` give each kind's constant inside its own graph; ``narrow`` (activations
below 8 bits: ``DQ -> Clip -> Q`` on every tensor) less ``u8s8``, and ``float_a8``/``float_a16``
(float layers between quantized tensors: Q/DQ in float) less ``float``, give per-tensor costs."""

STABLE_DRIFT = 0.10
"""A session is stable when every calibration graph's median of the first half of the rounds
and of the second half differ by at most this fraction."""
MAX_BATCHES = 3
"""Batches of rounds a session runs at most while it is not stable."""
LOAD_MARGIN = 0.5
"""Load (runnable tasks of others, 1-minute average) beyond the cores the timing leaves free
that marks a session as measured under load."""


class _QuantizedLayer(nn.Module):
    """One layer as ONNX Runtime runs it at ``weight_bits`` and ``act_bits``: integer levels in,
    integer levels out.

    8-bit levels are uint8 whatever their sign: ONNX Runtime on x86 runs int8 activations as
    uint8 (it rewrites int8 Q/DQ pairs) and does not fuse a convolution on an int8 graph input.
    """

    def __init__(self, layer: nn.Module, weight_bits: int, act_bits: int, example: torch.Tensor) -> None:
        super().__init__()
        self.bits, self.signed = act_bits, act_bits > 8
        config = LayerQuantConfig(weight_bits, act_bits, weight_clipping="max")
        quantizer = WeightFakeQuant(layer.weight, config, weight_channel_axis(layer))
        with torch.no_grad():
            levels = dequantized_weight(quantizer(layer.weight), quantizer)
            parametrize.register_parametrization(layer, "weight", levels)
            self.layer = layer
            qmax = 2 ** (act_bits - 1) - 1
            self.register_buffer("input_scale", example.abs().max() / qmax)
            self.register_buffer("output_scale", layer(example).abs().max() / qmax)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        x = Dequantize.apply(levels, self.input_scale, None)
        return Quantize.apply(self.layer(x), self.output_scale, self.bits, self.signed)


def _dequantized_weights(layer: nn.Module, weight_bits: int) -> nn.Module:
    """``layer`` (a copy) reading its weight from integer levels (``DequantizeLinear``)."""
    config = LayerQuantConfig(weight_bits, FLOAT_BITS, weight_clipping="max")
    quantizer = WeightFakeQuant(layer.weight, config, weight_channel_axis(layer))
    with torch.no_grad():
        parametrize.register_parametrization(layer, "weight", dequantized_weight(quantizer(layer.weight), quantizer))
    return layer


def one_layer_model(layer: nn.Module, input_shape: tuple[int, ...], kind: str) -> tuple[nn.Module, torch.Tensor]:
    """``layer`` alone, as ONNX Runtime runs it at ``kind``, and an input for it."""
    layer = copy.deepcopy(layer).eval()
    example = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    if kind == "float":
        return layer, example
    if kind == "dqw":
        return _dequantized_weights(layer, DQW_BITS), example
    module = _QuantizedLayer(layer, *KIND_BITS[kind], example)
    dtype = container(module.bits, module.signed)[0]
    info = torch.iinfo(dtype)
    levels = torch.randint(info.min, info.max + 1, input_shape, generator=torch.Generator().manual_seed(0))
    return module, levels.to(dtype)


def write_graph(model: nn.Module, example_input: Any, layers: list[str], graph: str, target: str, path: Path) -> Path:
    """Calibration graph ``graph`` (:data:`GRAPHS`) of ``model``: every layer at its bits,
    activations calibrated on ``example_input``, weights clipped at their max (scales do not
    change a kernel's speed), exported for ``target``."""
    weight_bits, act_bits, input_bits = GRAPHS[graph]
    if weight_bits == act_bits == FLOAT_BITS:
        return export_onnx(model, example_input, path)
    config = LayerQuantConfig(weight_bits, act_bits, weight_clipping="max")
    qmodel = quantize_model(model, dict.fromkeys(layers, config), [example_input], input_bits=input_bits,
                            target=target)
    return export_onnx(qmodel, example_input, path, target=target)


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the system has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _arrays(example_input: Any) -> list[np.ndarray]:
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    return [x.detach().cpu().numpy() for x in inputs]


def time_interleaved(files: Mapping[str, tuple[Path, Any]], *, threads: int, warmup: int, runs: int,
                     rounds: int) -> dict[str, list[float]]:
    """Milliseconds per run of every file (``{key: (path, example input)}``), the files taking
    turns: ``warmup`` untimed runs each, then ``rounds`` rounds of ``runs`` runs each."""
    calls: dict[str, Callable[[], Any]] = {}
    for key, (path, example_input) in files.items():
        session = onnxruntime_session(path, threads=threads)
        feed = {m.name: a for m, a in zip(session.get_inputs(), _arrays(example_input), strict=True)}
        calls[key] = lambda session=session, feed=feed: session.run(None, feed)
    return interleaved(calls, rounds=rounds, repeats=runs, warmup=warmup)


def interleaved(calls: Mapping[str, Callable[[], Any]], *, rounds: int, repeats: int,
                warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call, the variants taking turns: ``warmup`` untimed calls of each, then
    ``rounds`` rounds in which each variant is called ``repeats`` times in a row, so that a slow
    spell of the machine hits every variant alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            for _ in range(repeats):
                start = time.perf_counter_ns()
                call()
                times[key].append((time.perf_counter_ns() - start) / 1e6)
    return times


def _entry(times: list[float]) -> dict[str, float]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_ms": float(median), "iqr_ms": float(q3 - q1), "runs": len(times)}


def _drift(first: Mapping[str, list[float]], second: Mapping[str, list[float]], keys: list[str]) -> float:
    """The largest relative difference between the medians of two halves, over ``keys``."""
    worst = 0.0
    for key in keys:
        a, b = float(np.median(first[key])), float(np.median(second[key]))
        worst = max(worst, abs(a - b) / max(min(a, b), 1e-9))
    return worst


@dataclass
class Session:
    """One measuring session's entries (``{key: {median_ms, iqr_ms, runs}}``) and how it went."""

    entries: dict[str, dict[str, float]]
    conditions: dict[str, Any]


def measure(builders: Mapping[str, Callable[[Path], tuple[Path, Any]]], *, threads: int, warmup: int, repeats: int,
            rounds: int = 5, stable_keys: list[str] | None = None) -> Session:
    """Write every file (``builders``: key -> function of a directory returning the path and
    its example input), then time them all in one interleaved session: ``rounds`` rounds sharing
    ``repeats`` runs per file; while the ``stable_keys`` drift between the session's halves
    beyond :data:`STABLE_DRIFT`, another batch of rounds (at most :data:`MAX_BATCHES`). The
    conditions record the load before and after, the cores, the drift and whether the session
    counts as ``loaded`` (others' load beyond the free cores) or ``provisional`` (loaded or not
    stable): a provisional table is used but measured again before the next search."""
    if not builders:
        return Session({}, {})
    rounds = max(2, min(rounds, repeats))
    runs = max(1, repeats // rounds)
    started = time.time()
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="mpqsearch-lut-") as tmp:
        files = {key: build(Path(tmp)) for key, build in builders.items()}
        batches: list[dict[str, list[float]]] = []
        drift = 0.0
        while len(batches) < MAX_BATCHES:
            batches.append(time_interleaved(files, threads=threads, warmup=warmup if not batches else 0,
                                            runs=runs, rounds=rounds))
            whole = {key: [t for batch in batches for t in batch[key]] for key in files}
            half = len(whole[next(iter(files))]) // 2
            first = {key: times[:half] for key, times in whole.items()}
            second = {key: times[half:] for key, times in whole.items()}
            drift = _drift(first, second, [k for k in stable_keys or [] if k in files]) if half else 0.0
            if drift <= STABLE_DRIFT:
                break
    after = load_average()
    cpus = os.cpu_count() or 1
    seen = [x for x in (before, None if after is None else after - threads) if x is not None]
    others = max(seen) if seen else None
    loaded = others is not None and others > max(cpus - threads, 0) + LOAD_MARGIN
    conditions = {"load_before": before, "load_after": after, "cpus": cpus, "threads": threads,
                  "drift": round(drift, 4), "batches": len(batches), "loaded": loaded,
                  "provisional": loaded or drift > STABLE_DRIFT,
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                  "seconds": round(time.time() - started, 1)}
    return Session({key: _entry(times) for key, times in whole.items()}, conditions)


def one_layer_builder(layer: nn.Module, input_shape: tuple[int, ...], kind: str, name: str
                      ) -> Callable[[Path], tuple[Path, Any]]:
    def build(directory: Path) -> tuple[Path, Any]:
        module, example = one_layer_model(layer, input_shape, kind)
        return write_onnx(module, example, directory / f"{name}-{kind}.onnx"), example
    return build


def graph_builder(model: nn.Module, example_input: Any, layers: list[str], graph: str, target: str
                  ) -> Callable[[Path], tuple[Path, Any]]:
    def build(directory: Path) -> tuple[Path, Any]:
        return write_graph(model, example_input, layers, graph, target, directory / f"graph-{graph}.onnx"), \
            example_input
    return build
