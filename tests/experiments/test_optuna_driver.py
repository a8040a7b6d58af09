import io
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import load_config


def _study(run_dir, experiment_id):
    return optuna.load_study(study_name=experiment_id, storage=f"sqlite:///{run_dir / 'optuna.db'}")


def test_two_workers_on_one_sqlite_storage_run_seeds_first(experiment_file, tmp_path):
    config = load_config(experiment_file(budget={"max_trials": 6, "concurrency": 2}))
    out = io.StringIO()
    experiment_id = launcher.launch(config, out=out)
    run_dir = tmp_path / "runs" / experiment_id
    trials = _study(run_dir, experiment_id).get_trials()
    assert 6 <= len(trials) <= 7  # two workers may overshoot the budget by one
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.user_attrs["strategy"] for t in trials[:2]] == ["uniform", "uniform"]
    assert {t.params["stem/w"] for t in trials[:2]} == {8, 4}
    for trial in trials:
        metrics = trial.user_attrs["metrics"]
        assert 0 <= metrics["top1"] <= 1 and 0 < metrics["size_ratio"] < 1
        assert trial.values == [metrics["top1"], metrics["size_ratio"]]
    assert (run_dir / "cache").is_dir()
    assert f"trials {len(trials)}/6: {len(trials)} done, 0 failed" in out.getvalue()


def test_a_failing_trial_is_recorded_and_the_search_goes_on(experiment_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MPQSEARCH_TEST_FAIL_CLAIM", str(tmp_path / "claim"))
    config = load_config(experiment_file(workload="failing_workload:failing_once"))
    experiment_id = launcher.launch(config, out=io.StringIO())
    trials = _study(tmp_path / "runs" / experiment_id, experiment_id).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(trials) == 6 and len(failed) == 1
    assert "MetricError" in failed[0].user_attrs["fail_reason"] and "nan" in failed[0].user_attrs["fail_reason"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5


def test_interrupted_search_resumes_and_keeps_every_trial(experiment_file, tmp_path):
    path = experiment_file(budget={"max_trials": 14, "concurrency": 1})
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "mpqsearch.cli", "launch", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    experiment_id = process.stdout.readline().split()[1]
    run_dir = runs / experiment_id
    deadline = time.time() + 300  # a wait, not a timing: a loaded 2-core machine starts slowly
    before = []
    while time.time() < deadline:
        try:
            before = [t for t in _study(run_dir, experiment_id).get_trials() if t.state == TrialState.COMPLETE]
        except KeyError:  # the study is not created yet
            before = []
        if len(before) >= 4:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(before) >= 4
    launcher.resume(experiment_id, runs, out=io.StringIO())
    after = {t.number: t for t in _study(run_dir, experiment_id).get_trials()}
    for trial in before:
        assert after[trial.number].state == TrialState.COMPLETE
        assert after[trial.number].values == trial.values and after[trial.number].params == trial.params
    finished = [t for t in after.values() if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    assert len(finished) >= 14
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
