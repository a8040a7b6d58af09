"""What one PTQ trial costs against one FP32 evaluation pass on the same data.

A warm trial (the evaluator's caches filled: FP32 metrics, calibration statistics, weight scales)
quantizes the model for a new policy and evaluates it; the target is at most 1.3x one FP32
evaluation pass. Latency is left out here (it is its own, separately reported cost).

    python benchmarks/trial_cost.py [--workloads ...] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mpqsearch import Policy
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import get_workload

WORKLOADS = ["sr-espcn-x2", "sr-srresnet-x2", "sr-rrdb-x2", "cls-digits", "example"]


def _median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=WORKLOADS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    print(f"# torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} runs; "
          "a trial = quantize + evaluate, warm caches, no latency")
    print("| workload | FP32 pass s | PTQ trial s | of which quantize s | ratio | target <= 1.3 |")
    print("|---|---|---|---|---|---|")
    for name in args.workloads:
        evaluator = Evaluator(get_workload(name), latency="none", threads=args.threads)
        policies = [Policy.uniform(evaluator.space, w, a) for w, a in ((8, 8), (4, 8), (6, 6))]
        for policy in policies:  # warm every cache a trial reuses
            evaluator.evaluate(policy, measure_latency=False)
        fp32 = _median_seconds(lambda e=evaluator: e.measure_metrics(e.model), args.repeats)
        results = []

        def trial_step(e=evaluator, done=results, chosen=policies) -> None:
            done.append(e.evaluate(chosen[len(done) % 3], measure_latency=False))

        trial = _median_seconds(trial_step, args.repeats)
        quantize = statistics.median(r.timings["quantize"] for r in results)
        ratio = trial / fp32
        print(f"| {name} | {fp32:.3f} | {trial:.3f} | {quantize:.3f} | {ratio:.2f} | "
              f"{'yes' if ratio <= 1.3 else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
