"""Uniform-precision baselines evaluated on request, for the fronts' comparison markers.

Uniform trials the search ran (seeded by the ``uniform`` strategy, or found) are used as they
are; this evaluates the ones asked for that no trial ran, exactly as a trial of the experiment
would (same workload, space, latency backend), with the ``uniform`` strategy's policies.

Example::

    extra = evaluate_uniform(results, [(8, 8), (4, 8)])
    front_2d(results, baselines=extra)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..experiments.setup import build_setup
from ..strategies import StrategyContext, get_strategy
from .figures import uniform_baselines
from .table import Results, TrialRow


def evaluate_uniform(results: Results, bits: Sequence[tuple[int, int]]) -> list[TrialRow]:
    """A row (``number`` -1, strategy ``uniform (evaluated)``) per ``(weight, act)`` pair that
    no completed trial already measured; needs the experiment file. Where the space lacks a
    pair's bits, the nearest choices are used (as the ``uniform`` seed strategy does)."""
    if results.config is None:
        raise ValueError(f"experiment {results.experiment}: evaluating baselines needs its experiment file")
    measured = uniform_baselines(results.complete())
    missing = [(w, a) for w, a in bits if f"W{w}A{a}" not in measured]
    if not missing:
        return []
    setup = build_setup(results.config)
    rows = []
    for policy in get_strategy("uniform", bits=missing).seed(StrategyContext(setup.space, setup.evaluator)):
        params = setup.space.params_from_policy(policy)
        outcome = setup.run_trial(params)
        rows.append(TrialRow(-1, "baseline", "complete", params, outcome.metrics, "uniform (evaluated)",
                             feasible=setup.objectives.feasible(outcome.metrics), policy=policy))
    return rows
