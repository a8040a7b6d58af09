import math

import pytest
import torch
from torch import nn

from mpqsearch.quant.spec import LayerQuantConfig
from mpqsearch.search_spaces import SearchSpace
from mpqsearch.search_spaces.costs import model_size_bytes
from mpqsearch.strategies import StrategyContext, get_strategy, policy_from_bits
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import Workload, get_workload


@pytest.fixture(scope="module")
def example():
    evaluator = Evaluator(get_workload("example"), latency="none")
    return StrategyContext(evaluator.space, evaluator)


class ReluThenNegate(nn.Module):
    """``up`` copies the input then ReLU (unsigned output in [0, 3]); ``down`` negates it
    (signed output in [-3, 0]): both activations have clip value 3 under max clipping."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Conv2d(1, 1, 1)
        self.down = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.up.weight.fill_(1.0), self.up.bias.zero_()
            self.down.weight.fill_(-1.0), self.down.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


@pytest.fixture(scope="module")
def hand_made():
    x = torch.linspace(-3.0, 3.0, 49).reshape(1, 1, 7, 7)
    workload = Workload(name="hand-made", task="test", build_model=lambda: ReluThenNegate().eval(), example_input=x,
                        calib_data=[x], eval_data=[(x, x)], metric=lambda out, target: {"mse": (out - target).pow(2)},
                        directions={"mse": "minimize"})
    evaluator = Evaluator(workload, latency="none")
    return evaluator


def _context(evaluator, scale="product"):
    space = SearchSpace.from_model(evaluator.model, evaluator.workload.example_input,
                                   base=LayerQuantConfig(scale=scale))
    return StrategyContext(space, evaluator)


def test_hand_made_product_scales_unsigned_after_relu_signed_otherwise(hand_made):
    strategy = get_strategy("gamma", gammas=[0.15])
    context = _context(hand_made)
    scales = strategy.scales(context)
    for bits in range(2, 9):
        assert scales["up"][bits] == pytest.approx(3 / (2**bits - 1))
        assert scales["down"][bits] == pytest.approx(3 / (2 ** (bits - 1) - 1))
    # up: 3/31 = 0.097 <= 0.15 < 3/15 = 0.2 -> 5 bits; down: 3/31 <= 0.15 < 3/15 one bit later -> 6 bits
    assert strategy.layer_bits(context, 0.15) == {"up": 5, "down": 6}
    (policy,) = strategy.seed(context)
    assert (policy.layers["up"].weight_bits, policy.layers["up"].act_bits) == (5, 5)
    assert (policy.layers["down"].weight_bits, policy.layers["down"].act_bits) == (6, 6)
    assert policy.provenance["gamma"] == 0.15
    assert strategy.scores(context) == pytest.approx({"up": math.log2(3 / 127), "down": math.log2(3 / 63)})
    # act_bits fixes the activations; the rule then sets the weights only, and pruning keeps act 8
    fixed = get_strategy("gamma", gammas=[0.15], act_bits=8)
    (policy,) = fixed.seed(context)
    assert [(c.weight_bits, c.act_bits) for c in policy.layers.values()] == [(5, 8), (6, 8)]
    pruned = fixed.prune(context)
    assert pruned.act_choices == {"up": (8,), "down": (8,)}
    assert pruned.weight_choices == {"up": (5, 6, 7, 8), "down": (6, 7, 8)}


def test_hand_made_shift_gamma_between_s_2k_and_s_2k1_gives_8_minus_k_bits(hand_made):
    strategy = get_strategy("gamma")
    context = _context(hand_made, scale="shift")
    # clip 3: ceil(log2 3) = 2, so the 8-bit scale is 2^(2-8) unsigned and 2^(3-8) signed
    eight_bit = {"up": 2.0**-6, "down": 2.0**-5}
    assert {n: strategy.scales(context)[n][8] for n in eight_bit} == eight_bit
    for k in range(7):  # the weights reach 2 bits, so the floor is 2
        for name, s in eight_bit.items():
            for gamma in (s * 2**k, s * 2**k * 1.5, s * 2 ** (k + 1) * 0.999):
                assert strategy.layer_bits(context, gamma)[name] == 8 - k, (name, k, gamma)
    # activations stop at their lowest choice, 4; weights follow the rule down to 2
    policy = policy_from_bits(context.space, strategy.layer_bits(context, 1.0), strategy.layer_bits(context, 1.0))
    assert strategy.layer_bits(context, 1.0) == {"up": 2, "down": 3}
    assert [(c.weight_bits, c.act_bits) for c in policy.layers.values()] == [(2, 4), (3, 4)]


def test_larger_gamma_never_gives_a_layer_more_bits(example):
    strategy = get_strategy("gamma", count=24)
    gammas = strategy.sweep(example)
    assert gammas == sorted(gammas) and len(gammas) == 24
    previous = None
    for gamma in gammas:
        bits = strategy.layer_bits(example, gamma)
        if previous is not None:
            assert all(bits[n] <= previous[n] for n in bits)
        previous = bits
    assert set(previous.values()) == {2}  # the top of the sweep takes every layer to its floor
    seeds = strategy.seed(example)
    for before, after in zip(seeds, seeds[1:], strict=False):
        for n in example.space.names:
            assert after.layers[n].weight_bits <= before.layers[n].weight_bits
            assert after.layers[n].act_bits <= before.layers[n].act_bits
    sizes = [model_size_bytes(example.space, p) for p in seeds]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_small_gamma_keeps_8_bits_everywhere(example):
    strategy = get_strategy("gamma")
    sweep = strategy.sweep(example)
    low = sweep[0]
    assert len(sweep) == 16
    assert set(strategy.layer_bits(example, low).values()) == {8}
    assert strategy.seed(example)[0].layers == policy_from_bits(example.space, 8, 8).layers


def test_seeds_lie_in_a_pruned_space_share_tied_bits_and_are_distinct(example):
    pruned = example.space.restrict(weight={"head": [4, 8]}, act={"stem": [6, 8]})
    context = StrategyContext(pruned, example.evaluator)
    seeds = get_strategy("gamma", count=12).seed(context)
    assert 3 <= len(seeds) <= 12
    params = [pruned.params_from_policy(p) for p in seeds]  # raises outside the space
    assert all(a != b for i, a in enumerate(params) for b in params[i + 1:])
    for policy in seeds:
        assert policy.layers["head"].weight_bits in (4, 8)
        for members in pruned.tied_groups.values():
            assert len({policy.layers[m].act_bits for m in members}) == 1
    # the stem's tied group (stem + block.depthwise) reads one shared scale
    scales = get_strategy("gamma").scales(example)
    assert scales["stem"] is scales["block.depthwise"]


def test_same_policy_from_two_gammas_is_seeded_once(example):
    strategy = get_strategy("gamma")
    gamma = strategy.sweep(example)[3]
    assert len(get_strategy("gamma", gammas=[gamma, gamma * 1.0001]).seed(example)) == 1


def test_prune_keeps_choices_at_or_above_the_largest_gamma(example):
    gammas = get_strategy("gamma", count=8).sweep(example)[:4]
    strategy = get_strategy("gamma", gammas=gammas)
    pruned = strategy.prune(example)
    lowest = strategy.seed(example)[-1]
    for n in example.space.names:
        assert pruned.weight_choices[n] == tuple(b for b in example.space.weight_choices[n]
                                                 if b >= lowest.layers[n].weight_bits)
        assert pruned.act_choices[n] == tuple(b for b in example.space.act_choices[n] if b >= lowest.layers[n].act_bits)
    assert pruned.parameters() != example.space.parameters()
    for policy in strategy.seed(example):
        pruned.params_from_policy(policy)


def test_scales_are_computed_once_per_context(example):
    strategy = get_strategy("gamma")
    assert strategy.scales(example) is strategy.scales(example)
    strategy.prune(example)
    assert strategy.scales(example) is strategy.scales(StrategyContext(example.space.restrict(), example.evaluator))


@pytest.mark.parametrize("args, named", [
    ({"gammas": [0.1, -1]}, "gammas[1]"), ({"gammas": "0.1"}, "gammas"), ({"gammas": []}, "gammas"),
    ({"count": 1}, "count"), ({"count": 2.5}, "count"), ({"gammas": [0.1], "count": 4}, "gammas"),
    ({"gama": [0.1]}, "gama"), ({"act_bits": 1}, "act_bits"), ({"act_bits": "8"}, "act_bits"),
])
def test_bad_arguments_name_the_option(args, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        get_strategy("gamma", **args)
