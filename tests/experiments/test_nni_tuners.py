"""mpqsearch's NNI tuners driven as NNI's dispatcher drives them, across a resume (a new tuner
object on the same state file, as NNI rebuilds it), without an NNI manager."""

import json

import pytest

from mpqsearch.experiments.drivers.nni_tuners.mpqsearch_tuners import GuardedTuner, MultiObjectiveTuner

SPACE = {f"x{i}": {"_type": "choice", "_value": [2, 4, 8]} for i in range(4)}
SEEDS = [{f"x{i}": bits for i in range(4)} for bits in (8, 2)]


def _metric(params):
    return {"default": float(sum(params.values())), "top1": float(sum(params.values())), "size_ratio": 0.1}


def _multi(state_file):
    tuner = MultiObjectiveTuner([["top1", "maximize"], ["size_ratio", "minimize"]], [["size_ratio", 0.5, None]],
                                sampler="NSGAII", sampler_args={"seed": 0, "population_size": 4}, seeds=SEEDS,
                                state_file=state_file)
    tuner.update_search_space(SPACE)
    return tuner


def _guarded(state_file):
    tuner = GuardedTuner("Random", {"seed": 0}, seeds=SEEDS, optimize_mode="maximize", state_file=state_file)
    tuner.update_search_space(SPACE)
    return tuner


def _run(tuner, first_id, count, finished):
    """Hand out ``count`` parameters and finish them; returns what was handed out."""
    handed = []
    for parameter_id in range(first_id, first_id + count):
        params = tuner.generate_parameters(parameter_id)
        handed.append(params)
        tuner.receive_trial_result(parameter_id, params, _metric(params), trial_job_id=f"job{parameter_id}")
        tuner.trial_end(parameter_id, True)
        finished.append({"parameter": params, "value": _metric(params), "trialJobId": f"job{parameter_id}"})
    return handed


def _key(params):
    return json.dumps({k: int(v) for k, v in params.items()}, sort_keys=True)


@pytest.mark.parametrize("make", [_multi, _guarded], ids=["MultiObjective", "Guarded"])
def test_a_resumed_tuner_hands_out_no_policy_twice_and_no_seed_again(tmp_path, make):
    state = str(tmp_path / "tuner.state")
    finished = []
    first = make(state)
    handed = _run(first, 0, 6, finished)
    interrupted = first.generate_parameters(6)  # running when the manager died: NNI reruns it itself
    handed.append(interrupted)
    assert handed[:2] == SEEDS

    resumed = make(state)  # NNI rebuilds the tuner, then imports the finished trials
    resumed.import_data(finished)
    resumed.import_data([{"parameter": interrupted, "value": _metric(interrupted)}])  # the rerun's result
    handed += _run(resumed, 100, 14, [])
    assert len({_key(p) for p in handed}) == len(handed) == 21
    assert [p for p in handed[2:] if p in SEEDS] == []


def test_the_multi_objective_tuner_keeps_its_study_and_adds_only_what_it_lacks(tmp_path):
    state = str(tmp_path / "tuner.journal")
    finished = []
    first = _multi(state)
    _run(first, 0, 5, finished)
    interrupted = first.generate_parameters(5)
    resumed = _multi(state)
    trials = resumed.study.get_trials(deepcopy=False)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    assert [t.user_attrs.get("interrupted") for t in trials if t.state.name == "FAIL"] == [True]
    resumed.import_data(finished + [{"parameter": interrupted, "value": _metric(interrupted)}])
    complete = [t for t in resumed.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(complete) == 6 and complete[-1].params == interrupted


def test_without_a_state_file_the_tuners_keep_nothing(tmp_path):
    assert _run(_multi(None), 0, 2, [])[:2] == SEEDS
    assert _run(_multi(None), 0, 2, [])[:2] == SEEDS
    assert _run(_guarded(None), 0, 2, [])[:2] == SEEDS


@pytest.mark.parametrize("name", ["MultiObjective", "Guarded"])
def test_in_a_small_space_every_policy_runs_once(tmp_path, name):
    space = {f"x{i}": {"_type": "choice", "_value": [2, 8]} for i in range(3)}
    seeds = [{f"x{i}": 8 for i in range(3)}]
    if name == "MultiObjective":
        tuner = MultiObjectiveTuner([["top1", "maximize"], ["size_ratio", "minimize"]], sampler="Random",
                                    sampler_args={"seed": 0}, seeds=seeds, state_file=str(tmp_path / "s"))
    else:
        tuner = GuardedTuner("Random", {"seed": 0}, seeds=seeds, state_file=str(tmp_path / "s"))
    tuner.update_search_space(space)
    assert len({_key(p) for p in _run(tuner, 0, 8, [])}) == 8
