from dataclasses import replace

import pytest

from mpqsearch.search_spaces import SearchSpace
from mpqsearch.strategies import StrategyContext, get_strategy
from mpqsearch.strategies.sensitivity import probe_policy
from mpqsearch.trials import Evaluator
from mpqsearch.workloads.example import example_workload
from mpqsearch.workloads.metrics import top1


@pytest.fixture(scope="module")
def workload():
    return example_workload()


@pytest.fixture(scope="module")
def context(workload):
    evaluator = Evaluator(workload, latency="none")
    return StrategyContext(evaluator.space, evaluator)


@pytest.fixture(scope="module")
def drops(context):
    return get_strategy("sensitivity").scores(context)


def test_a_probe_at_32_bits_is_the_float_model(context):
    scores = get_strategy("sensitivity", probe_bits=[32, 32]).scores(context)
    assert scores == {n: 0.0 for n in context.space.names}


def test_probe_quantizes_one_layer_and_its_tied_activation(context):
    space = context.space
    assert space.layer("stem").tied_group == space.layer("block.depthwise").tied_group  # the residual add
    policy = probe_policy(space, ["stem"], (4, 8))
    bits = {n: (c.weight_bits, c.act_bits) for n, c in policy.layers.items()}
    assert bits == {"stem": (4, 8), "block.conv": (32, 32), "block.depthwise": (32, 8), "branch_a": (32, 32),
                    "branch_b": (32, 32), "up": (32, 32), "head": (32, 32)}


def test_scores_cover_every_layer_and_repeat_exactly_with_a_fresh_evaluator(workload, context, drops):
    assert list(drops) == list(context.space.names)
    assert any(d > 0 for d in drops.values())
    again = Evaluator(workload, latency="none")  # its own probe cache entry: measured anew
    assert get_strategy("sensitivity").scores(StrategyContext(again.space, again)) == drops


def test_seed_and_prune_reuse_the_probes(context, drops, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(context.evaluator, "evaluate", fail)
    strategy = get_strategy("sensitivity")  # another instance, same evaluator
    strategy.seed(context)
    strategy.prune(context)
    assert strategy.scores(context) == drops


def test_stage_probes_of_one_layer_stages_equal_the_layer_probes(context, drops):
    strategy = get_strategy("sensitivity", unit="stage")
    stage_drops = strategy.unit_drops(context)
    assert list(stage_drops) == ["stem", "block", "branch_a", "branch_b", "up", "head"]
    for name in ("stem", "branch_a", "branch_b", "up", "head"):
        assert stage_drops[name] == drops[name]
    scores = strategy.scores(context)
    assert scores["block.conv"] == scores["block.depthwise"] == stage_drops["block"]


def _ranking(drops):
    return sorted(drops, key=lambda n: -drops[n])


def test_seeds_give_the_most_sensitive_layers_the_high_bits(context, drops):
    space = context.space
    ranking = _ranking(drops)
    assert get_strategy("sensitivity").ranking(context) == ranking
    seeds = get_strategy("sensitivity", top_k=[1, 3], top_fractions=[0.5], low_bits=[[4, 8]]).seed(context)
    assert len(seeds) == 3  # k = 1, 3, ceil(0.5 * 7) = 4
    for policy, k in zip(seeds, (1, 3, 4), strict=True):
        space.params_from_policy(policy)
        high = {n for n in space.names if policy.layers[n].weight_bits == 8}
        assert high == set(ranking[:k])
        assert all(policy.layers[n].weight_bits == 4 for n in ranking[k:])


def test_prune_keeps_the_most_sensitive_fraction_high(context, drops):
    ranking = _ranking(drops)
    pruned = get_strategy("sensitivity", prune_fraction=0.3).prune(context)  # ceil(0.3 * 7) = 3 layers
    for n in ranking[:3]:
        assert pruned.weight_choices[n] == (8,) and pruned.act_choices[n] == (8,)
    for n in ranking[3:]:
        assert pruned.weight_choices[n] == context.space.weight_choices[n]
    seeds = get_strategy("sensitivity", high_bits=[8, 8]).seed(StrategyContext(pruned, context.evaluator))
    for policy in seeds:
        pruned.params_from_policy(policy)


def test_minimized_metric_scores_its_increase_and_float_layers_are_not_probed(workload, drops):
    def error(output, target):
        return {"error": 1 - top1(output, target)["top1"]}

    evaluator = Evaluator(replace(workload, metric=error, directions={"error": "minimize"}), latency="none")
    space = SearchSpace.from_model(evaluator.model, workload.example_input, include=["up", "head"])
    scores = get_strategy("sensitivity").scores(StrategyContext(space, evaluator))
    assert scores == {"up": drops["up"], "head": drops["head"]}


@pytest.mark.parametrize("args, named", [
    ({"unit": "block"}, "unit"), ({"probe_bits": [4]}, "probe_bits"), ({"high_bits": [8, 1]}, "high_bits"),
    ({"low_bits": []}, "low_bits"), ({"top_k": [-1]}, r"top_k\[0\]"), ({"top_fractions": [1.5]}, r"top_fractions\[0\]"),
    ({"top_k": [], "top_fractions": []}, "top_k"), ({"prune_fraction": 2}, "prune_fraction"), ({"k": 3}, "'k'"),
])
def test_bad_arguments_name_the_option(args, named):
    with pytest.raises(ValueError, match=named):
        get_strategy("sensitivity", **args)
