"""What each seeding strategy is worth on the super-resolution workloads.

Two tables, each row measured here:

1. Seeds: every seed policy of every strategy (default options) with its PSNR, size ratio and
   ONNX Runtime latency (1 thread, median of repeated runs), beside the uniform W<b>A8 policy
   nearest in size and the PSNR difference (seed minus uniform).
2. Search: the hypervolume reached by an Optuna search (multi-objective TPE, PSNR drop and size
   ratio, both minimized) seeded by each strategy, against the same search unseeded, at the same
   trial budget (seeds count toward it), averaged over sampler seeds. Each search runs through
   ``mpqsearch``'s own launcher, strategy computation included. The hypervolume's reference point
   is (``--max-drop`` dB, ``--max-size`` size ratio): only policies within 1 dB of FP32 and a
   third of its size count.

    python benchmarks/strategies.py [--workloads sr-espcn-x2 ...] [--strategies gamma ...]
                                    [--trials 30] [--repeats 2] [--latency-repeats 30]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import tempfile
import time
from collections import Counter

from mpqsearch import Policy
from mpqsearch.analysis.pareto import hypervolume, points
from mpqsearch.analysis.results import load_results
from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import parse_config
from mpqsearch.strategies import StrategyContext, get_strategy, strategy_names
from mpqsearch.trials.evaluate import Evaluator, TrialResult
from mpqsearch.workloads import get_workload

WORKLOADS = ["sr-espcn-x2", "sr-srresnet-x2", "sr-rrdb-x2"]
SEARCH_SPACE = {"weight_bits": [2, 3, 4, 5, 6, 8], "act_bits": [4, 6, 8]}
OBJECTIVES = [("psnr_drop", "minimize"), ("size_ratio", "minimize")]


def bits_summary(policy: Policy) -> str:
    """Weight bits as counts (``W8x3 W4x9``) and the activation bits used."""
    weights = Counter(c.weight_bits for c in policy.layers.values())
    acts = sorted({c.act_bits for c in policy.layers.values()}, reverse=True)
    return (" ".join(f"W{b}x{n}" for b, n in sorted(weights.items(), reverse=True))
            + " A" + "/".join(map(str, acts)))


def seed_table(workloads: list[str], strategies: list[str], latency_repeats: int) -> None:
    print(f"## Seed policies beside uniform W<b>A8 of the nearest size "
          f"({platform.processor() or platform.machine()}, ONNX Runtime, 1 thread, median of {latency_repeats})")
    print("| workload | strategy | seed bits | size | PSNR | ms | uniform | size | PSNR | ms | PSNR vs uniform |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in workloads:
        evaluator = Evaluator(get_workload(name), latency="onnxruntime",
                              latency_options={"threads": 1, "repeats": latency_repeats})
        uniform: dict[str, TrialResult] = {
            f"W{b}A8": evaluator.evaluate(Policy.uniform(evaluator.space, b, 8)) for b in (8, 7, 6, 5, 4, 3, 2)}
        context = StrategyContext(evaluator.space, evaluator)
        for strategy_name in strategies:
            if strategy_name == "uniform":
                continue
            for policy in get_strategy(strategy_name).seed(context):
                result = evaluator.evaluate(policy)
                label, near = min(uniform.items(), key=lambda item: abs(item[1].size_ratio - result.size_ratio))
                print(f"| {name} | {strategy_name} | {bits_summary(policy)} | {result.size_ratio:.3f} | "
                      f"{result.metrics['psnr']:.3f} | {result.latency.median_ms:.3f} | {label} | "
                      f"{near.size_ratio:.3f} | {near.metrics['psnr']:.3f} | {near.latency.median_ms:.3f} | "
                      f"{result.metrics['psnr'] - near.metrics['psnr']:+.3f} |", flush=True)


def search_hypervolume(workload: str, strategy: str | None, seed: int, trials: int, reference: list[float],
                       directory: str) -> tuple[float, float]:
    """Hypervolume of one search's trials and its wall time in seconds."""
    config = parse_config({
        "name": f"bench-{workload}-{strategy or 'unseeded'}-{seed}", "workload": workload, "driver": "optuna",
        "search_space": SEARCH_SPACE,
        "objectives": [{"metric": "psnr", "direction": "maximize"}, {"metric": "size_ratio", "direction": "minimize"}],
        "sampler": {"name": "TPE", "args": {"seed": seed}},
        "strategies": {"seed": [{"name": strategy}] if strategy else []},
        "budget": {"max_trials": trials, "concurrency": 1},
        "latency": {"backend": "none"},
        "directory": directory,
    }, source="benchmarks/strategies.py")
    started = time.perf_counter()
    experiment_id = launcher.launch(config, out=io.StringIO())
    seconds = time.perf_counter() - started
    rows = [r for r in load_results(experiment_id, directory=directory, policies=False).rows
            if r.state == "complete"][:trials]
    return hypervolume(points(rows, OBJECTIVES), reference, [d for _, d in OBJECTIVES]), seconds


def search_table(workloads: list[str], strategies: list[str], trials: int, repeats: int,
                 reference: list[float]) -> None:
    print(f"\n## Hypervolume after {trials} trials (reference: drop {reference[0]} dB, size {reference[1]}), "
          f"mean over {repeats} sampler seed(s)")
    print("| workload | seeding | hypervolume | vs unseeded | per-seed values | wall s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for name in workloads:
            base = None
            for strategy in [None, *strategies]:
                runs = [search_hypervolume(name, strategy, seed, trials, reference, directory)
                        for seed in range(repeats)]
                volumes = [v for v, _ in runs]
                mean = statistics.fmean(volumes)
                base = mean if strategy is None else base
                print(f"| {name} | {strategy or 'none'} | {mean:.5f} | {mean / base:.2f}x | "
                      f"{', '.join(f'{v:.5f}' for v in volumes)} | {statistics.fmean(s for _, s in runs):.0f} |",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=WORKLOADS)
    parser.add_argument("--strategies", nargs="+", default=strategy_names(), choices=strategy_names())
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latency-repeats", type=int, default=30)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--max-size", type=float, default=0.34)
    parser.add_argument("--skip-seeds", action="store_true", help="print only the search table")
    parser.add_argument("--skip-search", action="store_true", help="print only the seed table")
    args = parser.parse_args()
    if not args.skip_seeds:
        seed_table(args.workloads, args.strategies, args.latency_repeats)
    if not args.skip_search:
        search_table(args.workloads, args.strategies, args.trials, args.repeats, [args.max_drop, args.max_size])


if __name__ == "__main__":
    main()
