"""HAQ-style latency lookup table: per-layer entries per execution kind, corrected by constants
measured inside whole quantized graphs, summed per policy.

A layer's kind (:data:`KINDS`: ``u8s8``, ``u8u8``, ``int16``, ``float``) is how ONNX Runtime runs
it in the exported file, decided by its weight bits, the bits of the tensor it reads and its own
activation bits, and the export target (:func:`execution_kind`). Each (layer, kind) is timed as a
one-layer model; what no layer entry sees (activations, joins, pixel shuffles, layouts, Q/DQ) is
taken from whole-model graphs (:data:`~.lut_measure.GRAPHS`) timed in the same interleaved
session, so that every uniform policy of those graphs is estimated exactly. The table is built
before a search (``prepare``), records the load it was measured under, and a table measured
under load or unstable is measured again before the next search. docs/latency.md says how and
what was measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from torch import nn

from ...files import write_atomic
from ...policy import Policy
from ...quant.export import check_target
from ...quant.graph import MODEL_INPUT, quantizable_layers
from ...quant.qdq import warn_without_vnni
from ...quant.spec import FLOAT_BITS
from ...quant.transform import calibrate, prepare
from ...search_spaces import SearchSpace
from .base import LatencyRequest, LatencyResult, TimedBackend, Timing, register_latency_backend
from .lut_measure import GRAPHS, KIND_BITS, Session, graph_builder, measure, one_layer_builder, one_layer_model
from .ort import OnnxRuntimeBackend

__all__ = ["KINDS", "KIND_BITS", "LayerPlan", "LookupTableBackend", "compare_with_end_to_end", "execution_kind",
           "machine", "one_layer_model", "plan_layers"]

KINDS = (*KIND_BITS, "dqw", "float")
BASE_KINDS = ("u8s8", "int16", "dqw", "float")
"""Kinds every layer is measured at before a search; ``u8u8`` (a ``vnni`` policy in a
``portable`` file) only when a policy needs it."""
DEFAULT_CACHE_DIR = Path("~/.cache/mpqsearch/latency")
TABLE_VERSION = 3
"""3: whole-graph constants per kind, per-tensor costs, measuring conditions."""


def execution_kind(weight_bits: int, input_bits: int, output_bits: int, target: str = "portable",
                   policy_target: str = "portable") -> str:
    """One of :data:`KINDS`: how ONNX Runtime runs a layer of a policy made for ``policy_target``
    in a file exported for ``target`` (:func:`~mpqsearch.quant.export.weight_container`): u8u8
    only for full-range 8-bit weights (made for ``vnni``) exported for ``portable``; ``dqw``, a
    float kernel on dequantized weights, when the weights are quantized but the tensor read or
    written is float (ONNX Runtime's NCHWc layout then does not apply: slower than ``float``)."""
    bits = (weight_bits, input_bits, output_bits)
    if weight_bits == FLOAT_BITS:
        return "float"
    if FLOAT_BITS in bits:
        return "dqw"
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
    output_numel: int = 0
    """Elements of the layer's output, all calls together: its share of the per-tensor costs."""

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
    outputs: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
            calls[name] = calls.get(name, 0) + 1
            outputs[name] = outputs.get(name, 0) + (output.numel() if isinstance(output, torch.Tensor) else 0)
        return hook

    handles = [layer.register_forward_hook(record(name)) for name, layer in layers.items()]
    try:
        calibrate(model, [example_input])
    finally:
        for handle in handles:
            handle.remove()
    analysis = prepare(model).analysis
    sources = {name: analysis.act_source(key) for name, key in analysis.reads.items() if key is not None}
    plans = {name: LayerPlan(name, shape, calls[name], sources.get(name), outputs[name])
             for name, shape in shapes.items()}
    structure = analysis.graph_module.code if analysis.traced else repr(model)
    return plans, structure


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


def _preferable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether table ``a``'s base measurement is to be kept rather than ``b``'s: a settled one
    over a provisional one, then the one measured under the lower load."""
    ca, cb = a.get("conditions", {}), b.get("conditions", {})
    if ca.get("provisional", True) != cb.get("provisional", True):
        return not ca.get("provisional", True)
    load_a, load_b = ca.get("load_before"), cb.get("load_before")
    return (load_a if load_a is not None else float("inf")) <= (load_b if load_b is not None else float("inf"))


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

    def conditions(self, model: nn.Module, example_input: Any) -> dict[str, Any]:
        """How ``model``'s table was measured (load, cores, drift, ``provisional``); empty before."""
        return dict(self._table(self._model(model, example_input)).get("conditions", {}))

    def _table(self, seen: _Model) -> dict[str, Any]:
        if seen.path not in self._tables:
            self._tables[seen.path] = _read_table(seen.path, seen.key) or {"key": seen.key, "layers": {}}
        return self._tables[seen.path]

    @staticmethod
    def _complete(seen: _Model, table: dict[str, Any]) -> bool:
        """Whether ``table`` holds the base kinds of every layer and every calibration graph."""
        layers = table.get("layers", {})
        return (all(kind in layers.get(name, {}) for name in seen.plans for kind in BASE_KINDS)
                and set(GRAPHS) <= set(table.get("graphs", {})))

    def _save(self, seen: _Model, table: dict[str, Any]) -> dict[str, Any]:
        """Write ``table``, or keep what another process wrote meanwhile if that is preferable;
        on-demand entries of either are merged. Returns the table kept."""
        stored = _read_table(seen.path, seen.key)
        if stored is not None and stored is not table and self._complete(seen, stored) \
                and (not self._complete(seen, table) or _preferable(stored, table)):
            table, extra = stored, table
        else:
            extra = stored or {}
        for layer, entries in extra.get("layers", {}).items():
            mine = table["layers"].setdefault(layer, {})
            mine.update({kind: entry for kind, entry in entries.items() if kind not in mine})
        write_atomic(seen.path, lambda handle: json.dump(table, handle, indent=1, sort_keys=True))
        self._tables[seen.path] = table
        return table

    def _session(self, seen: _Model, wanted: list[tuple[str, str]], graphs: list[str]) -> Session:
        layers = quantizable_layers(seen.module)
        builders = {f"{layer}|{kind}": one_layer_builder(layers[layer], seen.plans[layer].input_shape,
                                                                      kind, layer)
                    for layer, kind in wanted}
        names = list(seen.plans)
        builders |= {f"graph|{graph}": graph_builder(seen.module, seen.example_input, names, graph,
                                                                  "portable")
                     for graph in graphs}
        return measure(builders, threads=self.threads, warmup=self.warmup, repeats=self.repeats,
                                   stable_keys=[f"graph|{graph}" for graph in graphs])

    def _measure_base(self, seen: _Model) -> dict[str, Any]:
        """A fresh table: every layer at every base kind and every calibration graph, one session."""
        wanted = [(name, kind) for name in seen.plans for kind in BASE_KINDS]
        session = self._session(seen, wanted, list(GRAPHS))
        table: dict[str, Any] = {"key": seen.key, "layers": {}, "graphs": {}, "conditions": session.conditions}
        for key, entry in session.entries.items():
            owner, kind = key.split("|")
            if owner == "graph":
                table["graphs"][kind] = entry
            else:
                table["layers"].setdefault(owner, {})[kind] = entry
        return table

    def _fill(self, seen: _Model, extra: set[tuple[str, str]]) -> dict[str, Any]:
        """The table, measuring the base set if it is incomplete and the ``extra`` (layer, kind)
        entries it lacks."""
        table = self._table(seen)
        if not self._complete(seen, table):
            table = self._save(seen, self._measure_base(seen))
        missing = sorted((layer, kind) for layer, kind in extra if kind not in table["layers"].get(layer, {}))
        if missing:
            session = self._session(seen, missing, [])
            for key, entry in session.entries.items():
                layer, kind = key.split("|")
                table["layers"].setdefault(layer, {})[kind] = entry
            table = self._save(seen, table)
        return table

    def estimate(self, model: nn.Module, example_input: Any, policy: Policy) -> Timing:
        """The table's latency for ``policy`` (docs/latency.md: the formula), and the per-layer
        IQRs added up (as if the layers' run-to-run variations moved together). Measures the
        table first if it is missing (``prepare`` does it before a search)."""
        seen = self._model(model, example_input)
        target = self.target or policy.target
        warn_without_vnni(target, "estimating a latency")
        kinds = {name: plan.kind(policy, target) for name, plan in seen.plans.items()}
        table = self._fill(seen, {(name, kind) for name, kind in kinds.items() if kind not in BASE_KINDS})
        entries, graphs = table["layers"], {g: e["median_ms"] for g, e in table["graphs"].items()}
        plans = seen.plans
        constant = {kind: graphs[kind] - sum(p.calls * entries[n][kind]["median_ms"] for n, p in plans.items())
                    for kind in BASE_KINDS}
        constant["u8u8"] = constant["u8s8"]
        narrow, qdq8, qdq16 = (graphs["narrow"] - graphs["u8s8"], graphs["float_a8"] - graphs["float"],
                               graphs["float_a16"] - graphs["float"])
        total = sum(p.output_numel for p in plans.values()) or 1
        median = iqr = 0.0
        for name, plan in plans.items():
            kind, act_bits = kinds[name], policy.layers[name].act_bits
            share = plan.output_numel / total
            median += plan.calls * entries[name][kind]["median_ms"] + share * constant[kind]
            iqr += plan.calls * entries[name][kind]["iqr_ms"]
            if act_bits < 8:
                median += share * narrow
            if kind in ("float", "dqw") and act_bits != FLOAT_BITS:
                median += share * (qdq8 if act_bits <= 8 else qdq16)
        return Timing(max(median, 0.0), iqr, self.repeats)

    def prepare(self, model: nn.Module, example_input: Any, space: SearchSpace) -> None:
        """Measure the table before the search: every layer at every base kind and the
        calibration graphs, in one session, and ``u8u8`` too when the space's policies are made
        for ``vnni`` and this backend estimates ``portable`` files. A cached table is kept unless
        it was measured under load or unstable (``provisional``); then it is measured again and
        the better kept."""
        seen = self._model(model, example_input)
        table = self._table(seen)
        if not self._complete(seen, table) or table.get("conditions", {}).get("provisional", True):
            fresh = self._measure_base(seen)
            if self._complete(seen, table) and not _preferable(fresh, table):
                fresh = table
            self._save(seen, fresh)
        if self.target == "portable" and getattr(space, "target", None) == "vnni":
            # the space's full-range 8-bit weights in a portable file: u8u8, measured now too
            self._fill(seen, {(name, "u8u8") for name in seen.plans})

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
