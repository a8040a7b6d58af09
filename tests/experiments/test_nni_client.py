"""NNI's trial commands against a stand-in for NNI's HTTP trial channel (no NNI manager): the
warm client and the cold trial report the same metrics, which are those the Optuna driver's
trials compute (``ExperimentSetup.run_trial``), and the client fails a trial whose worker dies."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpqsearch.experiments.config import load_config
from mpqsearch.experiments.drivers.nni_client import CLIENT_MODULE, COLD_MODULE
from mpqsearch.experiments.runs import EXPERIMENT_FILE, save_run
from mpqsearch.experiments.setup import build_setup
from mpqsearch.experiments.trial_records import read_trial_records
from mpqsearch.experiments.workers.processes import find_processes, kill_and_wait
from mpqsearch.experiments.workers.slots import Slots, iter_workers

PARAMS = {"stem/w": 8, "tied0/a": 8, "block.conv/w": 4, "block.conv/a": 8, "block.depthwise/w": 2, "branch_a/w": 4,
          "tied1/a": 4, "branch_b/w": 4, "up/w": 8, "up/a": 8, "head/w": 4, "head/a": 8}  # the example's space


class FakeNni:
    """NNI's trial channel (nni_node/common/command_channel/http.js) for any number of trials."""

    def __init__(self, cwd):
        self.cwd, self.parameters, self.metrics = cwd, {}, {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_PUT(self):
                trial = self.path.rsplit("/", 1)[1]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body["type"] == "metric":
                    fake.metrics.setdefault(trial, []).append(json.loads(body["metric"]))
                self.send_response(200)
                self.end_headers()

            def do_GET(self):
                trial = self.path.rsplit("/", 1)[1]
                packed = {"parameter_id": 7, "parameter_source": "algorithm", "parameters": fake.parameters[trial],
                          "parameter_index": 0}
                data = json.dumps({"type": "parameter", "parameter": json.dumps(packed)}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def run(self, trial, params, command, **popen):
        self.parameters[trial] = params
        env = dict(os.environ, NNI_TRIAL_COMMAND_CHANNEL=f"http://127.0.0.1:{self.server.server_port}/env/x/{trial}",
                   NNI_TRIAL_JOB_ID=trial, NNI_TRIAL_SEQ_ID="0", NNI_EXP_ID="fakeexp", NNI_PLATFORM="local")
        return subprocess.Popen(command, env=env, cwd=self.cwd, **popen)  # NNI's trials write trial.log there

    def final(self, trial):
        [final] = [json.loads(m["value"]) for m in self.metrics[trial] if m["type"] == "FINAL"]
        return final


@pytest.fixture
def nni(tmp_path):
    fake = FakeNni(tmp_path)
    yield fake
    fake.server.shutdown()
    for pid in find_processes(str(tmp_path)):
        kill_and_wait(pid)
    assert find_processes(str(tmp_path)) == []


def _run_dir(experiment_file, tmp_path, **changes):
    config = load_config(experiment_file(**changes))
    run_dir = tmp_path / "runs" / "exp"
    save_run(run_dir, config, "exp")
    return config, run_dir


def _client(run_dir, *extra):
    return [sys.executable, "-m", CLIENT_MODULE, str(run_dir), *extra]


def test_warm_and_cold_trials_report_what_the_optuna_driver_computes(experiment_file, tmp_path, nni):
    config, run_dir = _run_dir(experiment_file, tmp_path)
    cold = nni.run("cold", PARAMS, [sys.executable, "-m", COLD_MODULE, str(run_dir / EXPERIMENT_FILE), str(run_dir)])
    assert nni.run("warm0", PARAMS, _client(run_dir)).wait(300) == 0
    assert nni.run("warm1", PARAMS, _client(run_dir)).wait(300) == 0 and cold.wait(300) == 0
    expected = build_setup(config, cache_dir=run_dir / "cache").run_trial(PARAMS)  # as in an Optuna trial
    for trial in ("cold", "warm0", "warm1"):
        final = nni.final(trial)
        assert final == {"default": expected.scalar, **expected.metrics, "feasible": 1.0}
        assert [json.loads(m["value"]) for m in nni.metrics[trial] if m["type"] == "PERIODICAL"] == [
            expected.metrics["top1"]]
    records = read_trial_records(run_dir)
    assert {records[t]["state"] for t in ("cold", "warm0", "warm1")} == {"SUCCEEDED"}
    assert records["warm0"]["metrics"] == records["cold"]["metrics"] == expected.metrics
    assert len({pid for _, pid in iter_workers(Slots(run_dir))}) == 1  # the second warm trial found the first's worker


@pytest.mark.slow
def test_an_sr_trial_with_table_latency_is_the_same_warm_cold_and_in_process(experiment_file, tmp_path, nni):
    config, run_dir = _run_dir(experiment_file, tmp_path, workload="sr-espcn-x2", latency={"backend": "lut"},
                               search_space={"weight_bits": [4, 8], "act_bits": [6, 8]},
                               objectives=[{"metric": "psnr", "direction": "maximize"},
                                           {"metric": "latency_ms", "direction": "minimize"}], constraints=[])
    setup = build_setup(config, cache_dir=run_dir / "cache")
    setup.warm_up()  # the table, measured once, as the launcher does
    params = {name: choices[i % len(choices)] for i, (name, choices) in enumerate(setup.space.parameters().items())}
    expected = setup.run_trial(params)
    cold = nni.run("cold", params, [sys.executable, "-m", COLD_MODULE, str(run_dir / EXPERIMENT_FILE), str(run_dir)])
    assert nni.run("warm", params, _client(run_dir)).wait(600) == 0 and cold.wait(600) == 0
    assert nni.final("warm") == nni.final("cold") == {"default": expected.scalar, **expected.metrics, "feasible": 1.0}
    assert expected.metrics["latency_ms"] > 0 and expected.result.latency_isolation == "table"


def test_a_trial_whose_worker_is_killed_fails_with_the_reason_and_the_next_gets_a_fresh_worker(
        experiment_file, tmp_path, nni, monkeypatch):
    _, run_dir = _run_dir(experiment_file, tmp_path, workload="blocking_workload:blocking")
    block = tmp_path / "block"
    block.mkdir()
    monkeypatch.setenv("MPQSEARCH_TEST_BLOCK_DIR", str(block))
    assert nni.run("first", PARAMS, _client(run_dir)).wait(300) == 0
    [(_, worker)] = list(iter_workers(Slots(run_dir)))
    for started in block.glob("started-*"):
        started.unlink()
    (block / "hold").touch()
    trial = nni.run("victim", PARAMS, _client(run_dir), stderr=subprocess.PIPE, text=True)
    while not list(block.glob(f"started-{worker}-*")) and trial.poll() is None:
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)  # mid-evaluation
    _, stderr = trial.communicate(timeout=120)
    assert trial.returncode == 1 and f"the worker (pid {worker}) exited while evaluating" in stderr
    record = read_trial_records(run_dir)["victim"]
    assert record["state"] == "FAILED" and f"(pid {worker}) exited while evaluating" in record["fail_reason"]
    (block / "hold").unlink()
    assert nni.run("next", PARAMS, _client(run_dir)).wait(300) == 0 and nni.final("next")["top1"] > 0
    assert worker not in [pid for _, pid in iter_workers(Slots(run_dir))]


def test_a_silent_worker_fails_the_trial_after_the_timeout(experiment_file, tmp_path, nni):
    _, run_dir = _run_dir(experiment_file, tmp_path)
    assert nni.run("first", PARAMS, _client(run_dir)).wait(300) == 0
    [(_, worker)] = list(iter_workers(Slots(run_dir)))
    os.kill(worker, signal.SIGSTOP)
    trial = nni.run("slow", PARAMS, _client(run_dir, "--timeout", "2"), stderr=subprocess.PIPE, text=True)
    _, stderr = trial.communicate(timeout=120)
    assert trial.returncode == 1 and f"(pid {worker}) gave no answer within 2 s and was killed" in stderr
    assert "gave no answer within 2 s" in read_trial_records(run_dir)["slow"]["fail_reason"]
