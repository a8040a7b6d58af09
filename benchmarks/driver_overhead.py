"""What a trial costs beyond its evaluation, per driver: NNI cold, NNI warm, and Optuna.

Each variant is one real ``mpqsearch launch`` (a fresh run directory, concurrency 1) of the
workload's example file; the variants run interleaved, round after round, and the table gives
medians over rounds with the machine's load. Per trial: ``wall`` is the trial's time as its
driver records it (NNI: process start to exit, NNI's database; Optuna: the trial's start to
completion), ``eval`` the evaluation the trial measured itself (its result's timings), and
``overhead = wall - eval``; ``gap`` is the idle time between one trial's end and the next one's
start; ``beyond eval`` is what each trial cost beyond its evaluation over the search phase, gaps
included (the phase's time minus every evaluation, per trial: the driver's cost whatever the
evaluations took). ``trials/h`` is the search phase's rate (first trial's start to last trial's
end), ``vs Optuna`` the median over rounds of its ratio to the same round's Optuna rate, and
``command s`` the whole command (start-up included). Targets (issue 13): NNI overhead <= 0.5 s and NNI warm trials/h
>= 0.8x Optuna's, on both workloads.

Variants: ``nni warm`` (the default: warm workers, manager poll 0.1 s), ``nni warm, poll 0.5 s``
(NNI's own poll, the preload off), ``nni cold`` (``nni_trials: cold``: a new process per trial),
``optuna``.

    python benchmarks/driver_overhead.py [--workloads example sr-espcn-x2] [--trials 16] \\
        [--cold-trials 6] [--rounds 2] [--port 18820]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from mpqsearch.experiments.trial_records import read_trial_records
from mpqsearch.experiments.workers.processes import find_processes

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {  # name: (driver, experiment file changes, environment)
    "nni cold": ("nni", {"nni_trials": "cold"}, {}),
    "nni warm": ("nni", {}, {}),
    "nni warm, poll 0.5 s": ("nni", {}, {"MPQSEARCH_NNI_POLL_SECONDS": "0"}),
    "optuna": ("optuna", {}, {}),
}


def nni_trials(run_dir: Path) -> list[tuple[float, float, float]]:
    """(start, end, evaluation seconds) of each succeeded trial, in start order."""
    db = run_dir / "nni" / run_dir.name / "db" / "nni.sqlite"
    with sqlite3.connect(db) as conn:
        events = conn.execute("SELECT timestamp, trialJobId, event FROM TrialJobEvent").fetchall()
    times: dict[str, dict[str, float]] = {}
    for timestamp, trial, event in events:
        times.setdefault(trial, {})[event] = timestamp / 1000
    records = read_trial_records(run_dir)
    return sorted((t["RUNNING"], t["SUCCEEDED"], sum(records[trial]["result"]["timings"].values()))
                  for trial, t in times.items() if "SUCCEEDED" in t and "RUNNING" in t and trial in records)


def optuna_trials(run_dir: Path) -> list[tuple[float, float, float]]:
    with sqlite3.connect(run_dir / "optuna.db") as conn:
        rows = conn.execute("SELECT trial_id, datetime_start, datetime_complete FROM trials "
                            "WHERE state = 'COMPLETE'").fetchall()
        timings = dict(conn.execute("SELECT trial_id, value_json FROM trial_user_attributes "
                                    "WHERE key = 'timings'").fetchall())
    stamp = lambda text: datetime.fromisoformat(text).timestamp()  # noqa: E731 - naive local times, like Optuna's
    return sorted((stamp(start), stamp(end), sum(json.loads(timings[trial]).values())) for trial, start, end in rows)


def run_variant(example: Path, workload: str, variant: str, trials: int, port: int, base: Path) -> dict:
    driver, changes, environment = VARIANTS[variant]
    data = {**yaml.safe_load(example.read_text()), **changes}
    path = base / f"{workload}-{variant.replace(' ', '_').replace(',', '')}.yaml"
    path.write_text(yaml.safe_dump(data))
    directory = base / "runs"
    load = os.getloadavg()[0]
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "launch", str(path), "--driver", driver,
                             "--max-trials", str(trials), "--port", str(port), "--directory", str(directory)],
                            capture_output=True, text=True, env={**os.environ, **environment}, cwd=ROOT)
    command = time.time() - start
    if result.returncode != 0:
        raise RuntimeError(f"{workload} {variant}: {(result.stdout + result.stderr)[-2000:]}")
    experiment_id = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("experiment "))
    run_dir = directory / experiment_id
    done = nni_trials(run_dir) if driver == "nni" else optuna_trials(run_dir)
    left = find_processes(str(run_dir))
    if left:
        print(f"# warning: {workload} {variant} left processes {left}", file=sys.stderr)
    walls = [end - begin for begin, end, _ in done]
    return {"trials": len(done), "wall": statistics.median(walls),
            "eval": statistics.median(e for _, _, e in done),
            "overhead": statistics.median(end - begin - e for begin, end, e in done),
            "gap": statistics.median([b[0] - a[1] for a, b in zip(done, done[1:], strict=False)] or [float("nan")]),
            "per_hour": 3600 * len(done) / (done[-1][1] - done[0][0]), "command": command,
            "beyond": (done[-1][1] - done[0][0] - sum(e for _, _, e in done)) / len(done),
            "load": (load, os.getloadavg()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["example", "sr-espcn-x2"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--cold-trials", type=int, default=6, help="trials of the cold NNI variant (slow)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=18820)
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="driver-overhead-") as base:
        for round_ in range(args.rounds):
            for workload in args.workloads:
                for variant in args.variants:
                    trials = args.cold_trials if variant == "nni cold" else args.trials
                    run = run_variant(ROOT / "examples" / f"{workload}.yaml", workload, variant, trials, args.port,
                                      Path(base))
                    runs.setdefault((workload, variant), []).append(run)
                    figures = ", ".join(f"{key} {run[key]:.3f}" for key in ("eval", "overhead", "beyond"))
                    print(f"# round {round_ + 1} {workload} {variant}: {run['trials']} trials, {figures} s, "
                          f"{run['per_hour']:.0f}/h, load {run['load'][0]:.1f}-{run['load'][1]:.1f}",
                          file=sys.stderr, flush=True)
    print(f"# medians of {args.rounds} interleaved rounds; concurrency 1; {os.cpu_count()} CPUs")
    print("| workload | driver | trials | trial wall s | eval s | overhead s | gap s | beyond eval s | trials/h | "
          "vs Optuna | command s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (workload, variant), results in runs.items():
        med = {key: statistics.median(r[key] for r in results)
               for key in ("trials", "wall", "eval", "overhead", "gap", "beyond", "per_hour", "command")}
        optuna = runs.get((workload, "optuna"))
        ratios = [r["per_hour"] / o["per_hour"] for r, o in zip(results, optuna or [], strict=False)]
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        loads = [value for r in results for value in r["load"]]
        print(f"| {workload} | {variant} | {med['trials']:.0f} | {med['wall']:.3f} | {med['eval']:.3f} | "
              f"{med['overhead']:.3f} | {med['gap']:.3f} | {med['beyond']:.3f} | {med['per_hour']:.0f} | {ratio} | "
              f"{med['command']:.0f} | "
              f"{min(loads):.1f}-{max(loads):.1f} |")


if __name__ == "__main__":
    main()
