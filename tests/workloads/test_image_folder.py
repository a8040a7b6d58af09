"""A workload without code: a model factory in the user's directory, weights, a folder of images."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mpqsearch.cli import main
from mpqsearch.policy import load_policy
from mpqsearch.workloads import get_workload

MODEL_CODE = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 2))
'''


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A directory as a user has it: ``tinynet.py`` (no package, not on PYTHONPATH), its weights,
    and ``images/`` with a red and a blue class, 12 images each of various sizes."""
    (tmp_path / "tinynet.py").write_text(MODEL_CODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as load_callable does from the current directory
    import tinynet

    torch.save(tinynet.build().state_dict(), tmp_path / "tinynet.pt")
    rng = np.random.default_rng(0)
    for name, channel in (("blue", 2), ("red", 0)):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 80, (20 + i, 30, 3), dtype=np.uint8)
            pixels[..., channel] = 200
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    spec = {"model": "tinynet:build", "weights": "tinynet.pt", "data": "images", "input_size": 16,
            "calibration_images": 4, "evaluation_images": 16, "batch_size": 8}
    (tmp_path / "workload.yaml").write_text(yaml.safe_dump(spec))
    sys.modules.pop("tinynet", None)
    return tmp_path


def test_a_yaml_file_names_model_weights_and_images(user_dir):
    workload = get_workload("workload.yaml")
    assert workload.name == "tinynet:build on images" and workload.directions == {"top1": "maximize",
                                                                                  "agreement": "maximize"}
    assert tuple(workload.example_input.shape) == (1, 3, 16, 16)
    assert sum(len(x) for x in workload.calib_data) == 4 and sum(len(t) for _, t in workload.eval_data) == 16
    model = workload.build_model()
    assert torch.equal(model[0].weight, torch.load(user_dir / "tinynet.pt")["0.weight"])
    targets = torch.cat([t for _, t in workload.eval_data])
    assert set(targets[:, 0].tolist()) <= {0, 1}  # folders: blue 0, red 1
    metrics = workload.metric(torch.cat([model(x) for x, _ in workload.eval_data]), targets)
    assert metrics["agreement"].mean() == 1.0  # the FP32 model agrees with itself


def test_an_experiment_file_searches_it_and_apply_reproduces_from_the_provenance(user_dir):
    experiment = {"workload": yaml.safe_load((user_dir / "workload.yaml").read_text()),
                  "search_space": {"weight_bits": [4, 8], "act_bits": [8]},
                  "objectives": [{"metric": "agreement", "direction": "maximize"},
                                 {"metric": "size_ratio", "direction": "minimize"}],
                  "budget": {"max_trials": 3}, "latency": {"backend": "none"}, "directory": "runs"}
    (user_dir / "search.yaml").write_text(yaml.safe_dump(experiment))
    assert main(["launch", "search.yaml"]) == 0
    experiment_id = next((user_dir / "runs").iterdir()).name
    assert main(["export", experiment_id, "--directory", "runs", "--pick", "knee", "-o", "policy.yaml"]) == 0
    policy = load_policy(user_dir / "policy.yaml")
    assert policy.provenance["workload"]["data"] == str(user_dir / "images")  # absolute: works from anywhere
    assert main(["apply", "policy.yaml"]) == 0


@pytest.mark.parametrize("change,message", [
    ({"data": "nowhere"}, "data: .*nowhere is not a directory"),
    ({"evaluation_images": 100}, "holds 24 images, fewer than calibration_images \\+ evaluation_images = 104"),
    ({"input_sise": 16}, "workload.yaml: input_sise: unknown key"),
    ({"model": "tinynet:nothing"}, "tinynet has no callable 'nothing'"),
    ({"weights": "missing.pt"}, "weights: .*missing.pt"),
])
def test_each_mistake_is_one_line(user_dir, capsys, change, message):
    spec = {**yaml.safe_load((user_dir / "workload.yaml").read_text()), **change}
    (user_dir / "workload.yaml").write_text(yaml.safe_dump(spec))
    assert main(["layers", "workload.yaml"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and __import__("re").search(message, error), error


def test_a_model_factory_resolves_from_the_current_directory_as_python_m_does(user_dir):
    result = subprocess.run([sys.executable, "-m", "mpqsearch.cli", "layers", "tinynet:build", "--input-shape",
                             "1,3,16,16"], capture_output=True, text=True, cwd=user_dir,
                            env={k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert "2 quantizable layers" in result.stdout
