import pytest

from mpqsearch.example import EXAMPLE_INPUT_SHAPE, build
from mpqsearch.search_spaces import SearchSpace
from mpqsearch.strategies import get_strategy, nearest_choice, policy_from_bits


@pytest.fixture(scope="module")
def space():
    import torch
    return SearchSpace.from_model(build(), torch.randn(EXAMPLE_INPUT_SHAPE))


def test_nearest_choice_prefers_more_bits_on_a_tie():
    assert nearest_choice((2, 4, 8), 6) == 8
    assert nearest_choice((2, 4, 8), 3) == 4
    assert nearest_choice((4, 8), 16) == 8


def test_policy_from_bits_snaps_and_ties_take_the_most_bits(space):
    first, *rest = space.names
    policy = policy_from_bits(space, {first: 1}, {n: 5 for n in space.names} | {first: 7})
    assert policy.layers[first].weight_bits == 2
    assert all(policy.layers[n].weight_bits == max(space.weight_choices[n]) for n in rest)
    for members in space.tied_groups.values():
        bits = {policy.layers[m].act_bits for m in members}
        assert len(bits) == 1
        assert bits == ({7} if first in members else {5})


def test_uniform_seeds_lie_in_a_pruned_space(space):
    first = space.names[0]
    pruned = space.restrict(weight={first: [8]})
    from mpqsearch.strategies import StrategyContext
    seeds = get_strategy("uniform", bits=[[4, 4]]).seed(StrategyContext(pruned, evaluator=None))
    assert seeds[0].layers[first].weight_bits == 8
    assert {seeds[0].layers[n].weight_bits for n in space.names[1:]} == {4}
    pruned.params_from_policy(seeds[0])  # raises if outside the space


def test_distinct_keeps_the_first_of_equal_policies_whatever_their_provenance(space):
    from mpqsearch.strategies import distinct
    first = policy_from_bits(space, 4, 8)
    first.provenance["note"] = "first"
    again = policy_from_bits(space, 4, 8)
    other = policy_from_bits(space, 8, 8)
    assert distinct([first, again, other, again]) == [first, other]
    assert distinct([first, again])[0].provenance == {"note": "first"}
