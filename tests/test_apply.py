import pytest
import torch

from mpqsearch import Policy, PolicyError, SearchSpace, apply_policy
from mpqsearch.example import ExampleNet


def test_apply_policy_leaves_model_untouched_and_quantizes(example_model, example_input, calib_data):
    space = SearchSpace.from_model(example_model, example_input)
    before = {k: v.clone() for k, v in example_model.state_dict().items()}
    reference = example_model(example_input)
    qmodel = apply_policy(example_model, Policy.uniform(space, 8, 8), calib_data)
    assert all(torch.equal(v, example_model.state_dict()[k]) for k, v in before.items())
    out = qmodel(example_input)
    assert not torch.equal(out, reference)
    assert (out - reference).abs().max() < 0.02 * reference.abs().max()
    out.sum().backward()


def test_apply_policy_refuses_another_model(example_model, example_input, calib_data):
    policy = Policy.uniform(SearchSpace.from_model(example_model, example_input), 8, 8)
    with pytest.raises(PolicyError, match="policy of another model"):
        apply_policy(ExampleNet(channels=4), policy, calib_data)
