"""One NNI trial's evaluation, the same in a trial's own process (cold) and in a warm worker.

:func:`evaluate_trial` evaluates the policy of NNI's parameters, writes the trial's record
(:mod:`..trial_records`) and returns what NNI is told: the final metric, a dict whose ``default``
is the scalarized objective (what built-in tuners read) and whose other keys are the raw metrics
(columns in the web UI, objectives for the multi-objective tuner), and the workload's primary
metric as an intermediate result (NNI's per-trial chart). A failure is recorded with its reason
and returned, not raised. Torch is only imported by the caller's setup.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..trial_records import new_record, write_trial_record

if TYPE_CHECKING:
    from ..setup import ExperimentSetup

CONCURRENCY_VARIABLE = "MPQSEARCH_CONCURRENCY"
"""How many trials NNI runs at once, set by the driver in the manager's environment."""


def trial_threads(concurrency: int | None = None) -> int:
    """A trial's share of the cores: NNI runs ``concurrency`` trials at once (the driver's
    environment variable, else ``concurrency``, else 1)."""
    value = os.environ.get(CONCURRENCY_VARIABLE) or concurrency or 1
    return max(1, (os.cpu_count() or 1) // max(1, int(value)))


def evaluate_trial(setup: ExperimentSetup, run_dir: Path, trial: str, sequence: int,
                   params: dict[str, Any]) -> dict[str, Any]:
    """Evaluate, record, and return ``{"ok": True, "final": {...}, "intermediate": [...]}`` or
    ``{"ok": False, "reason": ..., "traceback": ...}``."""
    record = {**new_record(run_dir, trial, sequence, params), "pid": os.getpid()}  # the trial's or its worker's
    try:
        outcome = setup.run_trial(params)
    except Exception as err:
        record["fail_reason"] = f"{type(err).__name__}: {err}"
        write_trial_record(run_dir, trial, record)
        return {"ok": False, "reason": record["fail_reason"], "traceback": traceback.format_exc()}
    record.update(state="SUCCEEDED", metrics=outcome.metrics, values=outcome.values,
                  violations=outcome.violations, result=outcome.result.to_dict())
    write_trial_record(run_dir, trial, record)
    feasible = float(setup.objectives.feasible(outcome.metrics))
    final = {"default": outcome.scalar, **outcome.metrics, "feasible": feasible}
    return {"ok": True, "final": final, "intermediate": [outcome.result.metrics[setup.workload.primary_metric]],
            "eval_s": sum(outcome.result.timings.values())}
