"""Search efficiency against ground truth: every policy of two small spaces is evaluated once
(the tables), then searches run per sampler x seeding x budget and are scored against the true
Pareto front.

    python benchmarks/search_efficiency.py enumerate [--spaces cls sr]     # the tables (minutes)
    python benchmarks/search_efficiency.py sweep [--seeds 10] [--quick]     # the table of searches
    python benchmarks/search_efficiency.py confirm                          # real launches = lookups

Spaces: ``cls`` = cls-digits, weights {4,8} x activations {4,8} per layer and tied group;
``sr`` = sr-espcn-x2, weights {3,4,6,8} x activations {4,8}. Objectives: the workload's primary
metric and ``size_ratio``; latency backend ``none``; target ``portable``; one torch thread (a
trial is then deterministic: the same policy gives the same metrics in any process).

Scores per search: hypervolume of everything evaluated as a fraction of the true front's, with the
reference at the true front's nadir (so the number measures the front, not the corner: with the
worst point of the space as reference two uniform seeds alone reach 99 %); how many of the true
front's policies were evaluated (weakly non-dominated: policies with equal values all count);
distinct policies per trial; trials until 95 % and 99 % of the hypervolume. Medians over sampler
seeds. Hypervolumes by moocore, as in :mod:`mpqsearch.analysis.pareto`.

The sweep drives the Optuna driver's own trial loop (:func:`mpqsearch.experiments.drivers.optuna.
run_trials`: seeds enqueued as ``launch`` does, the sampler ``make_sampler`` builds, record answers
of repeats, the budget counting distinct policies) on an in-memory study whose trial is a lookup in
the table; ``confirm`` checks that real ``mpqsearch launch`` runs, both drivers, evaluate exactly
the table's values and propose the same sequence as the lookup run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SPACES = {
    "cls": ("cls-digits", [4, 8], [4, 8]),
    "sr": ("sr-espcn-x2", [3, 4, 6, 8], [4, 8]),
    "sr-held": ("sr-espcn-x2", [2, 4, 8], [4, 6, 8]),  # held out: enumerated after the constants were chosen
}
MAIN_SPACES = ["cls", "sr"]
TABLES = Path(__file__).parent / "results" / "search_efficiency"
BUDGETS = (0.01, 0.03, 0.10)


def experiment(space: str, **extra: Any) -> dict[str, Any]:
    """The experiment file (as a mapping) that searches ``space``."""
    workload, weights, acts = SPACES[space]
    return {"workload": workload, "search_space": {"weight_bits": weights, "act_bits": acts},
            "latency": {"backend": "none", "target": "portable"}, **extra}


def enumerate_space(space: str, out: Path, limit: int | None = None) -> dict[str, Any]:
    """Evaluate every policy of ``space`` (one torch thread) and write the table to ``out``."""
    from mpqsearch.experiments.config import parse_config
    from mpqsearch.experiments.setup import build_setup

    setup = build_setup(parse_config(experiment(space), f"<{space}>"), threads=1)
    params = {n: list(c) for n, c in setup.space.parameters().items()}
    names = list(params)
    combos = list(itertools.product(*params.values()))[:limit]
    rows, start = [], time.time()
    for index, values in enumerate(combos):
        outcome = setup.run_trial(dict(zip(names, values, strict=False)))
        rows.append({"params": list(values), "metrics": outcome.metrics, "values": outcome.values})
        if index % 64 == 0:
            print(f"{space}: {index}/{len(combos)} {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    table = {"space": space, "experiment": experiment(space), "names": names, "choices": params,
             "objectives": [[o.metric, o.direction] for o in setup.objectives.objectives],
             "rows": rows, "seconds": round(time.time() - start, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table))
    print(f"{space}: {len(rows)} policies in {table['seconds']} s -> {out}", flush=True)
    return table


# --- ground truth ----------------------------------------------------------------------------------
class Table:
    """An enumerated space: every policy's objective values, the true front, its hypervolume."""

    def __init__(self, data: dict[str, Any]) -> None:
        import moocore

        self.data = data
        self.names = data["names"]
        self.choices = data["choices"]
        self.directions = [d for _, d in data["objectives"]]
        self.rows = {tuple(r["params"]): r for r in data["rows"]}
        self.signs = np.array([1.0 if d == "minimize" else -1.0 for d in self.directions])
        keys = list(self.rows)
        z = np.array([self.rows[k]["values"] for k in keys]) * self.signs
        mask = moocore.is_nondominated(z, keep_weakly=True)
        self.front = {k for k, m in zip(keys, mask, strict=False) if m}
        self.ref = z[mask].max(axis=0)  # the true front's nadir
        self.hv_true = self.hv(z[mask])

    @classmethod
    def load(cls, space: str) -> Table:
        return cls(json.loads((TABLES / f"{space}.json").read_text()))

    def hv(self, z: np.ndarray) -> float:
        import moocore

        inside = z[np.all(z < self.ref, axis=1)] if len(z) else z
        return float(moocore.hypervolume(inside, ref=self.ref)) if len(inside) else 0.0

    def z(self, keys: list[tuple]) -> np.ndarray:
        return np.array([self.rows[k]["values"] for k in keys]) * self.signs

    def score(self, keys: list[tuple]) -> dict[str, Any]:
        """Scores of a search that evaluated ``keys`` in this order (repeats included)."""
        distinct = list(dict.fromkeys(keys))
        fractions = [self.hv(self.z(distinct[:i + 1])) / self.hv_true for i in range(len(distinct))]

        def reach(level: float) -> int | None:
            return next((i + 1 for i, f in enumerate(fractions) if f >= level - 1e-12), None)

        return {"hv": fractions[-1] if fractions else 0.0, "front": len(set(distinct) & self.front),
                "distinct_per_trial": len(distinct) / max(1, len(keys)), "t95": reach(0.95), "t99": reach(0.99),
                "trials": len(keys)}


# --- searches on the table (the Optuna driver's own loop) ------------------------------------------
class _Outcome:
    def __init__(self, row: dict[str, Any]) -> None:
        self.metrics, self.values, self.violations = row["metrics"], list(row["values"]), {}
        self.scalar = self.values[0]
        self.result = type("Result", (), {"timings": {}, "latency": None, "latency_isolation": ""})()


class LookupSetup:
    """Stands in for :class:`~mpqsearch.experiments.setup.ExperimentSetup` in the driver's trial
    loop: a trial is the table's row of its policy."""

    def __init__(self, real: Any, table: Table) -> None:
        self.config, self.space, self.objectives, self.table = real.config, real.space, real.objectives, table
        self.evaluated: list[tuple] = []

    def run_trial(self, params: dict[str, Any]) -> _Outcome:
        key = tuple(params[n] for n in self.table.names)
        self.evaluated.append(key)
        return _Outcome(self.table.rows[key])


CONFIGS = {  # name -> (sampler, its args, seed strategies)
    "SensitivityModel": ("SensitivityModel", {}, []),
    "SensitivityModel + uniform": ("SensitivityModel", {}, [{"name": "uniform"}]),
    "NSGAII + uniform": ("NSGAII", {}, [{"name": "uniform"}]),
    "NSGAII unmodified (pop 50, seeds outside)": ("NSGAII-stock", {}, [{"name": "uniform"}]),
    "TPE + uniform": ("TPE", {}, [{"name": "uniform"}]),
    "Random": ("Random", {}, []),
}
_SETUPS: dict[tuple, Any] = {}


def _real_setup(space: str, sampler: str, strategies: list[dict[str, Any]], budget: int) -> Any:
    from mpqsearch.experiments.config import parse_config
    from mpqsearch.experiments.setup import build_setup

    name = "NSGAII" if sampler == "NSGAII-stock" else sampler
    data = experiment(space, sampler={"name": name}, strategies={"seed": strategies},
                      budget={"max_trials": budget})
    config = parse_config(data, f"<{space}>")
    key = (space,)
    if key not in _SETUPS:
        _SETUPS[key] = build_setup(config, threads=1)
    base = _SETUPS[key]
    return type(base)(config, base.workload, base.evaluator, base.space, base.objectives)


def search(space: str, table: Table, config_name: str, budget: int, seed: int) -> tuple[list[tuple], dict]:
    """One search of ``budget`` trials by the Optuna driver's trial loop; returns the policies it
    evaluated in order and the study's counts."""
    import optuna

    from mpqsearch.experiments.config import Algorithm
    from mpqsearch.experiments.drivers.optuna import run_trials, spent
    from mpqsearch.experiments.sampler_inputs import sampler_context
    from mpqsearch.experiments.samplers import make_sampler

    sampler_name, args, strategies = CONFIGS[config_name]
    real = _real_setup(space, sampler_name, strategies, budget)
    seeds = real.seeds()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=real.objectives.directions)
    if sampler_name == "NSGAII-stock":
        study.sampler = optuna.samplers.NSGAIISampler(seed=seed)
    else:
        study.sampler = make_sampler(Algorithm(name=sampler_name, args={**args, "seed": seed}),
                                     context=sampler_context(real, len(seeds)))
    for policy in seeds:
        study.enqueue_trial(real.space.params_from_policy(policy), skip_if_exists=True)
    lookup = LookupSetup(real, table)
    run_trials(lookup, study, None, None)
    return lookup.evaluated, {"trials": len(study.trials), "spent": spent(study), "seeds": len(seeds)}


def _median(values: list[Any]) -> Any:
    middle = statistics.median([float("inf") if v is None else v for v in values])
    return None if middle == float("inf") else middle  # None: the median run did not get there


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def sweep(spaces: list[str], configs: list[str], fractions: tuple[float, ...], seeds: int,
          out: Path | None) -> list[dict[str, Any]]:
    """Every configuration x budget x sampler seed on every space; prints the table."""
    results = []
    print("| space | configuration | budget | HV median (min) | front policies median (min) | distinct/trial "
          "| trials to 95 % / 99 % |")
    print("|---|---|---|---|---|---|---|")
    for space in spaces:
        table = Table.load(space)
        size = len(table.rows)
        for name in configs:
            for fraction in fractions:
                budget = max(2, round(fraction * size))
                scores = [table.score(search(space, table, name, budget, seed)[0]) for seed in range(seeds)]
                hv = [s["hv"] for s in scores]
                front = [s["front"] for s in scores]
                row = {"space": space, "configuration": name, "fraction": fraction, "budget": budget,
                       "front_size": len(table.front), "scores": scores}
                results.append(row)
                t95, t99 = _median([s["t95"] for s in scores]), _median([s["t99"] for s in scores])
                print(f"| {space} | {name} | {fraction:.0%} ({budget}) | {statistics.median(hv):.3f} ({min(hv):.3f}) "
                      f"| {statistics.median(front):g} ({min(front)}) of {len(table.front)} "
                      f"| {statistics.median(s['distinct_per_trial'] for s in scores):.2f} "
                      f"| {_show(t95)} / {_show(t99)} |", flush=True)
    if out is not None:
        out.write_text(json.dumps(results))
    return results


# --- real launches ---------------------------------------------------------------------------------
def confirm(spaces: list[str], drivers: list[str], fraction: float, directory: Path) -> bool:
    """Launch the default search (``SensitivityModel``, seed 0) on each space with each driver;
    check every trial's objective values against the table (max difference) and the sequence of
    policies against the lookup search. Returns whether everything matched."""
    import io

    from mpqsearch.analysis.results import load_results
    from mpqsearch.experiments import launcher
    from mpqsearch.experiments.config import parse_config

    ok = True
    for space in spaces:
        table = Table.load(space)
        budget = max(2, round(fraction * len(table.rows)))
        expected, _ = search(space, table, "SensitivityModel", budget, 0)
        for driver in drivers:
            data = experiment(space, driver=driver, budget={"max_trials": budget}, directory=str(directory),
                              sampler={"name": "SensitivityModel", "args": {"seed": 0}},
                              tuner={"name": "MultiObjective", "args": {"sampler": "SensitivityModel", "seed": 0}})
            start = time.time()
            experiment_id = launcher.launch(parse_config(data, f"<{space} {driver}>"), out=io.StringIO())
            rows = sorted((r for r in load_results(experiment_id, directory=directory, policies=False).rows
                           if r.state == "complete"), key=lambda r: r.number)
            keys = [tuple(r.params[n] for n in table.names) for r in rows]
            objectives = [m for m, _ in table.data["objectives"]]
            diff = max(abs(r.metrics[m] - table.rows[k]["metrics"][m]) for r, k in zip(rows, keys, strict=True)
                       for m in objectives)
            same = keys == expected
            ok = ok and same and diff == 0
            print(f"{space} {driver}: {len(keys)} trials in {time.time() - start:.0f} s, max difference from the table "
                  f"{diff:.3g}, sequence {'equals' if same else 'DIFFERS from'} the lookup search", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enumerate")
    p.add_argument("--spaces", nargs="+", default=MAIN_SPACES, choices=list(SPACES))
    p.add_argument("--limit", type=int, default=None, help="only the first N policies (a smoke test)")
    p.add_argument("--out-dir", type=Path, default=TABLES)
    p = sub.add_parser("sweep")
    p.add_argument("--spaces", nargs="+", default=MAIN_SPACES, choices=list(SPACES))
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="cls only, two configurations, 1 %% and 3 %%, 2 seeds")
    p.add_argument("--out", type=Path, default=None)
    p = sub.add_parser("confirm")
    p.add_argument("--spaces", nargs="+", default=MAIN_SPACES, choices=list(SPACES))
    p.add_argument("--drivers", nargs="+", default=["optuna", "nni"], choices=["optuna", "nni"])
    p.add_argument("--fraction", type=float, default=0.03)
    p.add_argument("--directory", type=Path, default=Path("/tmp/mpqsearch-search-efficiency"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.command == "enumerate":
        for space in args.spaces:
            enumerate_space(space, args.out_dir / f"{space}.json", args.limit)
        return 0
    if args.command == "sweep":
        if args.quick:
            sweep(["cls"], ["SensitivityModel", "Random"], BUDGETS[:2], 2, args.out)
        else:
            sweep(args.spaces, args.configs, BUDGETS, args.seeds, args.out)
        return 0
    return 0 if confirm(args.spaces, args.drivers, args.fraction, args.directory) else 1


if __name__ == "__main__":
    sys.exit(main())
