"""How well the lookup-table latency backend (``lut``) ranks and predicts random mixed policies.

For each workload, ``--policies`` random mixed policies are drawn (seeded): per policy a random mix
of the three ways a layer can run (int8 kernels: weights 2..8 bits, activations 4..8; int16 Q/DQ:
9..16 bits; float: 32 bits) is drawn from a flat Dirichlet, then every searched setting (a layer's
weight bits, a layer's or tied group's activation bits) picks its way from that mix and its bits
uniformly within it, so the policies spread from nearly all-int8 to nearly all-float. Each is
exported and timed end to end in ONNX Runtime, all in one interleaved run (the policies taking
turns), and estimated by a lookup table built fresh in this run (``prepare``, as a search does).
Printed per workload: Spearman's rank correlation between estimate and measurement, the median
and worst relative error ``|estimate - measured| / measured``, and the targets (issue 15:
Spearman >= 0.9, median error <= 10 %). Also printed: the median ratio of measurement to estimate
(the table's level against this run's, which a change of the machine's load between the two
sessions moves) and the errors left once every estimate is multiplied by it (the table's shape);
the targets apply to the plain errors. "measured vs itself" ranks the medians of the run's even
rounds against those of its odd rounds: how far the measurement's own ranking is reproducible,
the most any estimate can agree with it.

    python benchmarks/lut_accuracy.py [--workloads sr-espcn-x2,...] [--policies 30] [--seed 0]
        [--threads 1] [--rounds 10] [--repeats 2] [--warmup 2] [--table-repeats 30] [--verbose] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import header, interleaved, load, markdown, median_iqr, session_call, spearman

from mpqsearch import Policy, SearchSpace
from mpqsearch.quant.export import export_onnx, onnxruntime_session
from mpqsearch.quant.spec import FLOAT_BITS
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.trials.latency import LatencyRequest, LookupTableBackend
from mpqsearch.trials.latency.lut import plan_layers
from mpqsearch.workloads import get_workload

WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 12, 16, FLOAT_BITS)
ACT_BITS = (4, 5, 6, 7, 8, 12, 16, FLOAT_BITS)
TARGET_SPEARMAN, TARGET_MEDIAN_ERROR = 0.9, 0.10


def _domain(bits: int) -> int:
    return 0 if bits <= 8 else 1 if bits <= 16 else 2


def random_policies(space: SearchSpace, count: int, seed: int) -> list[Policy]:
    """``count`` random mixed policies of ``space`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    params = space.parameters()
    policies = []
    for _ in range(count):
        mix = rng.dirichlet(np.ones(3))
        chosen = {}
        for name, choices in params.items():
            by_domain = [[b for b in choices if _domain(b) == d] for d in range(3)]
            weights = np.array([mix[d] if by_domain[d] else 0.0 for d in range(3)])
            domain = rng.choice(3, p=weights / weights.sum())
            chosen[name] = int(rng.choice(by_domain[domain]))
        policies.append(space.policy_from_params(chosen))
    return policies


def _kinds(plans: dict, policy: Policy) -> str:
    counts = Counter(plan.kind(policy) for plan in plans.values())
    return " ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))


def _run(name: str, args: argparse.Namespace, tmp: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    workload = get_workload(name)
    evaluator = Evaluator(workload, latency="none")
    model, example = evaluator.model, workload.example_input
    space = SearchSpace.from_model(model, example, weight_bits=WEIGHT_BITS, act_bits=ACT_BITS)
    policies = random_policies(space, args.policies, args.seed)
    sessions = {}
    for i, policy in enumerate(policies):
        path = export_onnx(evaluator.quantize(policy), example, tmp / f"{name}-{i}.onnx")
        sessions[i] = onnxruntime_session(path, threads=args.threads)
    table = LookupTableBackend(cache_dir=tmp / "lut", threads=args.threads, repeats=args.table_repeats,
                               warmup=args.warmup)
    start = time.perf_counter()
    table.prepare(model, example, space)
    build_s = time.perf_counter() - start
    estimates = {i: table.measure(LatencyRequest(model, None, example, space, p)).median_ms
                 for i, p in enumerate(policies)}
    before = load()
    times = interleaved({i: session_call(s, [example.numpy()]) for i, s in sessions.items()},
                        rounds=args.rounds, repeats=args.repeats, warmup=args.warmup)
    measured = {i: median_iqr(t) for i, t in times.items()}
    errors = np.array([abs(estimates[i] - measured[i][0]) / measured[i][0] for i in sessions])
    # the table's level against this run's: one factor for all policies (what a change of the
    # machine's load between the table's session and this one moves), and the errors left after it
    level = float(np.median([measured[i][0] / estimates[i] for i in sessions]))
    shape_errors = np.array([abs(level * estimates[i] - measured[i][0]) / measured[i][0] for i in sessions])
    rho = spearman([estimates[i] for i in sessions], [measured[i][0] for i in sessions])
    # the measurement against itself: medians of the even and the odd rounds, ranked against each
    # other (the most any estimate can agree with this run's noisy ranking)
    per_round = {i: np.array(t).reshape(args.rounds, args.repeats) for i, t in times.items()}
    ceiling = spearman([float(np.median(r[0::2])) for r in per_round.values()],
                       [float(np.median(r[1::2])) for r in per_round.values()]) if args.rounds > 1 else float("nan")
    met = rho >= TARGET_SPEARMAN and float(np.median(errors)) <= TARGET_MEDIAN_ERROR
    summary = {"workload": name, "policies": str(len(policies)),
               "measured ms (min-max)": f"{min(m for m, _ in measured.values()):.1f}-"
                                        f"{max(m for m, _ in measured.values()):.1f}",
               "Spearman": f"{rho:.3f}", "measured vs itself (split rounds)": f"{ceiling:.3f}",
               "median error": f"{100 * np.median(errors):.1f} %",
               "worst error": f"{100 * errors.max():.1f} %", "measured / lut (median)": f"{level:.3f}",
               "median / worst error after that factor": f"{100 * np.median(shape_errors):.1f} % / "
                                                         f"{100 * shape_errors.max():.1f} %",
               "table built s": f"{build_s:.0f}",
               "load before timing": before, "target": "met" if met else "missed"}
    plans, _ = plan_layers(model, example)
    details = [{"workload": name, "policy": str(i), "layers by kind": _kinds(plans, p),
                "measured ms": f"{measured[i][0]:.2f}", "IQR ms": f"{measured[i][1]:.2f}",
                "lut ms": f"{estimates[i]:.2f}", "error": f"{100 * (estimates[i] / measured[i][0] - 1):+.1f} %"}
               for i, p in enumerate(policies)]
    return summary, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="sr-espcn-x2,sr-srresnet-x2,sr-rrdb-x2", help="comma-separated")
    parser.add_argument("--policies", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10, help="turns the policies take")
    parser.add_argument("--repeats", type=int, default=2, help="runs of a policy in each turn")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--table-repeats", type=int, default=30, help="the table's own timed runs per entry")
    parser.add_argument("--verbose", action="store_true", help="also print every policy")
    parser.add_argument("--quick", action="store_true", help="sr-espcn-x2, 4 policies, two runs each (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.workloads, args.policies, args.rounds, args.repeats, args.warmup = "sr-espcn-x2", 4, 2, 1, 0
        args.table_repeats = 2
    print(header(f"python benchmarks/lut_accuracy.py: {args.policies} random policies per workload, seed {args.seed}, "
                 f"{args.threads} thread(s), {args.rounds} rounds of {args.repeats} runs each"))
    summaries, details = [], []
    with tempfile.TemporaryDirectory(prefix="mpqsearch-lut-bench-") as tmp:
        for name in filter(None, args.workloads.split(",")):
            summary, rows = _run(name, args, Path(tmp))
            summaries.append(summary)
            details += rows
            print(f"# {name} done, load average {load()}:\n{markdown([summary])}", flush=True)
    print()
    print(markdown(summaries))
    if args.verbose:
        print()
        print(markdown(details))
    print(f"\n# targets: Spearman >= {TARGET_SPEARMAN}, median error <= {100 * TARGET_MEDIAN_ERROR:.0f} %; "
          f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
