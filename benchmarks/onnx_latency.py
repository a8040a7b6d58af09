"""ONNX Runtime speed of our exported policies against FP32 and against ONNX Runtime's own quantizer.

For each workload: the FP32 model, ONNX Runtime's ``quantize_static`` (QDQ, per channel, uint8
activations, int8 weights, min-max calibration on the workload's calibration images, the same
FP32 model: the anchor a user could pick instead of us) and our policies (``--policies``: uniform
ones and W4A8 with 8-bit weights in the first and last layers; uniform 8-bit weights for both
export targets) are exported, run on the workload's evaluation data in
ONNX Runtime (the metric column is the ONNX file's, not the fake-quant model's) and timed in one
interleaved run per input size and thread count, the variants taking turns. ``int8 convs``
counts the layers ONNX Runtime's optimized graph runs as ``QLinearConv``. Speed-ups are FP32's
median over the variant's, within the run.

Per workload and setting, the pick is the fastest of our policies that is exact on this CPU (a
``vnni`` file only where the CPU has VNNI) and within ``--max-drop`` (0.1 dB) of FP32's metric;
the issue's target: at 1 thread on a 270x480 frame, the pick at least as fast as
``quantize_static`` and at least 1.5x faster than FP32.

    python benchmarks/onnx_latency.py [--workloads sr-espcn-x2,...] [--sizes builtin,270x480]
        [--threads 1,all] [--policies 8/8,6/8,4/8,4/8:8] [--rounds 10] [--repeats 2] [--warmup 3] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    export_float,
    fixed_size,
    header,
    interleaved,
    load,
    markdown,
    median_iqr,
    op_counts,
    ort_quantize_static,
    session_call,
    thread_counts,
)

from mpqsearch import Policy
from mpqsearch.quant.export import export_onnx, onnxruntime_session
from mpqsearch.quant.spec import FLOAT_BITS, cpu_has_vnni
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import get_workload

FP32, ORT = "FP32", "ORT quantize_static W8A8"


@dataclasses.dataclass
class Variant:
    label: str
    qmodel: torch.nn.Module | None  # None: FP32 or ONNX Runtime's file
    target: str | None
    exact: bool
    metric: float = float("nan")  # of the ONNX file on the evaluation data


def _onnx_metric(path: Path, workload: Any) -> float:
    """The workload's primary metric of an ONNX file, averaged over its evaluation data."""
    session = onnxruntime_session(path, threads=os.cpu_count() or 1)
    total, count = 0.0, 0
    for inputs, target in workload.eval_data:
        output = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
        total += float(workload.metric(torch.from_numpy(output), target)[workload.primary_metric].sum())
        count += len(target)
    return total / count


def _policy(evaluator: Evaluator, spec: str) -> tuple[str, Policy]:
    """``W/A`` (uniform) or ``W/A:E`` (uniform, the first and last layers at ``E``-bit weights)."""
    bits, _, ends = spec.partition(":")
    weight_bits, act_bits = (int(b) for b in bits.split("/"))
    policy = Policy.uniform(evaluator.space, weight_bits, act_bits)
    label = f"W{weight_bits}A{act_bits}"
    if ends:
        names = list(evaluator.space.names)
        for name in (names[0], names[-1]):
            policy.layers[name] = dataclasses.replace(policy.layers[name], weight_bits=int(ends))
        label += f" ends W{ends}"
    return label, policy


def _variants(evaluator: Evaluator, policies: list[str]) -> list[Variant]:
    vnni = cpu_has_vnni()
    variants = [Variant(FP32, None, None, True), Variant(ORT, None, None, bool(vnni))]
    for spec in policies:
        label, uniform = _policy(evaluator, spec)
        eight = {config.weight_bits for config in uniform.layers.values()} - {FLOAT_BITS} == {8}
        for target in ("portable", "vnni") if eight else ("portable",):
            policy = dataclasses.replace(uniform, target=target)
            variants.append(Variant(f"ours {label}" + (f" {target}" if eight else ""), evaluator.quantize(policy),
                                    target, target == "portable" or bool(vnni)))
    return variants


def _files(variants: list[Variant], evaluator: Evaluator, ort_dynamic: Path, example: torch.Tensor,
           tmp: Path, tag: str) -> dict[str, Path]:
    files = {}
    for variant in variants:
        path = tmp / f"{tag}-{variant.label.replace(' ', '-')}.onnx"
        if variant.label == FP32:
            files[variant.label] = export_onnx(evaluator.model, example, path)
        elif variant.label == ORT:
            files[variant.label] = fixed_size(ort_dynamic, example.shape, path)
        else:
            files[variant.label] = export_onnx(variant.qmodel, example, path, target=variant.target)
    return files


def _run(name: str, args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, str]], list[str]]:
    workload = get_workload(name)
    evaluator = Evaluator(workload, latency="none")
    metric = workload.primary_metric
    reference = evaluator.reference[metric]
    variants = _variants(evaluator, args.policies)
    fp32_dynamic = export_float(evaluator.model, workload.example_input, tmp / f"{name}-fp32.onnx", dynamic_size=True)
    ort_dynamic = ort_quantize_static(fp32_dynamic, workload.calib_data, tmp / f"{name}-ort-dyn.onnx")

    def drop(value: float) -> float:
        """How much worse than FP32 (0.0 when within print precision)."""
        worse = reference - value if workload.directions[metric] == "maximize" else value - reference
        return 0.0 if abs(worse) < 5e-5 else worse

    rows, verdicts = [], []
    for size in args.sizes:
        if size == "builtin":
            example = workload.example_input
        else:
            height, width = size
            example = torch.rand(1, workload.example_input.shape[1], height, width,
                                 generator=torch.Generator().manual_seed(0))
        shape = "x".join(map(str, example.shape[2:]))
        files = _files(variants, evaluator, ort_dynamic, example, tmp, f"{name}-{shape}")
        if size == "builtin":
            for variant in variants:
                variant.metric = _onnx_metric(files[variant.label], workload)
        convs = {label: op_counts(path) for label, path in files.items()}
        n_convs = convs[FP32].get("Conv", 0) + convs[FP32].get("FusedConv", 0)
        for threads in args.threads:
            sessions = {label: onnxruntime_session(path, threads=threads) for label, path in files.items()}
            calls = {label: session_call(session, [example.numpy()]) for label, session in sessions.items()}
            before = load()
            times = interleaved(calls, rounds=args.rounds, repeats=args.repeats, warmup=args.warmup)
            del calls, sessions  # each session's arena holds hundreds of MB at 270x480
            gc.collect()
            stats = {label: median_iqr(t) for label, t in times.items()}
            fp32_ms, ort_ms = stats[FP32][0], stats[ORT][0]
            for variant in variants:
                median, iqr = stats[variant.label]
                rows.append({"workload": name, "input": shape, "threads": str(threads), "variant": variant.label,
                             metric: f"{variant.metric:.4f}", "drop": f"{drop(variant.metric):+.4f}",
                             "exact here": "yes" if variant.exact else "no",
                             "int8 convs": f"{convs[variant.label].get('QLinearConv', 0)}/{n_convs}",
                             "median ms": f"{median:.2f}", "IQR ms": f"{iqr:.2f}",
                             "vs FP32": f"{fp32_ms / median:.2f}x", "vs ORT": f"{ort_ms / median:.2f}x"})
            eligible = [v for v in variants if v.qmodel is not None and v.exact and drop(v.metric) <= args.max_drop]
            setting = f"{name}, {shape}, {threads} thread(s) (load {before} before the run)"
            if not eligible:
                verdicts.append(f"{setting}: none of our policies is exact here and within {args.max_drop} of FP32")
                continue
            pick = min(eligible, key=lambda v: stats[v.label][0])
            vs_fp32, vs_ort = fp32_ms / stats[pick.label][0], ort_ms / stats[pick.label][0]
            line = (f"{setting}: fastest exact within {args.max_drop} of FP32 is {pick.label} "
                    f"({metric} {pick.metric:.4f}, FP32 {reference:.4f}): {vs_fp32:.2f}x FP32, {vs_ort:.2f}x ORT "
                    f"quantize_static ({ORT}: {fp32_ms / ort_ms:.2f}x FP32, {metric} "
                    f"{next(v.metric for v in variants if v.label == ORT):.4f})")
            if threads == 1 and size == (270, 480):
                met = vs_ort >= 1.0 and vs_fp32 >= 1.5
                line += f"; target (>= 1.00x ORT and >= 1.50x FP32): {'met' if met else 'MISSED'}"
            verdicts.append(line)
    return rows, verdicts


def _size(text: str) -> str | tuple[int, int]:
    if text == "builtin":
        return text
    height, width = (int(part) for part in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="sr-espcn-x2,sr-srresnet-x2,sr-rrdb-x2", help="comma-separated")
    parser.add_argument("--sizes", default="builtin,270x480", help="comma-separated: builtin (the workload's "
                        "example input) or HxW")
    parser.add_argument("--threads", default="1,all", help="comma-separated intra-op thread counts; all = every core")
    parser.add_argument("--policies", default="8/8,6/8,4/8,4/8:8",
                        help="our policies, comma-separated: W/A uniform, W/A:E the same with E-bit weights in the "
                        "first and last layers")
    parser.add_argument("--max-drop", type=float, default=0.1, help="the pick's largest metric drop from FP32")
    parser.add_argument("--rounds", type=int, default=10, help="turns the variants take")
    parser.add_argument("--repeats", type=int, default=2, help="runs of a variant in each turn")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="sr-espcn-x2 at 96x96 and 24x32, 1 thread, W8A8 and "
                        "W4A8 ends W8, one run each (a smoke test: no timing worth reading)")
    args = parser.parse_args()
    if args.quick:
        args.workloads, args.sizes, args.threads, args.policies = "sr-espcn-x2", "builtin,24x32", "1", "8/8,4/8:8"
        args.rounds, args.repeats, args.warmup = 1, 1, 0
    args.sizes = [_size(s) for s in args.sizes.split(",")]
    args.threads = thread_counts(args.threads)
    args.policies = args.policies.split(",")
    print(header(f"python benchmarks/onnx_latency.py: {args.rounds} rounds of {args.repeats} runs per variant "
                 f"after {args.warmup} warm-up runs; CPU VNNI: {cpu_has_vnni()}"))
    rows, verdicts = [], []
    with tempfile.TemporaryDirectory(prefix="mpqsearch-bench-") as tmp:
        for name in filter(None, args.workloads.split(",")):
            more_rows, more_verdicts = _run(name, args, Path(tmp))
            rows += more_rows
            verdicts += more_verdicts
            print(f"# {name} done, load average {load()}:\n{markdown(more_rows)}", flush=True)
    print()
    print(markdown(rows))
    print()
    for line in verdicts:
        print(f"- {line}")
    print(f"\n# load average at the end: {load()}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
