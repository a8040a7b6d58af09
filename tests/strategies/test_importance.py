import pytest
import torch
from torch import nn

from mpqsearch.policy import Policy
from mpqsearch.quant.graph import UntraceableModelWarning
from mpqsearch.search_spaces.costs import model_size_bytes
from mpqsearch.strategies import StrategyContext, get_strategy
from mpqsearch.strategies.predictor import imprinted_accuracy, majority_accuracy, pooled_features, pyramid_pool
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import get_workload


@pytest.fixture(scope="module")
def digits():
    evaluator = Evaluator(get_workload("cls-digits"), latency="none", threads=1)
    return StrategyContext(evaluator.space, evaluator)


@pytest.fixture(scope="module")
def espcn():
    evaluator = Evaluator(get_workload("sr-espcn-x2"), latency="none", threads=1)
    return StrategyContext(evaluator.space, evaluator)


def test_pyramid_pool_cuts_cells_and_concatenates_grids():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert pyramid_pool(x, (1, 2)).tolist() == [[7.5, 2.5, 4.5, 10.5, 12.5]]
    cells = pyramid_pool(x, (1,), cells=(2, 2))  # one row per quadrant, row-major
    assert cells.squeeze(1).tolist() == [2.5, 4.5, 10.5, 12.5]
    assert pyramid_pool(torch.ones(3, 2, 8, 8), (1, 2, 4), cells=(2, 2)).shape == (12, 2 * 21)
    logits = torch.randn(5, 10)
    assert pyramid_pool(logits, (1, 2, 4)) is logits


def test_imprinted_classifier_and_chance():
    train = torch.tensor([[1.0, 0.1], [2.0, 0.0], [0.0, 1.0], [0.1, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[5.0, 1.0], [1.0, 4.0], [1.0, 0.2]])
    assert imprinted_accuracy(train, labels, test, torch.tensor([0, 1, 0])) == 1.0
    assert imprinted_accuracy(train, labels, test, torch.tensor([1, 1, 1])) == pytest.approx(1 / 3)
    assert majority_accuracy(torch.tensor([2, 2, 1]), torch.tensor([2, 0, 2, 2])) == 0.75


def test_untraceable_model_uses_the_layer_outputs():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = self.conv(x)
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x.relu()
            return self.fc(x.mean(dim=(2, 3)))

    with pytest.warns(UntraceableModelWarning):
        features = pooled_features(Branchy().eval(), [torch.randn(6, 1, 8, 8)], (1, 2))
    assert {name: tuple(f.shape) for name, f in features.layers.items()} == {"conv": (6, 20), "fc": (6, 3)}
    assert features.output.shape == (6, 3)


def test_digits_predictor_accuracy_and_importance(digits):
    strategy = get_strategy("importance")
    measured = strategy.layer_accuracy(digits)
    names = digits.space.names
    assert list(measured.accuracy) == list(names)
    assert all(0.0 <= a <= 1.0 for a in measured.accuracy.values())
    assert (measured.samples, measured.classes, measured.pseudo_labels) == (256, 10, False)
    # labels are the FP32 model's own predictions: the classifier's predictor agrees with them
    # as often as the model is right on the test split
    last = measured.accuracy[names[-1]]
    assert last >= 0.95
    assert last == pytest.approx(digits.evaluator.reference["top1"], abs=0.03)
    assert measured.accuracy[names[0]] > 2 * measured.chance
    importance = strategy.scores(digits)
    before = measured.chance
    for name in names:
        assert importance[name] == pytest.approx(max(0.0, measured.accuracy[name] - before))
        before = measured.accuracy[name]
    again = get_strategy("importance").scores(digits)  # a new instance measures again
    rank = sorted(names, key=importance.get)
    assert sorted(names, key=again.get) == rank and again == importance
    assert rank[-1] == "stem.0"  # from chance to most of the final accuracy in one layer


def test_seeds_meet_their_budgets_and_lie_in_the_space(digits):
    strategy = get_strategy("importance", budget=[0.12, 0.2])
    importance = strategy.scores(digits)
    fp32 = digits.evaluator.fp32_size
    seeds = strategy.seed(digits)
    assert len(seeds) == 2
    sizes = [model_size_bytes(digits.space, p) for p in seeds]
    assert sizes[0] <= 0.12 * fp32 and sizes[1] <= 0.2 * fp32 and sizes[0] < sizes[1]
    most = max(importance, key=importance.get)
    for policy in seeds:
        digits.space.params_from_policy(policy)  # raises if outside the space
        assert policy.layers[most].weight_bits == 8
        assert {c.act_bits for c in policy.layers.values()} == {8}
    # a budget that holds uniform W8A8 gets every layer to 8 bits; one below W2 gets W2 and a warning
    full = model_size_bytes(digits.space, Policy.uniform(digits.space, 8, 8)) / fp32
    assert {c.weight_bits for c in get_strategy("importance", budget=full).seed(digits)[0].layers.values()} == {8}
    with pytest.warns(UserWarning, match="lowest weight bits exceed the size budget 0.01"):
        tiny = get_strategy("importance", budget=0.01).seed(digits)[0]
    assert {c.weight_bits for c in tiny.layers.values()} == {2}


def test_prune_caps_the_least_important_layers_and_seeds_follow(digits):
    strategy = get_strategy("importance", prune_fraction=0.5, prune_bits=4, budget=0.3)
    importance = strategy.scores(digits)
    pruned = strategy.prune(digits)
    least = sorted(digits.space.names, key=importance.get)[:3]
    assert {n for n in digits.space.names if pruned.weight_choices[n] != digits.space.weight_choices[n]} == set(least)
    assert all(pruned.weight_choices[n] == (2, 3, 4) for n in least)
    seed, = strategy.seed(StrategyContext(pruned, digits.evaluator))
    pruned.params_from_policy(seed)
    assert all(seed.layers[n].weight_bits == 4 for n in least)  # 0.3 holds W8 elsewhere, capped ones at 4


def test_super_resolution_uses_kmeans_pseudo_labels_on_patches(espcn):
    strategy = get_strategy("importance", budget=0.15)
    measured = strategy.layer_accuracy(espcn)
    # two 96x96 calibration images in 8x8 cells: 2 * 12 * 12 samples, 10 k-means clusters
    assert (measured.samples, measured.classes, measured.pseudo_labels) == (288, 10, True)
    assert list(measured.accuracy) == list(espcn.space.names)
    assert all(0.0 <= a <= 1.0 for a in measured.accuracy.values())
    assert measured.accuracy["head.0"] > measured.chance
    assert strategy.accuracies(espcn) is measured.accuracy  # cached per evaluator
    seed, = strategy.seed(espcn)
    espcn.space.params_from_policy(seed)
    assert model_size_bytes(espcn.space, seed) <= 0.15 * espcn.evaluator.fp32_size


@pytest.mark.parametrize("args, option", [({"budget": 0}, "budget"), ({"budget": "big"}, "budget"),
                                          ({"holdout": 1.0}, "holdout"), ({"grids": []}, "grids"),
                                          ({"clusters": 1}, "clusters"), ({"act_bits": 1}, "act_bits"),
                                          ({"prune_fraction": 2}, "prune_fraction"), ({"colour": 1}, "colour")])
def test_bad_options_name_themselves(args, option):
    with pytest.raises(ValueError, match=option):
        get_strategy("importance", **args)


def test_too_few_samples_for_the_clusters(espcn):
    strategy = get_strategy("importance", patch=48, clusters=10)  # 2 * 2 * 2 cells
    with pytest.raises(ValueError, match="8 calibration samples cannot form 10 clusters"):
        strategy.layer_accuracy(espcn)
