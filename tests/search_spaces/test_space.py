import optuna
import pytest
from nni.common.hpo_utils.validation import validate_search_space

from mpqsearch import Policy, SearchSpace, model_size_bytes
from mpqsearch.quant.spec import FLOAT_BITS


@pytest.fixture
def space(example_model, example_input):
    return SearchSpace.from_model(example_model, example_input)


def test_parameters_tie_shared_activations(space):
    params = space.parameters()
    assert "tied0/a" in params and "stem/a" not in params and "block.depthwise/a" not in params
    assert "tied1/a" in params and "block.conv/a" in params
    assert len([p for p in params if p.endswith("/w")]) == 7
    assert space.act_param("branch_b") == "tied1/a"


def test_to_nni_passes_nni_validation(space):
    nni_space = space.to_nni()
    assert validate_search_space(nni_space, raise_exception=True)
    assert nni_space["stem/w"] == {"_type": "choice", "_value": [2, 3, 4, 5, 6, 7, 8]}


def test_optuna_samples_policies(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    distributions = space.to_optuna()
    for _ in range(5):
        trial = study.ask(distributions)
        policy = space.policy_from_params(trial.params)
        assert policy.layers["stem"].act_bits == policy.layers["block.depthwise"].act_bits
        assert space.params_from_policy(policy) == trial.params
        study.tell(trial, 0.0)


def test_include_exclude_and_overrides(example_model, example_input):
    space = SearchSpace.from_model(example_model, example_input, weight_bits=[4, 8], act_bits=[8],
                                   exclude=["head"], overrides={"branch_*": {"weight_bits": [8]}})
    assert space.float_layers == ("head",)
    assert space.weight_choices["branch_a"] == (8,)
    assert list(space.parameters()) == ["stem/w", "block.conv/w", "block.depthwise/w", "up/w"]
    policy = Policy.uniform(space, 4, 8)
    assert policy.layers["head"].weight_bits == FLOAT_BITS and policy.layers["stem"].weight_bits == 4


def test_bad_options_name_the_pattern_or_layer(example_model, example_input):
    with pytest.raises(ValueError, match="exclude 'tail' matches no quantizable layer"):
        SearchSpace.from_model(example_model, example_input, exclude=["tail"])
    with pytest.raises(ValueError, match="override 'up': unknown key 'bits'"):
        SearchSpace.from_model(example_model, example_input, overrides={"up": {"bits": [4]}})
    with pytest.raises(ValueError, match="weight_bits: bits must be 2..16 or 32, got 1"):
        SearchSpace.from_model(example_model, example_input, weight_bits=[1, 4])
    with pytest.raises(ValueError, match="tied1 .branch_a, branch_b."):
        SearchSpace.from_model(example_model, example_input, exclude=["branch_a"])


def test_params_are_checked(space):
    params = {name: choices[0] for name, choices in space.parameters().items()}
    assert space.policy_from_params(params).layers["stem"].weight_bits == 2
    with pytest.raises(KeyError, match="missing search-space parameter 'head/a'"):
        space.policy_from_params({k: v for k, v in params.items() if k != "head/a"})
    with pytest.raises(ValueError, match="'stem/w': 9 is not one of"):
        space.policy_from_params({**params, "stem/w": 9})


def test_restrict_narrows_choices(space):
    narrow = space.restrict(weight={"stem": [6, 8, 16]}, act={"branch_a": [8]})
    assert narrow.weight_choices["stem"] == (6, 8)
    assert narrow.act_choices["branch_b"] == (8,)  # tied with branch_a
    assert "tied1/a" not in narrow.parameters()
    with pytest.raises(ValueError, match="stem: none of"):
        space.restrict(weight={"stem": [16]})


def test_model_size_bytes_by_hand(example_model, space):
    total_params = sum(p.numel() for p in example_model.parameters())
    fp32 = Policy.uniform(space, FLOAT_BITS, FLOAT_BITS)
    assert model_size_bytes(space, fp32) == model_size_bytes(example_model, fp32) == 4 * total_params
    policy = Policy.uniform(space, 4, 8)
    weights = sum(layer.weight_params for layer in space.layers)
    biases = total_params - weights
    weight_scales = 8 + 8 + 8 + 8 + 8 + 8 + 10  # one per output channel (dim 1 for ConvTranspose2d)
    act_scales = 5  # 7 layers, two tied pairs
    expected_bits = weights * 4 + biases * 32 + (weight_scales + act_scales) * 32
    assert model_size_bytes(space, policy) == model_size_bytes(example_model, policy) == -(-expected_bits // 8)
    shift = Policy.uniform(space, 4, 8, scale="shift", granularity="per_tensor")
    shift_bits = weights * 4 + biases * 32 + (7 + act_scales) * 8
    assert model_size_bytes(space, shift) == -(-shift_bits // 8)


def test_bit_operations_by_hand(space):
    from mpqsearch.search_spaces.costs import bit_operations

    layers = {layer.name: layer for layer in space.layers}
    assert layers["branch_a"].input_from == ("block.depthwise", "stem")
    assert layers["stem"].input_from == ("<input>",)
    policy = Policy.uniform(space, 4, 8, input_bits=6)
    policy.layers["up"] = policy.layers["up"].__class__(6, 5)
    macs = {n: layer.macs for n, layer in layers.items()}
    rest = (sum(macs[n] * 4 * 8 for n in ("block.conv", "block.depthwise", "branch_a", "branch_b"))
            + macs["up"] * 6 * 8 + macs["head"] * 4 * 5)
    assert bit_operations(space, policy) == macs["stem"] * 4 * 6 + rest  # reads the 6-bit model input
    policy.input_bits = 32
    assert bit_operations(space, policy) == macs["stem"] * 4 * 32 + rest  # reads the float model input
    policy.input_bits = 8
    policy.layers["stem"] = policy.layers["stem"].__class__(32, 8)  # float weights: the input stays float
    assert bit_operations(space, policy) == macs["stem"] * 32 * 32 + rest


def test_policies_carry_the_input_bits(example_model, example_input, space):
    assert space.input_bits == 8 and Policy.uniform(space, 4, 8).input_bits == 8
    params = {name: choices[0] for name, choices in space.parameters().items()}
    assert space.policy_from_params(params).input_bits == 8
    float_input = SearchSpace.from_model(example_model, example_input, input_bits=32)
    assert float_input.policy_from_params(params).input_bits == 32
    assert float_input.restrict(weight={"stem": [8]}).input_bits == 32
    assert Policy.uniform(float_input, 8, 8).input_bits == 32
    assert Policy.uniform(float_input, 8, 8, input_bits=6).input_bits == 6
    with pytest.raises(ValueError, match="got 1"):
        SearchSpace.from_model(example_model, example_input, input_bits=1)
