"""Real NNI experiments (manager, tuner, warm workers) under faults: ``mpqsearch stop`` mid-run,
Ctrl-C, ``kill -9`` of the launcher then ``resume``, ``nnictl create`` with no launcher, a run
directory with spaces. Each test lists the processes left behind: there must be none."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from nni.experiment import Experiment, rest

from mpqsearch.experiments.config import load_config
from mpqsearch.experiments.drivers.nni import NniDriver
from mpqsearch.experiments.drivers.nni_manager_record import read_manager_record
from mpqsearch.experiments.runs import save_run
from mpqsearch.experiments.setup import build_setup
from mpqsearch.experiments.trial_records import read_trial_records
from mpqsearch.experiments.workers.processes import find_processes, group_members, kill_and_wait
from mpqsearch.experiments.workers.slots import Slots, iter_workers

pytestmark = pytest.mark.slow
DEADLINE = 300


def _cli(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "mpqsearch.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)


def _launch(path, directory):
    process = _cli("launch", path, "--driver", "nni", "--directory", directory)
    experiment_id = next(line for line in process.stdout if line.startswith("experiment ")).split()[1]
    return process, experiment_id, directory / experiment_id


def _wait_for(condition, what):
    deadline = time.monotonic() + DEADLINE
    while not (value := condition()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)
    return value


def _succeeded(run_dir):
    return {t: r for t, r in read_trial_records(run_dir).items() if r["state"] == "SUCCEEDED"}


def _left(run_dir, experiment_id, manager_pid=None):
    left = set(find_processes(str(run_dir))) | set(find_processes("--experiment-id", experiment_id))
    return sorted(left | set(group_members(manager_pid) if manager_pid else []))


def _gone(run_dir, experiment_id, manager_pid=None):
    return _wait_for(lambda: not _left(run_dir, experiment_id, manager_pid), "no process left")


@pytest.fixture
def cleanup():
    """Ends whatever a failing test leaves (process groups it started, processes in its runs)."""
    started = []
    yield started
    for process, run_dir in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in find_processes(str(run_dir)):
            kill_and_wait(pid)


def _distinct(records):
    return len({json.dumps(r["params"], sort_keys=True) for r in records.values()})


def test_stop_mid_run_lets_the_running_trial_finish_exits_0_and_resume_completes(experiment_file, tmp_path,
                                                                                  monkeypatch, cleanup):
    block = tmp_path / "block"
    block.mkdir()
    (block / "hold").touch()
    monkeypatch.setenv("MPQSEARCH_TEST_BLOCK_DIR", str(block))
    directory = tmp_path / "runs with spaces"
    path = experiment_file(driver="nni", workload="blocking_workload:blocking", port=18651,
                           tuner={"name": "Random", "args": {"seed": 0}}, budget={"max_trials": 6})
    process, experiment_id, run_dir = _launch(path, directory)
    cleanup.append((process, run_dir))
    _wait_for(lambda: list(block.glob("started-*")), "a trial held mid-evaluation")
    manager = read_manager_record(run_dir).manager.pid
    stop = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "stop", experiment_id, "--directory", directory],
                          capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "asked experiment" in stop.stdout
    _wait_for(lambda: rest.get(18651, "/experiment")["params"]["maxTrialNumber"] < 6, "the launcher to take it")
    (block / "hold").unlink()
    out, _ = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0 and "Traceback" not in out and "stopping" in out, out
    records = read_trial_records(run_dir)
    assert 1 <= len(records) < 6 and all(r["state"] == "SUCCEEDED" for r in records.values())
    assert _gone(run_dir, experiment_id, manager)

    resumed = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "resume", experiment_id, "--directory",
                              directory], capture_output=True, text=True, timeout=DEADLINE)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stdout + resumed.stderr, resumed.stderr
    after = _succeeded(run_dir)
    assert len(after) == 6 and _distinct(after) == 6 and set(records) <= set(after)
    assert [r["strategy"] for r in after.values()].count("uniform") == 2  # each seed ran once
    assert _gone(run_dir, experiment_id)


def test_kill_9_of_the_launcher_leaves_nothing_and_resume_keeps_every_trial_with_no_policy_twice(
        experiment_file, tmp_path, cleanup):
    directory = tmp_path / "runs with spaces"
    path = experiment_file(driver="nni", port=18652, budget={"max_trials": 12, "concurrency": 2},
                           tuner={"name": "MultiObjective", "args": {"sampler": "NSGAII", "seed": 0,
                                                                      "population_size": 4}})
    process, experiment_id, run_dir = _launch(path, directory)
    cleanup.append((process, run_dir))
    _wait_for(lambda: len(_succeeded(run_dir)) >= 4, "4 finished trials")
    manager = read_manager_record(run_dir).manager.pid
    workers = [pid for _, pid in iter_workers(Slots(run_dir))]
    assert len(workers) == 2
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert _gone(run_dir, experiment_id, manager)  # the manager and its trials, the tuner, the workers
    before = _succeeded(run_dir)

    resumed = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "resume", experiment_id, "--directory",
                              directory], capture_output=True, text=True, timeout=DEADLINE)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stdout + resumed.stderr, resumed.stderr
    after = _succeeded(run_dir)
    assert {t: r["params"] for t, r in before.items()} == {t: after[t]["params"] for t in before}
    assert len(after) == 12 and _distinct(after) == 12
    assert _gone(run_dir, experiment_id)


def test_a_worker_killed_mid_trial_fails_only_that_trial(experiment_file, tmp_path, monkeypatch, cleanup):
    block = tmp_path / "block"
    block.mkdir()
    (block / "hold").touch()
    monkeypatch.setenv("MPQSEARCH_TEST_BLOCK_DIR", str(block))
    path = experiment_file(driver="nni", workload="blocking_workload:blocking", port=18658,
                           tuner={"name": "Random", "args": {"seed": 0}}, budget={"max_trials": 5})
    process, experiment_id, run_dir = _launch(path, tmp_path / "runs")
    cleanup.append((process, run_dir))
    [started] = _wait_for(lambda: list(block.glob("started-*")), "a trial held mid-evaluation")
    worker = int(started.name.split("-")[1])  # the worker evaluating it
    os.kill(worker, signal.SIGKILL)
    (block / "hold").unlink()
    out, _ = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, out
    records = read_trial_records(run_dir)
    failed = [r for r in records.values() if r["state"] == "FAILED"]
    assert len(records) == 5 and len(failed) == 1
    assert f"the worker (pid {worker}) exited while evaluating" in failed[0]["fail_reason"]
    assert len({r["pid"] for r in records.values() if r["state"] == "SUCCEEDED"} - {worker}) >= 1  # a fresh one
    assert _gone(run_dir, experiment_id)


OLD_LAUNCHER = """
import os, sys
from mpqsearch.experiments.drivers import nni_manager
nni_manager.parent_death_preexec = lambda sig, new_group=True: os.setpgrp  # as before: the manager outlives us
from mpqsearch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_ends_a_manager_its_dead_launcher_left_running(experiment_file, tmp_path, cleanup):
    path = experiment_file(driver="nni", port=18653, budget={"max_trials": 8},
                           tuner={"name": "TPE", "args": {"seed": 0}})
    directory = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-c", OLD_LAUNCHER, "launch", path, "--directory", directory],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    experiment_id = next(line for line in process.stdout if line.startswith("experiment ")).split()[1]
    run_dir = directory / experiment_id
    cleanup.append((process, run_dir))
    _wait_for(lambda: len(_succeeded(run_dir)) >= 2, "2 finished trials")
    manager = read_manager_record(run_dir).manager.pid
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    _wait_for(lambda: len(_succeeded(run_dir)) >= 3, "a trial run by the orphaned manager")
    resumed = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "resume", experiment_id, "--directory",
                              directory], capture_output=True, text=True, timeout=DEADLINE)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"ended NNI manager {manager}, left running by an interrupted launch" in resumed.stdout
    after = _succeeded(run_dir)
    assert len(after) == 8 and _distinct(after) == 8
    assert _gone(run_dir, experiment_id, manager)


def test_ctrl_c_leaves_no_process(experiment_file, tmp_path, cleanup):
    path = experiment_file(driver="nni", port=18654, budget={"max_trials": 20, "concurrency": 2})
    process, experiment_id, run_dir = _launch(path, tmp_path / "runs")
    cleanup.append((process, run_dir))
    _wait_for(lambda: _succeeded(run_dir), "a finished trial")
    manager = read_manager_record(run_dir).manager.pid
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's foreground group
    process.communicate(timeout=DEADLINE)
    assert _gone(run_dir, experiment_id, manager)


def test_nnictl_create_runs_warm_trials_with_no_launcher(experiment_file, tmp_path, cleanup):
    config = load_config(experiment_file(driver="nni", budget={"max_trials": 4, "concurrency": 2},
                                         tuner={"name": "Random", "args": {"seed": 0}}))
    run_dir = tmp_path / "runs" / "nnictlrun"
    save_run(run_dir, config, "nnictlrun")
    setup = build_setup(config, cache_dir=run_dir / "cache")
    NniDriver(config, "nnictlrun", run_dir).build(setup)
    created = subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "create", "--config",
                              str(run_dir / "config.yml"), "--port", "18655"], capture_output=True, text=True,
                             timeout=DEADLINE, cwd=run_dir)
    assert created.returncode == 0, created.stdout + created.stderr
    experiment = Experiment.connect(18655)
    try:
        _wait_for(lambda: experiment.get_status() in ("DONE", "ERROR") or None, "the experiment's end")
        assert experiment.get_status() == "DONE"
        records = read_trial_records(run_dir)
        assert len(records) == 4 and all(r["state"] == "SUCCEEDED" for r in records.values())
        assert [r["strategy"] for r in sorted(records.values(), key=lambda r: r["sequence"])][:2] == ["uniform"] * 2
        workers = [pid for _, pid in iter_workers(Slots(run_dir))]
        assert len(workers) == 2  # started by the first trial of each slot, still warm
    finally:
        subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", experiment.id], capture_output=True,
                       timeout=120)
    assert _gone(run_dir, experiment.id)  # the workers exit with the manager
