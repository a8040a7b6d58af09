"""ONNX Runtime latency of uniform policies against FP32, and the lookup table's estimate.

For the example model and the super-resolution workloads (each skipped, with the reason, when it
cannot be built), each policy's fake-quant model is exported (``mpqsearch.quant.export``) and
timed end to end in ONNX Runtime on the CPU as the ``onnxruntime`` latency backend does, all in
one run with the policies taking turns; the speed-up is FP32's median over the policy's. The
``int8 layers`` column counts the layers ONNX Runtime runs as ``QLinearConv`` (from its optimized
graph), the ``lut`` column is the lookup-table backend's estimate, from a table measured fresh in
this run.

    python benchmarks/onnx_latency.py [--threads 1] [--repeats 200] [--warmup 20] [--rounds 10]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from mpqsearch import Policy, SearchSpace, apply_policy
from mpqsearch.example import EXAMPLE_INPUT_SHAPE, build
from mpqsearch.quant.export import export_onnx, onnxruntime_session
from mpqsearch.trials.latency import LatencyRequest, LookupTableBackend
from mpqsearch.trials.latency.lut import machine

POLICIES = {"FP32": (32, 32, "portable"), "W8A8": (8, 8, "portable"), "W8A8 vnni": (8, 8, "vnni"),
            "W7A8": (7, 8, "portable"), "W4A8": (4, 8, "portable"), "W8A16": (8, 16, "portable")}
"""Weight bits, activation bits, export target. W8A8 runs ONNX Runtime's u8u8 kernels, W8A8 for the
``vnni`` target, W7A8 and W4A8 its u8s8 ones (``weight_container``; on a CPU without VNNI the
``vnni`` file's outputs are wrong, its time is still shown)."""


def _example() -> tuple[str, torch.nn.Module, torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, *EXAMPLE_INPUT_SHAPE[1:], generator=generator) for _ in range(4)]
    return "example", build(), torch.randn(EXAMPLE_INPUT_SHAPE, generator=generator), calib


def _workload(name: str) -> tuple[str, torch.nn.Module, torch.Tensor, list[Any]]:
    from mpqsearch.workloads import get_workload

    workload = get_workload(name)
    return name, workload.build_model().eval(), workload.example_input, list(workload.calib_data)


def _interleaved(sessions: dict[str, Any], feed: dict[str, Any], args: argparse.Namespace) -> dict[str, list[float]]:
    """Milliseconds per run, the policies taking turns in ``args.rounds`` rounds so that a
    slow spell of the machine hits them all alike."""
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for session in sessions.values():
        for _ in range(args.warmup):
            session.run(None, feed)
    for _ in range(args.rounds):
        for label, session in sessions.items():
            for _ in range(args.repeats // args.rounds):
                start = time.perf_counter_ns()
                session.run(None, feed)
                times[label].append((time.perf_counter_ns() - start) / 1e6)
    return times


def _int8_layers(path: Path) -> int:
    """How many layers ONNX Runtime's optimized graph of ``path`` runs as QLinearConv."""
    optimized = path.with_suffix(".optimized.onnx")
    onnxruntime_session(path, optimized_model_path=optimized)
    return sum(node.op_type == "QLinearConv" for node in onnx.load(str(optimized)).graph.node)


def _rows(model_name: str, model: torch.nn.Module, example: torch.Tensor, calib: list[Any],
          args: argparse.Namespace, tmp: Path) -> list[dict[str, str]]:
    timing = {"threads": args.threads, "repeats": args.repeats, "warmup": args.warmup}
    tables = {target: LookupTableBackend(cache_dir=tmp, target=target, **timing) for target in ("portable", "vnni")}
    space = SearchSpace.from_model(model, example)
    sessions, estimates, int8_layers = {}, {}, {}
    for label, (weight_bits, act_bits, target) in POLICIES.items():
        policy = Policy.uniform(space, weight_bits, act_bits)
        qmodel = apply_policy(model, policy, calib)
        path = export_onnx(qmodel, example, tmp / f"{model_name}-{label.replace(' ', '-')}.onnx", target=target)
        sessions[label] = onnxruntime_session(path, threads=args.threads)
        int8_layers[label] = f"{_int8_layers(path)}/{len(space.layers)}"
        estimates[label] = tables[target].measure(LatencyRequest(model, qmodel, example, space, policy)).median_ms
    times = _interleaved(sessions, {sessions["FP32"].get_inputs()[0].name: example.numpy()}, args)
    medians = {label: float(np.median(t)) for label, t in times.items()}
    rows = []
    for label, measured in times.items():
        q1, q3 = np.percentile(measured, [25, 75])
        rows.append({"model": model_name, "policy": label, "input": "x".join(map(str, example.shape)),
                     "median ms": f"{medians[label]:.3f}", "IQR ms": f"{q3 - q1:.3f}",
                     "speed-up": f"{medians['FP32'] / medians[label]:.2f}x", "int8 layers": int8_layers[label],
                     "lut ms": f"{estimates[label]:.3f}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10, help="turns the policies take (interleaved timing)")
    parser.add_argument("--workloads", default="sr-espcn-x2,sr-srresnet-x2,sr-rrdb-x2",
                        help="comma-separated workload names")
    args = parser.parse_args()
    info = machine()
    print(f"CPU {info['cpu']}, ONNX Runtime {info['onnxruntime']}, torch {torch.__version__}, "
          f"Python {platform.python_version()}, {args.threads} intra-op thread(s), {args.warmup} warm-up runs, "
          f"then {args.repeats // args.rounds} runs per policy in each of {args.rounds} rounds\n")
    models = [_example]
    models += [lambda name=name: _workload(name) for name in filter(None, args.workloads.split(","))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mpqsearch-bench-") as tmp:
        for load in models:
            try:
                loaded = load()
            except Exception as err:
                print(f"skipped: {err}\n")
                continue
            rows += _rows(*loaded, args, Path(tmp))
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    main()
