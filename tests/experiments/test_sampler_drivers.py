"""The same sampler and seed, launched for real with each driver one trial at a time, proposes the
same policies in the same order (the NNI multi-objective tuner and the Optuna driver build the
sampler the same way and reseed it per trial)."""

import io

import pytest

from mpqsearch.analysis.results import load_results
from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import load_config

PORT = 18647


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["SensitivityModel", "NSGAII"])
def test_both_drivers_launch_the_same_sequence(experiment_file, tmp_path, sampler):
    sequences = {}
    for driver in ("optuna", "nni"):
        path = experiment_file(driver=driver, port=PORT, budget={"max_trials": 8, "concurrency": 1},
                               sampler={"name": sampler, "args": {"seed": 3}},
                               tuner={"name": "MultiObjective", "args": {"sampler": sampler, "seed": 3}})
        experiment_id = launcher.launch(load_config(path), out=io.StringIO())
        rows = load_results(experiment_id, directory=tmp_path / "runs", policies=False).rows
        sequences[driver] = [r.params for r in sorted(rows, key=lambda r: r.number) if r.state == "complete"]
    assert len(sequences["optuna"]) == 8
    assert sequences["nni"] == sequences["optuna"]
