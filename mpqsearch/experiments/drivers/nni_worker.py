"""The NNI driver's warm worker: ``python -m mpqsearch.experiments.drivers.nni_worker RUN_DIR [slot options]``.

Builds the experiment's setup once (workload, model, search space, the shared cache, the latency
backend), then evaluates one trial per request exactly as the cold trial does
(:func:`~.nni_evaluation.evaluate_trial`: same setup, same record, same metrics), for as long as
it lives (:mod:`mpqsearch.experiments.workers.server`). Started by the launcher ahead of the
search, or by the first trial that finds its slot empty (``nnictl create`` with no launcher).
Several workers keep latency clean as several cold trials do: the run's ``TrialLock`` when
timing end to end, or the lookup table measured before the search.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..config import load_config
from ..runs import EXPERIMENT_FILE, launch_directory
from ..setup import build_setup
from ..workers.server import Handler, run_worker
from .nni_evaluation import evaluate_trial, trial_threads


def make_handler(run_dir: Path) -> Handler:
    """Build the setup (the expensive part) and return the function that answers a request."""
    config = load_config(run_dir / EXPERIMENT_FILE)
    setup = build_setup(config, cache_dir=run_dir / "cache", threads=trial_threads(config.budget.concurrency))

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        answer = evaluate_trial(setup, run_dir, str(request["trial"]), int(request["sequence"]), request["params"])
        if not answer["ok"]:
            print(answer["traceback"], file=sys.stderr, flush=True)
        return {**answer, "recorded": True}

    return handle


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    run_dir = Path(args[0]).resolve()
    sys.path.insert(0, launch_directory(run_dir))  # module:function references, found as at launch
    run_worker(args[1:], lambda: make_handler(run_dir))


if __name__ == "__main__":
    main()
