"""Real NNI experiments on warm workers: the same results as the cold path and the Optuna
driver, and latency kept clean with several workers."""

import io

import pytest

from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import load_config
from mpqsearch.experiments.trial_records import read_trial_records
from mpqsearch.experiments.workers.processes import find_processes
from mpqsearch.experiments.workers.slots import Slots

pytestmark = pytest.mark.slow


def _launch(path, **flags):
    experiment_id = launcher.launch(launcher.apply_overrides(load_config(path), **flags), out=io.StringIO())
    return experiment_id


def test_seed_policies_measure_the_same_on_nni_warm_nni_cold_and_optuna(experiment_file, tmp_path):
    import optuna

    runs = tmp_path / "runs"
    common = {"tuner": {"name": "Random", "args": {"seed": 0}}, "budget": {"max_trials": 3}}
    warm = _launch(experiment_file(driver="nni", port=18656, **common))
    cold = _launch(experiment_file(driver="nni", port=18656, nni_trials="cold", **common))
    study = _launch(experiment_file(driver="optuna", **common))

    def by_policy(records):
        return {tuple(sorted(r["params"].items())): r["metrics"] for r in records if r["strategy"] == "uniform"}

    warm_records = read_trial_records(runs / warm).values()
    assert len(find_processes(str(runs / warm))) == 0 and (Slots(runs / warm).dir / "slot-0.log").exists()
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{runs / study / 'optuna.db'}").trials
    optuna_metrics = {tuple(sorted(t.params.items())): t.user_attrs["metrics"] for t in trials
                      if t.user_attrs["strategy"] == "uniform"}
    assert len(optuna_metrics) == 2
    assert by_policy(warm_records) == by_policy(read_trial_records(runs / cold).values()) == optuna_metrics


def test_several_workers_time_latency_under_the_trial_lock(experiment_file, tmp_path):
    path = experiment_file(driver="nni", port=18657, budget={"max_trials": 6, "concurrency": 2},
                           latency={"backend": "onnxruntime", "threads": 1},
                           tuner={"name": "Random", "args": {"seed": 0}})
    experiment_id = _launch(path)
    records = list(read_trial_records(tmp_path / "runs" / experiment_id).values())
    assert len(records) == 6 and all(r["state"] == "SUCCEEDED" for r in records)
    assert len({r["pid"] for r in records}) == 2  # two warm workers served them
    assert {r["result"]["latency_isolation"] for r in records} == {"exclusive"}
    assert all(r["metrics"]["latency_ms"] > 0 for r in records)
