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


def test_apply_policy_quantizes_model_inputs_at_the_policys_input_bits(example_model, example_input, calib_data):
    space = SearchSpace.from_model(example_model, example_input)
    float_weights_float_input = Policy.uniform(space, 32, 32, input_bits=32)
    with torch.no_grad():
        reference = example_model(example_input)
        assert torch.equal(apply_policy(example_model, float_weights_float_input, calib_data)(example_input), reference)
        # inputs are quantized where a layer with quantized weights reads them: 16-bit weights
        # add almost no error of their own
        outputs = {bits: apply_policy(example_model, Policy.uniform(space, 16, 32, input_bits=bits),
                                      calib_data)(example_input) for bits in (2, 4, 8, 32)}
    errors = [float((outputs[bits] - reference).abs().max()) for bits in (2, 4, 8, 32)]
    assert errors[0] > errors[1] > errors[2] > 2 * errors[3]
