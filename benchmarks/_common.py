"""What the benchmark scripts share: the machine line, interleaved timing, ONNX Runtime's own
quantizer (the anchor), Markdown tables. Not a benchmark itself (scripts import it as ``_common``:
``python benchmarks/x.py`` puts this folder on the import path).
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from mpqsearch.quant.export import onnxruntime_session
from mpqsearch.trials.latency.lut import machine
from mpqsearch.trials.latency.lut_measure import interleaved  # noqa: F401 (the scripts take it from here)

ORT_OPSET = 17
"""Opset of the FP32 file handed to ONNX Runtime's quantizer (it writes its own Q/DQ)."""


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def header(what: str) -> str:
    """One line naming the machine, the software and the load, for the top of a benchmark's output."""
    info = machine()
    return (f"# {what}\n# CPU {info['cpu']} ({os.cpu_count()} cores), ONNX Runtime {info['onnxruntime']}, "
            f"torch {torch.__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}, "
            f"load average {load()}")


def thread_counts(spec: str) -> list[int]:
    """``1,all`` -> ``[1, os.cpu_count()]`` (without repeats)."""
    counts = []
    for part in spec.split(","):
        count = (os.cpu_count() or 1) if part.strip() == "all" else int(part)
        if count not in counts:
            counts.append(count)
    return counts


def median_iqr(times: Sequence[float]) -> tuple[float, float]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return float(median), float(q3 - q1)


def session_call(session: Any, inputs: Sequence[np.ndarray]) -> Callable[[], Any]:
    feed = {meta.name: array for meta, array in zip(session.get_inputs(), inputs, strict=True)}
    return lambda: session.run(None, feed)


def op_counts(path: str | os.PathLike, threads: int = 1) -> dict[str, int]:
    """How many nodes of each type ONNX Runtime's optimized graph of ``path`` holds."""
    path = Path(path)
    optimized = path.with_suffix(".optimized.onnx")
    onnxruntime_session(path, threads=threads, optimized_model_path=optimized)
    counts: dict[str, int] = {}
    for node in onnx.load(str(optimized)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    optimized.unlink()
    return counts


def export_float(model: torch.nn.Module, example: torch.Tensor, path: Path, *, dynamic_size: bool = False,
                 dynamic_batch: bool = False) -> Path:
    """The float model as a plain ONNX file (input ``input``, output ``output``): what a user hands
    to ONNX Runtime's quantizer. ``dynamic_size`` makes batch, height and width symbolic (an image
    output), ``dynamic_batch`` the batch only."""
    axes = ({"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "oh", 3: "ow"}} if dynamic_size
            else {"input": {0: "n"}, "output": {0: "n"}} if dynamic_batch else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=ORT_OPSET,
                          input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path


def ort_quantize_static(fp32_path: Path, calib: Iterable[torch.Tensor], path: Path) -> Path:
    """ONNX Runtime's own post-training quantization of ``fp32_path``: QDQ format, per channel,
    uint8 activations, int8 weights, calibrated (min-max, its default) on ``calib``, the same
    batches our policies are calibrated on."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": batch.detach().numpy()} for batch in calib])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice, printed per call
    quantize_static(str(fp32_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


def fixed_size(path: Path, shape: Sequence[int], out: Path) -> Path:
    """A copy of ``path`` (one input, ``input``) with that input's shape fixed to ``shape``."""
    from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed

    model = onnx.load(str(path))
    make_input_shape_fixed(model.graph, "input", list(shape))
    onnx.save(model, str(out))
    return out


def markdown(rows: Sequence[Mapping[str, str]]) -> str:
    """Rows of equal keys as a Markdown table."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    def ranks(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):
            tied = values == value
            ranked[tied] = ranked[tied].mean()
        return ranked
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
