"""What a run tells its sampler, from a real setup of the example workload: exact additive costs,
the sensitivity prior, non-additive objectives left to the model, and distinct, capped seeds."""

import pytest

from mpqsearch.experiments.config import parse_config
from mpqsearch.experiments.sampler_inputs import model_inputs, sampler_context
from mpqsearch.experiments.setup import build_setup
from mpqsearch.search_spaces.costs import size_ratio


def _setup(tmp_path, **changes):
    data = {"workload": "example", "search_space": {"weight_bits": [2, 4, 8], "act_bits": [4, 8]},
            "objectives": [{"metric": "top1", "direction": "maximize"},
                           {"metric": "size_ratio", "direction": "minimize"},
                           {"metric": "bops_ratio", "direction": "minimize"}],
            "sampler": {"name": "SensitivityModel", "args": {"seed": 0}},
            "latency": {"backend": "none"}, **changes}
    return build_setup(parse_config(data), cache_dir=tmp_path / "cache")


def test_size_is_an_exact_cost_the_metric_has_a_prior_bops_are_measured(tmp_path):
    setup = _setup(tmp_path)
    inputs = model_inputs(setup)
    assert inputs.kinds == ["measured", "cost", "measured"]  # BOPs multiply weight and activation bits
    params = {n: c[0] for n, c in inputs.choices.items()}
    predicted = inputs.base[1] + sum(inputs.costs["1"][n][0] for n in params)
    assert predicted == pytest.approx(size_ratio(setup.space, setup.space.policy_from_params(params)), abs=1e-12)
    weights = [n for n in inputs.choices if n.endswith("/w")]
    assert set(inputs.prior["0"]) == set(weights)
    for name in weights:  # zero at the highest choice, more loss at fewer bits
        low, mid, top = inputs.prior["0"][name]
        assert top == 0 and low >= mid >= 0
    again = _setup(tmp_path)  # a worker, a resume: read back from the cache, nothing probed
    assert model_inputs(again).to_dict() == inputs.to_dict()
    context = sampler_context(setup, 2)
    assert context.inputs is not None and context.budget == 20 and context.seeds == 2


def test_seeds_are_distinct_and_capped_at_a_share_of_the_budget(tmp_path):
    seeds = {"seed": [{"name": "uniform", "args": {"bits": [[8, 8], [8, 8], [4, 8], [2, 8], [2, 4]]}}]}
    setup = _setup(tmp_path, strategies=seeds, budget={"max_trials": 12})
    policies = setup.seeds()
    params = [tuple(sorted(setup.space.params_from_policy(p).items())) for p in policies]
    assert len(params) == len(set(params)) == 3  # a quarter of 12; the repeated W8A8 counts once
    setup = _setup(tmp_path, strategies={**seeds, "seed_share": 1.0}, budget={"max_trials": 12})
    assert len(setup.seeds()) == 4
