"""NNI's cold trial command: ``python -m mpqsearch.experiments.drivers.nni_trial EXPERIMENT_FILE RUN_DIR``.

One process per trial: it imports torch and NNI, builds the setup, evaluates the policy NNI chose
(:func:`~.nni_evaluation.evaluate_trial`: record, final and intermediate metrics) and exits. It
costs seconds of start-up per trial, which the warm path (:mod:`.nni_client`) avoids; it stays as
``nni_trials: cold`` for debugging and as the fallback where NNI gives no HTTP trial channel. A
failure prints its reason, is recorded, and exits non-zero: NNI marks the trial failed and goes on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nni

from ..config import load_config
from ..setup import build_setup
from ..trial_records import record_failure
from .nni_evaluation import evaluate_trial, trial_threads


def main(argv: list[str] | None = None) -> int:
    config_path, run_dir_arg = (argv if argv is not None else sys.argv[1:])[:2]
    run_dir = Path(run_dir_arg)
    params = nni.get_next_parameter()
    trial = os.environ.get("NNI_TRIAL_JOB_ID", f"local-{os.getpid()}")
    sequence = int(os.environ.get("NNI_TRIAL_SEQ_ID", "-1"))
    try:
        config = load_config(config_path)
        setup = build_setup(config, cache_dir=run_dir / "cache", threads=trial_threads(config.budget.concurrency))
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        record_failure(run_dir, trial, sequence, params, reason)
        print(f"mpqsearch: trial failed: {reason}", file=sys.stderr)
        return 1
    answer = evaluate_trial(setup, run_dir, trial, sequence, params)
    if not answer["ok"]:
        print(answer["traceback"], file=sys.stderr)
        print(f"mpqsearch: trial failed: {answer['reason']}", file=sys.stderr)
        return 1
    for value in answer["intermediate"]:
        nni.report_intermediate_result(value)
    nni.report_final_result(answer["final"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
