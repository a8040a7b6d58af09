"""NNI's trial command: ``python -m mpqsearch.experiments.drivers.nni_trial EXPERIMENT_FILE RUN_DIR``.

Reads the parameters NNI chose, evaluates that policy and reports the final metric as a dict
whose ``default`` is the scalarized objective (what built-in tuners read) and whose other keys
are the raw metrics (columns in the web UI, objectives for the multi-objective tuner); the
workload's primary metric is also reported as an intermediate result, NNI's per-trial chart.
Every trial also writes its full record (parameters, policy, metrics, strategy) as JSON under
``RUN_DIR/trials/``, so nothing it measured depends on NNI's database alone. A failure prints its
reason, is recorded there too, and exits non-zero: NNI marks the trial failed and goes on.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import nni

from ..config import load_config
from ..setup import build_setup
from ..trial_records import write_trial_record

CONCURRENCY_VARIABLE = "MPQSEARCH_CONCURRENCY"
"""How many trials NNI runs at once, set by the driver in the manager's environment."""


def trial_threads() -> int:
    """This trial's share of the cores: NNI runs ``concurrency`` trials at once."""
    concurrency = max(1, int(os.environ.get(CONCURRENCY_VARIABLE, "1")))
    return max(1, (os.cpu_count() or 1) // concurrency)


def _write_record(run_dir: Path, record: dict) -> None:
    write_trial_record(run_dir, os.environ.get("NNI_TRIAL_JOB_ID", f"local-{os.getpid()}"), record)


def _strategy_of(run_dir: Path, params: dict) -> str:
    seeds_file = run_dir / "seeds.json"
    if seeds_file.exists():
        for seed in json.loads(seeds_file.read_text()):
            if seed["params"] == params:
                return seed["strategy"]
    return "tuner"


def main(argv: list[str] | None = None) -> int:
    config_path, run_dir_arg = (argv if argv is not None else sys.argv[1:])[:2]
    run_dir = Path(run_dir_arg)
    params = nni.get_next_parameter()
    record = {"trial": os.environ.get("NNI_TRIAL_JOB_ID"), "sequence": int(os.environ.get("NNI_TRIAL_SEQ_ID", "-1")),
              "params": params,
              "strategy": _strategy_of(run_dir, params), "state": "FAILED"}
    try:
        config = load_config(config_path)
        setup = build_setup(config, cache_dir=run_dir / "cache", threads=trial_threads())
        outcome = setup.run_trial(params)
    except Exception as err:
        traceback.print_exc()
        record["fail_reason"] = f"{type(err).__name__}: {err}"
        _write_record(run_dir, record)
        print(f"mpqsearch: trial failed: {record['fail_reason']}", file=sys.stderr)
        return 1
    record.update(state="SUCCEEDED", metrics=outcome.metrics, values=outcome.values,
                  violations=outcome.violations, result=outcome.result.to_dict())
    _write_record(run_dir, record)
    nni.report_intermediate_result(outcome.result.metrics[setup.workload.primary_metric])
    nni.report_final_result({"default": outcome.scalar, **outcome.metrics,
                             "feasible": float(setup.objectives.feasible(outcome.metrics))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
