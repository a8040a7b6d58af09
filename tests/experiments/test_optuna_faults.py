"""Nothing lost, nothing leaked: the Optuna driver under kill -9, joining workers and double
resumes, on SQLite and on a real PostgreSQL server."""

import io
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from mpqsearch.analysis import load_results
from mpqsearch.cli import main
from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import ConfigError

pytestmark = pytest.mark.slow

STORAGES = ["sqlite", "postgresql"]


@pytest.fixture
def storage_url(request, tmp_path):
    """The storage URL of a parametrized test: the run directory's SQLite file, or a fresh
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


def _launch_in_background(path):
    process = subprocess.Popen([sys.executable, "-m", "mpqsearch.cli", "launch", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    experiment_id = process.stdout.readline().split()[1]
    return process, experiment_id


def _study(experiment_id, url):
    return optuna.load_study(study_name=experiment_id, storage=url)


def _wait_for(condition, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if condition():
                return True
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("storage_url", STORAGES, indirect=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_of_a_launch_leaves_no_worker_and_resume_loses_no_trial(experiment_file, tmp_path, storage_url,
                                                                        workers):
    path = experiment_file(workload="slow_workload:slow", budget={"max_trials": 16, "concurrency": workers},
                           **({"storage": storage_url} if storage_url else {}))
    process, experiment_id = _launch_in_background(path)
    run_dir = tmp_path / "runs" / experiment_id
    url = storage_url or f"sqlite:///{run_dir / 'optuna.db'}"
    assert _wait_for(lambda: len(_study(experiment_id, url).get_trials(states=(TrialState.COMPLETE,))) >= 4)
    children = psutil.Process(process.pid).children(recursive=True)
    assert len(children) >= workers - 1  # the launcher is the first worker
    process.kill()
    process.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []  # the workers died with their launcher
    before = {t.number: t for t in _study(experiment_id, url).get_trials(states=(TrialState.COMPLETE,))}

    launcher.resume(experiment_id, tmp_path / "runs", out=io.StringIO(), storage=storage_url)
    after = {t.number: t for t in _study(experiment_id, url).get_trials()}
    for number, trial in before.items():  # every finished trial is kept as it was
        assert after[number].state == TrialState.COMPLETE and after[number].values == trial.values
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) >= 16
    results = load_results(experiment_id, directory=tmp_path / "runs", policies=False)
    for row in results.rows:  # a trial the kill interrupted was failed, named so, and run again
        if row.state == "failed":
            assert row.fail_reason.startswith("interrupted") and "retried as trial" in row.fail_reason


@pytest.mark.parametrize("storage_url", STORAGES, indirect=True)
def test_a_worker_joins_a_running_study_and_shares_its_budget(experiment_file, tmp_path, storage_url):
    path = experiment_file(workload="slow_workload:slow", budget={"max_trials": 40, "concurrency": 1},
                           **({"storage": storage_url} if storage_url else {}))
    process, experiment_id = _launch_in_background(path)
    url = storage_url or f"sqlite:///{tmp_path / 'runs' / experiment_id / 'optuna.db'}"
    assert _wait_for(lambda: _study(experiment_id, url).get_trials())
    worker = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "worker", url, "--study", experiment_id,
                             "--cache-dir", str(tmp_path / "worker-cache")], capture_output=True, text=True,
                            timeout=600)
    assert process.wait(timeout=600) == 0, process.stdout.read()
    assert worker.returncode == 0, worker.stderr
    ran = int(worker.stdout.split("worker finished: ")[1].split()[0])
    trials = _study(experiment_id, url).get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials)  # nothing failed, nothing lost
    assert 40 <= len(trials) <= 41  # one budget for both; two workers may run one more
    owners = {(t.user_attrs["worker"]["host"], t.user_attrs["worker"]["pid"]) for t in trials}
    assert ran >= 1 and len(owners) == 2


def test_a_second_resume_of_a_running_experiment_is_refused(experiment_file, tmp_path, capsys):
    path = experiment_file(workload="slow_workload:slow", budget={"max_trials": 40, "concurrency": 1})
    process, experiment_id = _launch_in_background(path)
    try:
        url = f"sqlite:///{tmp_path / 'runs' / experiment_id / 'optuna.db'}"
        assert _wait_for(lambda: _study(experiment_id, url).get_trials())
        with pytest.raises(ConfigError, match=f"experiment {experiment_id} is already running \\(launcher pid "
                                              f"{process.pid}\\).*mpqsearch worker"):
            launcher.resume(experiment_id, tmp_path / "runs", out=io.StringIO())
        assert main(["stop", experiment_id, "--directory", str(tmp_path / "runs")]) == 0
        assert process.wait(timeout=120) == 0  # stopped cleanly: running trials finish, no new one starts
    finally:
        process.kill()
    trials = _study(experiment_id, url).get_trials()
    states = {t.state for t in trials}  # a queued seed may be left waiting: resume runs it
    assert TrialState.COMPLETE in states and states <= {TrialState.COMPLETE, TrialState.WAITING} and len(trials) < 40
