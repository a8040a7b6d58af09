"""CFQP (seed 003): the clipped and the clip-free ESPCN, each with plain and CFQP calibration.

The clipped model is workload ``sr-espcn-clip-x2`` (HR pixels through a clipped ReLU [0, 1]);
the clip-free one has the same weights with a ReLU there (``sr-espcn-clipfree-x2``, which
calibrates on the CFQP set; here each model is calibrated both ways). Per row: FP32 and PTQ PSNR
on the four held-out test crops at uniform W8A8 and W8A6 (SSIM at W8A8), and the ONNX Runtime
latency of FP32 and W8A8 (the evaluator's default latency backend, median of ``--repeats`` runs,
one thread). ``--ablation`` adds W8A8 and W8A6 PSNR per subset of CFQP's sources, with and
without flips, on the test crops and on 160-pixel centre crops of the 12 train images.

    python benchmarks/cfqp.py [--repeats 200] [--threads 1] [--ablation]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform

import torch

from mpqsearch import Policy
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import Workload, data, get_workload
from mpqsearch.workloads.cfqp import cfqp_workload

ABLATION = [("input", "downscaled"), ("input", "output"), ("output", "downscaled"), ("input", "output", "downscaled")]


def _variants() -> dict[tuple[str, str], Workload]:
    clipped, clip_free = get_workload("sr-espcn-clip-x2"), get_workload("sr-espcn-clipfree-x2")
    return {("clipped", "plain"): clipped, ("clipped", "CFQP"): cfqp_workload(clipped),
            ("clip-free", "plain"): dataclasses.replace(clip_free, calib_data=clipped.calib_data),
            ("clip-free", "CFQP"): clip_free}


def _psnr(evaluator: Evaluator, weight_bits: int, act_bits: int) -> float:
    policy = Policy.uniform(evaluator.space, weight_bits, act_bits)
    return evaluator.evaluate(policy, measure_latency=False).metrics["psnr"]


def main_table(args: argparse.Namespace) -> None:
    print("| model | calibration | FP32 PSNR | W8A8 PSNR | W8A8 SSIM | W8A6 PSNR | FP32 ms | W8A8 ms |")
    print("|---|---|---|---|---|---|---|---|")
    options = {"threads": args.threads, "repeats": args.repeats}
    for (model, calibration), workload in _variants().items():
        evaluator = Evaluator(workload, latency="onnxruntime", latency_options=options, threads=args.threads)
        fp32 = evaluator.evaluate(Policy.uniform(evaluator.space, 32, 32))
        w8a8 = evaluator.evaluate(Policy.uniform(evaluator.space, 8, 8))
        print(f"| {model} | {calibration} | {fp32.metrics['psnr']:.4f} | {w8a8.metrics['psnr']:.4f} | "
              f"{w8a8.metrics['ssim']:.5f} | {_psnr(evaluator, 8, 6):.4f} | {fp32.latency.median_ms:.3f} | "
              f"{w8a8.latency.median_ms:.3f} |", flush=True)
    print(f"| bicubic | - | {workload.baselines['psnr']:.4f} | - | - | - | - | - |")


def ablation(args: argparse.Namespace) -> None:
    clipped = get_workload("sr-espcn-clip-x2")
    splits = {"test": clipped.eval_data, "train crops": list(data.sr_pairs("train", data.SCALE, 160))}
    print("\n| eval images | model | CFQP sources | flips | W8A8 PSNR | W8A6 PSNR |")
    print("|---|---|---|---|---|---|")
    for split, pairs in splits.items():
        for model, build in (("clipped", clipped.build_model),
                             ("clip-free", lambda: clipped.build_model().without_clipping())):
            base = dataclasses.replace(clipped, build_model=build, eval_data=pairs)
            rows = [("none (plain)", False, base)] + [
                (" + ".join(sources), flips, cfqp_workload(base, sources=sources, flips=flips))
                for sources in ABLATION for flips in (False, True)]
            for sources, flips, workload in rows:
                evaluator = Evaluator(workload, latency="none", threads=args.threads)
                print(f"| {split} | {model} | {sources} | {'yes' if flips else 'no'} | "
                      f"{_psnr(evaluator, 8, 8):.4f} | {_psnr(evaluator, 8, 6):.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ablation", action="store_true", help="also PSNR per subset of CFQP's sources")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, ONNX Runtime on the CPU, "
          f"{args.threads} thread(s), median of {args.repeats} runs; PSNR/SSIM on Y of the 4 test crops\n")
    main_table(args)
    if args.ablation:
        ablation(args)


if __name__ == "__main__":
    main()
