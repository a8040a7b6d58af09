"""Pareto filtering, hypervolume and knee on hand-made points with hand-computed answers."""

import numpy as np
import pytest

from mpqsearch.analysis.pareto import hypervolume, hypervolume_history, knee, nadir, pareto_front, pareto_mask
from mpqsearch.analysis.table import TrialRow

ACC_SIZE = [("top1", "maximize"), ("size_ratio", "minimize")]


def row(number, state="complete", feasible=True, **metrics):
    return TrialRow(number=number, trial_id=str(number), state=state, params={}, metrics=metrics, feasible=feasible)


def test_pareto_mask_minimize_keeps_ties_and_drops_dominated():
    values = np.array([[1, 3], [2, 2], [3, 1], [3, 3], [2, 2], [2.5, 2.5]])
    assert pareto_mask(values, ["minimize", "minimize"]).tolist() == [True, True, True, False, True, False]


def test_pareto_mask_mixed_directions_and_three_objectives():
    values = np.array([[0.9, 0.5], [0.8, 0.3], [0.7, 0.4], [0.9, 0.6]])
    assert pareto_mask(values, ["maximize", "minimize"]).tolist() == [True, True, False, False]
    values3 = np.array([[1, 1, 5], [1, 5, 1], [5, 1, 1], [2, 2, 6]])
    assert pareto_mask(values3, ["minimize"] * 3).tolist() == [True, True, True, False]


def test_pareto_front_of_rows_sorted_by_first_objective_skipping_rows_without_metrics():
    rows = [row(0, top1=0.9, size_ratio=0.5), row(1, top1=0.8, size_ratio=0.3), row(2, top1=0.7, size_ratio=0.4),
            row(3, top1=0.99)]
    assert [r.number for r in pareto_front(rows, ACC_SIZE)] == [1, 0]
    with pytest.raises(ValueError, match="two or three"):
        pareto_front(rows, ACC_SIZE[:1])


@pytest.mark.parametrize("values,reference,directions,expected", [
    # three staircase boxes: 1*1 + 1*2 + 1*3 (the dominated (3, 3) adds nothing)
    ([[1, 3], [2, 2], [3, 1], [3, 3]], [4, 4], ["minimize"] * 2, 6.0),
    # 0.4*0.5 + 0.3*0.7 - overlap 0.3*0.5
    ([[0.9, 0.5], [0.8, 0.3], [0.7, 0.4]], [0.5, 1.0], ["maximize", "minimize"], 0.26),
    ([[5, 5]], [4, 4], ["minimize"] * 2, 0.0),                 # beyond the reference: nothing
    ([[1, 1, 1]], [2, 3, 4], ["minimize"] * 3, 6.0),           # one box 1*2*3
    ([[1, 2, 2], [2, 1, 2]], [3, 3, 3], ["minimize"] * 3, 3.0),  # 2 + 2 - overlap 1
    ([], [1, 1], ["minimize"] * 2, 0.0),
])
def test_hypervolume_matches_hand_computed_volumes(values, reference, directions, expected):
    points = np.array(values, dtype=float).reshape(-1, len(reference))
    assert hypervolume(points, reference, directions) == pytest.approx(expected)


def test_hypervolume_history_counts_failed_and_infeasible_trials_without_volume():
    rows = [row(0, top1=0.9, size_ratio=0.5), row(1, state="failed"), row(2, feasible=False, top1=1.0, size_ratio=0.1),
            row(3, top1=0.8, size_ratio=0.3)]
    reference = nadir(rows, ACC_SIZE)
    assert reference == [0.8, 0.5]
    history = hypervolume_history(rows, ACC_SIZE, [0.5, 1.0])
    assert [count for count, _ in history] == [1, 2, 3, 4]
    assert [volume for _, volume in history] == pytest.approx([0.2, 0.2, 0.2, 0.26])


def test_knee_is_the_point_farthest_below_the_line_between_the_extremes():
    front = [row(0, size_ratio=0.1, top1=0.2), row(1, size_ratio=0.2, top1=0.85), row(2, size_ratio=0.5, top1=0.9)]
    assert knee(front, [("size_ratio", "minimize"), ("top1", "maximize")]).number == 1


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        pareto_mask(np.array([[1.0, 2.0]]), ["maximise", "minimize"])


def test_default_objectives_of_a_single_objective_experiment_are_paired_with_size():
    from mpqsearch.analysis.pareto import objectives_of
    from mpqsearch.analysis.table import Results
    from mpqsearch.objectives import Objective, metric_directions

    single = [Objective("top1", "maximize")]
    results = Results("x", "nni", "example", [], single, metric_directions(single, {}, []))
    assert objectives_of(results) == [("top1", "maximize"), ("size_ratio", "minimize")]
    assert objectives_of(results, ["bops", "top1"]) == [("bops", "minimize"), ("top1", "maximize")]
