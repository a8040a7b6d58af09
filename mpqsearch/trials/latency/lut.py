"""HAQ-style latency lookup table: each layer timed alone once per execution kind, summed per policy.

A layer's kind (:data:`KINDS`: ``u8s8``, ``u8u8``, ``int16``, ``float``) is how ONNX Runtime runs
it in the exported file, decided by its weight bits, the bits of the tensor it reads and its own
activation bits, and the export target (:func:`execution_kind`); the table follows the export:
every layer between tensors of 8 bits or fewer runs in an int8 kernel. What no layer entry sees is
one measured constant (FP32 end to end minus the FP32 sum). docs/latency.md says how entries are
measured, what the table misses, and how tables are keyed and cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from torch import nn
from torch.nn.utils import parametrize

from ...files import write_atomic
from ...policy import Policy
from ...quant.export import Dequantize, Quantize, check_target, container, dequantized_weight, export_onnx, write_onnx
from ...quant.graph import MODEL_INPUT, quantizable_layers
from ...quant.modules import WeightFakeQuant, weight_channel_axis
from ...quant.qdq import warn_without_vnni
from ...quant.spec import FLOAT_BITS, LayerQuantConfig
from ...quant.transform import calibrate, prepare
from ...search_spaces import SearchSpace
from .base import LatencyRequest, LatencyResult, TimedBackend, Timing, register_latency_backend
from .ort import OnnxRuntimeBackend, time_onnx

KIND_BITS = {"u8s8": (7, 8), "u8u8": (8, 8), "int16": (16, 16)}
"""The weight and activation bits each integer kind is measured at."""
KINDS = (*KIND_BITS, "float")
DEFAULT_CACHE_DIR = Path("~/.cache/mpqsearch/latency")
TABLE_VERSION = 2
"""2: 8-bit weights are measured apart from narrower ones (``u8u8``, ``u8s8``)."""


def execution_kind(weight_bits: int, input_bits: int, output_bits: int, target: str = "portable",
                   policy_target: str = "portable") -> str:
    """One of :data:`KINDS`: how ONNX Runtime runs a layer of a policy made for ``policy_target``
    in a file exported for ``target`` (:func:`~mpqsearch.quant.export.weight_container`): u8u8
    only for full-range 8-bit weights (made for ``vnni``) exported for ``portable``."""
    bits = (weight_bits, input_bits, output_bits)
    if FLOAT_BITS in bits:
        return "float"
    if max(bits) > 8:
        return "int16"
    return "u8u8" if weight_bits == 8 and target == "portable" and policy_target == "vnni" else "u8s8"


@dataclass(frozen=True)
class LayerPlan:
    """What the table knows of one layer: where and how it runs in the model."""

    name: str
    input_shape: tuple[int, ...]
    calls: int
    source: str | None
    """Whose bits quantize the tensor this layer reads: a layer (its activation, or the add or
    concat of its tied group), :data:`~mpqsearch.quant.graph.MODEL_INPUT` (``input_bits``), or
    ``None`` (an unquantized tensor)."""

    def kind(self, policy: Policy, target: str | None = None) -> str:
        """The layer's kind under ``policy`` in a file exported for ``target`` (default: the
        policy's own target)."""
        target = target or policy.target
        config = policy.layers[self.name]
        if self.source is None:
            input_bits = FLOAT_BITS
        else:
            input_bits = policy.input_bits if self.source == MODEL_INPUT else policy.layers[self.source].act_bits
        return execution_kind(config.weight_bits, input_bits, config.act_bits, target, policy.target)


def plan_layers(model: nn.Module, example_input: Any) -> tuple[dict[str, LayerPlan], str]:
    """Every layer that runs on ``example_input``, and the model's structure (for the key)."""
    layers = quantizable_layers(model)
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
            calls[name] = calls.get(name, 0) + 1
        return hook

    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in layers.items()]
    try:
        calibrate(model, [example_input])
    finally:
        for handle in handles:
            handle.remove()
    analysis = prepare(model).analysis
    sources = {name: analysis.act_source(key) for name, key in analysis.reads.items() if key is not None}
    plans = {name: LayerPlan(name, shape, calls[name], sources.get(name)) for name, shape in shapes.items()}
    structure = analysis.graph_module.code if analysis.traced else repr(model)
    return plans, structure


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


def one_layer_model(layer: nn.Module, plan: LayerPlan, kind: str) -> tuple[nn.Module, torch.Tensor]:
    """``layer`` alone, as ONNX Runtime runs it at ``kind``, and an input for it."""
    layer = copy.deepcopy(layer).eval()
    example = torch.randn(plan.input_shape, generator=torch.Generator().manual_seed(0))
    if kind == "float":
        return layer, example
    module = _QuantizedLayer(layer, *KIND_BITS[kind], example)
    dtype = container(module.bits, module.signed)[0]
    info = torch.iinfo(dtype)
    levels = torch.randint(info.min, info.max + 1, plan.input_shape, generator=torch.Generator().manual_seed(0))
    return module, levels.to(dtype)


def machine() -> dict[str, str]:
    """What the timings depend on besides the model: the CPU model and the runtime's version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "onnxruntime": onnxruntime.__version__}


def _read_table(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored table for ``key``; ``None`` when there is none (or an unreadable one: it is a
    cache, measured again and overwritten)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) and stored.get("key") == key else None


@dataclass
class _Model:
    """A model the backend has seen: its plan, table key and file."""

    module: nn.Module
    example_input: Any
    plans: dict[str, LayerPlan]
    key: dict[str, Any]
    path: Path


@register_latency_backend
class LookupTableBackend(TimedBackend):
    """Sums measured per-layer latencies (see the module docstring); ``threads``, ``repeats`` and
    ``warmup`` apply to the measurements behind the table, ``cache_dir`` says where it is kept,
    ``target`` which export it estimates (``portable`` or ``vnni``; one table serves both)."""

    name = "lut"

    def __init__(self, *, threads: int = 1, repeats: int = 50, warmup: int = 10,
                 cache_dir: str | os.PathLike | None = None, target: str | None = None) -> None:
        super().__init__(threads=threads, repeats=repeats, warmup=warmup)
        if target is not None:
            check_target(target)
        self.target = target
        self.cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        self._models: dict[int, _Model] = {}
        self._tables: dict[Path, dict[str, Any]] = {}

    def _model(self, model: nn.Module, example_input: Any) -> _Model:
        seen = self._models.get(id(model))
        if seen is None or seen.module is not model:
            plans, structure = plan_layers(model, example_input)
            layers = quantizable_layers(model)
            fingerprint = hashlib.sha256(json.dumps({
                "structure": structure,
                "layers": {n: [repr(layers[n]), p.input_shape, p.calls] for n, p in plans.items()},
            }, sort_keys=True).encode()).hexdigest()
            key = {"model": fingerprint, "backend": "onnxruntime", "threads": self.threads, **machine(),
                   "version": TABLE_VERSION}
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
            seen = self._models[id(model)] = _Model(model, example_input, plans, key, self.cache_dir / f"{digest}.json")
        return seen

    def table_path(self, model: nn.Module, example_input: Any) -> Path:
        """The file holding ``model``'s table on this machine with this thread count."""
        return self._model(model, example_input).path

    def _table(self, seen: _Model) -> dict[str, Any]:
        if seen.path not in self._tables:
            self._tables[seen.path] = _read_table(seen.path, seen.key) or {"key": seen.key, "layers": {}}
        return self._tables[seen.path]

    def _save(self, seen: _Model, table: dict[str, Any]) -> None:
        """Merge with what another process may have written meanwhile, then write atomically."""
        stored = _read_table(seen.path, seen.key)
        if stored is not None:
            for layer, entries in stored.get("layers", {}).items():
                mine = table["layers"].setdefault(layer, {})
                mine.update({kind: entry for kind, entry in entries.items() if kind not in mine})
            table.setdefault("end_to_end_fp32", stored.get("end_to_end_fp32"))
        write_atomic(seen.path, lambda handle: json.dump(table, handle, indent=1, sort_keys=True))

    def _measure(self, path: Path, example: Any) -> dict[str, Any]:
        timing = time_onnx(path, example, threads=self.threads, warmup=self.warmup, repeats=self.repeats)
        return {"median_ms": timing.median_ms, "iqr_ms": timing.iqr_ms, "runs": timing.runs}

    def _fill(self, seen: _Model, wanted: set[tuple[str, str]]) -> dict[str, Any]:
        """Measure the wanted (layer, kind) entries and the FP32 end-to-end time the table lacks."""
        table = self._table(seen)
        missing = sorted((layer, kind) for layer, kind in wanted if kind not in table["layers"].get(layer, {}))
        if not missing and table.get("end_to_end_fp32"):
            return table
        layers = quantizable_layers(seen.module)
        with tempfile.TemporaryDirectory(prefix="mpqsearch-lut-") as tmp:
            for layer, kind in missing:
                module, example = one_layer_model(layers[layer], seen.plans[layer], kind)
                path = write_onnx(module, example, Path(tmp) / f"{layer}-{kind}.onnx")
                table["layers"].setdefault(layer, {})[kind] = self._measure(path, example)
            if not table.get("end_to_end_fp32"):
                path = export_onnx(seen.module, seen.example_input, Path(tmp) / "fp32.onnx")
                table["end_to_end_fp32"] = self._measure(path, seen.example_input)
        self._save(seen, table)
        return table

    def estimate(self, model: nn.Module, example_input: Any, policy: Policy) -> Timing:
        """The table's latency for ``policy``: per-layer medians at their kinds plus the
        constant, and the per-layer IQRs added up (as if the layers' run-to-run variations moved
        together). Measures whatever entries the table still lacks."""
        seen = self._model(model, example_input)
        target = self.target or policy.target
        warn_without_vnni(target, "estimating a latency")
        kinds = {name: plan.kind(policy, target) for name, plan in seen.plans.items()}
        wanted = set(kinds.items()) | {(name, "float") for name in seen.plans}
        table = self._fill(seen, wanted)
        entries = table["layers"]
        fp32 = sum(plan.calls * entries[name]["float"]["median_ms"] for name, plan in seen.plans.items())
        overhead = table["end_to_end_fp32"]["median_ms"] - fp32
        median = overhead + sum(seen.plans[n].calls * entries[n][k]["median_ms"] for n, k in kinds.items())
        iqr = sum(seen.plans[n].calls * entries[n][k]["iqr_ms"] for n, k in kinds.items())
        return Timing(median, iqr, self.repeats)

    def prepare(self, model: nn.Module, example_input: Any, space: SearchSpace) -> None:
        """Fill the table's entries for uniform 8-, 16- and 32-bit policies before the search."""
        for bits in (8, 16, FLOAT_BITS):
            self.estimate(model, example_input, Policy.uniform(space, bits, bits))

    def isolation(self, locked: bool) -> str:
        return "table"

    def measure(self, request: LatencyRequest) -> LatencyResult:
        if request.policy is None:
            raise ValueError("the lut latency backend sums a policy's layers: the request has no policy")
        return self.result(self.estimate(request.model, request.example_input, request.policy), "lookup-table")


def compare_with_end_to_end(request: LatencyRequest, **options: Any) -> tuple[LatencyResult, LatencyResult]:
    """The lookup-table estimate and an end-to-end ONNX Runtime measurement of the same request,
    with the same ``threads``, ``repeats`` and ``warmup`` (``cache_dir`` goes to the table)."""
    table = LookupTableBackend(**options)
    options.pop("cache_dir", None)
    return table.measure(request), OnnxRuntimeBackend(**options).measure(request)
