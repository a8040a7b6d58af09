import pytest
import torch

from mpqsearch.search_spaces import SearchSpace
from mpqsearch.strategies import StrategyContext, get_strategy
from mpqsearch.strategies.channel_ratio import stage_scores
from mpqsearch.workloads.models import ESPCN, SRResNet

SMALL_INPUT = (1, 3, 12, 12)


def _space(model, **options):
    return SearchSpace.from_model(model, torch.rand(SMALL_INPUT, generator=torch.Generator().manual_seed(0)), **options)


@pytest.fixture(scope="module")
def srresnet():
    return _space(SRResNet())


@pytest.fixture(scope="module")
def espcn():
    return _space(ESPCN())


def _bits(policy, layer):
    config = policy.layers[layer]
    return config.weight_bits, config.act_bits


def test_srresnet_head_upsampler_and_tail_are_sensitive_the_body_is_not(srresnet):
    # head 3 -> 48, body 48 -> 48, upsampler 48 -> 192 (before the pixel shuffle), tail 48 -> 3
    assert stage_scores(srresnet) == {"head": 4.0, "body": 0.0, "upsampler": 2.0, "tail": 4.0}
    strategy = get_strategy("channel_ratio")
    assert strategy.sensitive_stages(srresnet) == ["head", "upsampler", "tail"]
    scores = strategy.scores(StrategyContext(srresnet, evaluator=None))
    assert list(scores) == list(srresnet.names)
    assert scores["head.0"] == scores["tail"] == 4.0 and scores["upsampler.0"] == 2.0
    assert all(scores[n] == 0.0 for n in srresnet.names if n.startswith("body."))


def test_espcn_body_halving_the_channels_sits_on_the_default_threshold(espcn):
    # head 3 -> 64, body 64 -> 32 (|log2| exactly 1, not above the default threshold), upsampler 32 -> 12
    scores = stage_scores(espcn)
    assert scores["body"] == 1.0 and scores["head"] > 4 and 1 < scores["upsampler"] < 2
    assert get_strategy("channel_ratio").sensitive_stages(espcn) == ["head", "upsampler"]
    assert get_strategy("channel_ratio", threshold=0.5).sensitive_stages(espcn) == ["head", "body", "upsampler"]
    assert get_strategy("channel_ratio", threshold=2).sensitive_stages(espcn) == ["head"]


def test_the_spaces_stage_map_decides_what_a_stage_is():
    # head and body as one stage "front": 3 channels in, 48 out
    space = _space(SRResNet(), stages={"head": "front", "body": "front"})
    assert stage_scores(space) == {"front": 4.0, "upsampler": 2.0, "tail": 4.0}
    assert get_strategy("channel_ratio", threshold=3).sensitive_stages(space) == ["front", "tail"]


def test_seeds_give_sensitive_stages_the_high_bits_and_lie_in_the_space(srresnet):
    seeds = get_strategy("channel_ratio").seed(StrategyContext(srresnet, evaluator=None))
    assert len(seeds) == 2  # W4A8 and W6A8 for the body
    body = [n for n in srresnet.names if n.startswith("body.")]
    for policy, low in zip(seeds, (4, 6), strict=True):
        srresnet.params_from_policy(policy)  # raises if outside the space
        assert all(_bits(policy, n) == (8, 8) for n in ("head.0", "upsampler.0", "tail"))
        assert {policy.layers[n].weight_bits for n in body} == {low}
        assert {policy.layers[n].act_bits for n in body} == {8}


def test_seed_family_over_thresholds_and_bits_drops_repeats(espcn):
    strategy = get_strategy("channel_ratio", seed_thresholds=[1, 1.2, 3], high_bits=[6, 6], low_bits=[[2, 4]])
    seeds = strategy.seed(StrategyContext(espcn, evaluator=None))
    # thresholds 1 and 1.2 both mark head and upsampler; 3 marks the head only
    assert [[_bits(p, n) for n in espcn.names] for p in seeds] == [
        [(6, 6), (2, 4), (6, 6)],
        [(6, 6), (2, 4), (2, 4)],
    ]


def test_prune_keeps_only_high_choices_in_sensitive_stages(srresnet):
    pruned = get_strategy("channel_ratio").prune(StrategyContext(srresnet, evaluator=None))
    for n in ("head.0", "upsampler.0", "tail"):
        assert pruned.weight_choices[n] == (8,) and pruned.act_choices[n] == (8,)
    assert pruned.weight_choices["body.0.conv1"] == srresnet.weight_choices["body.0.conv1"]
    assert pruned.act_choices["body.0.conv1"] == srresnet.act_choices["body.0.conv1"]
    # body.0.conv2 shares its activation with the head (the long skip's add): narrowed with it
    assert pruned.act_choices["body.0.conv2"] == (8,)
    for policy in get_strategy("channel_ratio").seed(StrategyContext(pruned, evaluator=None)):
        pruned.params_from_policy(policy)


def test_prune_keeps_the_highest_choice_where_none_reaches_the_high_bits(espcn):
    space = espcn.restrict(weight={"head.0": [2, 4, 6], "body.0": [2, 4, 6]})
    pruned = get_strategy("channel_ratio").prune(StrategyContext(space, evaluator=None))
    assert pruned.weight_choices["head.0"] == (6,) and pruned.weight_choices["upsampler.0"] == (8,)
    assert pruned.weight_choices["body.0"] == (2, 4, 6)
    seeds = get_strategy("channel_ratio").seed(StrategyContext(space, evaluator=None))
    assert [_bits(p, "head.0") for p in seeds] == [(6, 8), (6, 8)]


@pytest.mark.parametrize("args, named", [
    ({"threshold": -1}, "threshold"), ({"threshold": "far"}, "threshold"),
    ({"seed_thresholds": [1, None]}, "seed_thresholds[1]"), ({"seed_thresholds": []}, "seed_thresholds"),
    ({"high_bits": [8]}, "high_bits"), ({"low_bits": [[4, 1]]}, "low_bits[0]"),
    ({"threshold_bits": 8}, "threshold_bits"),
])
def test_bad_arguments_name_the_option(args, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[")):
        get_strategy("channel_ratio", **args)
