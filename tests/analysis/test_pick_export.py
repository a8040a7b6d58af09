"""Pick rules on hand-made trials; export then apply on a real experiment through the CLI."""

import dataclasses

import numpy as np
import onnx
import onnxruntime
import pytest
import yaml
from onnx import numpy_helper

from mpqsearch import Policy
from mpqsearch.analysis.export import write_onnx
from mpqsearch.analysis.pick import PickError, parse_conditions, pick
from mpqsearch.analysis.table import Results, TrialRow
from mpqsearch.cli import main
from mpqsearch.objectives import Objective, metric_directions
from mpqsearch.policy import load_policy
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import get_workload

OBJECTIVES = [Objective("top1", "maximize"), Objective("size_ratio", "minimize")]


def hand_results():
    table = [(0.97, 0.30), (0.97, 0.25), (0.90, 0.20), (0.60, 0.10), (0.99, 0.05)]
    rows = [TrialRow(i, str(i), "complete", {}, {"top1": a, "top1_drop": round(1 - a, 6), "size_ratio": s})
            for i, (a, s) in enumerate(table)]
    rows[4].feasible = False  # violates a constraint: never picked
    rows.append(TrialRow(5, "5", "failed", {}, fail_reason="MetricError: nan"))
    return Results("hand", "optuna", "example", rows, OBJECTIVES,
                   metric_directions(OBJECTIVES, {"top1": "maximize"}, []))


@pytest.mark.parametrize("rule,number", [
    ("best:top1", 1),                                   # tie at 0.97 goes to the smaller model
    ("best:size_ratio", 3),
    ("min:size_ratio where top1_drop<=0.1", 2),
    ("min:size_ratio where top1_drop <= 0.05 and size_ratio>0.26", 0),
    ("max:top1 where size_ratio<0.25", 2),
    ("knee", 2),
])
def test_rules_pick_among_feasible_completed_trials(rule, number):
    assert pick(hand_results(), rule).number == number


@pytest.mark.parametrize("rule,message", [
    ("min:size_ratio where top1_drop<=0.001",
     r"^rule 'min:size_ratio where top1_drop<=0.001' matches nothing: none of 4 completed trials has "
     r"top1_drop<=0.001 \(closest top1_drop 0.03\)$"),
    ("best:psnr", r"unknown metric 'psnr' \(recorded: size_ratio, top1, top1_drop\)"),
    ("min:size_ratio where psnr_drop<=0.1", "unknown metric 'psnr_drop'"),
    ("smallest:size_ratio", "cannot read rule"),
    ("min:size_ratio where top1_drop is small", "cannot read condition 'top1_drop is small'"),
])
def test_a_rule_that_matches_nothing_or_cannot_be_read_says_so_in_one_line(rule, message):
    with pytest.raises(PickError, match=message) as caught:
        pick(hand_results(), rule)
    assert "\n" not in str(caught.value)


def test_conditions_join_with_and_or_commas():
    assert parse_conditions("a<=1, b>2e-3 and c==-1") == [("a", "<=", 1.0), ("b", ">", 0.002), ("c", "==", -1.0)]


def test_export_then_apply_reproduces_the_recorded_metrics(optuna_run, tmp_path, capsys):
    runs, experiment_id = optuna_run
    policy_path, onnx_path = tmp_path / "policy.yaml", tmp_path / "model.onnx"
    assert main(["export", experiment_id, "--directory", str(runs), "--pick", "min:size_ratio where top1_drop<=0.5",
                 "-o", str(policy_path), "--onnx", str(onnx_path)]) == 0
    policy = load_policy(policy_path)
    assert policy.provenance["experiment"] == experiment_id and policy.provenance["driver"] == "optuna"
    assert policy.provenance["strategy"] in ("uniform", "sampler") and policy.provenance["workload"] == "example"
    assert {"top1", "size_ratio", "bops"} <= set(policy.metrics) and policy.metrics["top1_drop"] <= 0.5
    assert policy.provenance["latency"] == {"backend": "none", "threads": 1, "target": "portable"}
    assert onnxruntime.InferenceSession(str(onnx_path)).get_inputs()
    capsys.readouterr()
    assert main(["apply", str(policy_path)]) == 0
    out = capsys.readouterr().out
    assert "DIFFERS" not in out and f"all {len(policy.metrics)} recorded metrics reproduce within noise" in out

    data = yaml.safe_load(policy_path.read_text())
    data["metrics"]["top1"] += 0.25
    policy_path.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit) as exited:
        main(["apply", str(policy_path), "--workload", "example"])
    assert exited.value.code == 1
    assert "1 of" in capsys.readouterr().out


def test_export_of_a_rule_matching_nothing_is_a_one_line_cli_error(optuna_run, tmp_path, capsys):
    runs, experiment_id = optuna_run
    code = main(["export", experiment_id, "--directory", str(runs), "--pick", "min:size_ratio where top1_drop<0",
                 "-o", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mpqsearch: error: rule 'min:size_ratio where top1_drop<0' matches nothing")
    assert err.count("\n") == 1 and not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("recorded,given,dtype,largest", [
    ("portable", None, np.int8, 64), ("vnni", None, np.int8, 127), ("vnni", "portable", np.uint8, 255)])
def test_onnx_export_follows_the_target_the_policy_was_quantized_and_timed_for(recorded, given, dtype, largest,
                                                                                tmp_path):
    """A portable policy's 8-bit weights keep their levels within +-64 in int8 (exact on any x86
    CPU); a vnni policy's use the full range in int8, or uint8 (exact, slower) exported portable."""
    workload = get_workload("example")
    policy = Policy.uniform(Evaluator(workload, latency="none").space, 8, 8)
    policy = dataclasses.replace(policy, target=recorded, provenance={"latency": {"backend": "onnxruntime",
                                                                                  "threads": 1, "target": recorded}})
    path = write_onnx(policy, workload, tmp_path / "model.onnx", given)
    tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    levels = tensors["head.parametrizations.weight.0.levels"]
    assert levels.dtype == dtype and np.abs(levels.astype(int)).max() <= largest
