"""Real NNI experiments: the NNI manager, its web UI server and trial processes, no mocks."""

import io
import json
import sqlite3
import subprocess
import sys
import threading

import pytest
from nni.experiment import launcher as nni_launcher
from nni.experiment.config import ExperimentConfig

from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import ConfigError, load_config
from mpqsearch.experiments.drivers.nni_manager import MANAGER_START_SECONDS, manager_start
from mpqsearch.experiments.trial_records import read_trial_records

PORT = 18643


def _listening_addresses(port):
    """Local addresses of the LISTEN sockets on ``port`` (read from /proc, no traffic sent)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.append(address)
    return found


def _nni_trials(run_dir, experiment_id):
    db = run_dir / "nni" / experiment_id / "db" / "nni.sqlite"
    with sqlite3.connect(db) as conn:
        metrics = [json.loads(json.loads(v)) if isinstance(json.loads(v), str) else json.loads(v)
                   for (v,) in conn.execute("SELECT data FROM MetricData WHERE type = 'FINAL'")]
        events = conn.execute("SELECT trialJobId, event FROM TrialJobEvent").fetchall()
    return metrics, events


@pytest.mark.slow
@pytest.mark.parametrize("tuner", [{"name": "TPE", "args": {"seed": 0}},
                                   {"name": "MultiObjective", "args": {"sampler": "NSGAII", "seed": 0}}])
def test_real_nni_experiment_with_seeds_first_on_loopback_only(experiment_file, tmp_path, tuner):
    path = experiment_file(driver="nni", tuner=tuner, port=PORT, budget={"max_trials": 4, "concurrency": 2})
    config = load_config(path)
    seen_listening = []

    def watch():  # while the experiment runs, record which addresses the web UI listens on
        while not done.is_set():
            seen_listening.extend(_listening_addresses(PORT))
            done.wait(0.5)

    done = threading.Event()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        experiment_id = launcher.launch(config, out=io.StringIO())
    finally:
        done.set()
        watcher.join()
    run_dir = tmp_path / "runs" / experiment_id
    assert seen_listening and set(seen_listening) == {"0100007F"}  # 127.0.0.1, nothing else
    records = sorted(read_trial_records(run_dir).values(), key=lambda r: r["sequence"])
    assert len(records) == 4 and all(r["state"] == "SUCCEEDED" for r in records)
    seeds = json.loads((run_dir / "seeds.json").read_text())
    first_two = sorted(json.dumps(r["params"], sort_keys=True) for r in records[:2])
    assert first_two == sorted(json.dumps(s["params"], sort_keys=True) for s in seeds)  # seeds run first
    assert [r["strategy"] for r in records] == ["uniform", "uniform", "tuner", "tuner"]
    metrics, events = _nni_trials(run_dir, experiment_id)
    assert len(metrics) == 4
    for metric in metrics:
        assert {"default", "top1", "size_ratio", "size_bytes", "bops"} <= set(metric)
    assert sorted(m["top1"] for m in metrics) == sorted(r["metrics"]["top1"] for r in records)
    nnictl_config = ExperimentConfig.load(str(run_dir / "config.yml"))  # what `nnictl create` reads
    nnictl_config.validate()
    assert nnictl_config.trial_command.endswith(f"{run_dir}") and nnictl_config.max_trial_number == 4


@pytest.mark.slow
def test_a_failing_nni_trial_does_not_stop_the_search(experiment_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MPQSEARCH_TEST_FAIL_CLAIM", str(tmp_path / "claim"))
    path = experiment_file(driver="nni", workload="failing_workload:failing_once", port=PORT,
                           tuner={"name": "Random", "args": {"seed": 0}}, budget={"max_trials": 4, "concurrency": 2})
    experiment_id = launcher.launch(load_config(path), out=io.StringIO())
    records = list(read_trial_records(tmp_path / "runs" / experiment_id).values())
    failed = [r for r in records if r["state"] == "FAILED"]
    assert len(records) == 4 and len(failed) == 1 and "nan" in failed[0]["fail_reason"]


@pytest.mark.parametrize("name,reason", [("GP", "SciPy"), ("Hyperband", "#5263"), ("SMAC", "installed"),
                                         ("Magic", "unknown tuner")])
def test_tuners_that_cannot_work_are_refused_with_the_reason(experiment_file, name, reason):
    config = load_config(experiment_file(driver="nni", tuner={"name": name}))
    with pytest.raises(ConfigError, match=f"tuner.name: .*{reason}"):
        launcher.launch(config, out=io.StringIO())


def test_nnictl_runs_in_the_installed_environment():
    """nnictl imports pkg_resources, gone from setuptools 82; the package pins an older one."""
    result = subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "create" in result.stdout


def test_the_manager_gets_more_than_nni_s_3_seconds_to_start(tmp_path, monkeypatch):
    """NNI's launcher checks the manager 3 times a second apart; a first start on a fresh install
    can take longer. Inside manager_start it is checked for MANAGER_START_SECONDS, and after it
    NNI's own check is back."""
    retries = []
    monkeypatch.setattr(nni_launcher, "_check_rest_server",
                        lambda port, retry=3, url_prefix=None: retries.append(retry))
    original = nni_launcher._check_rest_server
    with manager_start(tmp_path, "127.0.0.1"):
        nni_launcher._check_rest_server(8080, url_prefix=None)
    assert retries == [MANAGER_START_SECONDS] and nni_launcher._check_rest_server is original
