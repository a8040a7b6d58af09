import io
import subprocess
import sys

import optuna

from mpqsearch.analysis import load_results
from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import load_config
from mpqsearch.experiments.progress import Progress, TrialCounts
from mpqsearch.objectives import Constraint, Objective, ObjectiveSet, feasible


def test_the_feasibility_rule_reads_optuna_5_dicts_lists_and_nothing():
    assert feasible({"psnr_drop<=1": 0.0, "size_ratio<=0.25": -0.1}) and feasible([-1.0, 0.0]) and feasible(None)
    assert not feasible({"psnr_drop<=1": 0.5}) and not feasible([0.0, 1e-9])


def test_two_bounds_on_one_metric_are_two_constraints_in_optuna():
    objectives = ObjectiveSet([Objective("top1", "maximize")],
                              [Constraint("size_ratio", max=0.25), Constraint("size_ratio", min=0.1)])
    assert [c.name for c in objectives.constraints] == ["size_ratio<=0.25", "0.1<=size_ratio"]
    assert Constraint("size_ratio", max=0.25, min=0.1).name == "0.1<=size_ratio<=0.25"
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for name, violation in objectives.violations({"top1": 0.9, "size_ratio": 0.05}).items():
        trial.set_constraint(name, violation)
    study.tell(trial, 0.9)
    constraints = study.trials[0].constraints
    assert constraints == {"size_ratio<=0.25": -0.2, "0.1<=size_ratio": 0.05} and not feasible(constraints)
    assert objectives.scalarize({"top1": 0.9, "size_ratio": 0.05}) < 0  # behind every feasible trial


def test_progress_shows_the_feasible_front_of_a_multi_objective_search():
    objectives = ObjectiveSet([Objective("psnr", "maximize"), Objective("size_ratio", "minimize")], [])
    out = io.StringIO()
    progress = Progress(objectives, 10, multi_objective=True, out=out)
    progress.show(TrialCounts(0, 0, 1, []))
    progress.show(TrialCounts(3, 1, 0, [[33.0, 0.25], [32.0, 0.13], [31.0, 0.2]]))  # the last is dominated
    progress.show(TrialCounts(3, 1, 0, [[33.0, 0.25], [32.0, 0.13], [31.0, 0.2]]))  # nothing changed: no line
    assert out.getvalue().splitlines() == [
        "  trials 0/10: 0 done, 0 failed, 1 running; no feasible trial yet",
        "  trials 4/10: 3 done, 1 failed, 0 running; feasible front 2 (psnr 32..33, size_ratio 0.13..0.25)"]
    single = io.StringIO()
    Progress(objectives, 10, multi_objective=False, out=single).show(TrialCounts(2, 0, 0, [[33.0, 0.25], [32.0, 0.13]]))
    assert single.getvalue().endswith("; best psnr 33\n")


def test_infeasible_trials_are_recorded_so_and_left_out_of_the_front(experiment_file, tmp_path):
    path = experiment_file(constraints=[{"metric": "size_ratio", "max": 0.2}, {"metric": "top1_drop", "max": 0.5}])
    out = io.StringIO()
    experiment_id = launcher.launch(load_config(path), out=out)
    results = load_results(experiment_id, directory=tmp_path / "runs", policies=False)
    sizes = {row.number: row.metrics["size_ratio"] for row in results.complete()}
    assert {row.number for row in results.complete(feasible_only=True)} == {
        row.number for row in results.complete() if sizes[row.number] <= 0.2 and row.metrics["top1_drop"] <= 0.5}
    assert any(size > 0.2 for size in sizes.values())  # the W8A8 seed: infeasible, and so shown
    assert "feasible front" in out.getvalue()


def test_the_torch_free_parts_import_without_torch():
    code = ("import sys; import mpqsearch.objectives; "
            "sys.path.insert(0, 'mpqsearch/experiments/drivers/nni_tuners'); import mpqsearch_tuners; "
            "print(sorted(m for m in ('torch', 'onnx', 'mpqsearch.policy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert result.stdout.strip() == "[]"
