"""The one loader reads a real NNI experiment and a real Optuna study into the same table."""

import dataclasses

import pytest

from mpqsearch.analysis import TrialRow, load_results
from mpqsearch.experiments.config import ConfigError
from mpqsearch.policy import Policy


@pytest.fixture(scope="module")
def both(nni_run, optuna_run):
    return {"nni": load_results(nni_run[1], directory=nni_run[0]),
            "optuna": load_results(optuna_run[1], directory=optuna_run[0])}


@pytest.mark.parametrize("driver,count", [("nni", 4), ("optuna", 6)])
def test_every_trial_is_read_with_params_policy_metrics_strategy_and_time(both, driver, count):
    results = both[driver]
    assert results.driver == driver and results.workload == "example"
    assert [(o.metric, o.direction) for o in results.objectives] == [("top1", "maximize"), ("size_ratio", "minimize")]
    assert len(results.rows) == count and [r.number for r in results.rows] == list(range(count))
    parameters = results.space.parameters()
    for row in results.rows:
        assert isinstance(row, TrialRow) and row.state == "complete" and row.feasible and row.fail_reason is None
        assert set(row.params) == set(parameters)
        assert results.space.params_from_policy(row.policy) == row.params
        assert {"top1", "top1_drop", "size_ratio", "size_bytes", "bops", "bops_ratio"} <= set(row.metrics)
        assert row.start > 1.6e9 and row.duration > 0
    assert sorted(r.strategy for r in results.rows[:2]) == ["uniform", "uniform"]
    assert {r.strategy for r in results.rows[2:]} == {"tuner" if driver == "nni" else "sampler"}
    uniform = {r.policy.layers["stem"].weight_bits: r for r in results.rows if r.strategy == "uniform"}
    assert uniform[8].policy.layers == Policy.uniform(results.space, 8, 8).layers
    assert results.column("top1") == [r.metrics["top1"] for r in results.rows]


def test_both_drivers_load_into_the_same_shape(both):
    nni, optuna = both["nni"], both["optuna"]
    assert type(nni) is type(optuna)
    assert set(nni.rows[0].metrics) == set(optuna.rows[0].metrics)
    assert nni.directions == optuna.directions
    # the seeded W8A8 policy measures the same on both drivers
    w8 = [next(r for r in res.rows if r.policy.layers["stem"].weight_bits == 8 and r.strategy == "uniform")
          for res in (nni, optuna)]
    assert w8[0].metrics == pytest.approx(w8[1].metrics)


def test_an_optuna_storage_url_loads_the_same_rows(optuna_run, both):
    runs, experiment_id = optuna_run
    url = f"sqlite:///{runs / experiment_id / 'optuna.db'}"
    by_url = load_results(url)  # the only study; the experiment file beside it gives policies
    by_id = both["optuna"]
    assert by_url.experiment == experiment_id
    strip = [{k: v for k, v in dataclasses.asdict(r).items() if k != "policy"} for r in by_url.rows]
    assert strip == [{k: v for k, v in dataclasses.asdict(r).items() if k != "policy"} for r in by_id.rows]
    assert [r.policy.layers for r in by_url.rows] == [r.policy.layers for r in by_id.rows]
    with pytest.raises(ConfigError, match="no study 'nope'"):
        load_results(url, study="nope")


def test_unknown_experiment_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match="no experiment 'abc' in"):
        load_results("abc", directory=tmp_path)
