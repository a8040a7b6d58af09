"""Uniform-precision baselines of every built-in workload: metric, size and ONNX Runtime latency.

For each workload: FP32 and uniform W/A bits 2..8 and 16, each evaluated as one trial is (PTQ
on the workload's calibration data, metric on its held-out data), with the size ratio to FP32
and the end-to-end ONNX Runtime latency (1 thread, median of repeated runs). Super-resolution
rows also show bicubic upscaling, the floor every model must beat.

    python benchmarks/uniform_baselines.py [--workloads sr-espcn-x2 ...] [--repeats 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform

from mpqsearch import Policy
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import get_workload

WORKLOADS = ["sr-espcn-x2", "sr-srresnet-x2", "sr-rrdb-x2", "cls-digits"]
BITS = [32, 16, 8, 7, 6, 5, 4, 3, 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=WORKLOADS)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, ONNX Runtime on the CPU, {args.threads} thread(s), "
          f"median of {args.repeats} runs")
    print("| workload | policy | metric | value | drop vs FP32 | size ratio | latency ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.workloads:
        workload = get_workload(name)
        evaluator = Evaluator(workload, latency="onnxruntime",
                              latency_options={"threads": args.threads, "repeats": args.repeats})
        metric = workload.primary_metric
        fp32_ms = None
        for bits in BITS:
            result = evaluator.evaluate(Policy.uniform(evaluator.space, bits, max(bits, 4) if bits < 32 else bits))
            label = "FP32" if bits == 32 else f"W{bits}A{max(bits, 4)}"
            ms = result.latency.median_ms
            fp32_ms = fp32_ms or ms
            print(f"| {name} | {label} | {metric} | {result.metrics[metric]:.4f} | {result.drops[metric]:+.4f} | "
                  f"{result.size_ratio:.3f} | {ms:.3f} | {fp32_ms / ms:.2f}x |", flush=True)
        for baseline, value in workload.baselines.items():
            if baseline == metric:
                drop = evaluator.reference[metric] - value
                print(f"| {name} | bicubic | {metric} | {value:.4f} | {drop:+.4f} | - | - | - |")


if __name__ == "__main__":
    main()
