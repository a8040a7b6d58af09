"""Scale-out on PostgreSQL: trials per hour with 1, 2 and 4 Optuna workers, and trials lost under faults.

    python benchmarks/scale.py                       # example and sr-espcn-x2, 1/2/4 workers, faults
    python benchmarks/scale.py --workloads example --workers 1 2 --trials 24 --skip-faults

Starts a throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql, as the tests do), then
for every workload and worker count launches a search through the ``mpqsearch`` command and
prints the completed trials per hour over the search phase (first trial started to last trial
finished, from the study's timestamps) and over the whole command (wall clock, start-up
included). Then the faults of issue 16 on PostgreSQL, each printing the trials lost (a trial
that had finished before the fault and is not complete after, or a result that never arrives):
kill -9 of a launch with 2 workers then resume; a worker joining a running study; a second
resume of a running experiment. Latency is left out (``none``) so that the numbers measure the
drivers, not the timing of each trial.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import yaml
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import new_database, throwaway_postgres

COMPLETE = (TrialState.COMPLETE,)


def experiment_file(directory: Path, workload: str, trials: int, workers: int, storage: str) -> Path:
    data = {"workload": workload, "search_space": {"weight_bits": [2, 3, 4, 6, 8], "act_bits": [4, 6, 8]},
            "sampler": {"name": "Random", "args": {"seed": 0}},
            "budget": {"max_trials": trials, "concurrency": workers},
            "latency": {"backend": "none"}, "storage": storage, "directory": str(directory / "runs")}
    path = directory / f"{workload}-{workers}-{trials}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def launch(path: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "mpqsearch.cli", "launch", str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, process.stdout.readline().split()[1]


def trials(url: str, experiment_id: str, states: tuple = COMPLETE) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=experiment_id, storage=url).get_trials(states=states)


def wait_for(condition, seconds: float = 600.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if condition():
                return
        except KeyError:  # no study yet
            pass
        time.sleep(0.2)
    raise TimeoutError("the search did not get there in time")


def throughput(server: str, directory: Path, workload: str, workers: int, count: int) -> tuple[float, float, int]:
    url = new_database(server)
    started = time.perf_counter()
    process, experiment_id = launch(experiment_file(directory, workload, count, workers, url))
    process.communicate()
    wall = time.perf_counter() - started
    done = trials(url, experiment_id)
    phase = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return 3600 * len(done) / phase, 3600 * len(done) / wall, len(done)


def lost_after_kill_and_resume(server: str, directory: Path, workload: str) -> int:
    url = new_database(server)
    process, experiment_id = launch(experiment_file(directory, workload, 24, 2, url))
    wait_for(lambda: len(trials(url, experiment_id)) >= 6)
    children = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    process.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    before = {t.number: t.values for t in trials(url, experiment_id)}
    subprocess.run([sys.executable, "-m", "mpqsearch.cli", "resume", experiment_id, "--directory",
                    str(directory / "runs"), "--storage", url], capture_output=True, check=True)
    after = {t.number: t.values for t in trials(url, experiment_id)}
    running = trials(url, experiment_id, (TrialState.RUNNING,))
    return len(alive) + sum(after.get(n) != v for n, v in before.items()) + len(running) + max(0, 24 - len(after))


def lost_with_a_joining_worker(server: str, directory: Path, workload: str) -> int:
    url = new_database(server)
    process, experiment_id = launch(experiment_file(directory, workload, 40, 1, url))
    wait_for(lambda: trials(url, experiment_id, None))
    worker = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "worker", url, "--study", experiment_id,
                             "--cache-dir", str(directory / "worker-cache")], capture_output=True, text=True)
    process.communicate()
    failed = trials(url, experiment_id, (TrialState.FAIL, TrialState.RUNNING))
    return len(failed) + max(0, 40 - len(trials(url, experiment_id))) + (worker.returncode != 0) + process.returncode


def lost_with_a_second_resume(server: str, directory: Path, workload: str) -> int:
    url = new_database(server)
    process, experiment_id = launch(experiment_file(directory, workload, 24, 1, url))
    wait_for(lambda: trials(url, experiment_id))
    second = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "resume", experiment_id, "--directory",
                             str(directory / "runs"), "--storage", url], capture_output=True, text=True)
    process.communicate()
    refused = second.returncode == 2 and "already running" in second.stderr
    failed = trials(url, experiment_id, (TrialState.FAIL, TrialState.RUNNING))
    return len(failed) + max(0, 24 - len(trials(url, experiment_id))) + (not refused) + process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["example", "sr-espcn-x2"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=48, help="trials per search")
    parser.add_argument("--skip-faults", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} cores, load {load:.1f} at start, PostgreSQL on 127.0.0.1, Random sampler, "
          f"latency none, {args.trials} trials per search\n")
    with throwaway_postgres() as server, tempfile.TemporaryDirectory(prefix="mpqsearch-scale-") as tmp:
        directory = Path(tmp)
        print("| workload | workers | trials | search-phase trials/h | vs 1 worker | wall-clock trials/h "
              "| vs 1 worker |")
        print("|---|---|---|---|---|---|---|")
        for workload in args.workloads:
            base = None
            for workers in args.workers:
                phase, wall, done = throughput(server, directory, workload, workers, args.trials)
                base = base or (phase, wall)
                print(f"| {workload} | {workers} | {done} | {phase:.0f} | {phase / base[0]:.2f}x | {wall:.0f} | "
                      f"{wall / base[1]:.2f}x |", flush=True)
        if args.skip_faults:
            return
        print("\n| fault (PostgreSQL) | workload | trials lost |")
        print("|---|---|---|")
        for name, fault in (("kill -9 of a launch with 2 workers, then resume", lost_after_kill_and_resume),
                            ("a worker joining a running study", lost_with_a_joining_worker),
                            ("a second resume while the launch runs", lost_with_a_second_resume)):
            print(f"| {name} | {args.workloads[0]} | {fault(server, directory, args.workloads[0])} |", flush=True)
    print(f"\n# load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
