"""Two real, tiny experiments on the ``example`` workload, run once per test session:
an Optuna study and an NNI experiment (with their NNI manager and trial processes)."""

import io

import pytest
import yaml

from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import load_config

NNI_PORT = 18651


def _launch(directory, **changes):
    data = {
        "workload": "example",
        "search_space": {"weight_bits": [2, 4, 8], "act_bits": [4, 8]},
        "objectives": [{"metric": "top1", "direction": "maximize"}, {"metric": "size_ratio", "direction": "minimize"}],
        "constraints": [{"metric": "size_ratio", "max": 0.9}],
        "sampler": {"name": "Random", "args": {"seed": 0}},
        "strategies": {"seed": [{"name": "uniform", "args": {"bits": [[8, 8], [4, 8]]}}]},
        "budget": {"max_trials": 4, "concurrency": 1},
        "latency": {"backend": "none"},
        "directory": str(directory / "runs"),
        **changes,
    }
    path = directory / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return launcher.launch(load_config(path), out=io.StringIO())


@pytest.fixture(scope="session")
def optuna_run(tmp_path_factory):
    """(runs directory, experiment ID) of a finished 6-trial Optuna experiment."""
    directory = tmp_path_factory.mktemp("optuna")
    return directory / "runs", _launch(directory, budget={"max_trials": 6, "concurrency": 1})


@pytest.fixture(scope="session")
def nni_run(tmp_path_factory):
    """(runs directory, experiment ID) of a finished 4-trial NNI experiment."""
    directory = tmp_path_factory.mktemp("nni")
    return directory / "runs", _launch(directory, driver="nni", port=NNI_PORT,
                                       tuner={"name": "Random", "args": {"seed": 0}},
                                       budget={"max_trials": 4, "concurrency": 2})
