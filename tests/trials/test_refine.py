"""QAT refinement: straight-through gradients, distillation and train_data, the refined file."""

import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import yaml

from mpqsearch import PolicyError, apply_policy, load_policy, save_policy
from mpqsearch.policy import Policy
from mpqsearch.quant.graph import quantizable_layers
from mpqsearch.trials import Evaluator
from mpqsearch.trials.refine import refine
from mpqsearch.workloads import get_workload
from mpqsearch.workloads.example import build_centered


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator(get_workload("example"), latency="none", threads=1)


@pytest.fixture(scope="module")
def w3a8(evaluator):
    return Policy.uniform(evaluator.space, 3, 8)


@pytest.fixture(scope="module")
def refined(evaluator, w3a8):
    torch.manual_seed(0)
    return refine(evaluator, w3a8, steps=30, lr=1e-3)


def test_float_weights_get_the_straight_through_gradient_and_scales_are_not_trained(evaluator, w3a8):
    qmodel = evaluator.quantize(w3a8)
    assert not [name for name, _ in qmodel.named_parameters() if "scale" in name]
    stem = quantizable_layers(qmodel)["stem"]
    quantizer = stem.parametrizations.weight[0]
    weight = stem.parametrizations.weight.original.detach().clone().requires_grad_()
    upstream = torch.randn_like(weight)
    (quantizer(weight) * upstream).sum().backward()
    inside = torch.round(weight / quantizer.scale.view(-1, 1, 1, 1)).abs() <= 3  # 3 bits: levels -3..3
    assert 0 < int((~inside).sum())  # MSE clipping cuts some weights at 3 bits: both cases are seen
    assert torch.equal(weight.grad, upstream * inside)


def test_refine_distils_the_fp32_model_without_touching_the_inputs(evaluator, w3a8, refined):
    assert refined.data == "distillation"  # the example workload has no train_data
    assert refined.loss_after < 0.5 * refined.loss_before
    assert refined.after.metrics["top1"] >= refined.before.metrics["top1"] + 0.1
    assert refined.after.size_bytes == refined.before.size_bytes and len(refined.losses) == 30
    fresh = build_centered().state_dict()
    assert all(torch.equal(value, evaluator.model.state_dict()[key]) for key, value in fresh.items())
    assert w3a8.weights is None and w3a8.metrics == {} and w3a8.provenance == {}
    assert evaluator.evaluate(w3a8, measure_latency=False).metrics == refined.before.metrics
    weights = refined.policy.weights
    assert set(weights) == set(fresh) and not torch.equal(weights["stem.weight"], fresh["stem.weight"])
    assert refined.policy.layers == w3a8.layers and refined.policy.metrics == refined.after.flat_metrics()
    assert refined.policy.provenance["refined"]["metrics_before"] == refined.before.flat_metrics()


def test_refined_file_round_trip_reproduces_the_trained_model(evaluator, refined, tmp_path):
    path = save_policy(refined.policy, tmp_path / "a" / "refined.yaml")
    assert yaml.safe_load(path.read_text())["weights"] == "refined.weights.pt"
    moved = tmp_path / "b"
    shutil.copytree(path.parent, moved)  # the pair moves together
    policy = load_policy(moved / "refined.yaml", evaluator.model)
    assert policy.weights == moved / "refined.weights.pt"
    assert evaluator.evaluate(policy, measure_latency=False).metrics == refined.after.metrics
    x = evaluator.workload.eval_data[0][0]
    with torch.no_grad():
        trained = evaluator.quantize(refined.policy)(x)
        assert torch.equal(apply_policy(build_centered(), policy, evaluator.workload.calib_data)(x), trained)
    save_policy(policy, tmp_path / "c.yaml")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["weights"] == "b/refined.weights.pt"


def test_a_refined_file_whose_weights_are_missing_or_foreign_is_refused(evaluator, refined, tmp_path):
    path = save_policy(refined.policy, tmp_path / "refined.yaml")
    torch.save({"stem.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "refined.weights.pt")
    with pytest.raises(PolicyError, match=r"refined.weights.pt: refined weights do not fit the model: "
                                          r"'stem.bias' missing from the weights"):
        apply_policy(evaluator.model, load_policy(path), evaluator.workload.calib_data)
    (tmp_path / "refined.weights.pt").unlink()
    with pytest.raises(PolicyError, match=r"refined.yaml: weights: no such file .*refined.weights.pt"):
        load_policy(path)
    path.write_text(path.read_text().replace("weights: refined.weights.pt", "weights: [1]"))
    with pytest.raises(PolicyError, match=r"refined.yaml: weights: must be the path of a weights file"):
        load_policy(path)


def test_cls_digits_trains_on_its_train_data():
    evaluator = Evaluator(get_workload("cls-digits"), latency="none", threads=1)
    result = refine(evaluator, Policy.uniform(evaluator.space, 2, 8), steps=20, lr=1e-3)
    assert result.data == "train_data"
    assert result.loss_after < 0.5 * result.loss_before
    assert result.after.metrics["top1"] > result.before.metrics["top1"] + 0.2  # W2A8 PTQ is far below FP32


def test_a_finite_train_data_is_repeated_and_an_empty_one_refused(evaluator, w3a8):
    inputs = evaluator.workload.calib_data[0][:8]
    with torch.no_grad():
        batch = (inputs, evaluator.model(inputs).argmax(dim=1))
    workload = replace(evaluator.workload, train_data=lambda: [batch], train_loss=F.cross_entropy)
    result = refine(Evaluator(workload, latency="none", threads=1), w3a8, steps=3)
    assert result.data == "train_data" and len(result.losses) == 3
    empty = replace(workload, train_data=lambda: [])
    with pytest.raises(ValueError, match="train_data yielded no batches"):
        refine(Evaluator(empty, latency="none", threads=1), w3a8, steps=1)


@pytest.mark.parametrize("steps,lr,message", [(0, 1e-4, "steps must be a positive integer"),
                                              (2.5, 1e-4, "steps must be a positive integer"),
                                              (1, 0.0, "lr must be positive")])
def test_bad_arguments_are_named(evaluator, w3a8, steps, lr, message):
    with pytest.raises(ValueError, match=message):
        refine(evaluator, w3a8, steps=steps, lr=lr)


def test_train_data_needs_its_loss(evaluator):
    with pytest.raises(ValueError, match="train_data and train_loss go together; got only train_data"):
        replace(evaluator.workload, train_data=lambda: [])
