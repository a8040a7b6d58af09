import os
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent


@pytest.fixture
def experiment_file(tmp_path, monkeypatch):
    """Write an experiment file for the example workload; child processes can import this folder."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))

    def write(**changes):
        data = {
            "workload": "example",
            "search_space": {"weight_bits": [2, 4, 8], "act_bits": [4, 8]},
            "objectives": [{"metric": "top1", "direction": "maximize"},
                           {"metric": "size_ratio", "direction": "minimize"}],
            "constraints": [{"metric": "size_ratio", "max": 0.9}],
            "sampler": {"name": "Random", "args": {"seed": 0}},
            "strategies": {"seed": [{"name": "uniform", "args": {"bits": [[8, 8], [4, 8]]}}]},
            "budget": {"max_trials": 6, "concurrency": 1},
            "latency": {"backend": "none"},
            "directory": str(tmp_path / "runs"),
        }
        data.update(changes)
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write
