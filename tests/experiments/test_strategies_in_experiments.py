"""Every strategy plugs into an experiment file, for seeding and pruning, under both drivers."""

import io
import json

import optuna
import pytest

from mpqsearch.analysis.report import report_figures
from mpqsearch.analysis.results import load_results
from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import load_config
from mpqsearch.experiments.setup import build_setup
from mpqsearch.experiments.trial_records import read_trial_records
from mpqsearch.strategies import strategy_names
from mpqsearch.strategies.sensitivity import SensitivityStrategy

STRATEGY_ARGS = {"importance": {"budget": [0.2]}, "gamma": {"count": 4}, "uniform": {"bits": [[8, 8]]}}


@pytest.mark.parametrize("name", strategy_names())
def test_each_strategy_seeds_and_prunes_an_experiment(experiment_file, tmp_path, name):
    ref = {"name": name, "args": STRATEGY_ARGS.get(name, {})}
    config = load_config(experiment_file(strategies={"seed": [ref], "prune": [ref]}))
    setup = build_setup(config, cache_dir=tmp_path / "cache")
    seeds = setup.seeds()
    assert seeds and all(p.provenance["strategy"] == name for p in seeds)
    for policy in seeds:
        setup.space.params_from_policy(policy)  # raises where a seed lies outside the pruned space


def test_pruning_runs_once_per_experiment_cache(experiment_file, tmp_path, monkeypatch):
    config = load_config(experiment_file(strategies={"prune": [{"name": "sensitivity",
                                                                "args": {"prune_fraction": 0.5}}]}))
    first = build_setup(config, cache_dir=tmp_path / "cache").space
    calls = []
    monkeypatch.setattr(SensitivityStrategy, "prune", lambda self, context: calls.append(1) or context.space)
    again = build_setup(config, cache_dir=tmp_path / "cache").space  # as a trial process does
    assert calls == []
    assert again.weight_choices == first.weight_choices and again.act_choices == first.act_choices
    assert any(len(choices) == 1 for choices in first.weight_choices.values())
    build_setup(config, cache_dir=tmp_path / "other-cache")
    assert calls == [1]


def _strategies():
    return {"seed": [{"name": "sensitivity", "args": {"top_k": [2], "top_fractions": [], "low_bits": [[4, 8]]}},
                     {"name": "gamma", "args": {"count": 3}}],
            "prune": [{"name": "channel_ratio", "args": {"threshold": 0.5}}]}


def test_optuna_search_runs_strategy_seeds_first_in_the_pruned_space(experiment_file, tmp_path):
    config = load_config(experiment_file(strategies=_strategies(), budget={"max_trials": 6, "concurrency": 1}))
    setup = build_setup(config)
    seeds = setup.seeds()
    experiment_id = launcher.launch(config, out=io.StringIO())
    study = optuna.load_study(study_name=experiment_id,
                              storage=f"sqlite:///{tmp_path / 'runs' / experiment_id / 'optuna.db'}")
    trials = study.get_trials()
    strategies = [t.user_attrs["strategy"] for t in trials]
    assert strategies[:len(seeds)] == [p.provenance["strategy"] for p in seeds]
    assert set(strategies[:len(seeds)]) == {"sensitivity", "gamma"}
    assert [t.params for t in trials[:len(seeds)]] == [setup.space.params_from_policy(p) for p in seeds]
    parameters = setup.space.parameters()
    assert all(t.params[name] in parameters[name] for t in trials for name in t.params)
    # the strategies' per-layer scores reach the report
    results = load_results(experiment_id, directory=tmp_path / "runs")
    assert sorted(results.strategy_scores) == ["channel_ratio: |log2 stage in/out channels|",
                                               "gamma: log2 gamma at the first bit dropped",
                                               "sensitivity: metric drop, one layer at W4A8"]
    assert all(set(scores) == set(setup.space.names) for scores in results.strategy_scores.values())
    assert "strategy-scores" in report_figures(results)


def test_nni_search_runs_strategy_seeds_first_in_the_pruned_space(experiment_file, tmp_path):
    config = load_config(experiment_file(driver="nni", tuner={"name": "Random", "args": {"seed": 0}},
                                         port=18647, strategies=_strategies(),
                                         budget={"max_trials": 5, "concurrency": 1}))
    experiment_id = launcher.launch(config, out=io.StringIO())
    run_dir = tmp_path / "runs" / experiment_id
    seeds = json.loads((run_dir / "seeds.json").read_text())
    records = sorted(read_trial_records(run_dir).values(), key=lambda r: r["sequence"])
    assert len(records) == 5 and all(r["state"] == "SUCCEEDED" for r in records)
    assert [r["params"] for r in records[:len(seeds)]] == [s["params"] for s in seeds]
    assert {r["strategy"] for r in records[:len(seeds)]} == {"sensitivity", "gamma"}
    parameters = build_setup(config, cache_dir=run_dir / "cache").space.parameters()
    assert all(r["params"][name] in parameters[name] for r in records for name in r["params"])
